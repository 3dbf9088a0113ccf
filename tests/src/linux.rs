//! The Linux test guest: Debian's own kernel and busybox-static, fetched by
//! `scripts/linux-guest` into a cache outside the repository, and an initramfs built here
//! around `tests/guest/init`, whose `GUEST: ` console lines the tests wait for.
//!
//! Environment:
//! - `LINUX_GUEST_CACHE`: the cache `scripts/linux-guest` fills (default
//!   `$HOME/.cache/cpu-hotplug-smm/linux-guest`);
//! - `LINUX_GUEST_REQUIRED=1`: a missing guest fails the tests instead of skipping them
//!   (for CI, which runs `scripts/linux-guest` first).

use crate::{qmp, workspace_root, Vm, VmConfig};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The guest's `/init`, relative to the workspace root.
pub const INIT_SCRIPT: &str = "tests/guest/init";

/// The kernel command line every guest gets: console on the first serial port, only
/// errors from the kernel there (its messages would interleave with the `GUEST: ` lines;
/// the `dmesg` command shows them), and a panic ends QEMU (`-no-reboot`).
pub const BASE_CMDLINE: &str = "console=ttyS0 loglevel=4 panic=-1";

/// Seconds after which `/init` powers the guest off (`guest.timeout`), so that no guest
/// outlives its test even if the harness's kill went astray.
pub const GUEST_TIMEOUT_S: u32 = 300;

/// The Linux guest, ready to boot.
#[derive(Clone, Debug)]
pub struct LinuxGuest {
    /// Debian's kernel image.
    pub kernel: PathBuf,
    /// The initramfs built from busybox and [`INIT_SCRIPT`].
    pub initrd: PathBuf,
    /// busybox-static's binary.
    pub busybox: PathBuf,
    /// The kernel's Debian package and version, e.g. `linux-image-6.1.0-57-amd64 6.1.192-3`.
    pub kernel_package: String,
}

impl LinuxGuest {
    /// A VM that boots this guest with `-smp smp`, 512 MiB and `extra_append` after
    /// [`BASE_CMDLINE`]. The firmware is left at the ROM under test; tests that need
    /// QEMU's own add [`VmConfig::qemu_default_firmware`].
    pub fn vm_config(&self, smp: &str, extra_append: &str) -> VmConfig {
        let append = format!("{BASE_CMDLINE} guest.timeout={GUEST_TIMEOUT_S} {extra_append}");
        let mut cfg = VmConfig::new(smp).linux(&self.kernel, &self.initrd, append.trim_end());
        cfg.mem_mb = 512;
        cfg
    }
}

/// The folder `scripts/linux-guest` fills.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LINUX_GUEST_CACHE") {
        return d.into();
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    Path::new(&home).join(".cache/cpu-hotplug-smm/linux-guest")
}

static GUEST: OnceLock<Result<LinuxGuest, String>> = OnceLock::new();

/// The guest: the kernel and busybox from the cache, the initramfs built (once per
/// process, reused across runs while its content is the same) under `target/linux-guest/`.
/// A clear error when the cache is missing.
pub fn guest() -> Result<LinuxGuest, String> {
    GUEST.get_or_init(load).clone()
}

/// For tests: the guest, or `None` after printing why the test is skipped. With
/// `LINUX_GUEST_REQUIRED=1` a missing guest panics instead.
pub fn guest_or_skip() -> Option<LinuxGuest> {
    match guest() {
        Ok(g) => Some(g),
        Err(e) if std::env::var_os("LINUX_GUEST_REQUIRED").is_some_and(|v| v == "1") => {
            panic!("{e} (LINUX_GUEST_REQUIRED=1)")
        }
        Err(e) => {
            eprintln!("Linux guest test skipped: {e}");
            None
        }
    }
}

/// For the Linux guest tests: the guest, or `None` after printing why the test is skipped.
/// On the host ROM that is [`guest_or_skip`]. A coreboot.rom in `HOST_ROM` boots Linux as
/// its own payload, from CBFS, so the tests boot the ROM in `LINUX_ROM` instead (made by
/// `coreboot-config/configure --linux-test`, whose command line is [`BASE_CMDLINE`] with
/// `guest.timeout=`[`GUEST_TIMEOUT_S`]: scenarios that need more say it on the console).
pub fn guest_for_this_rom() -> Option<LinuxGuest> {
    if !crate::testing_host_rom() && coreboot_linux_rom().is_none() {
        eprintln!(
            "Linux guest test skipped: HOST_ROM is a coreboot.rom; set LINUX_ROM to one \
             that boots the guest (coreboot-config/configure --linux-test)"
        );
        return None;
    }
    guest_or_skip()
}

