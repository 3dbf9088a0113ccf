//! Harness for the QEMU integration tests: builds the firmware images once, boots QEMU
//! q35 with `smm=on` under TCG, captures the serial console, bounds every run with a
//! timeout, and talks QMP when a test asks for it.
//!
//! Environment:
//! - `QEMU`: the qemu-system-x86_64 binary (default: `qemu-system-x86_64` on PATH);
//! - `HOST_ROM`: the `-bios` image to test (default: the test image
//!   `build/host-rom-test.rom`, built by `scripts/build` on first use, whose SMM answers the
//!   diagnostic query the per-CPU slot checks need); point it at a coreboot.rom to run the
//!   same tests there;
//! - `PAYLOAD_ELF`: the payload (default `build/payload.elf`);
//! - `LINUX_GUEST_CACHE`, `LINUX_GUEST_REQUIRED`: the Linux guest ([`linux`]).
//!
//! Tests of the test knobs use the test image whatever `HOST_ROM` says
//! ([`VmConfig::test_image`]); tests of the production ROM use `build/host-rom.rom`
//! ([`VmConfig::production_image`]).

pub mod linux;
pub mod qmp;
pub mod unplug;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// QEMU exit status when the payload printed `RESULT: PASS` (isa-debug-exit 0x10).
pub const EXIT_PASS: i32 = 33;
/// `RESULT: FAIL ...` (0x11).
pub const EXIT_FAIL: i32 = 35;
/// The host ROM stopped the boot (0x12).
pub const EXIT_FIRMWARE_FATAL: i32 = 37;

