//! Object checks of the host ROM's slot entry stub (`host-rom/asm/smm_stub.S`) as built
//! into both boot images: it loads an IDT of limit 0 before anything else, sends a CPU in
//! the INIT reset state back to the pen with RSM before it leaves real mode, uses no
//! stack in its 16-bit part, and ends below its per-copy parameters.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol};
use qemu_tests::{images, workspace_root};
use smm_handler::save_state as ss;

/// The stub runs at SMBASE + 0x8000 with CS base = SMBASE.
const STUB_IP: u64 = 0x8000;

struct Stub {
    /// Bytes from `smm_stub_start` to `smm_stub_end`.
    bytes: Vec<u8>,
    /// Offset of the 32-bit part (`smm_stub32`): the 16-bit part ends there.
    off32: usize,
    /// Offset of the IDT descriptor (`smm_stub_idt`).
    off_idt: usize,
    /// Where the parameters begin (`smm_stub_params`, an absolute symbol).
    params: usize,
}

fn stub(elf_rel: &str) -> Stub {
    images();
    let elf = std::fs::read(workspace_root().join(elf_rel)).expect(elf_rel);
    let file = object::File::parse(&*elf).unwrap();
    let sym = |n: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(n))
            .map(|s| s.address())
            .unwrap_or_else(|| panic!("{elf_rel}: no symbol {n}"))
    };
    let start = sym("smm_stub_start");
    let end = sym("smm_stub_end");
    let bytes = file
        .sections()
        .find_map(|s| {
            let (a, len) = (s.address(), s.size());
            (a <= start && end <= a + len).then(|| {
                let d = s.data().unwrap();
                d[(start - a) as usize..(end - a) as usize].to_vec()
            })
        })
        .expect("stub bytes in a section");
    Stub {
        bytes,
        off32: (sym("smm_stub32") - start) as usize,
        off_idt: (sym("smm_stub_idt") - start) as usize,
        params: sym("smm_stub_params") as usize,
    }
}

fn decode16(s: &Stub) -> Vec<Instruction> {
    let mut d = Decoder::with_ip(16, &s.bytes[..s.off32], STUB_IP, DecoderOptions::NONE);
    let v: Vec<Instruction> = d.iter().collect();
    assert!(v.iter().all(|i| !i.is_invalid()), "undecodable 16-bit stub");
    v
}

/// CS-relative absolute memory operand (no base or index register) at `disp`.
fn cs_abs(i: &Instruction, disp: u64) -> bool {
    i.memory_segment() == Register::CS
        && i.memory_base() == Register::None
        && i.memory_index() == Register::None
        && i.memory_displacement64() & 0xFFFF == disp
}

fn check(elf_rel: &str) {
    let s = stub(elf_rel);
    assert!(
        s.bytes.len() <= s.params,
        "{elf_rel}: stub of {:#x} bytes overlaps its parameters at {:#x}",
        s.bytes.len(),
        s.params
    );
    let ins = decode16(&s);

    // Step 0: the first instruction loads the stub's own IDT descriptor, whose limit is 0
    // in the image (tseg.rs writes only the base).
    let first = &ins[0];
    assert_eq!(
        first.mnemonic(),
        Mnemonic::Lidt,
        "{elf_rel}: first is {first}"
    );
    assert!(
        cs_abs(first, STUB_IP + s.off_idt as u64),
        "{elf_rel}: lidt operand {first} is not the stub's IDT descriptor at +{:#x}",
        s.off_idt
    );
    let limit = u16::from_le_bytes([s.bytes[s.off_idt], s.bytes[s.off_idt + 1]]);
    assert_eq!(limit, 0, "{elf_rel}: SMM IDT limit");

    // Step 1: the INIT reset-state check (CS selector 0xF000, RIP 0xFFF0, CR0.PE) and an
    // RSM, all before the GDT, protected mode or any far jump.
    let leave_real = ins
        .iter()
        .position(|i| {
            i.mnemonic() == Mnemonic::Lgdt
                || (i.mnemonic() == Mnemonic::Jmp && i.op0_kind() == OpKind::Memory)
                || (i.mnemonic() == Mnemonic::Mov && i.op0_register() == Register::CR0)
        })
        .expect("the stub leaves real mode");
    let rsm = ins
        .iter()
        .position(|i| i.mnemonic() == Mnemonic::Rsm)
        .expect("an RSM in the 16-bit part");
    assert!(rsm < leave_real, "{elf_rel}: RSM after leaving real mode");
    let cmp_imm = |disp: u32, imm: u64| {
        ins[..rsm].iter().any(|i| {
            i.mnemonic() == Mnemonic::Cmp
                && cs_abs(i, u64::from(disp))
                && i.op1_kind() != OpKind::Register
                && i.immediate(1) == imm
        })
    };
    assert!(
        cmp_imm(ss::CS + ss::SEG_SELECTOR, 0xF000),
        "{elf_rel}: no CS selector check"
    );
    assert!(cmp_imm(ss::RIP, 0xFFF0), "{elf_rel}: no RIP check");
    assert!(
        ins[..rsm]
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Test && cs_abs(i, u64::from(ss::CR0))),
        "{elf_rel}: no CR0.PE check"
    );
    // The INIT path writes the pen's CS base and RIP 0 before its RSM.
    let writes_pen_cs = ins[..rsm].iter().any(|i| {
        i.code() == Code::Mov_rm32_imm32
            && i.memory_displacement64() == u64::from(ss::CS + ss::SEG_BASE)
            && i.immediate32() == smm_handler::layout::window::PEN.base
    });
    assert!(
        writes_pen_cs,
        "{elf_rel}: the INIT path does not return to the pen"
    );

    // The 16-bit part runs on the interrupted context's SS:SP: no stack use.
    for i in &ins {
        let forbidden = matches!(
            i.mnemonic(),
            Mnemonic::Push
                | Mnemonic::Pop
                | Mnemonic::Call
                | Mnemonic::Ret
                | Mnemonic::Pushf
                | Mnemonic::Popf
                | Mnemonic::Int
                | Mnemonic::Iret
        ) || i.is_stack_instruction();
        assert!(!forbidden, "{elf_rel}: {i} at {:#x}", i.ip());
    }
}

#[test]
fn the_production_slot_stub_loads_a_zero_limit_idt_and_sends_init_state_cpus_to_the_pen() {
    check("build/host-rom-boot.elf");
}

#[test]
fn the_test_image_slot_stub_loads_a_zero_limit_idt_and_sends_init_state_cpus_to_the_pen() {
    check("build/host-rom-test-boot.elf");
}