/// The coreboot.rom with the Linux guest as its payload (`LINUX_ROM`).
pub fn coreboot_linux_rom() -> Option<PathBuf> {
    std::env::var_os("LINUX_ROM").map(PathBuf::from)
}

fn load() -> Result<LinuxGuest, String> {
    let cache = cache_dir();
    let paths = cache.join("paths");
    let text = std::fs::read_to_string(&paths).map_err(|e| {
        format!(
            "no Linux guest in {} ({}: {e}): run scripts/linux-guest (as root on Debian 12) to fetch it",
            cache.display(),
            paths.display()
        )
    })?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
            .ok_or_else(|| {
                format!(
                    "{} has no {key}=: run scripts/linux-guest again",
                    paths.display()
                )
            })
    };
    let kernel = PathBuf::from(get("vmlinuz")?);
    let busybox = PathBuf::from(get("busybox")?);
    for f in [&kernel, &busybox] {
        if !f.is_file() {
            return Err(format!(
                "{} (named in {}) is missing: run scripts/linux-guest again",
                f.display(),
                paths.display()
            ));
        }
    }
    let init_path = workspace_root().join(INIT_SCRIPT);
    let init = std::fs::read(&init_path).map_err(|e| format!("{}: {e}", init_path.display()))?;
    let bb = std::fs::read(&busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    let cpio = initramfs(&bb, &init).map_err(|e| format!("building the initramfs: {e}"))?;
    let initrd = store(&cpio).map_err(|e| format!("writing the initramfs: {e}"))?;
    Ok(LinuxGuest {
        kernel,
        initrd,
        busybox,
        kernel_package: get("kernel").unwrap_or_default(),
    })
}

/// The initramfs: a newc cpio archive with busybox at `/bin/busybox` and `init` at
/// `/init`; `/init` installs the applet links at boot (`busybox --install -s`).
///
/// Written with the `cpio` crate's newc builder. Not compressed: the kernel unpacks a
/// plain newc archive as it is, and gzip would save about 1 MiB at the cost of
/// decompressing it under TCG on every boot.
pub fn initramfs(busybox: &[u8], init: &[u8]) -> std::io::Result<Vec<u8>> {
    const DIR: u32 = 0o040755;
    const EXEC: u32 = 0o100755;
    const SYMLINK: u32 = 0o120777;
    // A character device, root only: the console the kernel opens for init (5:1).
    const CONSOLE: u32 = 0o020600;
    let entries: [(&str, u32, &[u8]); 9] = [
        ("bin", DIR, b""),
        ("dev", DIR, b""),
        ("dev/console", CONSOLE, b""),
        ("proc", DIR, b""),
        ("sys", DIR, b""),
        ("tmp", DIR, b""),
        ("bin/busybox", EXEC, busybox),
        ("bin/sh", SYMLINK, b"busybox"),
        ("init", EXEC, init),
    ];
    let mut out = Vec::with_capacity(busybox.len() + init.len() + 4096);
    for (ino, (name, mode, data)) in (1u32..).zip(entries) {
        let size = u32::try_from(data.len())
            .map_err(|_| std::io::Error::other(format!("{name} is larger than 4 GiB")))?;
        let (major, minor) = if mode == CONSOLE { (5, 1) } else { (0, 0) };
        // mtime 0 and fixed inode numbers: the same inputs give the same archive.
        let mut w = cpio::newc::Builder::new(name)
            .ino(ino)
            .mode(mode)
            .nlink(if mode == DIR { 2 } else { 1 })
            .rdev_major(major)
            .rdev_minor(minor)
            .write(&mut out, size);
        w.write_all(data)?;
        w.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    Ok(out)
}

/// Where built guest files go: `target/linux-guest/`.
fn target_dir() -> PathBuf {
    let t = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| workspace_root().join("target"));
    t.join("linux-guest")
}

/// Store `cpio` as `target/linux-guest/initramfs-<hash>.cpio` unless a file of that name
/// is there: named by content, so concurrent test processes never write a file another
/// one is booting, and a changed `/init` or busybox gives a new file.
fn store(cpio: &[u8]) -> std::io::Result<PathBuf> {
    let dir = target_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("initramfs-{:016x}.cpio", fnv1a(cpio)));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == cpio.len() as u64) {
        return Ok(path);
    }
    let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
    tmp.write_all(cpio)?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// FNV-1a, 64 bits: a hash that stays the same across Rust releases, for file names.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Boot to `GUEST: ready` under TCG takes 5-6 s on an idle machine; other QEMU tests may
