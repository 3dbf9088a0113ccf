//! The CPU-hotplug handler for coreboot, behind a small C ABI: one object linked into
//! both the ramstage (boot-time preparation, [`ramstage`]) and the smm stage (APMC 4).
//!
//! Ramstage records what SMM needs (possible APIC IDs, TSC rate, the live
//! `apic_id_to_cpu` table of coreboot's SMM stub) in a boot-info block inside the
//! default-SMBASE window ([`bootinfo`]), which becomes SMRAM when it is locked: SMM
//! reads only SMRAM. In SMM, coreboot's C glue fills a `struct rust_cpu_hotplug_env`
//! (slots and their SMBASEs, console) and calls `rust_cpu_hotplug_smi_entry()` at the
//! very start of `smm_handler_start()` (before the SMI lock; spec 7.3 item 5) and
//! `rust_cpu_hotplug_apmc()` for APMC 4 on the CPU that holds the lock. coreboot
//! provides memcpy and friends.
//!
//! SMM rules: no panics, no `core::fmt`, no floats, bounded loops; checked on the built
//! object by `fwtool check-smm` (tests/tests/smm_object.rs).
#![no_std]

pub mod bootinfo;
pub mod ramstage;

use core::sync::atomic::{AtomicBool, Ordering};

use q35::io::HwPorts;
use smm_handler::diag;
use smm_handler::first_smi::FixedWindow;
use smm_handler::hotplug::{self, Platform, Window};
use smm_handler::log::{Console, Level, Part};
use smm_handler::params::MAX_SLOTS;
use smm_handler::slots::{self, Slots};

pub const ENV_VERSION: u32 = 2;
const NO_ROUTE: u16 = 0xFFFF;

/// Mirrors `struct rust_cpu_hotplug_env` in coreboot-config's `rust_cpu_hotplug.h`:
/// what only coreboot's SMM module knows, filled by the C glue on each call.
#[repr(C)]
pub struct Env {
    pub version: u32,
    /// SMM slots coreboot laid out (`smm_runtime.num_cpus`: every possible CPU).
    pub slot_count: u32,
    pub log_level: u32,
    pub _pad: u32,
    /// `[slot_count]` SMBASE per slot (from `smm_get_save_state()`).
    pub slot_smbase: *const u32,
    pub console_write: Option<extern "C" fn(buf: *const u8, len: usize)>,
}

/// Slot bookkeeping in SMRAM, seeded from the stub's routing table on first use.
static SLOTS: Slots = Slots::new();
static SEEDED: AtomicBool = AtomicBool::new(false);

/// A console that forwards to a C function (coreboot's printk in the glue).
pub(crate) struct CConsole(pub Option<extern "C" fn(buf: *const u8, len: usize)>);

impl Console for CConsole {
    fn write(&self, bytes: &[u8]) {
        if let Some(f) = self.0 {
            f(bytes.as_ptr(), bytes.len());
        }
    }
}

struct Coreboot<'a> {
    env: &'a Env,
    boot: &'a bootinfo::BootInfo,
    window: FixedWindow,
}

impl Coreboot<'_> {
    fn route_table(&self) -> *mut u16 {
        self.boot.apic_id_to_cpu as usize as *mut u16
    }

    fn route(&self, slot: usize) -> u16 {
        if slot >= Platform::slot_count(self) || self.boot.apic_id_to_cpu == 0 {
            return NO_ROUTE;
        }
        // SAFETY: coreboot's stub table has CONFIG_MAX_CPUS >= slot_count entries in
        // SMRAM; its address was recorded at boot in the locked boot-info block.
        unsafe { core::ptr::read_volatile(self.route_table().add(slot)) }
    }
}

