//! Mechanical checks on the built SMM code (not by review): no SSE/x87 instructions, no
//! panicking or formatting code, only relocation types coreboot's rmodtool accepts,
//! bounded stack frames. Runs on the host ROM's SMM module and on the object meant for
//! coreboot's smm stage.

use fwtool::{check_smm_file, SmmCheckOptions};
use qemu_tests::{images, workspace_root};

fn check(rel: &str) {
    images();
    let path = workspace_root().join(rel);
    let report = check_smm_file(&path, &SmmCheckOptions::default()).expect("readable ELF");
    println!("{report}");
    assert!(
        report.passed(),
        "{}: {:?}\n{report}",
        rel,
        report.failures()
    );
    assert!(
        report.instruction_count() > 100,
        "{rel}: suspiciously little code checked"
    );
}

#[test]
fn host_rom_smm_module_is_free_of_sse_panics_and_bad_relocations() {
    check("build/host-rom-smm.elf");
}

#[test]
fn coreboot_smm_object_is_free_of_sse_panics_and_bad_relocations() {
    check("build/smm-handler-coreboot.o");
}

#[test]
fn the_first_smi_handler_blob_has_no_stack_use_or_faulting_instructions() {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    images();
    // The blob is assembled into smm-handler; find it in the host ROM's boot ELF.
    let elf = std::fs::read(workspace_root().join("build/host-rom-boot.elf")).unwrap();
    let file = object::File::parse(&*elf).unwrap();
    use object::{Object, ObjectSymbol};
    let sym = |n: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(n))
            .map(|s| s.address())
            .expect(n)
    };
    let (start, end) = (sym("first_smi_handler_start"), sym("first_smi_handler_end"));
    let bytes = read_at(&file, start, (end - start) as usize);
    let mut d = Decoder::with_ip(16, &bytes, 0x38000, DecoderOptions::NONE);
    let mut n = 0;
    for ins in &mut d {
        n += 1;
        assert!(
            !ins.is_invalid(),
            "undecodable byte in the first-SMI handler at {:#x}",
            ins.ip()
        );
        let forbidden = matches!(
            ins.mnemonic(),
            Mnemonic::Push
                | Mnemonic::Pop
                | Mnemonic::Call
                | Mnemonic::Ret
                | Mnemonic::Pushf
                | Mnemonic::Popf
                | Mnemonic::Int
                | Mnemonic::Iret
                | Mnemonic::Div
                | Mnemonic::Idiv
        ) || ins.is_stack_instruction();
        assert!(
            !forbidden,
            "{:?} at {:#x} in the first-SMI handler",
            ins.mnemonic(),
            ins.ip()
        );
    }
    assert!(n > 50, "only {n} instructions decoded");
}

fn read_at(file: &object::File, addr: u64, len: usize) -> Vec<u8> {
    use object::{Object, ObjectSection};
    for s in file.sections() {
        if s.address() <= addr && addr + len as u64 <= s.address() + s.size() {
            let d = s.data().unwrap();
            let off = (addr - s.address()) as usize;
            return d[off..off + len].to_vec();
        }
    }
    panic!("address {addr:#x} not in any section");
}