/// share the two cores.
pub const BOOT: Duration = Duration::from_secs(120);
/// One hot-add or hot-remove: well under a second when idle.
pub const STEP: Duration = Duration::from_secs(30);

/// Which firmware setup a guest runs on.
pub enum Side {
    /// The host ROM's test image with SMM (the product), on this QEMU (default `$QEMU`).
    Smm(Option<PathBuf>),
    /// The same image without SMM on this QEMU (the baseline knob).
    NoSmm(PathBuf),
}

/// A booted guest: the VM, the ROM's TSEG base (SMM side) and how many `GUEST: status`
/// answers it gave so far.
pub struct Guest {
    /// The running VM.
    pub vm: Vm,
    tseg: Option<u64>,
    statuses: usize,
    smrams: usize,
    /// One Linux guest at a time per test process ([`ONE_AT_A_TIME`]).
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Linux guests of one test process run one after the other: two guests of four vCPUs on
/// a two-core machine starve each other under TCG, and QEMU 7.2.22 then stalls a guest's
/// CPU offlining for tens of seconds (`docs/qemu.md#q-offline-stall`).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A removal under TCG on a loaded machine: Debian's 7.2.22 was seen to take 22 s
/// (`docs/qemu.md#q-offline-stall`).
pub const REMOVE_STEP: Duration = Duration::from_secs(90);
/// On Debian's 7.2.22 (`docs/qemu.md#q-offline-stall`), how long [`Guest::remove`] waits
/// for the guest to report a removed CPU gone before it looks for a stuck guest CPU (the
/// kernel's soft-lockup report comes after about 22 s); without one it waits
/// [`REMOVE_STEP`] more.
pub const STUCK_AFTER: Duration = Duration::from_secs(35);

/// Boot `g` with `-smp smp` and `append` on `side`'s firmware and wait for `GUEST: ready`.
pub fn boot(g: &LinuxGuest, smp: &str, append: &str, side: Side) -> Guest {
    // A test that panicked while holding the turn leaves it poisoned; the turn itself is fine.
    let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = match coreboot_linux_rom().filter(|_| !crate::testing_host_rom()) {
        Some(rom) => {
            let mut cfg = VmConfig::new(smp).with_qmp();
            cfg.firmware = crate::Firmware::Rom(rom);
            cfg.mem_mb = 512;
            cfg.console_input = true;
            cfg
        }
        None => g.vm_config(smp, append).test_image().with_qmp(),
    };
    match side {
        Side::Smm(q) => cfg.qemu = q,
        Side::NoSmm(q) => {
            cfg.qemu = Some(q);
            cfg.smm = false;
            cfg = cfg.fw_cfg(crate::KNOB_NO_SMM.0, crate::KNOB_NO_SMM.1);
        }
    }
    let qemu_name = match &cfg.qemu {
        Some(q) => crate::check_qemu(q).unwrap_or_default(),
        None => crate::qemu_version(),
    };
    let mut vm = Vm::start(&cfg).expect("start QEMU");
    let ready = vm
        .wait_for_line("GUEST: ready", BOOT)
        .unwrap_or_else(|e| panic!("{e}\n{}\n--- stderr ---\n{}", vm.output(), vm.stderr()));
    eprintln!(
        "{} on {}: {ready} after {:?}",
        g.kernel_package,
        qemu_name,
        vm.started.elapsed()
    );
    assert_eq!(field(&ready, "cpus"), field(&ready, "present"), "{ready}");
    let tseg = tseg_base(&vm.output());
    Guest {
        vm,
        tseg,
        statuses: 0,
        smrams: 0,
        _turn: turn,
    }
}

impl Guest {
    /// The VM's QMP connection.
    pub fn qmp(&mut self) -> &mut qmp::Qmp {
        self.vm.qmp.as_mut().unwrap()
    }

    /// The `n`-th complete console line starting with `prefix` (1-based), waited for.
    pub fn nth_line(&mut self, prefix: &str, n: usize) -> String {
        self.wait_line(prefix, n, STEP)
    }

    /// [`Self::nth_line`] with its own bound.
    fn wait_line(&mut self, prefix: &str, n: usize, bound: Duration) -> String {
        match self.vm.wait_for_lines(prefix, n, bound) {
            Ok(mut l) => l.pop().unwrap(),
            Err(e) => panic!(
                "{prefix}: {e}\n--- CPUs (QEMU's view) ---\n{}\n--- console ---\n{}",
                self.cpu_states(),
                self.vm.output()
            ),
        }
    }