impl Platform for Coreboot<'_> {
    type Ports = HwPorts;
    fn ports(&self) -> &HwPorts {
        &HwPorts
    }
    fn now_us(&self) -> u64 {
        // SAFETY: RDTSC has no side effects.
        let t = unsafe { core::arch::x86_64::_rdtsc() };
        t / self.boot.tsc_per_us.max(1)
    }
    fn log(&self, level: Level, parts: &[Part<'_>]) {
        if level as u32 <= self.env.log_level {
            CConsole(self.env.console_write).line(level, parts);
        }
    }
    fn slots(&self) -> &Slots {
        &SLOTS
    }
    fn slot_count(&self) -> usize {
        (self.env.slot_count as usize).min(MAX_SLOTS)
    }
    fn slot_smbase(&self, slot: usize) -> Option<u32> {
        if slot >= Platform::slot_count(self) || self.env.slot_smbase.is_null() {
            return None;
        }
        // SAFETY: `slot_smbase` has `slot_count` entries (C glue contract).
        Some(unsafe { core::ptr::read_volatile(self.env.slot_smbase.add(slot)) })
    }
    fn set_route(&self, slot: usize, apic: Option<u32>) {
        if slot >= Platform::slot_count(self) || self.boot.apic_id_to_cpu == 0 {
            return;
        }
        let v = apic.map_or(NO_ROUTE, |a| a as u16);
        // SAFETY: as for `route`; a single aligned u16 store the stub reads.
        unsafe { core::ptr::write_volatile(self.route_table().add(slot), v) }
    }
    fn is_possible_apic(&self, apic: u32) -> bool {
        self.boot.is_possible_apic(apic)
    }
    fn possible_count(&self) -> u32 {
        self.boot.possible_count.min(MAX_SLOTS as u32)
    }
    fn send_ipi(&self, apic: u32, icr_low: u32) -> bool {
        q35::lapic::send_ipi(apic, icr_low).is_ok()
    }
    fn window(&self) -> &dyn Window {
        &self.window
    }
}

fn seed(cb: &Coreboot<'_>) {
    if SEEDED.swap(true, Ordering::SeqCst) {
        return;
    }
    for slot in 0..Platform::slot_count(cb) {
        let r = cb.route(slot);
        if r != NO_ROUTE {
            SLOTS.set(slot, slots::ACTIVE, u32::from(r));
        }
    }
}

fn env_ok(env: *const Env) -> Option<&'static Env> {
    // SAFETY: coreboot passes a pointer to a static in its SMM module (SMRAM) or NULL.
    let e = unsafe { env.as_ref() }?;
    (e.version == ENV_VERSION).then_some(e)
}

/// Service APMC 4 (CPU hotplug) on the CPU that holds coreboot's SMI lock.
///
/// # Safety
/// `env` is NULL or points to a filled `struct rust_cpu_hotplug_env` in SMRAM whose
/// arrays have the lengths it states.
#[no_mangle]
pub unsafe extern "C" fn rust_cpu_hotplug_apmc(env: *const Env) {
    let Some(env) = env_ok(env) else { return };
    let Some(boot) = bootinfo::BootInfo::locked() else {
        CConsole(env.console_write).line(
            Level::Error,
            &[Part::Str(
                b"cpu hotplug: no valid boot-info block; APMC 4 ignored",
            )],
        );
        return;
    };
    let cb = Coreboot {
        env,
        boot,
        window: FixedWindow {
            pen_base: boot.pen_base,
        },
    };
    seed(&cb);
    let _ = hotplug::service(&cb);
}

/// SMI entries per slot (answered by the diagnostic query).
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static ENTRIES: [core::sync::atomic::AtomicU64; MAX_SLOTS] = [ZERO; MAX_SLOTS];

/// Called by every CPU at SMI entry, before coreboot's SMI lock, with its slot and that
/// slot's SMBASE. Returns non-zero when the CPU is being relocated and must leave SMM at
/// once (R12). Otherwise answers the read-only diagnostic query in this CPU's own save
/// state (see `smm_handler::diag`).
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_smi_entry(cpu: u32, smbase: u32) -> i32 {
    let Some(count) = ENTRIES.get(cpu as usize) else {
        return 0;
    };
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    if hotplug::must_return_early(&SLOTS, cpu as usize) {
        return 1;
    }
    if smbase == 0 || q35::io::PortIo::inb(&HwPorts, q35::ich9::APM_CNT) != diag::APMC_DIAG_QUERY {
        return 0;
    }
    // SAFETY: `smbase` is this CPU's own slot (coreboot's save-state map).
    unsafe { diag::answer_in_save_state(cpu, smbase, n) };
    0
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction (the object check finds no panicking code).
    loop {
        // SAFETY: stops this CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