/// The workspace root (where `build/` and `scripts/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The `MAX_CPUS` default `coreboot-config/site-local/Kconfig` sets while the option is on:
/// the most slots a coreboot.rom built with it lays out.
pub fn coreboot_max_cpus() -> u32 {
    let rel = "coreboot-config/site-local/Kconfig";
    let k = std::fs::read_to_string(workspace_root().join(rel)).expect(rel);
    k.split("config MAX_CPUS")
        .nth(1)
        .and_then(|r| r.split("default ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a MAX_CPUS default in site-local/Kconfig")
}

/// The QEMU binary, checked to run; a clear error when it is missing.
pub fn qemu_binary() -> Result<PathBuf, String> {
    let bin = std::env::var_os("QEMU")
        .map(PathBuf::from)
        .unwrap_or_else(|| "qemu-system-x86_64".into());
    check_qemu(&bin)?;
    Ok(bin)
}

/// `Ok(version line)` if `bin` runs, else an error that says what to install.
pub fn check_qemu(bin: &Path) -> Result<String, String> {
    match Command::new(bin).arg("--version").output() {
        Ok(o) if o.status.success() => {
            Ok(String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        }
        Ok(o) => Err(format!("QEMU at {} failed to run: {}", bin.display(), String::from_utf8_lossy(&o.stderr))),
        Err(e) => Err(format!(
            "QEMU not found at {} ({e}): install it (apt-get install -y qemu-system-x86) or set QEMU=/path/to/qemu-system-x86_64",
            bin.display()
        )),
    }
}

/// File name of the production host ROM in `build/`.
pub const PRODUCTION_ROM: &str = "host-rom.rom";
/// File name of the host ROM's test image in `build/` (test knobs, diagnostic query).
pub const TEST_ROM: &str = "host-rom-test.rom";

/// The test image's negative-control knob: fw_cfg file and the one value it acts on (the
/// default-SMBASE window left open, nothing negotiated).
pub const KNOB_OPEN_WINDOW: (&str, &str) = (
    "opt/host-rom/insecure-open-default-smbase",
    "leave-window-open",
);
/// The test image's benchmark-baseline knob: fw_cfg file and the one value it acts on (no
/// SMM set up; only on a machine without SMM).
pub const KNOB_NO_SMM: (&str, &str) = ("opt/host-rom/baseline-no-smm", "no-smm-baseline");
/// The test image's small-stack-pool knob: fw_cfg file and the one value it acts on (SMM's
/// stack pool holds one stack).
pub const KNOB_ONE_STACK: (&str, &str) = ("opt/host-rom/stack-pool", "one-stack");

/// QEMU binaries to try for a machine without SMM (`-machine q35,smm=off`): `$QEMU_ALT`,
/// then `/opt/qemu10/qemu-system-x86_64` when present (Debian's 7.2 keeps SMM with
/// `smm=off`; 10.0.2 removes it). Whether one really has no SMM, the baseline knob finds
/// out at boot.
pub fn no_smm_qemu_candidates() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::env::var_os("QEMU_ALT")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    let opt = PathBuf::from("/opt/qemu10/qemu-system-x86_64");
    if opt.exists() && !v.contains(&opt) {
        v.push(opt);
    }
    v.retain(|q| check_qemu(q).is_ok());
    v
}

/// Whether the ROM under test is this project's host ROM, either image (not e.g. a
/// coreboot.rom given in `HOST_ROM`). Tests of host-ROM-only features and log lines check
/// this.
pub fn testing_host_rom() -> bool {
    match std::env::var_os("HOST_ROM") {
        None => true,
        Some(p) => Path::new(&p)
            .file_name()
            .is_some_and(|n| n == PRODUCTION_ROM || n == TEST_ROM),
    }
}

/// What the ROM under test prints for one fact: `host_rom`, the host ROM's words, or
/// `coreboot`, those of a coreboot.rom built with `coreboot-config` (any ROM in `HOST_ROM`
/// other than the host ROM's two images is taken for one), so line-level checks run on
/// both.
pub fn says<'a>(host_rom: &'a str, coreboot: &'a str) -> &'a str {
    if testing_host_rom() {
        host_rom
    } else {
        coreboot
    }
}

/// Skip (pass with a note) a test of a host-ROM-only feature when another ROM is tested.
#[macro_export]
macro_rules! host_rom_only {
    () => {
        if !$crate::testing_host_rom() {
            eprintln!("host-ROM-only part skipped: HOST_ROM is another firmware");
            return;
        }
    };
}

/// The first line of `QEMU --version`.
pub fn qemu_version() -> String {
    qemu_binary()
        .and_then(|b| check_qemu(&b))
        .unwrap_or_default()
}

/// Whether this QEMU ignores SIPIs sent to a CPU in SMM under TCG ("i386/cpu: Prevent
/// delivering SIPI during SMM in TCG mode", upstream 10.2, backported by Debian to
/// 7.2.22). Security tests are authoritative only there.
pub fn qemu_fixes_sipi_in_smm() -> bool {
    let v = qemu_version();
    let Some(num) = v
        .split("version ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
    else {
        return false;
    };
    let parts: Vec<u32> = num.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [7, 2, micro, ..] => *micro >= 22 && v.contains("Debian"),
        [major, minor, ..] => (*major, *minor) >= (10, 2),
        _ => false,
    }
}

static IMAGES: OnceLock<Result<(PathBuf, PathBuf), String>> = OnceLock::new();
static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// Paths of the ROM under test and the payload: `HOST_ROM` when set, else the test image
/// `build/host-rom-test.rom`. Both host ROM images are built with `scripts/build` once per
/// process unless `HOST_ROM` names a prebuilt ROM.
pub fn images() -> (PathBuf, PathBuf) {
    let r = IMAGES.get_or_init(|| {
        let root = workspace_root();
        let payload = std::env::var_os("PAYLOAD_ELF")
            .map(PathBuf::from)
            .unwrap_or(root.join("build/payload.elf"));
        if let Some(rom) = std::env::var_os("HOST_ROM") {
            return Ok((PathBuf::from(rom), payload));
        }
        build_host_roms()?;
        Ok((root.join("build").join(TEST_ROM), payload))
    });
    match r {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
}

/// `build/<name>`, one of the host ROM images, built with `scripts/build` once per process
/// (also when `HOST_ROM` names another ROM).
pub fn host_rom_image(name: &str) -> PathBuf {
    if let Err(e) = build_host_roms() {
        panic!("{e}");
    }
    workspace_root().join("build").join(name)
}

/// Run `scripts/build` once per process.
fn build_host_roms() -> Result<(), String> {
    BUILT
        .get_or_init(|| {
            let root = workspace_root();
            let out = Command::new(root.join("scripts/build"))
                .current_dir(&root)
                .output()
                .map_err(|e| format!("cannot run scripts/build: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "scripts/build failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(())
        })
        .clone()
}

/// The firmware a VM boots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Firmware {
    /// The ROM under test: `HOST_ROM`, else the test image ([`images`]).
    #[default]
    UnderTest,
    /// This `-bios` image.
    Rom(PathBuf),
    /// QEMU's own default firmware (SeaBIOS on q35): no `-bios`.
    QemuDefault,
}

/// A Linux kernel for the firmware to boot: QEMU's `-kernel`, `-initrd` and `-append`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxBoot {
    /// The kernel image (bzImage).
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub append: String,
}

/// How to start one VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The `-smp` argument, e.g. `2,maxcpus=4`.
    pub smp: String,
    /// Guest RAM in MiB (`-m`).
    pub mem_mb: u32,
    /// More QEMU arguments.
    pub extra: Vec<String>,
    /// Open a QMP socket.
    pub qmp: bool,
    /// The firmware (default: the ROM under test).
    pub firmware: Firmware,
    /// A kernel for the firmware to boot (`-kernel`, `-initrd`, `-append`).
    pub linux: Option<LinuxBoot>,
    /// Let the test write to the serial console ([`Vm::send_console`]).
    pub console_input: bool,
    /// `smm=on` (default); `false` only for the no-SMM benchmark baseline.
    pub smm: bool,
    /// The QEMU binary (default: [`qemu_binary`], from `$QEMU`).
    pub qemu: Option<PathBuf>,
}

impl VmConfig {
    /// A VM with `-smp smp`, 256 MiB, SMM on, the default ROM.
    pub fn new(smp: &str) -> Self {
        Self {
            smp: smp.into(),
            mem_mb: 256,
            extra: Vec::new(),
            qmp: false,
            firmware: Firmware::UnderTest,
            linux: None,
            console_input: false,
            smm: true,
            qemu: None,
        }
    }

    /// Boot the host ROM's test image `build/host-rom-test.rom` (test knobs, diagnostic
    /// query after boot), whatever `HOST_ROM` says.
    pub fn test_image(mut self) -> Self {
        self.firmware = Firmware::Rom(host_rom_image(TEST_ROM));
        self
    }

    /// Boot the production host ROM `build/host-rom.rom` (no test knobs, no diagnostic
    /// query after boot), whatever `HOST_ROM` says.
    pub fn production_image(mut self) -> Self {
        self.firmware = Firmware::Rom(host_rom_image(PRODUCTION_ROM));
        self
    }

    /// Boot QEMU's own firmware (SeaBIOS) instead of a ROM.
    pub fn qemu_default_firmware(mut self) -> Self {
        self.firmware = Firmware::QemuDefault;
        self
    }

    /// Have the firmware boot this kernel and initramfs with command line `append`, and
    /// open the serial console for input ([`Vm::send_console`]).
    pub fn linux(mut self, kernel: &Path, initrd: &Path, append: &str) -> Self {
        self.linux = Some(LinuxBoot {
            kernel: kernel.into(),
            initrd: initrd.into(),
            append: append.into(),
        });
        self.console_input = true;
        self
    }

    /// Add `-fw_cfg name=<name>,string=<value>`.
    pub fn fw_cfg(self, name: &str, value: &str) -> Self {
        self.arg("-fw_cfg")
            .arg(&format!("name={name},string={value}"))
    }

    /// Add one QEMU argument.
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }

    /// Open a QMP socket.
    pub fn with_qmp(mut self) -> Self {
        self.qmp = true;
        self
    }
}

