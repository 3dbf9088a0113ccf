//! The built-in host ROM: a minimal boot ROM for QEMU q35 that sets up SMM the way
//! coreboot's x86_64 SMM stage does, hosts the project's SMM handler, and runs a payload
//! the way coreboot runs one. It exists so the mission can be built, run and tested
//! without coreboot's source.
//!
//! Boot order (each step checked; any SMM failure stops the boot, fail closed):
//! serial → PCI sanity → PMBASE → fw_cfg → RAM map → CPU hotplug block count →
//! 0x9C query → SMI feature negotiation → APs up → TSEG layout for every possible CPU →
//! serialized SMBASE relocation → per-CPU check → end of the boot phase → first-SMI
//! handler + locks → QEMU's ACPI tables → memory map and coreboot tables → payload: Linux
//! when QEMU has `-kernel`, else the ELF payload.
//!
//! Two images are built from this crate: the production ROM (`build/host-rom.rom`) and
//! the test image (`build/host-rom-test.rom`, cargo feature `test-knobs`), which alone
//! reads the test knobs of [`knobs`].
#![no_std]

extern crate fw_rt;

mod acpi;
mod cbtables;
mod entry;
mod knobs;
mod linux;
mod logger;
mod memmap;
mod mp;
mod payload;
mod romfs;
mod smm;
mod smm_stub;
mod timer;

use core::fmt;
use q35::cpuhp::{CpuHp, CpuTopology};
use q35::fw_cfg::{self, FwCfg, Negotiation};
use q35::io::{HwPorts, PortIo};
use q35::mch::Mch;
use q35::pci::{PciConfig, LPC, MCH};
use q35::{ich9, lapic};
use smm_handler::arming;
use smm_handler::layout::tseg::{self, Tseg};
use smm_handler::layout::window;
use smm_handler::slots::MAX_SLOTS;

use knobs::Knobs;
use memmap::{Range, ACPI, RESERVED, TABLE};

/// isa-debug-exit (iobase 0xf4): QEMU exits with (value << 1) | 1. The payload uses
/// 0x10 (exit 33) for PASS and 0x11 (35) for FAIL; the ROM uses 0x12 (37) when it stops.
const DEBUG_EXIT_PORT: u16 = 0xF4;
const EXIT_FIRMWARE_FATAL: u8 = 0x12;
const PAYLOAD_FILE: &str = "opt/cbpayload";
const PAYLOAD_STACK_TOP: u32 = 0x7F_F000;

/// Stop the boot: never hand control to a payload after an SMM setup failure.
fn fatal(args: fmt::Arguments) -> ! {
    log::error!("FATAL: {}", args);
    log::error!("boot stopped: the payload is not started");
    HwPorts.outb(DEBUG_EXIT_PORT, EXIT_FIRMWARE_FATAL);
    mp::park()
}

macro_rules! fatal {
    ($($t:tt)*) => { fatal(format_args!($($t)*)) };
}

fn smm_log_level(l: log::LevelFilter) -> u32 {
    match l {
        log::LevelFilter::Off | log::LevelFilter::Error => 1,
        log::LevelFilter::Warn => 2,
        log::LevelFilter::Info => 3,
        _ => 4,
    }
}

fn feature_names(f: u64) -> &'static str {
    match f & 7 {
        0 => "none",
        1 => "broadcast",
        3 => "broadcast cpu-hotplug",
        7 => "broadcast cpu-hotplug cpu-hot-unplug",
        _ => "inconsistent",
    }
}

/// RAM found at boot and where the firmware's own ranges go.
struct Memory {
    ram: heapless::Vec<(u64, u64), 8>,
    /// The top of RAM below 4 GiB, where TSEG ends.
    low_top: u64,
    tseg: Tseg,
    tseg_base: u32,
    tables_base: u64,
}

impl Memory {
    /// Put TSEG (sized for the slots to lay out) at the top of low RAM and the coreboot
    /// tables right below it.
    fn place_tseg(&mut self, tseg: Tseg) {
        self.tseg = tseg;
        self.tseg_base = (self.low_top - u64::from(tseg.size)) as u32;
        self.tables_base = u64::from(self.tseg_base) - memmap::TABLES_SIZE;
    }
}

