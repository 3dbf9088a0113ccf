//! The CPU-hotplug handler for coreboot, behind a small C ABI: one object linked into
//! both the ramstage (boot-time preparation, [`ramstage`]) and the smm stage (APMC 4).
//!
//! Ramstage records the boot info (`smm_handler::boot_info::BootInfo`: possible APIC IDs,
//! TSC rate, the address of coreboot's live `apic_id_to_cpu` table) in the default-SMBASE
//! window, which becomes SMRAM when it is locked: SMM reads only SMRAM. In SMM, coreboot's
//! C glue calls [`rust_cpu_hotplug_smi_entry`] at the very start of `smm_handler_start()`
//! (before coreboot's SMI lock) and [`rust_cpu_hotplug_apmc`] with a filled [`Env`] on the
//! CPU that holds the lock. What only this host has: the C ABI, coreboot's console and
//! its routing table. coreboot provides memcpy and friends, its SMI lock and the stack
//! canary check.
//!
//! coreboot's SMI lock (patch 0006 in coreboot-config) records its owner and asks the
//! platform on each spin of a waiter: [`rust_cpu_hotplug_lock_wait`] decides from the
//! monarch's [`Heartbeat`] (beaten on each poll of its waits, [`Host::still_monarch`]) when
//! the owner is gone and a waiter takes over, and bounds every wait. The CPU that took the
//! lock over (or found its own run cut short) calls [`rust_cpu_hotplug_lock_recovered`]
//! before the handlers, which finishes the interrupted relocation.
//!
//! SMM rules: no panics, no `core::fmt`, no floats, bounded loops; checked on the built
//! object by `fwtool check-smm` (tests/tests/smm_object.rs).
#![no_std]

pub mod ramstage;

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};

use q35::io::HwPorts;
use smm_handler::boot_info::BootInfo;
use smm_handler::entry::{self, Entry, Heartbeat, SmiEntries};
use smm_handler::first_smi::{self, FixedWindow, Window};
use smm_handler::host::{Host, HostData, NO_ROUTE};
use smm_handler::layout::window;
use smm_handler::log::{Console, Level};
use smm_handler::slots::{self, Slots, MAX_SLOTS};
use smm_handler::smm_log;

/// [`Env::version`] this object understands (`RUST_CPU_HOTPLUG_ENV_VERSION` in C).
pub const ENV_VERSION: u32 = 4;

/// A console write function of the C glue (coreboot's printk with a level).
pub type ConsoleFn = Option<extern "C" fn(level: u32, buf: *const u8, len: usize)>;

/// coreboot's `smm_lock_owner()`: the CPU holding the SMI lock, -1 when it is free.
pub type LockOwnerFn = Option<extern "C" fn() -> i32>;

/// Mirrors `struct rust_cpu_hotplug_env` in coreboot-config's `rust_cpu_hotplug.h`
/// (sizes and offsets asserted on both sides): what only coreboot's SMM module knows,
/// filled by the C glue on each call.
#[repr(C)]
pub struct Env {
    /// [`ENV_VERSION`].
    pub version: u32,
    /// SMM slots coreboot laid out (`smm_runtime.num_cpus`: every possible CPU).
    pub slot_count: u32,
    /// Lines above this level (`smm_handler::log::Level as u32`) are dropped.
    pub log_level: u32,
    /// coreboot's number of the CPU that holds the SMI lock and runs this call.
    pub cpu: u32,
    /// `[slot_count]` SMBASE per slot (from `smm_get_save_state()`).
    pub slot_smbase: *const u32,
    /// Where log lines go.
    pub console_write: ConsoleFn,
    /// The SMI lock's owner now ([`Host::still_monarch`]); NULL: always this CPU.
    pub lock_owner: LockOwnerFn,
}

const _: () = assert!(size_of::<Env>() == 40);
const _: () = assert!(offset_of!(Env, cpu) == 12 && offset_of!(Env, lock_owner) == 32);
const _: () = assert!(offset_of!(Env, slot_count) == 4 && offset_of!(Env, log_level) == 8);
const _: () = assert!(offset_of!(Env, slot_smbase) == 16 && offset_of!(Env, console_write) == 24);

/// Slot bookkeeping in SMRAM, seeded from coreboot's routing table on first use.
static SLOTS: Slots = Slots::new();
static SEEDED: AtomicBool = AtomicBool::new(false);
static ENTRIES: SmiEntries = SmiEntries::new();