/// A running QEMU. Killed on drop.
pub struct Vm {
    child: Child,
    serial: PathBuf,
    /// The QMP connection, when asked for.
    pub qmp: Option<qmp::Qmp>,
    /// When QEMU was started.
    pub started: Instant,
    _dir: tempfile::TempDir,
    stderr_path: PathBuf,
    console_in: Option<ChildStdin>,
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status (`None` if it could not be collected).
    pub status: Option<ExitStatus>,
    /// The serial console.
    pub output: String,
    /// QEMU's stderr.
    pub stderr: String,
    /// Whether the run was killed at its deadline.
    pub timed_out: bool,
    /// Time from start to exit.
    pub elapsed: Duration,
}

impl Outcome {
    /// QEMU's exit code.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// Panic with the whole console when the payload did not pass. With
    /// `QEMU_TESTS_SHOW=1` the console is printed on success too.
    pub fn assert_pass(&self) {
        if std::env::var_os("QEMU_TESTS_SHOW").is_some() {
            eprintln!("--- serial ---\n{}", self.output);
        }
        assert!(
            self.code() == Some(EXIT_PASS) && self.output.contains("RESULT: PASS"),
            "expected RESULT: PASS (exit {EXIT_PASS}), got exit {:?} timed_out={}\n--- serial ---\n{}\n--- stderr ---\n{}",
            self.code(),
            self.timed_out,
            self.output,
            self.stderr
        );
    }
}