/// What SMM setup needs from the earlier boot steps.
struct Cpus<'a> {
    topo: &'a CpuTopology,
    present: heapless::Vec<u32, MAX_SLOTS>,
    bsp_apic: u32,
}

#[no_mangle]
extern "C" fn rom_main() -> ! {
    logger::init(log::LevelFilter::Info);
    log::info!("starting (QEMU q35 host ROM, SMM like coreboot's x86_64 TSEG build)");
    check_machine();
    ich9::enable_pmbase(&HwPorts, ich9::PMBASE);
    let cfg = FwCfg::detect(&HwPorts).unwrap_or_else(|e| fatal!("fw_cfg: {:?}", e));
    apply_log_level(&cfg);
    let mut mem = find_ram(&cfg);
    let topo = count_cpus(&cfg);
    let knobs = Knobs::read(&cfg);
    let default_window = Mch::new(&HwPorts).query_default_smbase_smram();
    if knobs.no_smm_baseline {
        check_no_smm(&knobs, mem.tseg_base);
    }
    let granted = negotiate(&cfg, &topo, default_window, &knobs);
    let hotplug = granted & fw_cfg::SMI_FEATURE_CPU_HOTPLUG != 0;
    let slots = arming::slots_to_lay_out(hotplug, topo.present, topo.possible);
    // The policy never grants hotplug for more slots than a TSEG holds.
    let mut tseg =
        Tseg::for_slots(slots).unwrap_or_else(|| fatal!("no TSEG size holds {} SMM slots", slots));
    if knobs.one_stack {
        log::warn!("TEST: SMM stack pool of 1 stack (test knob)");
        tseg = tseg.with_stacks(1);
    }
    mem.place_tseg(tseg);
    let cpus = start_aps(&topo);
    if knobs.no_smm_baseline {
        log::warn!("BASELINE: no SMM set up at all (benchmark baseline only)");
    } else {
        setup_smm(&cpus, hotplug, &mem, default_window, &knobs);
        // QEMU must still report what was negotiated (nothing with the open-window knob).
        if granted != 0 {
            arming::check_features(&cfg, granted)
                .unwrap_or_else(|e| fatal!("SMI features after the locks: {:?}", e));
        }
    }
    hand_off(&cfg, &mem)
}

/// The no-SMM baseline runs only on a machine without SMM: stop on one with SMM, whose
/// SMRAM the baseline would leave open and unlocked.
fn check_no_smm(knobs: &Knobs, tseg_base: u32) {
    if knobs.leave_window_open {
        fatal!("both test knobs given: the no-SMM baseline and the open window exclude each other");
    }
    // SAFETY: TSEG's range is unused RAM and TSEG is not enabled yet; the probe undoes
    // itself.
    if unsafe { smm::lock::machine_has_smm(tseg_base) } {
        fatal!("no-SMM baseline (test knob): this machine has SMM; the baseline needs -machine smm=off on a QEMU whose smm=off removes SMM, e.g. 10.0.2");
    }
}

/// Stop unless this is a q35 machine (MCH and ICH9 LPC ids).
fn check_machine() {
    let pci = PciConfig::new(&HwPorts);
    match (pci.ids(MCH), pci.ids(LPC)) {
        (Some((0x8086, 0x29C0)), Some((0x8086, 0x2918))) => {}
        other => fatal!(
            "not a q35 machine (MCH/LPC ids {:x?}); run with -machine q35,smm=on",
            other
        ),
    }
}

/// The log level from fw_cfg `opt/host-rom/loglevel`, if given.
fn apply_log_level(cfg: &FwCfg<'_, HwPorts>) {
    if let Some(f) = cfg.find_file("opt/host-rom/loglevel") {
        let mut b = [0u8; 16];
        let n = (f.size as usize).min(16);
        if cfg.read_file(f, &mut b[..n]).is_ok() {
            match logger::parse_level(&b[..n]) {
                Some(l) => log::set_max_level(l),
                None => log::warn!("opt/host-rom/loglevel: unknown level, keeping info"),
            }
        }
    }
}