    /// Each CPU's RIP, halt and SMM state from HMP `info registers -a` (for failures).
    fn cpu_states(&mut self) -> String {
        let Some(q) = self.vm.qmp.as_mut() else {
            return "no QMP".into();
        };
        match q.hmp("info registers -a") {
            Ok(r) => r
                .lines()
                .filter(|l| l.starts_with("CPU#") || l.starts_with("RIP=") || l.contains("SMM="))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => e,
        }
    }

    /// The guest's `status` answer: (online, present).
    pub fn status(&mut self) -> (String, String) {
        self.vm.send_console("status").expect("console");
        self.statuses += 1;
        let st = self.nth_line("GUEST: status ", self.statuses);
        (
            field(&st, "cpus").unwrap_or("").to_string(),
            field(&st, "present").unwrap_or("").to_string(),
        )
    }

    /// Plug `n` free CPU slots back to back as `{prefix}0`, `{prefix}1`, …; returns their
    /// `query-hotpluggable-cpus` entries and when the first was sent.
    pub fn plug(&mut self, n: usize, prefix: &str) -> (Vec<serde_json::Value>, Instant) {
        let q = self.qmp();
        let free = q.free_cpus().expect("query-hotpluggable-cpus");
        assert!(free.len() >= n, "only {} free CPU slots", free.len());
        let t = Instant::now();
        for (i, cpu) in free.iter().take(n).enumerate() {
            q.device_add_cpu(cpu, &format!("{prefix}{i}"))
                .expect("device_add");
        }
        (free.into_iter().take(n).collect(), t)
    }

