//! The CPU-hotplug SMM handler for coreboot's SMM stage, behind a small C ABI.
//!
//! coreboot's C glue (coreboot-config/) fills a `struct rust_cpu_hotplug_env` with what
//! differs per host: the SMM slots it laid out, the live `apic_id_to_cpu` routing table
//! of its entry stub, the possible APIC IDs counted at boot, a console and the TSC rate.
//! It calls `rust_cpu_hotplug_must_return()` at the very start of `smm_handler_start()`
//! (before the SMI lock; spec 7.3 item 5) and `rust_cpu_hotplug_apmc()` for APMC 4 on
//! the CPU that holds the lock. coreboot provides memcpy and friends.
//!
//! SMM rules: no panics, no `core::fmt`, no floats, bounded loops; checked on the built
//! object by `fwtool check-smm` (tests/tests/smm_object.rs).
#![no_std]

use core::sync::atomic::{AtomicBool, Ordering};

use q35::io::HwPorts;
use smm_handler::first_smi::FixedWindow;
use smm_handler::hotplug::{self, Platform, Window};
use smm_handler::log::{Console, Level, Part};
use smm_handler::params::MAX_SLOTS;
use smm_handler::slots::{self, Slots};

pub const ENV_VERSION: u32 = 1;
const NO_ROUTE: u16 = 0xFFFF;

/// Mirrors `struct rust_cpu_hotplug_env` in coreboot-config/src/rust_cpu_hotplug.h.
#[repr(C)]
pub struct Env {
    pub version: u32,
    /// SMM slots coreboot laid out (its `num_cpus` for SMM: every possible CPU).
    pub slot_count: u32,
    pub possible_count: u32,
    pub pen_base: u32,
    pub tsc_per_us: u64,
    pub log_level: u32,
    pub _pad: u32,
    /// `[possible_count]` APIC IDs recorded at boot from the CPU hotplug block.
    pub possible_apic_ids: *const u32,
    /// `[slot_count]` SMBASE per slot.
    pub slot_smbase: *const u32,
    /// The live `apic_id_to_cpu[]` of coreboot's SMM stub (0xFFFF = unused).
    pub apic_id_to_cpu: *mut u16,
    pub console_write: Option<extern "C" fn(buf: *const u8, len: usize)>,
}

/// Slot bookkeeping in SMRAM, seeded from the stub's routing table on first use.
static SLOTS: Slots = Slots::new();
static SEEDED: AtomicBool = AtomicBool::new(false);

struct Coreboot<'a> {
    env: &'a Env,
    window: FixedWindow,
}

struct CbConsole<'a>(&'a Env);

impl Console for CbConsole<'_> {
    fn write(&self, bytes: &[u8]) {
        if let Some(f) = self.0.console_write {
            f(bytes.as_ptr(), bytes.len());
        }
    }
}

impl Coreboot<'_> {
    fn slot_count(&self) -> usize {
        (self.env.slot_count as usize).min(MAX_SLOTS)
    }

    fn route(&self, slot: usize) -> u16 {
        if slot >= self.slot_count() || self.env.apic_id_to_cpu.is_null() {
            return NO_ROUTE;
        }
        // SAFETY: coreboot's table has CONFIG_MAX_CPUS >= slot_count entries in SMRAM.
        unsafe { core::ptr::read_volatile(self.env.apic_id_to_cpu.add(slot)) }
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
        t / self.env.tsc_per_us.max(1)
    }
    fn log(&self, level: Level, parts: &[Part<'_>]) {
        if level as u32 <= self.env.log_level {
            CbConsole(self.env).line(level, parts);
        }
    }
    fn slots(&self) -> &Slots {
        &SLOTS
    }
    fn slot_count(&self) -> usize {
        Coreboot::slot_count(self)
    }
    fn slot_smbase(&self, slot: usize) -> Option<u32> {
        if slot >= self.slot_count() || self.env.slot_smbase.is_null() {
            return None;
        }
        // SAFETY: `slot_smbase` has `slot_count` entries (C glue contract).
        Some(unsafe { core::ptr::read_volatile(self.env.slot_smbase.add(slot)) })
    }
    fn set_route(&self, slot: usize, apic: Option<u32>) {
        if slot >= self.slot_count() || self.env.apic_id_to_cpu.is_null() {
            return;
        }
        let v = apic.map_or(NO_ROUTE, |a| a as u16);
        // SAFETY: as for `route`; a single aligned u16 store the stub reads.
        unsafe { core::ptr::write_volatile(self.env.apic_id_to_cpu.add(slot), v) }
    }
    fn is_possible_apic(&self, apic: u32) -> bool {
        if self.env.possible_apic_ids.is_null() {
            return false;
        }
        let n = (self.env.possible_count as usize).min(MAX_SLOTS);
        // SAFETY: `possible_apic_ids` has `possible_count` entries (C glue contract).
        (0..n)
            .any(|i| unsafe { core::ptr::read_volatile(self.env.possible_apic_ids.add(i)) } == apic)
    }
    fn possible_count(&self) -> u32 {
        self.env.possible_count.min(MAX_SLOTS as u32)
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
    for slot in 0..cb.slot_count() {
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
    let cb = Coreboot {
        env,
        window: FixedWindow {
            pen_base: env.pen_base,
        },
    };
    seed(&cb);
    let _ = hotplug::service(&cb);
}

/// Non-zero when CPU `cpu` (coreboot's index = slot) is being relocated and must leave
/// SMM at once, before taking the SMI lock.
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_must_return(cpu: u32) -> i32 {
    i32::from(hotplug::must_return_early(&SLOTS, cpu as usize))
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction (the object check finds no panicking code).
    loop {
        // SAFETY: stops this CPU inside SMM.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
