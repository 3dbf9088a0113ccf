//! Object checks of the host ROM's SMM module entry (`smm_slot_entry`, in
//! `smm-handler/hosts/host-rom/src/lib.rs`), where every slot stub jumps without a stack:
//! it touches no stack before it has claimed one of the pool, it returns a RELOCATING
//! slot's CPU (R12) before the claim, and every way out is an RSM.

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use object::{Object, ObjectSection, ObjectSymbol};
use qemu_tests::{images, workspace_root};
use smm_handler::slots::RELOCATING;

/// The entry's instructions, from its symbol up to the last RSM before the next symbol.
fn entry(elf_rel: &str) -> Vec<Instruction> {
    images();
    let elf = std::fs::read(workspace_root().join(elf_rel)).expect(elf_rel);
    let file = object::File::parse(&*elf).unwrap();
    let start = file
        .symbols()
        .find(|s| s.name() == Ok("smm_slot_entry"))
        .map(|s| s.address())
        .unwrap_or_else(|| panic!("{elf_rel}: no symbol smm_slot_entry"));
    assert_eq!(file.entry(), start, "{elf_rel}: the module's entry");
    let text = file
        .sections()
        .find(|s| s.address() <= start && start < s.address() + s.size())
        .expect("a section holds the entry");
    let data = text.data().unwrap();
    let bytes = &data[(start - text.address()) as usize..];
    let mut d = Decoder::with_ip(64, bytes, start, DecoderOptions::NONE);
    let mut out = Vec::new();
    // The entry is short: stop at the RSM that follows the call into Rust.
    let mut called = false;
    while d.can_decode() && out.len() < 200 {
        let i = d.decode();
        out.push(i);
        called |= i.mnemonic() == Mnemonic::Call;
        if called && i.mnemonic() == Mnemonic::Rsm {
            break;
        }
    }
    assert_eq!(
        out.last().map(|i| i.mnemonic()),
        Some(Mnemonic::Rsm),
        "{elf_rel}: no RSM after the call"
    );
    out
}

fn check(elf_rel: &str) {
    let ins = entry(elf_rel);
    let switch = ins
        .iter()
        .position(|i| {
            i.mnemonic() == Mnemonic::Mov
                && i.op0_kind() == OpKind::Register
                && i.op0_register() == Register::RSP
        })
        .unwrap_or_else(|| panic!("{elf_rel}: the entry never loads RSP"));
    // Nothing before the switch uses the stack (the interrupted context's RSP is not
    // SMRAM).
    for i in &ins[..switch] {
        let stack = i.is_stack_instruction()
            || matches!(
                i.mnemonic(),
                Mnemonic::Call | Mnemonic::Ret | Mnemonic::Int | Mnemonic::Iretq
            )
            || i.op0_register() == Register::RSP
            || i.memory_base() == Register::RSP;
        assert!(!stack, "{elf_rel}: {i} at {:#x} before the stack", i.ip());
    }
    // The R12 check, a comparison with RELOCATING, comes before the claim.
    let relocating = ins[..switch].iter().position(|i| {
        i.mnemonic() == Mnemonic::Cmp
            && i.op1_kind() != OpKind::Register
            && i.op1_kind() != OpKind::Memory
            && i.immediate(1) == u64::from(RELOCATING)
    });
    let claim = ins[..switch]
        .iter()
        .position(|i| i.mnemonic() == Mnemonic::Cmpxchg && i.has_lock_prefix());
    assert!(
        matches!((relocating, claim), (Some(r), Some(c)) if r < c),
        "{elf_rel}: RELOCATING check {relocating:?}, stack claim {claim:?}"
    );
    // The only call is into Rust, on the claimed stack; the release follows it.
    let calls: Vec<usize> = ins
        .iter()
        .enumerate()
        .filter(|(_, i)| i.mnemonic() == Mnemonic::Call)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(calls.len(), 1, "{elf_rel}: calls {calls:?}");
    assert!(calls[0] > switch);
    assert!(
        ins[calls[0]..]
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Cmpxchg && i.has_lock_prefix()),
        "{elf_rel}: no release after the call"
    );
    // No way out but RSM: no RET, IRET or SYSRET anywhere.
    assert!(
        !ins.iter().any(|i| matches!(
            i.mnemonic(),
            Mnemonic::Ret | Mnemonic::Iretq | Mnemonic::Sysretq
        )),
        "{elf_rel}"
    );
}

#[test]
fn the_production_smm_module_entry_claims_a_stack_before_using_one() {
    check("build/host-rom-smm.elf");
}

#[test]
fn the_test_image_smm_module_entry_claims_a_stack_before_using_one() {
    check("build/host-rom-smm-diag.elf");
}