    /// Wait for `GUEST: online` lines number `from + 1 ..= from + n`; each must say the
    /// pinned task ran there. Returns (CPU number, APIC ID) per line.
    pub fn onlined(&mut self, from: usize, n: usize) -> Vec<(u32, u32)> {
        let lines = self
            .vm
            .wait_for_lines("GUEST: online ", from + n, STEP)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.vm.output()));
        lines[from..]
            .iter()
            .map(|l| {
                assert_eq!(field(l, "pinned"), Some("ok"), "{l}");
                let num = |k| field(l, k).and_then(|v| v.parse().ok());
                (
                    num("cpu").unwrap_or_else(|| panic!("{l}")),
                    num("apic").unwrap_or_else(|| panic!("{l}")),
                )
            })
            .collect()
    }

    /// `device_del` of `id`; waits for the `nth` `GUEST: gone` line and QEMU's deletion.
    /// Returns device_del → gone line, or `None` when Debian's 7.2.22 left a guest CPU
    /// stuck after SMM ejected the CPU (`docs/qemu.md#q-offline-stall`): SMM's eject and
    /// QEMU's deletion are still checked, the defect is printed, and the caller ends its
    /// guest-side checks there.
    pub fn remove(&mut self, id: &str, nth: usize) -> Option<Duration> {
        let t = Instant::now();
        let sent = crate::unplug::device_del(self.qmp(), id).expect("device_del");
        if crate::unplug::qemu_replugs(&crate::qemu_binary().unwrap()) {
            self.wait_line("GUEST: gone ", nth, REMOVE_STEP);
        } else if self
            .vm
            .wait_for_lines("GUEST: gone ", nth, STUCK_AFTER)
            .is_err()
        {
            let out = self.smm_log();
            if out.contains("soft lockup") {
                // SMM's part held: this many ejects done in SMM, and QEMU deleted the CPU.
                let ejected = out.matches("[SMM INFO ] ejected APIC ID").count();
                assert!(
                    ejected >= nth,
                    "SMM did not eject for device_del {id}:\n{out}"
                );
                crate::unplug::wait_deleted(self.qmp(), id, sent, STEP).expect("DEVICE_DELETED");
                assert!(
                    !crate::unplug::plugged(self.qmp(), id).unwrap(),
                    "QEMU still lists {id}"
                );
                eprintln!(
                    "QEMU DEFECT, guest side not checked further: {}: after SMM ejected the \
                     CPU of {id}, a guest CPU is stuck in the kernel (soft lockup) \
                     (docs/qemu.md#q-offline-stall); QEMU's view:\n{}",
                    crate::qemu_version(),
                    self.cpu_states()
                );
                return None;
            }
            self.wait_line("GUEST: gone ", nth, REMOVE_STEP);
        }
        let to_gone = t.elapsed();
        if to_gone > Duration::from_secs(10) {
            eprintln!("slow removal of {id}: {to_gone:?} (docs/qemu.md#q-offline-stall)");
        }
        crate::unplug::wait_deleted(self.qmp(), id, sent, STEP).expect("DEVICE_DELETED");
        assert!(
            !crate::unplug::plugged(self.qmp(), id).unwrap(),
            "QEMU still lists {id}"
        );
        Some(to_gone)
    }

    /// SMRAM as the OS sees it must still be locked: 0x9C locked, SMRAMC with D_LCK and
    /// without D_OPEN, TSEG enabled, TSEG and the window read all-ones.
    pub fn assert_smram_locked(&mut self, when: &str) {
        let Some(tseg) = self.tseg else { return };
        self.vm
            .send_console(&format!("smram {tseg:#x}"))
            .expect("console");
        self.smrams += 1;
        let l = self.nth_line("GUEST: smram ", self.smrams);
        let hex = |k: &str| {
            field(&l, k)
                .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .unwrap_or_else(|| panic!("{k} in {l}"))
        };
        let smramc = hex("smramc");
        assert!(
            hex("mch9c") == 0x02
                && smramc & 0x10 != 0
                && smramc & 0x40 == 0
                && hex("esmramc") & 1 != 0
                && hex("tseg") == 0xffff_ffff
                && hex("window") == 0xffff_ffff,
            "SMRAM not locked {when}: {l}"
        );
    }

    /// The console with SMM's log lines: the host ROM's SMM writes them to the serial
    /// port; coreboot's (`CPU_HOTPLUG_RUST_LOG_CBMEM`) to the CBMEM console, which Linux's
    /// built-in drivers do not show, so they are read from guest memory over QMP
    /// (`pmemsave`) at the address coreboot's log gives and appended.
    pub fn smm_log(&mut self) -> String {
        let out = self.vm.output();
        if crate::testing_host_rom() {
            return out;
        }
        let Some((addr, size)) = cbmem_console(&out) else {
            panic!("no CBMEM console in coreboot's log (a CONSOLE line of its CBMEM list)\n{out}");
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("cbmem-console");
        self.qmp()
            .execute(
                "pmemsave",
                serde_json::json!({"val": addr, "size": size, "filename": file.display().to_string()}),
            )
            .expect("pmemsave");
        let raw = std::fs::read(&file).expect("pmemsave file");
        let text = cbmem_console_text(&raw);
        let smm: Vec<&str> = text.lines().filter(|l| l.starts_with("[SMM ")).collect();
        assert!(
            !smm.is_empty() || !out.contains("GUEST: new "),
            "no SMM lines in the CBMEM console: was LINUX_ROM built with \
             CPU_HOTPLUG_RUST_LOG_CBMEM (configure --linux-test)?\n{out}"
        );
        format!(
            "{out}\n--- SMM log from the CBMEM console ---\n{}\n",
            smm.join("\n")
        )
    }

    /// Every CPU Linux reports online with these APIC IDs was relocated by SMM into a slot
    /// of its own (SMM's log, [`Self::smm_log`]).
    pub fn assert_own_slots(&mut self, apics: &[u32]) {
        let out = self.smm_log();
        let rel = relocations(&out);
        for a in apics {
            assert!(
                rel.iter().any(|(ra, _)| ra == a),
                "SMM did not relocate APIC ID {a}: {rel:?}\n{out}"
            );
        }
        // The last relocation of each APIC ID is its current slot; no two share one.
        let mut last = std::collections::BTreeMap::new();
        for (a, s) in rel {
            last.insert(a, s);
        }
        let slots: BTreeSet<u32> = last.values().copied().collect();
        assert_eq!(slots.len(), last.len(), "two CPUs in one slot: {last:?}");
        assert!(
            !slots.contains(&0),
            "a hot-added CPU in the boot CPU's slot: {last:?}"
        );
    }

    /// No `GUEST: error` line; power the guest off.
    pub fn finish(mut self) {
        assert!(
            !self.vm.output().contains("GUEST: error"),
            "{}",
            self.vm.output()
        );
        self.vm.send_console("poweroff").unwrap();
        let o = self.vm.wait_exit(STEP);
        if std::env::var_os("QEMU_TESTS_SHOW").is_some() {
            eprintln!("--- serial ---\n{}", o.output);
        }
    }
}