impl Vm {
    /// Start QEMU as `cfg` says (and connect QMP when asked).
    pub fn start(cfg: &VmConfig) -> Result<Vm, String> {
        let qemu = match &cfg.qemu {
            Some(q) => {
                check_qemu(q)?;
                q.clone()
            }
            None => qemu_binary()?,
        };
        let bios = match &cfg.firmware {
            Firmware::UnderTest => Some(images().0),
            Firmware::Rom(b) => Some(b.clone()),
            Firmware::QemuDefault => None,
        };
        if let Some(b) = bios.as_ref().filter(|b| !b.exists()) {
            return Err(format!("ROM {} does not exist", b.display()));
        }
        if let Some(l) = &cfg.linux {
            for f in [&l.kernel, &l.initrd] {
                if !f.exists() {
                    return Err(format!("{} does not exist", f.display()));
                }
            }
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let serial = dir.path().join("serial.log");
        let stderr_path = dir.path().join("stderr.log");
        let mut cmd = Command::new(&qemu);
        let machine = if cfg.smm { "q35,smm=on" } else { "q35,smm=off" };
        cmd.args([
            "-machine",
            machine,
            "-accel",
            "tcg",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-m", &cfg.mem_mb.to_string(), "-smp", &cfg.smp]);
        if let Some(b) = &bios {
            cmd.arg("-bios").arg(b);
        }
        if let Some(l) = &cfg.linux {
            cmd.arg("-kernel")
                .arg(&l.kernel)
                .arg("-initrd")
                .arg(&l.initrd)
                .args(["-append", &l.append]);
        }
        if cfg.console_input {
            // The console is QEMU's stdio: output to the same file, input from a pipe.
            cmd.args(["-serial", "stdio"])
                .stdin(Stdio::piped())
                .stdout(std::fs::File::create(&serial).map_err(|e| e.to_string())?);
        } else {
            cmd.arg("-serial")
                .arg(format!("file:{}", serial.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null());
        }
        cmd.args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-monitor",
            "none",
        ])
        .args(&cfg.extra)
        .stderr(std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?);
        let qmp_path = dir.path().join("qmp.sock");
        if cfg.qmp {
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qmp_path.display()));
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
        let console_in = child.stdin.take();
        let started = Instant::now();
        let mut vm = Vm {
            child,
            serial,
            qmp: None,
            started,
            _dir: dir,
            stderr_path,
            console_in,
        };
        if cfg.qmp {
            vm.qmp = Some(qmp::Qmp::connect(&qmp_path, Duration::from_secs(10))?);
        }
        Ok(vm)
    }

    /// The serial console so far.
    pub fn output(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.serial) {
            let mut b = Vec::new();
            let _ = f.read_to_end(&mut b);
            s = String::from_utf8_lossy(&b).replace('\r', "");
        }
        s
    }

    /// QEMU's exit status once it has exited on its own (`None` while it runs).
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Write `line` and a newline to the serial console (only with
    /// [`VmConfig::console_input`]).
    pub fn send_console(&mut self, line: &str) -> Result<(), String> {
        let w = self
            .console_in
            .as_mut()
            .ok_or("the console takes no input: VmConfig::console_input is off")?;
        w.write_all(format!("{line}\n").as_bytes())
            .and_then(|()| w.flush())
            .map_err(|e| format!("writing to the console: {e}"))
    }

    /// QEMU's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The complete lines of the serial console so far ([`complete_lines`]): a line
    /// QEMU is still writing is left out.
    pub fn lines(&self) -> Vec<String> {
        complete_lines(&self.output(), false)
            .map(String::from)
            .collect()
    }

    /// Wait until a complete console line (one QEMU finished with '\n') contains
    /// `needle`; returns the time since QEMU started. Never matches a line still being
    /// written, so the rest of that line can be asserted on afterwards.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<Duration, String> {
        self.wait_for_line_containing(needle, timeout)
            .map(|_| self.started.elapsed())
    }