/// RAM from QEMU's e820 table; TSEG at the top of low RAM, the coreboot tables below it.
fn find_ram(cfg: &FwCfg<'_, HwPorts>) -> Memory {
    let mut e820 = [0u8; 20 * 16];
    let ram = match cfg.find_file("etc/e820") {
        Some(f) => {
            let n = (f.size as usize).min(e820.len());
            cfg.read_file(f, &mut e820[..n])
                .unwrap_or_else(|e| fatal!("etc/e820: {:?}", e));
            memmap::ram_from_e820(&e820[..n])
        }
        None => fatal!("fw_cfg has no etc/e820"),
    };
    let low_top = ram
        .iter()
        .filter(|r| r.0 < 0x1_0000_0000)
        .map(|r| r.1)
        .max()
        .unwrap_or(0);
    if low_top < 0x400_0000 {
        fatal!(
            "{} MiB of RAM below 4 GiB; the host ROM needs at least 64 MiB (-m)",
            low_top >> 20
        );
    }
    let mut mem = Memory {
        ram,
        low_top,
        tseg: SMALLEST_TSEG,
        tseg_base: 0,
        tables_base: 0,
    };
    mem.place_tseg(SMALLEST_TSEG);
    mem
}

/// The TSEG of a single slot (1 MiB): where TSEG goes until the slot count is known.
const SMALLEST_TSEG: Tseg = match Tseg::for_slots(1) {
    Some(t) => t,
    None => panic!("one slot always fits"),
};

/// Present CPUs (to start) and possible CPUs (to lay out SMM for), from the register block.
fn count_cpus(cfg: &FwCfg<'_, HwPorts>) -> CpuTopology {
    let hp = CpuHp::new(&HwPorts);
    let topo = match hp.switch_to_modern().and_then(|_| hp.count()) {
        Ok(t) => t,
        Err(e) => fatal!(
            "CPU hotplug register block: {:?} (needs QEMU >= 2.7 with a working modern interface)",
            e
        ),
    };
    log::info!(
        "CPUs: present {} (fw_cfg boot CPUs {}), possible {}, APIC-ID limit {}",
        topo.present,
        cfg.read_key_u16(fw_cfg::KEY_NB_CPUS),
        topo.possible,
        cfg.read_key_u16(fw_cfg::KEY_MAX_CPUS)
    );
    if topo.truncated {
        log::warn!(
            "CPUs: more than {} possible CPUs; counted the first {}",
            topo.possible,
            topo.possible
        );
    }
    if topo.present_unrecorded > 0 {
        fatal!(
            "{} present CPU(s) beyond the first {} possible CPUs, whose APIC IDs the host ROM records: it cannot start them",
            topo.present_unrecorded,
            topo.recorded()
        );
    }
    if topo.present as usize > mp::MAX_CPUS {
        fatal!(
            "{} present CPUs; the host ROM starts at most {} at boot (xAPIC IDs); more can be hot-added",
            topo.present,
            mp::MAX_CPUS
        );
    }
    topo
}

