//! Linux on the host ROM: QEMU's `-kernel`/`-initrd`/`-append` through fw_cfg, QEMU's
//! ACPI tables from its table-loader script, the ROM's memory map as Linux's e820 table,
//! and bad `-kernel` images.
//!
//! The kernel is the Linux test guest's (`scripts/linux-guest`, `qemu_tests::linux`):
//! without it the boot test is skipped with a note (a failure with
//! `LINUX_GUEST_REQUIRED=1`). The hot-add, hot-remove and re-plug scenarios with Linux are
//! in `tests/tests/linux_guest.rs`.
//!
//! The bad-image tests need no guest: they hand QEMU a file that is no usable kernel and
//! expect the ROM's FATAL line.

use qemu_tests::*;
use std::path::Path;
use std::time::Duration;

const T: Duration = Duration::from_secs(180);
const APPEND: &str = "console=ttyS0 earlyprintk=ttyS0 panic=-1";

/// q35 with 512 MiB, `smp` and the kernel, without an initramfs.
fn linux_vm(smp: &str, kernel: &Path) -> VmConfig {
    let mut cfg = VmConfig::new(smp)
        .arg("-kernel")
        .arg(&kernel.display().to_string())
        .arg("-append")
        .arg(APPEND);
    cfg.mem_mb = 512;
    cfg
}

/// `(start, end, type)` of Linux's `BIOS-e820: [mem 0x…-0x…] type` lines.
fn e820(output: &str) -> Vec<(u64, u64, String)> {
    output
        .lines()
        .filter_map(|l| {
            let r = l.split("BIOS-e820: [mem ").nth(1)?;
            let (range, kind) = r.split_once("] ")?;
            let (a, b) = range.split_once('-')?;
            let hex = |s: &str| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok();
            Some((hex(a)?, hex(b)? + 1, kind.trim().to_string()))
        })
        .collect()
}

fn reserved(map: &[(u64, u64, String)], start: u64, end: u64) -> bool {
    map.iter()
        .any(|(s, e, k)| k != "usable" && *s <= start && end <= *e)
}

#[test]
fn linux_boots_with_qemus_acpi_tables_to_the_missing_root_fs() {
    host_rom_only!();
    let Some(g) = qemu_tests::linux::guest_or_skip() else {
        return;
    };
    let o = boot(&linux_vm("1,maxcpus=4", &g.kernel), T);
    let out = &o.output;
    assert!(
        out.contains("Kernel panic - not syncing: VFS: Unable to mount root fs"),
        "Linux did not get to mounting its root fs (exit {:?}, timed out {})\n{out}\n{}",
        o.code(),
        o.timed_out,
        o.stderr
    );
    // SMM first, exactly as before a payload; then ACPI, then Linux.
    let at = |s: &str| out.find(s).unwrap_or_else(|| panic!("no {s:?} in\n{out}"));
    assert!(
        at("SMRAM locked") < at("host-rom: ACPI: ")
            && at("host-rom: ACPI: ") < at("entering Linux at 0x")
    );
    for line in [
        "ACPI: RSDP 0x",
        "ACPI: DSDT 0x",
        "ACPI: APIC 0x",
        "ACPI: Using ACPI (MADT) for SMP configuration information",
        "smpboot: Allowing 4 CPUs, 3 hotplug CPUs",
        "ACPI: Interpreter enabled",
    ] {
        assert!(out.contains(line), "no {line:?} in\n{out}");
    }
    // The e820 table is the ROM's memory map: SMRAM, the default-SMBASE window and pen,
    // the firmware and the ACPI tables are not RAM.
    let map = e820(out);
    let tseg = qemu_tests::linux::tseg_base(out).expect("SMRAM locked line");
    assert!(
        reserved(&map, tseg, tseg + (1 << 20)),
        "TSEG {tseg:#x}: {map:?}"
    );
    assert!(reserved(&map, 0x30000, 0x51000), "window and pen: {map:?}");
    assert!(
        reserved(&map, 0x10_0000, 0x80_0000),
        "firmware window: {map:?}"
    );
    assert!(map.iter().any(|(_, _, k)| k == "ACPI data"), "{map:?}");
    assert!(
        map.iter()
            .any(|(s, e, k)| k == "usable" && *s <= 0x100_0000 && 0x500_0000 <= *e),
        "RAM for the kernel at 16 MiB: {map:?}"
    );
}

/// QEMU with `-kernel <bytes>`; the ROM must stop with `expected` in its FATAL line.
fn bad_kernel(bytes: &[u8], expected: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = dir.path().join("kernel.bin");
    std::fs::write(&k, bytes).expect("write image");
    let o = boot(&linux_vm("1,maxcpus=2", &k), T);
    let fatal = lines_with(&o.output, "[ERROR] host-rom: FATAL: Linux: ");
    assert!(
        o.code() == Some(EXIT_FIRMWARE_FATAL) && fatal.iter().any(|l| l.contains(expected)),
        "expected exit {EXIT_FIRMWARE_FATAL} and a FATAL line with {expected:?}, got exit {:?}\n{}\n{}",
        o.code(),
        o.output,
        o.stderr
    );
    assert!(!o.output.contains("entering"), "{}", o.output);
}

#[test]
fn a_random_file_as_kernel_stops_the_boot_with_a_clear_error() {
    host_rom_only!();
    // 256 KiB of xorshift noise: larger than any setup part QEMU may take from byte
    // 0x1f1, so QEMU accepts it and the ROM has to say no.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    bad_kernel(&noise, "-kernel image rejected: not a bzImage");
}

#[test]
fn a_kernel_without_the_64_bit_entry_stops_the_boot_with_a_clear_error() {
    host_rom_only!();
    // A bzImage header of boot protocol 2.11: loaded high, but no xloadflags.
    let mut img = vec![0u8; 64 * 1024];
    img[0x1f1] = 4;
    img[0x1fe..0x200].copy_from_slice(&0xAA55u16.to_le_bytes());
    img[0x201] = 0x62;
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020bu16.to_le_bytes());
    img[0x211] = 1;
    bad_kernel(
        &img,
        "boot protocol 2.11 is older than 2.12 (no 64-bit entry)",
    );
}