    /// Wait until a complete console line starts with `prefix`; returns that whole line.
    /// Once QEMU has exited, its last line counts as complete even without '\n'.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, String> {
        self.wait_for_lines(prefix, 1, timeout)
            .map(|mut v| v.remove(0))
    }

    /// Wait until a complete console line contains `needle`; returns that whole line.
    pub fn wait_for_line_containing(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, String> {
        let what = format!("a line containing {needle:?}");
        wait_lines(&self.serial, &mut self.child, &what, timeout, |lines| {
            lines
                .iter()
                .find(|l| l.contains(needle))
                .map(|l| l.to_string())
        })
        .map_err(|e| format!("{e}\n--- stderr ---\n{}", self.stderr()))
    }

    /// Wait until `n` complete console lines start with `prefix`; returns the first `n`.
    pub fn wait_for_lines(
        &mut self,
        prefix: &str,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<String>, String> {
        let what = format!("{n} line(s) starting with {prefix:?}");
        wait_lines(&self.serial, &mut self.child, &what, timeout, |lines| {
            let v: Vec<String> = lines
                .iter()
                .filter(|l| l.starts_with(prefix))
                .take(n)
                .map(|l| l.to_string())
                .collect();
            (v.len() == n).then_some(v)
        })
        .map_err(|e| format!("{e}\n--- stderr ---\n{}", self.stderr()))
    }

    /// Wait (bounded) for QEMU to exit; kill it on timeout.
    pub fn wait_exit(mut self, timeout: Duration) -> Outcome {
        let end = Instant::now() + timeout;
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < end => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    timed_out = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
            }
        };
        Outcome {
            status,
            output: self.output(),
            stderr: self.stderr(),
            timed_out,
            elapsed: self.started.elapsed(),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boot `cfg` to completion (the payload exits QEMU) within `timeout`.
pub fn boot(cfg: &VmConfig, timeout: Duration) -> Outcome {
    match Vm::start(cfg) {
        Ok(vm) => vm.wait_exit(timeout),
        Err(e) => panic!("{e}"),
    }
}

/// QOM path of the first device of `type_name` under /machine (depth-first, bounded).
pub fn find_device(q: &mut qmp::Qmp, type_name: &str) -> Option<String> {
    let mut stack = vec!["/machine".to_string()];
    let mut visited = 0;
    while let Some(p) = stack.pop() {
        visited += 1;
        if visited > 2000 {
            return None;
        }
        let Ok(list) = q.execute("qom-list", serde_json::json!({"path": p})) else {
            continue;
        };
        for e in list.as_array().into_iter().flatten() {
            let (Some(name), Some(ty)) = (e["name"].as_str(), e["type"].as_str()) else {
                continue;
            };
            if ty == format!("child<{type_name}>") {
                return Some(format!("{p}/{name}"));
            }
            if ty.starts_with("child<") {
                stack.push(format!("{p}/{name}"));
            }
        }
    }
    None
}

/// The SMI features QEMU itself records as negotiated (ICH9-LPC's
/// `x-smi-negotiated-features`): the ground truth of the negotiation.
pub fn qemu_negotiated_smi_features(q: &mut qmp::Qmp) -> Option<u64> {
    let path = find_device(q, "ICH9-LPC")?;
    q.execute(
        "qom-get",
        serde_json::json!({"path": path, "property": "x-smi-negotiated-features"}),
    )
    .ok()?
    .as_u64()
}

/// The lines of `output` that start with `prefix`.
pub fn lines_with<'a>(output: &'a str, prefix: &str) -> Vec<&'a str> {
    output.lines().filter(|l| l.starts_with(prefix)).collect()
}

/// The console as the tests see it: the file QEMU's serial port writes, `\r` removed.
fn read_console(serial: &Path) -> String {
    let mut b = Vec::new();
    if let Ok(mut f) = std::fs::File::open(serial) {
        let _ = f.read_to_end(&mut b);
    }
    String::from_utf8_lossy(&b).replace('\r', "")
}