/// Negotiate the SMI features the shared policy allows (`smm_handler::arming`); returns
/// the granted bits. Test knobs: with the window left open nothing is negotiated (CPU
/// hotplug never goes with an open window); the no-SMM baseline negotiates nothing, as a
/// firmware without SMM (SeaBIOS) does: QEMU then allows CPU `device_add` and `device_del`
/// and its AML ejects a CPU itself (status bit 3) instead of asking SMM.
fn negotiate(cfg: &FwCfg<'_, HwPorts>, topo: &CpuTopology, window: bool, knobs: &Knobs) -> u64 {
    if knobs.leave_window_open {
        log::warn!(
            "INSECURE: SMI features not negotiated at all: the default-SMBASE window stays open"
        );
        return 0;
    }
    if knobs.no_smm_baseline {
        log::warn!("BASELINE: SMI features not negotiated (a firmware without SMM)");
        return 0;
    }
    let policy = arming::feature_policy(
        window,
        topo.possible,
        MAX_SLOTS as u32,
        topo.max_apic_id(),
        smm_handler::host::APIC_ID_LIMIT,
    );
    for r in &policy.refusals {
        let (t, args) = r.template();
        logger::line(log::Level::Warn, t, &args);
    }
    let wanted = policy.wanted;
    match fw_cfg::negotiate_smi_features(cfg, wanted) {
        Ok(Negotiation::Granted {
            supported,
            requested,
        }) => {
            log::info!(
                "SMI features: supported {:#x}, wanted {:#x}, requested {:#x}, granted ({})",
                supported,
                wanted,
                requested,
                feature_names(requested)
            );
            if requested & fw_cfg::SMI_FEATURE_CPU_HOTPLUG == 0 {
                log::warn!("{}", arming::HOTPLUG_NOT_NEGOTIATED);
            }
            requested
        }
        Ok(Negotiation::Unsupported) => {
            log::warn!(
                "SMI features: QEMU offers no negotiation (< 2.9): no broadcast, no CPU hotplug"
            );
            0
        }
        Err(e) => fatal!("SMI feature negotiation failed: {:?}", e),
    }
}

/// APs up, as coreboot's MP init does: only the present CPUs.
fn start_aps(topo: &CpuTopology) -> Cpus<'_> {
    lapic::enable();
    let bsp_apic = lapic::cpuid_apic_id();
    let present: heapless::Vec<u32, MAX_SLOTS> = (0..topo.possible)
        .filter(|&s| topo.present_mask.get(s as usize).copied().unwrap_or(false))
        .filter_map(|s| topo.apic_id(s))
        .collect();
    if !present.contains(&bsp_apic) {
        fatal!(
            "BSP APIC ID {} is not among the present CPUs {:?}",
            bsp_apic,
            present.as_slice()
        );
    }
    match mp::start_aps(&present, bsp_apic) {
        Ok(n) => log::info!("{} AP(s) checked in", n),
        Err(n) => fatal!("only {} of {} APs checked in", n, present.len() - 1),
    }
    Cpus {
        topo,
        present,
        bsp_apic,
    }
}

/// QEMU's ACPI tables, the memory map and coreboot tables, then the payload: Linux when
/// QEMU has `-kernel`, else the ELF payload.
fn hand_off(cfg: &FwCfg<'_, HwPorts>, mem: &Memory) -> ! {
    let acpi = acpi::load(cfg, mem.tables_base, memmap::FIRMWARE_WINDOW.1);
    let map = memory_map(mem, acpi.as_ref());
    let rsdp = acpi.as_ref().and_then(|a| a.rsdp);
    let tables_base = mem.tables_base;
    // SAFETY: the tables range and 0x500 are reserved for firmware tables in `map`.
    let table = unsafe { cbtables::write(tables_base, memmap::TABLES_SIZE as usize, &map, rsdp) };
    if linux::requested(cfg) {
        let kernel = linux::load(cfg, &map, rsdp).unwrap_or_else(|e| fatal!("Linux: {}", e));
        mp::park_all();
        log::info!(
            "entering Linux at {:#x} (zero page at {:#x}, ACPI RSDP {:#x})",
            kernel.entry(),
            kernel.zero_page(),
            rsdp.unwrap_or(0)
        );
        kernel.enter()
    }
    let payload_top = acpi.as_ref().map_or(tables_base, |a| a.base);
    let entry = load_payload(cfg, &map, payload_top);
    mp::park_all();
    log::info!(
        "entering payload at {:#x} (coreboot tables at {:#x})",
        entry,
        table
    );
    payload::enter(entry, table, PAYLOAD_STACK_TOP)
}

