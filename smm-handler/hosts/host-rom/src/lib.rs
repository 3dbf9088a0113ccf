//! The host ROM's SMM module. Every CPU that takes an SMI at a relocated SMBASE comes
//! here from its slot's entry stub, in long mode with SSE off and a 2 KiB stack, exactly
//! as coreboot's x86_64 SMM stage calls its C handler. Like coreboot, one CPU at a time
//! runs the handlers (a lock, not a rendezvous); CPUs that lose wait for the winner to
//! finish, then leave, and late CPUs run the handlers again (they are idempotent).
//!
//! SMM rules: no panics, no `core::fmt`, no floats, bounded loops; checked on the built
//! object by `fwtool check-smm` (tests/tests/smm_object.rs).
#![no_std]

use core::ptr::{addr_of, read_volatile};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use q35::ich9::APM_CNT;
use q35::io::{HwPorts, PortIo};
use q35::serial::{Serial, COM1};
use smm_handler::diag;
use smm_handler::first_smi::FixedWindow;
use smm_handler::hotplug::{self, Platform, Window};
use smm_handler::log::{Console, Level, Part};
use smm_handler::params::{SmmParams, MAX_SLOTS, PARAMS_MAGIC, STACK_CANARY};
use smm_handler::slots::Slots;

extern crate fw_rt;

/// Filled in by the host ROM before SMRAM is closed. After that only the slot table in
/// it changes, and only from SMM.
#[no_mangle]
#[used]
pub static mut SMM_PARAMS: SmmParams = SmmParams::empty();

/// coreboot-style SMI lock for the handlers, holding the owner's slot + 1 (0 = free):
/// a CPU that finds itself recorded as owner knows its earlier run was cut short (QEMU
/// TCG resets a CPU on INIT even inside SMM), and takes the lock back instead of
/// deadlocking every later SMI.
static LOCK: AtomicU32 = AtomicU32::new(0);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static ENTRIES: [AtomicU64; MAX_SLOTS] = [ZERO; MAX_SLOTS];

/// How long a CPU that lost the lock waits for the winner before it leaves SMM without
/// running the handlers: longer than the longest hot-add service (bounded waits per
/// CPU), and capped by an iteration count too.
const LOCK_WAIT_US: u64 = 60_000_000;
const LOCK_WAIT_SPINS: u64 = 1_000_000_000;

fn params() -> &'static SmmParams {
    // SAFETY: the host wrote SMM_PARAMS before closing SMRAM; afterwards only its atomic
    // slot table is written, so shared references are sound.
    unsafe { &*addr_of!(SMM_PARAMS) }
}

struct SerialConsole;

impl Console for SerialConsole {
    fn write(&self, bytes: &[u8]) {
        Serial::new(&HwPorts, COM1).write_bytes(bytes);
    }
}

/// The host ROM as the handler's platform.
struct HostRom {
    p: &'static SmmParams,
    window: FixedWindow,
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear in SMM.
    unsafe { core::arch::x86_64::_rdtsc() }
}