/// A monarch that is itself to be ejected hands the SMI lock on: it records its CPU + 1
/// here (0 = none) and parks holding the lock; the first waiter takes the lock over at
/// once and runs the service again, which ejects it. Releasing the lock instead would
/// leave the eject to the next APMC 4: coreboot's waiters leave SMM when the lock is
/// released, without the handlers.
static HANDOFF: AtomicU32 = AtomicU32::new(0);
/// The monarch's last progress report (µs by TSC), for the waiters of coreboot's SMI lock.
static HEARTBEAT: Heartbeat = Heartbeat::new();
/// Whether [`HEARTBEAT`] was ever beaten (before that, only a waiter's own wait counts).
static BEATEN: AtomicBool = AtomicBool::new(false);
/// Per waiting CPU: the owner it waits for (+ 1) and since when (µs). A new owner gets a
/// full [`entry::LOCK_STALE_US`] before it can be judged gone.
static WAIT_OWNER: [AtomicU32; MAX_SLOTS] = [const { AtomicU32::new(0) }; MAX_SLOTS];
static WAIT_START: [AtomicU64; MAX_SLOTS] = [const { AtomicU64::new(0) }; MAX_SLOTS];
/// Per waiting CPU: when its current wait for the lock began (µs), for the overall bound.
static WAIT_TOTAL_START: [AtomicU64; MAX_SLOTS] = [const { AtomicU64::new(0) }; MAX_SLOTS];

/// [`rust_cpu_hotplug_lock_wait`]'s answers (`enum smm_lock_wait_action` of patch 0006).
pub const LOCK_WAIT: i32 = 0;
/// The owner is gone: take the lock over and run the handlers (recovery first).
pub const LOCK_TAKE_OVER: i32 = 1;
/// The wait hit its bound: leave SMM without running the handlers.
pub const LOCK_GIVE_UP: i32 = 2;

fn beat(now_us: u64) {
    HEARTBEAT.beat(now_us);
    BEATEN.store(true, Ordering::SeqCst);
}

fn tsc_us(boot: &BootInfo) -> u64 {
    // SAFETY: RDTSC has no side effects.
    let t = unsafe { core::arch::x86_64::_rdtsc() };
    t / boot.tsc_per_us.max(1)
}

/// A console that forwards to the C glue (coreboot's printk).
pub(crate) struct CConsole(pub ConsoleFn, pub Level);

impl Console for CConsole {
    fn write(&self, bytes: &[u8]) {
        if let Some(f) = self.0 {
            f(self.1 as u32, bytes.as_ptr(), bytes.len());
        }
    }
}

fn boot_info() -> Option<&'static BootInfo> {
    // SAFETY: the boot info lies in the default-SMBASE window, SMRAM after the 0x9C lock,
    // written by ramstage before it; SMM only reads it.
    let b = unsafe { &*(window::BOOT_INFO.base as usize as *const BootInfo) };
    b.is_valid().then_some(b)
}

/// coreboot as the handler's host.
struct Coreboot<'a> {
    env: &'a Env,
    boot: &'a BootInfo,
    slot_smbase: &'a [u32],
    routes: Option<&'a [AtomicU16]>,
}

impl<'a> Coreboot<'a> {
    fn new(env: &'a Env, boot: &'a BootInfo) -> Self {
        let n = (env.slot_count as usize).min(MAX_SLOTS);
        let slot_smbase = if env.slot_smbase.is_null() {
            &[][..]
        } else {
            // SAFETY: `slot_smbase` has `slot_count` entries in SMRAM (C glue contract).
            unsafe { core::slice::from_raw_parts(env.slot_smbase, n) }
        };
        let routes = (boot.route_table != 0).then(|| {
            // SAFETY: coreboot's stub table `apic_id_to_cpu[CONFIG_MAX_CPUS]` (u16, so
            // AtomicU16-compatible) lives in SMRAM and has at least `slot_count` entries;
            // its address was recorded at boot in the locked boot info.
            unsafe { core::slice::from_raw_parts(boot.route_table as usize as *const AtomicU16, n) }
        });
        Self {
            env,
            boot,
            slot_smbase,
            routes,
        }
    }
}