/// The one memory map every payload gets: QEMU's RAM minus what the firmware keeps (low
/// tables, the default-SMBASE window and pen, the legacy BIOS area, the firmware window,
/// the ACPI tables, the coreboot tables, TSEG).
fn memory_map(mem: &Memory, acpi: Option<&acpi::Tables>) -> memmap::Map {
    let (tseg_base, tables_base) = (u64::from(mem.tseg_base), mem.tables_base);
    let acpi = acpi.map(|a| Range {
        start: a.base,
        end: a.end,
        kind: ACPI,
    });
    let reserved = [
        Some(Range {
            start: 0,
            end: memmap::LOW_TABLE_END,
            kind: TABLE,
        }),
        Some(Range {
            start: u64::from(window::RESERVED.base),
            end: u64::from(window::RESERVED.end()),
            kind: RESERVED,
        }),
        Some(Range {
            start: 0xA0000,
            end: 0x10_0000,
            kind: RESERVED,
        }),
        Some(Range {
            start: memmap::FIRMWARE_WINDOW.0,
            end: memmap::FIRMWARE_WINDOW.1,
            kind: RESERVED,
        }),
        acpi,
        Some(Range {
            start: tables_base,
            end: tseg_base,
            kind: TABLE,
        }),
        Some(Range {
            start: tseg_base,
            end: tseg_base + u64::from(mem.tseg.size),
            kind: RESERVED,
        }),
    ];
    let reserved: heapless::Vec<Range, 8> = reserved.into_iter().flatten().collect();
    memmap::build(&mem.ram, &reserved)
}

/// SMM the way coreboot's SMM stage sets it up; any failure stops the boot.
fn setup_smm(cpus: &Cpus<'_>, hotplug: bool, mem: &Memory, default_window: bool, knobs: &Knobs) {
    let (tseg, tseg_base) = (mem.tseg, mem.tseg_base);
    let tsc_per_us = timer::tsc_per_us();
    log::debug!("TSC: {} ticks per microsecond", tsc_per_us);
    let topo = cpus.topo;
    // SMM: present CPUs take slots in selector order.
    let module = romfs::find("smm").unwrap_or_else(|| fatal!("ROM has no SMM module (file 'smm')"));
    let module = smm::rmod::Rmod::parse(module).unwrap_or_else(|e| fatal!("SMM module: {:?}", e));
    // SAFETY: TSEG is the top of low RAM, sized for the slots, not yet enabled, owned by
    // firmware.
    let layout = unsafe {
        smm::tseg::load(tseg, tseg_base, &module, |p| {
            p.boot.tsc_per_us = tsc_per_us;
            p.boot.log_level = smm_log_level(log::max_level());
            p.boot.magic = smm_handler::boot_info::BOOT_INFO_MAGIC;
            // SMM answers the diagnostic query for the slot check below until the boot
            // phase ends.
            p.boot_phase = 1;
            for (i, &apic) in cpus.present.iter().enumerate() {
                p.slots.set(i, smm_handler::slots::ACTIVE, apic);
            }
        })
    }
    .unwrap_or_else(|e| fatal!("SMM layout: {:?}", e));
    let slot_cpus: heapless::Vec<(u32, u32), MAX_SLOTS> = cpus
        .present
        .iter()
        .enumerate()
        .map(|(i, &a)| (a, tseg.slot_smbase(tseg_base, i as u32)))
        .collect();
    smm::lock::enable_tseg(tseg).unwrap_or_else(|e| fatal!("TSEG: {:?}", e));
    smm::relocate::relocate_all(&slot_cpus, cpus.bsp_apic)
        .unwrap_or_else(|e| fatal!("SMBASE relocation: {:?}", e));
    smm::relocate::verify_slots(&slot_cpus, cpus.bsp_apic)
        .unwrap_or_else(|e| fatal!("SMM check: {:?}", e));
    end_boot_phase(tseg, tseg_base, &module);
    // Negative control for the attack test only (test image): the host (not the guest)
    // asks, via fw_cfg, for a ROM that leaves the default-SMBASE window open, to show the
    // attack succeeds without the lock.
    let insecure = knobs.leave_window_open;
    if insecure {
        log::warn!(
            "INSECURE: test knob: first-SMI handler not installed, {:#X}-{:#X} left open",
            window::WINDOW.base,
            window::WINDOW.end() - 1
        );
    }
    // Only with hotplug negotiated does SMM ever act on other APIC IDs (R6).
    let possible = (0..topo.possible)
        .take(if hotplug { usize::MAX } else { 0 })
        .map(|s| topo.apic_id(s).unwrap_or(u32::MAX));
    smm::lock::install_and_lock(default_window && !insecure, tseg_base, possible)
        .unwrap_or_else(|e| fatal!("SMRAM lock: {:?}", e));
    log::info!(
        "SMRAM locked: TSEG {:#x}+{} MiB, D_LCK set, default-SMBASE window {}",
        tseg_base,
        tseg.size >> 20,
        match (default_window, insecure) {
            (true, false) => "locked",
            (true, true) => "LEFT OPEN",
            _ => "absent",
        }
    );
    log::info!(
        "SMRAM used: handler {} bytes, stack pool {} x {} bytes, per-CPU slot {} bytes, total {} bytes for {} slots",
        layout.module_size,
        layout.stacks,
        tseg::STACK_SIZE,
        tseg::SLOT_STRIDE,
        layout.total_bytes,
        layout.slots
    );
}