/// The complete lines of `output`: those QEMU finished with '\n'. A last line without
/// '\n' may still be growing and is left out, unless `exited` (QEMU has exited, so it is
/// as complete as it will ever be).
pub fn complete_lines(output: &str, exited: bool) -> std::str::Lines<'_> {
    let end = if exited {
        output.len()
    } else {
        output.rfind('\n').map_or(0, |i| i + 1)
    };
    output[..end].lines()
}

/// Poll the console at `serial` until `pick` finds what it wants among the complete lines
/// (`what` names it in errors), bounded by `timeout` and by `child`'s exit. After the exit
/// the console is read once more, so a line written just before the exit still counts.
fn wait_lines<T>(
    serial: &Path,
    child: &mut Child,
    what: &str,
    timeout: Duration,
    pick: impl Fn(&[&str]) -> Option<T>,
) -> Result<T, String> {
    let end = Instant::now() + timeout;
    loop {
        let exited = match child.try_wait() {
            Ok(Some(st)) => Some(st),
            _ => None,
        };
        let out = read_console(serial);
        let lines: Vec<&str> = complete_lines(&out, exited.is_some()).collect();
        if let Some(t) = pick(&lines) {
            return Ok(t);
        }
        if let Some(st) = exited {
            return Err(format!(
                "QEMU exited ({st}) before printing {what}\n--- serial ---\n{out}"
            ));
        }
        if Instant::now() > end {
            return Err(format!(
                "timed out after {timeout:?} waiting for {what}\n--- serial ---\n{out}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn complete_lines_leave_out_a_line_still_being_written() {
        let v: Vec<&str> = complete_lines("a\nRESULT:", false).collect();
        assert_eq!(v, ["a"]);
        let v: Vec<&str> = complete_lines("a\nRESULT: PASS (8 checks)\n", false).collect();
        assert_eq!(v, ["a", "RESULT: PASS (8 checks)"]);
        let v: Vec<&str> = complete_lines("a\nRESULT: FAIL x", true).collect();
        assert_eq!(v, ["a", "RESULT: FAIL x"]);
        assert_eq!(complete_lines("RESULT:", false).count(), 0);
    }

    /// The CI flake: the console holds "RESULT:" while QEMU is still writing the rest of
    /// the line. The wait must return the whole line, never that prefix.
    #[test]
    fn a_wait_returns_the_whole_line_not_a_prefix_still_being_written() {
        let dir = tempfile::tempdir().unwrap();
        let serial = dir.path().join("serial.log");
        let mut f = std::fs::File::create(&serial).unwrap();
        write!(f, "payload: entered\r\nRESULT:").unwrap();
        f.flush().unwrap();
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            write!(f, " PASS (8 checks)\r\n").unwrap();
            f.flush().unwrap();
        });
        let t0 = Instant::now();
        let line = wait_lines(
            &serial,
            &mut child,
            "RESULT",
            Duration::from_secs(10),
            |l| {
                l.iter()
                    .find(|l| l.starts_with("RESULT:"))
                    .map(|l| l.to_string())
            },
        );
        writer.join().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(line.unwrap(), "RESULT: PASS (8 checks)");
        assert!(t0.elapsed() >= Duration::from_millis(250));
    }

    #[test]
    fn a_wait_ends_at_the_process_exit_with_the_last_line_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let serial = dir.path().join("serial.log");
        std::fs::write(&serial, "FATAL: x").unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let _ = child.wait();
        let r = wait_lines(
            &serial,
            &mut child,
            "RESULT",
            Duration::from_secs(10),
            |l| l.iter().find(|l| l.starts_with("RESULT:")).map(|_| ()),
        );
        let e = r.unwrap_err();
        assert!(e.contains("QEMU exited") && e.contains("FATAL: x"), "{e}");
        let r = wait_lines(&serial, &mut child, "FATAL", Duration::from_secs(10), |l| {
            l.iter()
                .find(|l| l.starts_with("FATAL:"))
                .map(|l| l.to_string())
        });
        assert_eq!(r.unwrap(), "FATAL: x");
    }
}
