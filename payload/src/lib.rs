//! The checker payload. It plays the operating system: it runs after the firmware locked
//! SMM, uses only RAM the coreboot memory map gives it, and checks from outside SMM that
//! the SMM setup holds. One final line says `RESULT: PASS` or `RESULT: FAIL <reason>`,
//! then QEMU exits through isa-debug-exit (iobase 0xf4): status 33 = pass, 35 = fail.
#![no_std]

#[cfg(all(feature = "freestanding", feature = "libpayload"))]
compile_error!("payload: features `freestanding` and `libpayload` exclude each other");
#[cfg(not(any(feature = "freestanding", feature = "libpayload")))]
compile_error!("payload: build with feature `freestanding` (default) or `libpayload`");

#[cfg(feature = "freestanding")]
extern crate fw_rt;

mod attack;
pub mod cbtables;
mod clock;
pub mod console;
mod cpus;
mod entry;
mod hotplug;
mod init_smi;
mod ipi_clock;
mod lock_owner;
mod renegotiate;
mod selector_hammer;
mod smram;
mod unplug;

use q35::fw_cfg::{self, FwCfg};
use q35::io::{HwPorts, PortIo};
use smm_handler::layout::window;

/// The contents of fw_cfg file `name` as text trimmed of white space and NULs, read into
/// `buf` (a longer file is cut at `buf`'s size); `None` when absent, unreadable or not
/// UTF-8. The payload's plans come from host-set `opt/payload/...` files.
pub(crate) fn fw_cfg_text<'b, const N: usize>(
    cfg: &FwCfg<'_, HwPorts>,
    name: &str,
    buf: &'b mut [u8; N],
) -> Option<&'b str> {
    let f = cfg.find_file(name)?;
    let n = (f.size as usize).min(N);
    cfg.read_file(f, &mut buf[..n]).ok()?;
    core::str::from_utf8(&buf[..n])
        .ok()
        .map(|s| s.trim_matches(|c: char| c.is_whitespace() || c == '\0'))
}

/// isa-debug-exit's I/O port.
const DEBUG_EXIT_PORT: u16 = 0xF4;
/// Written to [`DEBUG_EXIT_PORT`] on pass: QEMU exits with (0x10 << 1) | 1 = 33.
const EXIT_PASS: u8 = 0x10;
/// Written to [`DEBUG_EXIT_PORT`] on failure: QEMU exits with (0x11 << 1) | 1 = 35.
const EXIT_FAIL: u8 = 0x11;

/// Collects check outcomes; the first failure becomes the RESULT reason.
pub struct Report {
    /// The name of the first check that failed.
    failed: Option<&'static str>,
    /// Checks made so far.
    count: u32,
    /// Checks that could not be made with this firmware (not failures).
    skipped: u32,
}

impl Report {
    /// Record check `name` and print `CHECK <name>: PASS|FAIL <detail>`.
    pub fn check(&mut self, name: &'static str, ok: bool, detail: core::fmt::Arguments) {
        self.count += 1;
        println!(
            "CHECK {}: {} {}",
            name,
            if ok { "PASS" } else { "FAIL" },
            detail
        );
        if !ok && self.failed.is_none() {
            self.failed = Some(name);
        }
    }

    /// Record that check `name` cannot be made with this firmware and print
    /// `CHECK <name>: SKIP <detail>`; not a failure.
    pub fn skip(&mut self, name: &'static str, detail: core::fmt::Arguments) {
        self.skipped += 1;
        println!("CHECK {}: SKIP {}", name, detail);
    }
}

/// Whether firmware set up SMM (SMRAM locked): without it the payload raises no SMIs,
/// as an OS on a machine without SMM would not (QEMU smm=off, the benchmark baseline).
static SMM_PRESENT: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether firmware set up SMM; false until `payload_main` read SMRAMC.
pub fn smm_present() -> bool {
    SMM_PRESENT.load(core::sync::atomic::Ordering::SeqCst)
}

/// Whether SMM answered the diagnostic query when the payload started: only test builds
/// answer it after boot (the host ROM's test image, coreboot with
/// `CONFIG_CPU_HOTPLUG_RUST_DIAG_QUERY`).
static DIAG_QUERY: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Why a check that needs the diagnostic query is skipped.
pub const DIAG_ABSENT: &str = "diagnostic query not built into this firmware (test image: build/host-rom-test.rom, coreboot: CONFIG_CPU_HOTPLUG_RUST_DIAG_QUERY)";