/// Clear the boot-phase flag in the SMM module's parameter block, then see whether SMM
/// still answers the diagnostic query: only a module built with `diag-query` (the test
/// image's) does.
fn end_boot_phase(t: Tseg, tseg_base: u32, module: &smm::rmod::Rmod<'_>) {
    let params = tseg_base + tseg::MODULE.base + module.params;
    let flag =
        params as usize + core::mem::offset_of!(smm_handler::boot_info::SmmParams, boot_phase);
    // SAFETY: the parameter block of the module `smm::tseg::load` placed in TSEG (its
    // offset checked by `Rmod::parse`); TSEG is enabled, not locked, no CPU is in SMM.
    unsafe { smm::lock::end_boot_phase(t, flag as *mut u32) }
        .unwrap_or_else(|e| fatal!("SMM boot phase: {:?}", e));
    log::info!(
        "diagnostic query after boot: {}",
        if smm_handler::diag::query().is_some() {
            "answered (SMM module built with diag-query: test image)"
        } else {
            "off"
        }
    );
}

/// Load `opt/cbpayload` from fw_cfg when QEMU provides it, else the built-in payload.
/// `top`: the first byte the firmware keeps above payload RAM.
fn load_payload(cfg: &FwCfg<'_, HwPorts>, map: &memmap::Map, top: u64) -> u32 {
    if let Some(f) = cfg.find_file(PAYLOAD_FILE) {
        let size = u64::from(f.size);
        // Stage the ELF at the top of payload RAM, just below the firmware's tables.
        let stage = top.saturating_sub(size) & !0xFFF;
        if size == 0 || !memmap::is_usable(map, stage, stage + size) {
            fatal!(
                "payload {} ({} bytes) does not fit in RAM",
                PAYLOAD_FILE,
                size
            );
        }
        // SAFETY: the staging range is RAM the memory map gives the payload, unused yet.
        let buf = unsafe { core::slice::from_raw_parts_mut(stage as *mut u8, size as usize) };
        cfg.read_file(f, buf)
            .unwrap_or_else(|e| fatal!("reading {}: {:?}", PAYLOAD_FILE, e));
        log::info!("payload: fw_cfg {} ({} bytes)", PAYLOAD_FILE, size);
        payload::load(buf, map, (stage, stage + size))
            .unwrap_or_else(|e| fatal!("payload {} does not load: {:?}", PAYLOAD_FILE, e))
    } else {
        let elf = romfs::find("payload").unwrap_or_else(|| {
            fatal!(
                "no payload: ROM has none and fw_cfg has no {}",
                PAYLOAD_FILE
            )
        });
        log::info!("payload: built-in ({} bytes)", elf.len());
        let base = elf.as_ptr() as u64;
        payload::load(elf, map, (base, base + elf.len() as u64))
            .unwrap_or_else(|e| fatal!("built-in payload does not load: {:?}", e))
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fatal!("panic: {}", info)
}
