//! The host ROM's SMM module: the host-specific rest of its SMM entry. Every CPU that
//! takes an SMI at a relocated SMBASE comes here from its slot's entry stub, in long mode
//! with SSE off and a 2 KiB stack, exactly as coreboot's x86_64 SMM stage calls its C
//! handler. What only this host has: the parameter block the boot code fills, a serial
//! console, and its own SMI lock (coreboot brings its own). Everything else is
//! `smm_handler::entry`.
//!
//! The diagnostic query is answered only while the parameter block's boot-phase flag is
//! set (the boot code's slot check), or always when built with the `diag-query` feature
//! (the test image's module, `build/host-rom-smm-diag.elf`).
//!
//! SMM rules: no panics, no `core::fmt`, no floats, bounded loops; checked on the built
//! object by `fwtool check-smm` (tests/tests/smm_object.rs).
#![no_std]

use core::ptr::addr_of;

use q35::io::HwPorts;
use q35::serial::{Serial, COM1};
use smm_handler::boot_info::{SmmParams, PARAMS_MAGIC};
use smm_handler::entry::{self, Entry, Locked, SmiEntries, SmiLock};
use smm_handler::first_smi::{FixedWindow, Window};
use smm_handler::host::{Host, HostData};
use smm_handler::layout::tseg;
use smm_handler::log::{Console, Level};
use smm_handler::{eject, hotplug, smm_log};

extern crate fw_rt;

/// Filled in by the host ROM's boot code before SMRAM is closed. After that only the slot
/// table in it changes, and only from SMM.
#[no_mangle]
#[used]
pub static mut SMM_PARAMS: SmmParams = SmmParams::empty();

static ENTRIES: SmiEntries = SmiEntries::new();
static LOCK: SmiLock = SmiLock::new();

fn params() -> &'static SmmParams {
    // SAFETY: the boot code wrote SMM_PARAMS before closing SMRAM; afterwards only its
    // atomic slot table is written, so shared references are sound.
    unsafe { &*addr_of!(SMM_PARAMS) }
}

struct SerialConsole;

impl Console for SerialConsole {
    fn write(&self, bytes: &[u8]) {
        Serial::new(&HwPorts, COM1).write_bytes(bytes);
    }
}

/// The host ROM as the handler's host, on the CPU at `slot`.
struct HostRom(&'static SmmParams, u32);

impl Host for HostRom {
    type Ports = HwPorts;
    fn ports(&self) -> &HwPorts {
        &HwPorts
    }
    fn data(&self) -> HostData<'_> {
        HostData {
            slot_smbase: self.0.slot_smbases(),
            possible_apic_ids: smm_handler::first_smi::possible_apic_ids(),
            slots: &self.0.slots,
            // Each slot's stub copy knows its own slot index: no routing table.
            routes: None,
        }
    }
    fn now_us(&self) -> u64 {
        // SAFETY: RDTSC has no side effects; CR4.TSD is clear in SMM.
        let t = unsafe { core::arch::x86_64::_rdtsc() };
        t / self.0.boot.tsc_per_us.max(1)
    }
    fn log(&self, level: Level, template: &str, args: &[u64]) {
        if level as u32 <= self.0.boot.log_level {
            SerialConsole.line(level, template, args);
        }
    }
    fn send_ipi(&self, apic: u32, icr_low: u32) -> bool {
        q35::lapic::send_ipi(apic, icr_low).is_ok()
    }
    fn window(&self) -> &dyn Window {
        &FixedWindow
    }
    fn current_apic(&self) -> u32 {
        q35::lapic::cpuid_apic_id()
    }
    fn zero_save_state(&self, smbase: u32) {
        // SAFETY: the handler passes the SMBASE of one of this host's slots in SMRAM,
        // whose CPU was ejected or is gone.
        unsafe { smm_handler::first_smi::zero_save_state(smbase) }
    }
    fn still_monarch(&self) -> bool {
        LOCK.still_owned_by(self.1, self.now_us())
    }
    fn expect_stall(&self, us: u64) {
        LOCK.expect_stall(self.now_us(), us);
    }
}

/// The Rust entry called by each slot's stub with the slot index.
#[no_mangle]
pub extern "sysv64" fn smm_entry(slot: u32) {
    let p = params();
    if p.magic != PARAMS_MAGIC {
        return;
    }
    let Some(&smbase) = p.slot_smbases().get(slot as usize) else {
        return;
    };
    let host = HostRom(p, slot);
    // The host allows the diagnostic query only during its boot phase (the boot code
    // checks every CPU's slot with it, then clears the flag before the locks).
    // SAFETY: a plain aligned u32 of the parameter block in SMRAM, written only by the
    // boot code before SMRAM was locked.
    let boot_phase = unsafe { core::ptr::read_volatile(addr_of!(p.boot_phase)) } != 0;
    // Only APMC 4 has handlers; other SMIs (diagnostic queries, OS SMI IPIs) touch the
    // lock only while a service runs or an eject is left to do: no CPU leaves SMM before
    // that is done (R14). A CPU that reads port 0xB2 while the monarch ejects a CPU does
    // not read 4: QEMU drops the access as re-entrant I/O into the LPC device
    // (`docs/qemu.md#q-eject-blocks-lpc-io`).
    match ENTRIES.begin(&HwPorts, &p.slots, slot, smbase, boot_phase) {
        Entry::Park => entry::halt_forever(),
        Entry::Continue { apmc }
            if apmc == entry::APMC_CPU_HOTPLUG || LOCK.is_held() || eject::pending(&host) =>
        {
            hot_plug(&host, slot)
        }
        Entry::Continue { .. } | Entry::Leave => {}
    }
    // SAFETY: the slot's own stack bottom in TSEG, from the SMRAM parameter block.
    if !unsafe { entry::canary_intact(tseg::slot_stack(p.tseg_base, slot)) } {
        smm_log!(host, Error, "stack overflow on slot {}", slot);
        entry::halt_forever();
    }
}

/// Most services one CPU runs again for ejects still pending after its own (each one
/// ejects every parked target; a target that never parks is ejected all the same).
const PENDING_RERUNS: u32 = 3;

/// APMC 4 on the CPU at `slot`: lead or wait under the SMI lock. A waiter runs the
/// service once more when the monarch left an eject for another CPU (it was the target
/// itself); a CPU to be ejected parks (`smm_handler::eject`).
fn hot_plug(host: &HostRom, slot: u32) {
    let service = |recovered: bool| {
        if recovered {
            hotplug::recover_lost_monarch(host);
        }
        entry::dispatch(host, entry::APMC_CPU_HOTPLUG);
    };
    let mut ended = LOCK.run(host, slot, service);
    // An eject left for another CPU (the monarch was a target itself and parked after it
    // released the lock, or an eject stayed undecided): run the service again, a bounded
    // number of times, rather than leave SMM with it undone (R14).
    for _ in 0..PENDING_RERUNS {
        match ended {
            Locked::Park => entry::halt_forever(),
            Locked::Led | Locked::Done if eject::pending(host) => {
                smm_log!(
                    host,
                    Info,
                    "slot {}: an eject is still pending (the monarch was a target): running the service again",
                    slot
                );
                ended = LOCK.run(host, slot, service);
            }
            Locked::Led | Locked::Done | Locked::GaveUp => break,
        }
    }
    if ended == Locked::Park {
        entry::halt_forever();
    }
    // The monarch itself was a target: it parks now that the lock is free.
    if entry::park_if_removing(&host.0.slots, slot) {
        entry::halt_forever();
    }
}

smm_handler::smm_panic_handler!();