/// Whether the firmware answers the diagnostic query (see [`DIAG_QUERY`]).
pub fn diag_query_available() -> bool {
    DIAG_QUERY.load(core::sync::atomic::Ordering::SeqCst)
}

/// Whether SMM exists but does not answer the diagnostic query (a production build): the
/// checks that need the query are then skipped, not failed.
pub fn diag_query_absent() -> bool {
    smm_present() && !diag_query_available()
}

/// The diagnostic SMI query, only where SMM exists and answers it.
pub fn smi_query() -> Option<(u64, u64)> {
    if smm_present() && diag_query_available() {
        smm_handler::diag::query()
    } else {
        None
    }
}

/// One SMI that does nothing in SMM (APMC 0x5A, answered or not), only where SMM exists:
/// the null SMI round trip.
pub fn null_smi() {
    if smm_present() {
        let _ = smm_handler::diag::query();
    }
}

/// fw_cfg file that keeps QEMU running after the result (for QMP queries by tests).
const STAY_FILE: &str = "opt/payload/stay";

/// Print the RESULT line, exit QEMU (unless [`STAY_FILE`] exists) and halt.
fn finish(r: &Report) -> ! {
    let stay = FwCfg::detect(&HwPorts).is_ok_and(|c| c.find_file(STAY_FILE).is_some());
    let code = match (r.failed, r.skipped) {
        (None, 0) => {
            println!("RESULT: PASS ({} checks)", r.count);
            EXIT_PASS
        }
        (None, n) => {
            println!("RESULT: PASS ({} checks, {} skipped)", r.count, n);
            EXIT_PASS
        }
        (Some(why), _) => {
            println!("RESULT: FAIL {}", why);
            EXIT_FAIL
        }
    };
    if !stay {
        HwPorts.outb(DEBUG_EXIT_PORT, code);
    }
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The names of the negotiated SMI features in `f` (`docs/protocol.md#smi-feature-negotiation`).
fn feature_list(f: u64) -> &'static str {
    match f & 7 {
        0 => "none",
        1 => "broadcast",
        3 => "broadcast cpu-hotplug",
        7 => "broadcast cpu-hotplug cpu-hot-unplug",
        _ => "inconsistent",
    }
}

/// The names of the features this project wants and did not get (`f` = the missing bits).
fn missing_list(f: u64) -> &'static str {
    match f & 7 {
        0 => "none",
        4 => "cpu-hot-unplug",
        6 => "cpu-hotplug cpu-hot-unplug",
        7 => "broadcast cpu-hotplug cpu-hot-unplug",
        _ => "inconsistent",
    }
}

/// Print the coreboot memory map and check that it reserves the default-SMBASE window and
/// the pen (`docs/protocol.md#the-default-smbase-window`).
fn memory_map(r: &mut Report, tables: &cbtables::Tables) {
    println!(
        "payload: coreboot tables at {:#x}, serial {:?}",
        tables.base, tables.serial_port
    );
    for m in &tables.memory[..tables.memory_len] {
        let kind = match m.kind {
            1 => "RAM",
            2 => "reserved",
            3 => "ACPI",
            16 => "table",
            _ => "other",
        };
        println!(
            "payload: memory {:#011x}-{:#011x} {}",
            m.start,
            m.start + m.size - 1,
            kind
        );
    }
    let reserved = |a: u64, b: u64| {
        tables.memory[..tables.memory_len]
            .iter()
            .any(|m| m.kind != 1 && m.start <= a && b <= m.start + m.size)
    };
    // Informational: the ACPI tables are the OS's business, not an SMM check.
    match tables.rsdp {
        Some(rsdp) if rsdp < 0xFFFF_0000 => {
            // SAFETY: the firmware says an RSDP (at least 20 bytes) is there; the payload
            // runs on an identity map of the low 4 GiB.
            let sig = unsafe { core::ptr::read_unaligned(rsdp as *const [u8; 8]) };
            println!(
                "payload: ACPI RSDP at {:#x} (signature {}, in a reserved range: {})",
                rsdp,
                if &sig == b"RSD PTR " { "ok" } else { "BAD" },
                reserved(rsdp, rsdp + 20)
            );
        }
        Some(rsdp) => println!("payload: ACPI RSDP at {:#x} (not below 4 GiB)", rsdp),
        None => println!("payload: no ACPI RSDP in the coreboot tables"),
    }
    let smbase_window = window::RESERVED;
    r.check(
        "memmap-reserves-smbase-window",
        reserved(
            u64::from(smbase_window.base),
            u64::from(smbase_window.end()),
        ),
        format_args!(
            "{:#x}-{:#x} (default-SMBASE SMRAM + pen) not RAM",
            smbase_window.base,
            smbase_window.end() - 1
        ),
    );
}