impl Host for Coreboot<'_> {
    type Ports = HwPorts;
    fn ports(&self) -> &HwPorts {
        &HwPorts
    }
    fn data(&self) -> HostData<'_> {
        HostData {
            slot_smbase: self.slot_smbase,
            possible_apic_ids: smm_handler::first_smi::possible_apic_ids(),
            slots: &SLOTS,
            routes: self.routes,
        }
    }
    fn now_us(&self) -> u64 {
        tsc_us(self.boot)
    }
    fn log(&self, level: Level, template: &str, args: &[u64]) {
        if level as u32 <= self.env.log_level {
            CConsole(self.env.console_write, level).line(level, template, args);
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
        let owner = self.env.lock_owner.map_or(self.env.cpu as i32, |f| f());
        if owner != self.env.cpu as i32 {
            return false;
        }
        beat(self.now_us());
        true
    }
    fn expect_stall(&self, us: u64) {
        beat(self.now_us().saturating_add(us));
    }
}

/// Mark the slots coreboot's MP init filled (its routing table) ACTIVE, once.
fn seed(cb: &Coreboot<'_>) {
    if SEEDED.swap(true, Ordering::SeqCst) {
        return;
    }
    for (slot, r) in cb.routes.unwrap_or(&[]).iter().enumerate() {
        let apic = r.load(Ordering::SeqCst);
        if apic != NO_ROUTE {
            SLOTS.set(slot, slots::ACTIVE, u32::from(apic));
        }
    }
}

/// Service APMC 4 (CPU hotplug) on the CPU that holds coreboot's SMI lock.
///
/// # Safety
/// `env` is NULL or points to a filled `struct rust_cpu_hotplug_env` in SMRAM whose
/// arrays have the lengths it states.
#[no_mangle]
pub unsafe extern "C" fn rust_cpu_hotplug_apmc(env: *const Env) {
    // SAFETY: coreboot passes a pointer to a struct in its SMM module (SMRAM) or NULL.
    let Some(env) = (unsafe { env.as_ref() }).filter(|e| e.version == ENV_VERSION) else {
        return;
    };
    let Some(boot) = boot_info() else {
        CConsole(env.console_write, Level::Error).line(
            Level::Error,
            "cpu hotplug: no valid boot info; APMC 4 ignored",
            &[],
        );
        return;
    };
    let cb = Coreboot::new(env, boot);
    // Report progress at once: the waiters judge this CPU by its heartbeat.
    if !cb.still_monarch() {
        return;
    }
    seed(&cb);
    entry::dispatch(&cb, entry::APMC_CPU_HOTPLUG);
    // Planned for eject by this very service: a CPU never ejects itself.
    if entry::park_if_removing(&SLOTS, env.cpu) {
        smm_log!(
            cb,
            Info,
            "CPU {} is to be ejected: parks and hands the SMI lock on",
            env.cpu
        );
        HANDOFF.store(env.cpu.wrapping_add(1), Ordering::SeqCst);
        entry::halt_forever();
    }
}

/// coreboot's `smm_lock_wait()`: asked on each spin by CPU `cpu` while CPU `owner` holds
/// the SMI lock (`spins` counts from 0). Returns [`LOCK_TAKE_OVER`] when the owner made no
/// progress for [`entry::LOCK_STALE_US`] (by its heartbeat, and this CPU waited that long
/// for it: INIT'd in SMM and never back, ejected, stalled), [`LOCK_GIVE_UP`] after
/// [`entry::LOCK_WAIT_US`] (or [`entry::LOCK_WAIT_SPINS`] without a TSC rate), else
/// [`LOCK_WAIT`]. A waiter that the monarch is to eject parks here for good.
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_lock_wait(owner: i32, cpu: i32, spins: u64) -> i32 {
    if let Ok(slot) = u32::try_from(cpu) {
        if entry::park_if_removing(&SLOTS, slot) {
            entry::halt_forever();
        }
    }
    if HANDOFF.load(Ordering::SeqCst) == (owner as u32).wrapping_add(1) {
        return LOCK_TAKE_OVER;
    }
    let c = usize::try_from(cpu).unwrap_or(usize::MAX);
    let (Some(boot), Some(seen), Some(since), Some(began)) = (
        boot_info(),
        WAIT_OWNER.get(c),
        WAIT_START.get(c),
        WAIT_TOTAL_START.get(c),
    ) else {
        return if spins >= entry::LOCK_WAIT_SPINS {
            LOCK_GIVE_UP
        } else {
            LOCK_WAIT
        };
    };
    let now = tsc_us(boot);
    let owner_tag = (owner as u32).wrapping_add(1);
    if spins == 0 {
        began.store(now, Ordering::Relaxed);
    }
    if spins == 0 || seen.load(Ordering::Relaxed) != owner_tag {
        seen.store(owner_tag, Ordering::Relaxed);
        since.store(now, Ordering::Relaxed);
    }
    let stalled = now.saturating_sub(since.load(Ordering::Relaxed)) >= entry::LOCK_STALE_US;
    if stalled && (!BEATEN.load(Ordering::SeqCst) || HEARTBEAT.is_stale(now)) {
        return LOCK_TAKE_OVER;
    }
    let waited = now.saturating_sub(began.load(Ordering::Relaxed));
    if waited >= entry::LOCK_WAIT_US || spins >= entry::LOCK_WAIT_SPINS {
        return LOCK_GIVE_UP;
    }
    LOCK_WAIT
}