impl Platform for HostRom {
    type Ports = HwPorts;
    fn ports(&self) -> &HwPorts {
        &HwPorts
    }
    fn now_us(&self) -> u64 {
        rdtsc() / self.p.tsc_per_us.max(1)
    }
    fn log(&self, level: Level, parts: &[Part<'_>]) {
        if level as u32 <= self.p.log_level {
            SerialConsole.line(level, parts);
        }
    }
    fn slots(&self) -> &Slots {
        &self.p.slots
    }
    fn slot_count(&self) -> usize {
        (self.p.num_slots as usize).min(MAX_SLOTS)
    }
    fn slot_smbase(&self, slot: usize) -> Option<u32> {
        self.p
            .slot_smbase
            .get(slot)
            .copied()
            .filter(|_| slot < self.slot_count())
    }
    fn set_route(&self, _slot: usize, _apic: Option<u32>) {
        // Each slot's stub copy knows its own slot index, so routing needs no table
        // here; the slot table itself records which APIC ID a slot serves.
    }
    fn is_possible_apic(&self, apic: u32) -> bool {
        self.p
            .possible_apic_id
            .iter()
            .take(self.p.num_possible as usize)
            .any(|&a| a == apic)
    }
    fn possible_count(&self) -> u32 {
        self.p.num_possible.min(MAX_SLOTS as u32)
    }
    fn send_ipi(&self, apic: u32, icr_low: u32) -> bool {
        q35::lapic::send_ipi(apic, icr_low).is_ok()
    }
    fn window(&self) -> &dyn Window {
        &self.window
    }
}

/// The Rust entry called by each slot's stub with the slot index.
#[no_mangle]
pub extern "sysv64" fn smm_entry(slot: u32) {
    let p = params();
    if p.magic != PARAMS_MAGIC || slot >= p.num_slots {
        return;
    }
    let (Some(&smbase), Some(count)) =
        (p.slot_smbase.get(slot as usize), ENTRIES.get(slot as usize))
    else {
        return;
    };
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    // A CPU being relocated that takes a pending SMI at its new SMBASE leaves at once,
    // before the lock the monarch holds (R12).
    if hotplug::must_return_early(&p.slots, slot as usize) {
        return;
    }
    let apmc = HwPorts.inb(APM_CNT);

    // Per-CPU part: the diagnostic query answers in this CPU's own save state only.
    if apmc == diag::APMC_DIAG_QUERY {
        // SAFETY: `smbase` is this CPU's own slot, from the SMRAM parameter block.
        unsafe { diag::answer_in_save_state(slot, smbase, n) };
    }

    // Only APMC 4 has handlers here; other SMIs (diagnostic queries, OS SMI IPIs) do
    // not touch the lock at all.
    if apmc == smm_handler::APMC_CPU_HOTPLUG {
        run_locked(p, slot);
    }
    check_canary(p, slot);
}

fn run_locked(p: &'static SmmParams, slot: u32) {
    let me = slot + 1;
    let host = HostRom {
        p,
        window: FixedWindow {
            pen_base: p.pen_base,
        },
    };
    let mut stale = false;
    if LOCK
        .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        // Our own earlier run was cut short (a CPU is in SMM at most once at a time).
        stale = true;
        host.log(
            Level::Warn,
            &[
                Part::Str(b"SMI lock of slot "),
                Part::Dec(slot.into()),
                Part::Str(b" left by a CPU reset inside SMM: recovered"),
            ],
        );
    }
    if LOCK
        .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        if stale {
            hotplug::recover_lost_monarch(&host);
        }
        let _ = hotplug::service(&host);
        LOCK.store(0, Ordering::Release);
        return;
    }
    let start = host.now_us();
    let mut spins = 0u64;
    while LOCK.load(Ordering::Acquire) != 0 {
        spins += 1;
        if spins >= LOCK_WAIT_SPINS || host.now_us().wrapping_sub(start) >= LOCK_WAIT_US {
            host.log(
                Level::Warn,
                &[
                    Part::Str(b"SMI lock held too long; slot "),
                    Part::Dec(slot.into()),
                    Part::Str(b" leaves SMM without running the handlers"),
                ],
            );
            return;
        }
        core::hint::spin_loop();
    }
}

fn check_canary(p: &SmmParams, slot: u32) {
    let lo = p.stack_base + slot * p.stack_size;
    // SAFETY: the canary is the lowest qword of this slot's own stack in TSEG.
    if unsafe { read_volatile(lo as *const u64) } != STACK_CANARY {
        SerialConsole.line(
            Level::Error,
            &[
                Part::Str(b"stack overflow on slot "),
                Part::Dec(slot.into()),
            ],
        );
        loop {
            // SAFETY: halting inside SMM after memory corruption: fail closed.
            unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction (the object check finds no panicking code); halt
    // rather than return into an undefined state.
    loop {
        // SAFETY: stops this CPU inside SMM.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
