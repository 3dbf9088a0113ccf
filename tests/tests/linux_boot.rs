//! Linux on the host ROM: QEMU's `-kernel`/`-initrd`/`-append` through fw_cfg, QEMU's
//! ACPI tables from its table-loader script, the ROM's memory map as Linux's e820 table,
//! and a CPU hot-add that SMM relocates and Linux brings online.
//!
//! Environment (paths only; without them these tests pass with a "skipped" note):
//! - `LINUX_GUEST_KERNEL`: an x86_64 bzImage with ACPI CPU hotplug, e.g. Debian 12's
//!   `vmlinuz-6.1.0-*-amd64`;
//! - `LINUX_GUEST_BUSYBOX`: a static busybox (Debian's `busybox-static`), from which the
//!   tests pack their own initramfs.
//!
//! The bad-image tests need neither: they hand QEMU a file that is no usable kernel and
//! expect the ROM's FATAL line.

use qemu_tests::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(180);
const APPEND: &str = "console=ttyS0 earlyprintk=ttyS0 panic=-1";
/// What the test's /init prints first.
const INIT_UP: &str = "LINUX-INIT: /init running";

fn env_path(var: &str) -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os(var)?);
    assert!(p.is_file(), "{var}={} is not a file", p.display());
    Some(p)
}

/// `$LINUX_GUEST_KERNEL`, or `None` after saying the test is skipped.
fn kernel(test: &str) -> Option<PathBuf> {
    let k = env_path("LINUX_GUEST_KERNEL");
    if k.is_none() {
        eprintln!("{test}: skipped: set LINUX_GUEST_KERNEL to a bzImage (e.g. Debian's vmlinuz-6.1.0-*-amd64)");
    }
    k
}

/// `$LINUX_GUEST_BUSYBOX`, or `None` after saying the test is skipped.
fn busybox(test: &str) -> Option<PathBuf> {
    let b = env_path("LINUX_GUEST_BUSYBOX");
    if b.is_none() {
        eprintln!("{test}: skipped: set LINUX_GUEST_BUSYBOX to a static busybox (Debian's busybox-static)");
    }
    b
}

/// q35 with 512 MiB, `smp`, the kernel and (optionally) an initrd.
fn linux_vm(smp: &str, kernel: &Path, initrd: Option<&Path>) -> VmConfig {
    let mut cfg = VmConfig::new(smp)
        .arg("-kernel")
        .arg(&kernel.display().to_string())
        .arg("-append")
        .arg(APPEND);
    cfg.mem_mb = 512;
    if let Some(i) = initrd {
        cfg = cfg.arg("-initrd").arg(&i.display().to_string());
    }
    cfg
}

/// One newc cpio member.
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        rdev.0,
        rdev.1,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// /init: mount proc and sysfs, say so, then online every CPU that appears (what udev
/// does on a distribution), one line per CPU.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
echo "LINUX-INIT: /init running, cpus online $(cat /sys/devices/system/cpu/online)"
while true; do
  for c in /sys/devices/system/cpu/cpu[0-9]*; do
    if [ -f $c/online ] && [ "$(cat $c/online)" = 0 ]; then
      echo 1 > $c/online
      echo "LINUX-INIT: ${c##*/} online=$(cat $c/online), cpus online $(cat /sys/devices/system/cpu/online)"
    fi
  done
  sleep 0.2
done
"#;

/// An initramfs (uncompressed newc cpio) with busybox, /dev/console and [`INIT`].
fn initramfs(dir: &Path, busybox: &Path) -> PathBuf {
    let mut c = Vec::new();
    let bb = std::fs::read(busybox).expect("read busybox");
    let mut ino = 1..;
    let mut next = || ino.next().unwrap_or(0);
    for d in ["bin", "dev", "proc", "sys"] {
        cpio_entry(&mut c, next(), d, 0o040755, (0, 0), &[]);
    }
    cpio_entry(&mut c, next(), "dev/console", 0o020600, (5, 1), &[]);
    cpio_entry(&mut c, next(), "bin/busybox", 0o100755, (0, 0), &bb);
    cpio_entry(&mut c, next(), "init", 0o100755, (0, 0), INIT.as_bytes());
    cpio_entry(&mut c, next(), "TRAILER!!!", 0, (0, 0), &[]);
    let p = dir.join("initramfs.cpio");
    std::fs::write(&p, c).expect("write initramfs");
    p
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

/// The ROM's TSEG base from its "SMRAM locked: TSEG 0x…+1 MiB" line.
fn tseg_base(output: &str) -> u64 {
    let l = output
        .lines()
        .find_map(|l| l.split("SMRAM locked: TSEG 0x").nth(1))
        .expect("SMRAM locked line");
    u64::from_str_radix(l.split('+').next().unwrap_or(""), 16).expect("TSEG base")
}

#[test]
fn linux_boots_with_qemus_acpi_tables_to_the_missing_root_fs() {
    host_rom_only!();
    let Some(kernel) = kernel("linux_boots_with_qemus_acpi_tables") else {
        return;
    };
    let o = boot(&linux_vm("1,maxcpus=4", &kernel, None), T);
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
    let tseg = tseg_base(out);
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

#[test]
fn linux_runs_init_and_onlines_cpus_that_smm_relocated_after_device_add() {
    host_rom_only!();
    let (Some(kernel), Some(busybox)) = (
        kernel("linux_onlines_hot_added_cpus"),
        busybox("linux_onlines_hot_added_cpus"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = initramfs(dir.path(), &busybox);
    let cfg = linux_vm("1,maxcpus=4", &kernel, Some(&initrd)).with_qmp();
    let mut vm = Vm::start(&cfg).expect("start QEMU");
    let entered = vm
        .wait_for("entering Linux at", T)
        .expect("ROM enters Linux");
    let init = vm.wait_for(INIT_UP, T).expect("Linux runs /init");
    let up = vm.wait_for_line(INIT_UP, T).expect("init line");
    assert!(up.ends_with("cpus online 0"), "{up}");
    let q = vm.qmp.as_mut().expect("QMP");
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    assert_eq!(free.len(), 3, "{free:?}");
    let mut onlined = Vec::new();
    for (i, cpu) in free.iter().take(2).enumerate() {
        let t0 = Instant::now();
        let q = vm.qmp.as_mut().expect("QMP");
        q.device_add_cpu(cpu, &format!("hp{i}"))
            .expect("device_add");
        let n = i + 1;
        vm.wait_for_line(&format!("LINUX-INIT: cpu{n} online=1"), T)
            .expect("Linux onlines the hot-added CPU");
        onlined.push(t0.elapsed());
    }
    let out = vm.output();
    for apic in [1, 2] {
        assert!(
            out.contains(&format!(
                "[SMM INFO ] relocated APIC ID {apic} to slot {apic}"
            )),
            "SMM relocated APIC ID {apic}:\n{out}"
        );
    }
    assert!(out.contains("CPU1 has been hot-added"), "{out}");
    assert!(
        out.contains("LINUX-INIT: cpu2 online=1, cpus online 0-2"),
        "{out}"
    );
    eprintln!(
        "QEMU start -> ROM enters Linux {entered:?}, -> /init {init:?}; device_add -> online {onlined:?}"
    );
}

/// QEMU with `-kernel <bytes>`; the ROM must stop with `expected` in its FATAL line.
fn bad_kernel(bytes: &[u8], expected: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let k = dir.path().join("kernel.bin");
    std::fs::write(&k, bytes).expect("write image");
    let o = boot(&linux_vm("1,maxcpus=2", &k, None), T);
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
