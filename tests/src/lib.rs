//! Harness for the QEMU integration tests: builds the firmware images once, boots QEMU
//! q35 with `smm=on` under TCG, captures the serial console, bounds every run with a
//! timeout, and talks QMP when a test asks for it.
//!
//! Environment:
//! - `QEMU`: the qemu-system-x86_64 binary (default: `qemu-system-x86_64` on PATH);
//! - `HOST_ROM`: the `-bios` image to test (default: `build/host-rom.rom`, built by
//!   `scripts/build` on first use); point it at a coreboot.rom to run the same tests there;
//! - `PAYLOAD_ELF`: the payload (default `build/payload.elf`).

pub mod qmp;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
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

/// Whether the ROM under test is this project's host ROM (not e.g. a coreboot.rom given
/// in `HOST_ROM`). Tests of host-ROM-only features and log lines check this.
pub fn testing_host_rom() -> bool {
    match std::env::var_os("HOST_ROM") {
        None => true,
        Some(p) => Path::new(&p)
            .file_name()
            .is_some_and(|n| n == "host-rom.rom"),
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

/// Paths of the ROM and payload, building them with `scripts/build` once per process
/// unless `HOST_ROM` names a prebuilt ROM.
pub fn images() -> (PathBuf, PathBuf) {
    let r = IMAGES.get_or_init(|| {
        let root = workspace_root();
        let payload = std::env::var_os("PAYLOAD_ELF")
            .map(PathBuf::from)
            .unwrap_or(root.join("build/payload.elf"));
        if let Some(rom) = std::env::var_os("HOST_ROM") {
            return Ok((PathBuf::from(rom), payload));
        }
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
        Ok((root.join("build/host-rom.rom"), payload))
    });
    match r {
        Ok(p) => p.clone(),
        Err(e) => panic!("{e}"),
    }
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
    /// The `-bios` image (default: [`images`]).
    pub bios: Option<PathBuf>,
    /// `smm=on` (default); `false` only for the no-SMM benchmark baseline.
    pub smm: bool,
}

impl VmConfig {
    /// A VM with `-smp smp`, 256 MiB, SMM on, the default ROM.
    pub fn new(smp: &str) -> Self {
        Self {
            smp: smp.into(),
            mem_mb: 256,
            extra: Vec::new(),
            qmp: false,
            bios: None,
            smm: true,
        }
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
        let qemu = qemu_binary()?;
        let bios = match &cfg.bios {
            Some(b) => b.clone(),
            None => images().0,
        };
        if !bios.exists() {
            return Err(format!("ROM {} does not exist", bios.display()));
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
        .args(["-m", &cfg.mem_mb.to_string(), "-smp", &cfg.smp])
        .arg("-bios")
        .arg(&bios)
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args([
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x04",
            "-monitor",
            "none",
        ])
        .args(&cfg.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?);
        let qmp_path = dir.path().join("qmp.sock");
        if cfg.qmp {
            cmd.arg("-qmp")
                .arg(format!("unix:{},server=on,wait=off", qmp_path.display()));
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", qemu.display()))?;
        let started = Instant::now();
        let mut vm = Vm {
            child,
            serial,
            qmp: None,
            started,
            _dir: dir,
            stderr_path,
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

    /// QEMU's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Wait until the console contains `needle`; returns the time since QEMU started.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> Result<Duration, String> {
        let end = Instant::now() + timeout;
        loop {
            if self.output().contains(needle) {
                return Ok(self.started.elapsed());
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                return Err(format!(
                    "QEMU exited ({st}) before printing {needle:?}\n{}\n{}",
                    self.output(),
                    self.stderr()
                ));
            }
            if Instant::now() > end {
                return Err(format!(
                    "timed out after {timeout:?} waiting for {needle:?}\n{}",
                    self.output()
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
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

/// The lines of `output` that start with `prefix`.
pub fn lines_with<'a>(output: &'a str, prefix: &str) -> Vec<&'a str> {
    output.lines().filter(|l| l.starts_with(prefix)).collect()
}
