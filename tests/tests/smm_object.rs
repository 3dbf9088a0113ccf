//! Mechanical checks on the built SMM code (not by review): no SSE/x87 instructions, no
//! panicking or formatting code, only relocation types coreboot's rmodtool accepts,
//! bounded stack frames. Runs on both of the host ROM's SMM modules (the production one,
//! and the test image's built with the `diag-query` feature) and on the object meant for
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
fn host_rom_test_image_smm_module_with_the_diag_query_is_free_of_sse_panics_and_bad_relocations() {
    check("build/host-rom-smm-diag.elf");
}

#[test]
fn the_two_host_rom_smm_modules_differ_only_by_the_diag_query_build_option() {
    images();
    let read = |rel: &str| std::fs::read(workspace_root().join(rel)).expect(rel);
    let (plain, diag) = (
        read("build/host-rom-smm.elf"),
        read("build/host-rom-smm-diag.elf"),
    );
    assert_ne!(
        plain, diag,
        "the diag-query feature must change the SMM module"
    );
    // Each ROM packs its own module.
    let rom = |name: &str| read(&format!("build/{name}"));
    let packs = |rom: &[u8], rmod: &[u8]| rom.windows(rmod.len()).any(|w| w == rmod);
    let (plain_rmod, diag_rmod) = (
        read("build/host-rom-smm.rmod"),
        read("build/host-rom-smm-diag.rmod"),
    );
    assert!(packs(&rom("host-rom.rom"), &plain_rmod));
    assert!(!packs(&rom("host-rom.rom"), &diag_rmod));
    assert!(packs(&rom("host-rom-test.rom"), &diag_rmod));
    assert!(!packs(&rom("host-rom-test.rom"), &plain_rmod));
}

#[test]
fn coreboot_smm_object_is_free_of_sse_panics_and_bad_relocations() {
    check("build/smm-handler-coreboot.o");
}

/// Decode one 16-bit blob of the host ROM's boot ELF (between two symbols), as it runs at
/// the default-SMBASE entry point, and reject stack use and faulting instructions (R16).
fn check_default_smbase_blob(start_sym: &str, end_sym: &str, min_instructions: usize) {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};
    use object::{Object, ObjectSymbol};
    images();
    // The blobs are assembled into smm-handler; find them in the host ROM's boot ELF.
    let elf = std::fs::read(workspace_root().join("build/host-rom-boot.elf")).unwrap();
    let file = object::File::parse(&*elf).unwrap();
    let sym = |n: &str| {
        file.symbols()
            .find(|s| s.name() == Ok(n))
            .map(|s| s.address())
            .expect(n)
    };
    let (start, end) = (sym(start_sym), sym(end_sym));
    let bytes = read_at(&file, start, (end - start) as usize);
    let entry = u64::from(smm_handler::layout::window::HANDLER.base);
    let mut d = Decoder::with_ip(16, &bytes, entry, DecoderOptions::NONE);
    let mut n = 0;
    for ins in &mut d {
        n += 1;
        assert!(
            !ins.is_invalid(),
            "undecodable byte in {start_sym} at {:#x}",
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
            "{:?} at {:#x} in {start_sym}",
            ins.mnemonic(),
            ins.ip()
        );
    }
    assert!(
        n > min_instructions,
        "only {n} instructions decoded in {start_sym}"
    );
}

#[test]
fn the_first_smi_handler_blob_has_no_stack_use_or_faulting_instructions() {
    check_default_smbase_blob("first_smi_handler_start", "first_smi_handler_end", 50);
}

#[test]
fn the_boot_relocation_stub_has_no_stack_use_or_faulting_instructions() {
    check_default_smbase_blob("boot_reloc_stub_start", "boot_reloc_stub_end", 15);
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