/// coreboot's `smm_lock_recovered()`: the CPU in `env` now holds the SMI lock, taken over
/// from `previous_owner` (or its own earlier run, cut short, when that is `env.cpu`).
/// Finishes the relocation the lost monarch left in flight, before the handlers run.
///
/// # Safety
/// As [`rust_cpu_hotplug_apmc`].
#[no_mangle]
pub unsafe extern "C" fn rust_cpu_hotplug_lock_recovered(env: *const Env, previous_owner: i32) {
    // SAFETY: coreboot passes a pointer to a struct in its SMM module (SMRAM) or NULL.
    let Some(env) = (unsafe { env.as_ref() }).filter(|e| e.version == ENV_VERSION) else {
        return;
    };
    let Some(boot) = boot_info() else {
        return;
    };
    let cb = Coreboot::new(env, boot);
    if !cb.still_monarch() {
        return;
    }
    seed(&cb);
    let handed = (previous_owner as u32).wrapping_add(1);
    if HANDOFF
        .compare_exchange(handed, 0, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        // The service was complete; the handlers now eject the previous owner.
        smm_log!(
            cb,
            Info,
            "SMI lock handed on by CPU {} (to be ejected) to CPU {}",
            previous_owner as u32,
            env.cpu
        );
        return;
    }
    if previous_owner == env.cpu as i32 {
        smm_log!(
            cb,
            Warn,
            "SMI lock of CPU {} left by a CPU reset inside SMM: recovered",
            env.cpu
        );
    } else {
        smm_log!(
            cb,
            Warn,
            "SMI lock: CPU {} made no progress; CPU {} takes over and recovers",
            previous_owner as u32,
            env.cpu
        );
    }
    smm_handler::hotplug::recover_lost_monarch(&cb);
}

/// `diag_query` value of [`rust_cpu_hotplug_smi_entry`] that turns the diagnostic query on
/// (`RUST_CPU_HOTPLUG_DIAG_QUERY_ON` in C, passed with `CONFIG_CPU_HOTPLUG_RUST_DIAG_QUERY`;
/// "DIAG"). Any other value, including whatever an older C glue leaves in the register,
/// keeps it off.
pub const DIAG_QUERY_ON: u32 = 0x4449_4147;

/// Called by every CPU at SMI entry, before coreboot's SMI lock, with its slot and that
/// slot's SMBASE. Returns non-zero when the CPU must leave SMM at once: it is being
/// relocated (R12), or it was INIT'd and now returns to the pen; never returns for a CPU
/// that is to be ejected (it parks inside SMM).
/// Otherwise, when `diag_query` is [`DIAG_QUERY_ON`], answers the read-only
/// diagnostic query in this CPU's own save state (see `smm_handler::diag`).
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_smi_entry(cpu: u32, smbase: u32, diag_query: u32) -> i32 {
    // A CPU the OS sent INIT and then an SMI saved the reset state: RSM would run
    // coreboot's reset vector at OS time. coreboot's stub does not check this (the host
    // ROM's does), so send the CPU to the pen here, before the lock, and leave.
    // SAFETY: `smbase` is this CPU's own slot's SMBASE, from coreboot's save-state
    // pointer for `cpu` (the glue's contract), so its save state is this CPU's own.
    let init_state = smbase != 0
        && (cpu as usize) < MAX_SLOTS
        && unsafe { first_smi::in_init_reset_state(smbase) };
    if init_state {
        // SAFETY: as above; returning 1 makes the CPU leave SMM at once.
        unsafe { first_smi::return_to_pen(smbase) };
        return 1;
    }
    let diag = diag_query == DIAG_QUERY_ON;
    match ENTRIES.begin(&HwPorts, &SLOTS, cpu, smbase, diag) {
        // To be ejected: halt here, before coreboot's SMI lock (R14).
        Entry::Park => entry::halt_forever(),
        Entry::Leave => i32::from((cpu as usize) < MAX_SLOTS),
        Entry::Continue { .. } => 0,
    }
}

smm_handler::smm_panic_handler!();