/// Check the SMI features firmware negotiated with QEMU
/// (`docs/protocol.md#smi-feature-negotiation`): broadcast at least.
fn smi_features(r: &mut Report) {
    let ports = HwPorts;
    match FwCfg::detect(&ports) {
        Ok(cfg) => match fw_cfg::read_smi_features(&cfg) {
            Some((sup, req, ok)) => {
                // What this project wants and did not get, whatever the reason.
                let missing = 7 & !req;
                r.check(
                    "smi-features",
                    ok == 1 && req & fw_cfg::SMI_FEATURE_BROADCAST != 0,
                    format_args!(
                        "supported={:#x} requested={:#x} features-ok={} negotiated: {}; not negotiated: {}",
                        sup,
                        req,
                        ok,
                        feature_list(req),
                        missing_list(missing)
                    ),
                );
            }
            None => r.check(
                "smi-features",
                false,
                format_args!("fw_cfg has no SMI feature files"),
            ),
        },
        Err(e) => r.check("fw_cfg", false, format_args!("{:?}", e)),
    }
}

/// The BSP's Rust entry (from `entry.rs`): run every check, then [`finish`].
#[no_mangle]
extern "sysv64" fn payload_main(table_ptr: u32) -> ! {
    println!("payload: entered (coreboot tables at {:#x})", table_ptr);
    let mut r = Report {
        failed: None,
        count: 0,
        skipped: 0,
    };
    let smramc = q35::mch::Mch::new(&HwPorts).smramc();
    SMM_PRESENT.store(
        smramc & q35::mch::SMRAMC_D_LCK != 0,
        core::sync::atomic::Ordering::SeqCst,
    );
    if !smm_present() {
        println!("payload: SMRAM is not locked: no SMM, no SMIs will be raised");
    } else {
        let answered = smm_handler::diag::query().is_some();
        DIAG_QUERY.store(answered, core::sync::atomic::Ordering::SeqCst);
        if !answered {
            println!("payload: {}: per-CPU slot checks skipped", DIAG_ABSENT);
        }
    }

    #[cfg(not(feature = "libpayload"))]
    let tables = cbtables::parse(u64::from(table_ptr));
    // libpayload parsed them already: its lib_sysinfo is the source.
    #[cfg(feature = "libpayload")]
    let tables = cbtables::from_libpayload();
    let tables = match tables {
        Ok(t) => t,
        Err(e) => {
            r.check("coreboot-tables", false, format_args!("{}", e));
            finish(&r)
        }
    };
    memory_map(&mut r, &tables);
    if let Some(c) = tables.cbmem_console {
        console::SMM_LOG.start(c);
        println!(
            "payload: SMM log lines from the CBMEM console at {:#x} follow on this console",
            c
        );
    }
    // Before anything else reads the SMI files (R1).
    renegotiate::attempt(&mut r);
    if smm_present() {
        smi_features(&mut r);
    } else {
        r.skip(
            "smi-features",
            format_args!("no SMM: a firmware without SMM negotiates no SMI features"),
        );
    }

    let tseg = smram::check(&mut r, &tables);
    cpus::check(&mut r, &tables);
    init_smi::run(&mut r, tseg);
    hotplug::smi_round_trip();
    let plan = hotplug::Plan::read();
    hotplug::storm(&mut r, &plan);
    lock_owner::run(&mut r);
    hotplug::run(&mut r, &plan, tseg);
    lock_owner::after_hotplug(&mut r);
    unplug::run(&mut r, tseg);
    finish(&r)
}

/// An AP's Rust entry (from `entry.rs`); `index` is its arrival order.
#[no_mangle]
extern "sysv64" fn payload_ap_main(index: u32) -> ! {
    selector_hammer::ap_entry();
    cpus::ap_main(index)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("RESULT: FAIL payload panic: {}", info);
    HwPorts.outb(DEBUG_EXIT_PORT, EXIT_FAIL);
    loop {
        x86_64::instructions::hlt();
    }
}