/// The ROM's TSEG base: the host ROM's `SMRAM locked: TSEG 0x…+1 MiB` line, or
/// coreboot's `SMRAM       : 0x… 0x…` line of its SMM memory map.
pub fn tseg_base(console: &str) -> Option<u64> {
    let hex = |v: &str| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok();
    if let Some(l) = console
        .lines()
        .find_map(|l| l.split("SMRAM locked: TSEG 0x").nth(1))
    {
        return hex(l.split('+').next()?);
    }
    let l = console
        .lines()
        .find_map(|l| l.split("SMRAM       : ").nth(1))?;
    hex(l.split_whitespace().next()?)
}

/// Address and size of coreboot's CBMEM console, from the `CONSOLE  2. 0x… 0x…` line of
/// the CBMEM list coreboot logs.
pub fn cbmem_console(console: &str) -> Option<(u64, u64)> {
    let l = console.lines().find_map(|l| {
        let r = l.split("CONSOLE ").nth(1)?;
        let mut w = r.split_whitespace();
        w.next()?.strip_suffix('.')?;
        Some((w.next()?.to_string(), w.next()?.to_string()))
    })?;
    // Only the digits: coreboot colours its log lines with escape sequences.
    let hex = |v: &str| {
        let digits: String = v
            .strip_prefix("0x")?
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        u64::from_str_radix(&digits, 16).ok()
    };
    Some((hex(&l.0)?, hex(&l.1)?))
}

/// The text of a CBMEM console (header: size, cursor with flags in bits 28-31), oldest
/// byte first when the ring has wrapped.
pub fn cbmem_console_text(raw: &[u8]) -> String {
    let word = |i: usize| {
        raw.get(i..i + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let body = raw.get(8..).unwrap_or(&[]);
    let size = word(0).min(body.len());
    let cursor = word(4) & ((1 << 28) - 1);
    let wrapped = word(4) & (1 << 31) != 0;
    let cursor = cursor.min(size);
    let bytes: Vec<u8> = if wrapped {
        body[cursor..size]
            .iter()
            .chain(&body[..cursor])
            .copied()
            .collect()
    } else {
        body[..cursor].to_vec()
    };
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `(APIC ID, slot)` of each `relocated APIC ID a to slot s` line SMM printed.
pub fn relocations(console: &str) -> Vec<(u32, u32)> {
    console
        .lines()
        .filter_map(|l| {
            let r = l.split("[SMM INFO ] relocated APIC ID ").nth(1)?;
            let mut w = r.split_whitespace();
            let apic = w.next()?.parse().ok()?;
            let slot = w.nth(2)?.parse().ok()?;
            Some((apic, slot))
        })
        .collect()
}

/// The value of `key=value` in a `GUEST: ` line, e.g. `field(line, "apic")`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initramfs_reads_back_with_every_entry() {
        let a = initramfs(b"\x7fELF-busybox", b"#!/bin/busybox sh\necho hi\n").unwrap();
        assert_eq!(
            a,
            initramfs(b"\x7fELF-busybox", b"#!/bin/busybox sh\necho hi\n").unwrap()
        );
        let mut r = &a[..];
        let mut seen = Vec::new();
        loop {
            let mut rd = cpio::newc::Reader::new(r).unwrap();
            if rd.entry().is_trailer() {
                break;
            }
            let e = rd.entry();
            let name = e.name().to_string();
            seen.push((name.clone(), e.mode(), e.rdev_major(), e.rdev_minor()));
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut rd, &mut data).unwrap();
            match name.as_str() {
                "init" => assert_eq!(data, b"#!/bin/busybox sh\necho hi\n"),
                "bin/busybox" => assert_eq!(data, b"\x7fELF-busybox"),
                "bin/sh" => assert_eq!(data, b"busybox"),
                _ => assert!(data.is_empty()),
            }
            r = rd.finish().unwrap();
        }
        let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "dev",
                "dev/console",
                "proc",
                "sys",
                "tmp",
                "bin/busybox",
                "bin/sh",
                "init"
            ]
        );
        assert!(seen.contains(&("dev/console".into(), 0o020600, 5, 1)));
        assert!(seen.contains(&("init".into(), 0o100755, 0, 0)));
    }

    #[test]
    fn field_finds_a_value_by_key() {
        let l = "GUEST: online cpu=2 apic=3 pinned=ok";
        assert_eq!(field(l, "cpu"), Some("2"));
        assert_eq!(field(l, "apic"), Some("3"));
        assert_eq!(field(l, "pinned"), Some("ok"));
        assert_eq!(field(l, "pin"), None);
    }
}
