//! QEMU's ACPI tables on the host ROM: the table-loader script runs after SMM is locked,
//! the tables land in a range the memory map reserves as ACPI, and the payload finds the
//! RSDP through the coreboot tables. A hostile script (given with `-machine acpi=off`,
//! which leaves the name `etc/table-loader` free for `-fw_cfg`) is rejected with an
//! error line and the boot goes on without ACPI.

use qemu_tests::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

#[test]
fn the_payload_finds_qemus_acpi_tables_in_a_reserved_range() {
    host_rom_only!();
    let o = boot(&VmConfig::new("2,maxcpus=4"), T);
    o.assert_pass();
    let out = &o.output;
    let rom = lines_with(out, "[INFO ] host-rom: ACPI: ");
    assert!(
        rom.iter()
            .any(|l| l.contains("files from QEMU's etc/table-loader") && l.contains("RSDP at 0x")),
        "{out}"
    );
    assert!(
        out.find("SMRAM locked") < out.find("host-rom: ACPI: "),
        "ACPI after the SMM locks: {out}"
    );
    assert!(
        lines_with(out, "payload: ACPI RSDP at 0x")
            .iter()
            .any(|l| l.ends_with("(signature ok, in a reserved range: true)")),
        "{out}"
    );
    assert!(
        lines_with(out, "payload: memory ")
            .iter()
            .any(|l| l.ends_with(" ACPI")),
        "{out}"
    );
}

fn entry(cmd: u32) -> [u8; 128] {
    let mut e = [0u8; 128];
    e[0..4].copy_from_slice(&cmd.to_le_bytes());
    e
}

fn named(mut e: [u8; 128], at: usize, name: &[u8]) -> [u8; 128] {
    e[at..at + name.len()].copy_from_slice(name);
    e
}

/// Boot with `script` as `etc/table-loader` (and a 36-byte `etc/acpi/rsdp` for it to
/// name); the ROM must reject it with `expected` in its error line and the payload pass.
fn hostile(script: &[[u8; 128]], expected: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let loader = dir.path().join("table-loader");
    let rsdp = dir.path().join("rsdp");
    std::fs::write(&loader, script.concat()).expect("write script");
    let mut r = b"RSD PTR ".to_vec();
    r.resize(36, 0);
    std::fs::write(&rsdp, r).expect("write rsdp");
    let mut cfg = VmConfig::new("2,maxcpus=4")
        .arg("-fw_cfg")
        .arg(&format!("name=etc/table-loader,file={}", loader.display()))
        .arg("-fw_cfg")
        .arg(&format!("name=etc/acpi/rsdp,file={}", rsdp.display()));
    cfg.extra.insert(0, "-machine".into());
    cfg.extra.insert(1, "acpi=off".into());
    let o = boot(&cfg, T);
    o.assert_pass();
    let err = lines_with(
        &o.output,
        "[ERROR] host-rom: ACPI: etc/table-loader rejected",
    );
    assert!(
        err.iter()
            .any(|l| l.contains(expected) && l.ends_with("booting without ACPI tables")),
        "expected the ROM to reject the script with {expected:?}:\n{}",
        o.output
    );
    assert!(
        o.output
            .contains("payload: no ACPI RSDP in the coreboot tables"),
        "{}",
        o.output
    );
    assert!(
        !lines_with(&o.output, "payload: memory ")
            .iter()
            .any(|l| l.ends_with(" ACPI")),
        "nothing reserved for a rejected script: {}",
        o.output
    );
}

#[test]
fn hostile_table_loader_scripts_are_rejected_and_the_boot_goes_on_without_acpi() {
    host_rom_only!();
    let alloc = named(entry(1), 4, b"etc/acpi/rsdp");
    let mut alloc16 = alloc;
    alloc16[60] = 16;
    alloc16[64] = 2;
    // A pointer 4 KiB past the end of the 36-byte file.
    let mut far = named(named(entry(2), 4, b"etc/acpi/rsdp"), 60, b"etc/acpi/rsdp");
    far[116..120].copy_from_slice(&0x1000u32.to_le_bytes());
    far[120] = 4;
    hostile(
        &[alloc16, far],
        "(entry 1): OutOfRange { name: \"etc/acpi/rsdp\", offset: 4096, len: 4, size: 36 }",
    );
    // A name without its NUL, running into the next field.
    let mut unterminated = alloc16;
    unterminated[4..60].fill(b'e');
    hostile(&[unterminated], "(entry 0): UnterminatedName");
    // An alignment beyond a page, and a pointer 3 bytes wide.
    let mut huge = alloc16;
    huge[60..64].copy_from_slice(&(1u32 << 30).to_le_bytes());
    hostile(&[huge], "(entry 0): Alignment(1073741824)");
    let mut odd = far;
    odd[116..120].copy_from_slice(&16u32.to_le_bytes());
    odd[120] = 3;
    hostile(&[alloc16, odd], "(entry 1): PointerWidth(3)");
}

#[test]
fn write_pointer_tells_qemu_where_the_vmgenid_guid_lives() {
    host_rom_only!();
    // vmgenid adds a WRITE_POINTER: QEMU learns the GUID buffer's address from the ROM
    // and writes the GUID there, at offset 40.
    let cfg = VmConfig::new("1,maxcpus=2")
        .with_qmp()
        .arg("-device")
        .arg("vmgenid,guid=12345678-1234-1234-1234-123456789abc")
        .fw_cfg("opt/host-rom/loglevel", "debug")
        .fw_cfg("opt/payload/stay", "1");
    let mut vm = Vm::start(&cfg).expect("start QEMU");
    let result = vm.wait_for_line("RESULT:", T).expect("payload result");
    assert!(result.starts_with("RESULT: PASS"), "{}", vm.output());
    let line = vm
        .wait_for_line_containing("ACPI: \"etc/vmgenid_guid\"", T)
        .expect("the ROM places the GUID buffer");
    let addr = line
        .rsplit("at 0x")
        .next()
        .and_then(|a| u64::from_str_radix(a.trim(), 16).ok())
        .expect("address");
    let q = vm.qmp.as_mut().expect("QMP");
    let mem = q.hmp(&format!("xp /4wx {:#x}", addr + 40)).expect("xp");
    assert!(
        mem.contains("0x12345678 0x12341234 0x34123412 0xbc9a7856"),
        "GUID at {:#x}: {mem}\n{}",
        addr + 40,
        vm.output()
    );
}
