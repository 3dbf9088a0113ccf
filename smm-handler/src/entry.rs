//! What every SMI at a slot does, the same on both hosts: count the entry, leave at once
//! while the slot is RELOCATING (R12), answer the diagnostic query in the CPU's own save
//! state when this build or the host allows it ([`diag::answered`]), and — on the monarch —
//! dispatch the APMC command. Plus the host ROM's owner-aware SMI lock, the stack canary
//! check and the SMM panic handler.
//!
//! A host calls [`SmiEntries::begin`] first thing on every SMI, before any lock, then
//! [`dispatch`] on the CPU that holds its SMI lock.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::host::Host;
use crate::slots::{Slots, MAX_SLOTS};
use crate::{diag, hotplug, smm_log};
use q35::ich9::APM_CNT;
use q35::io::PortIo;

/// APMC command QEMU's AML writes to port 0xB2 after a CPU hot-add (`\_SB.PCI0.SMI0`).
pub const APMC_CPU_HOTPLUG: u8 = 0x04;

/// What a CPU does after [`SmiEntries::begin`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Leave SMM now, before the SMI lock (the slot is being relocated, R12).
    Leave,
    /// Halt inside SMM for good, before the SMI lock: the OS asked to eject this CPU and
    /// the monarch ejects it once it parked (R14). The host halts with
    /// [`halt_forever`].
    Park,
    /// Go on; `apmc` is what port 0xB2 reads.
    Continue {
        /// The APMC command byte.
        apmc: u8,
    },
}

/// SMI entries per slot (what the diagnostic query answers).
pub struct SmiEntries([AtomicU64; MAX_SLOTS]);

impl SmiEntries {
    /// No entries yet.
    pub const fn new() -> Self {
        Self([const { AtomicU64::new(0) }; MAX_SLOTS])
    }

    /// The first step of every SMI at `slot` (whose SMBASE is `smbase`), before any lock.
    /// `diag_allowed`: the host allows the diagnostic query now (the host ROM's boot phase,
    /// coreboot's Kconfig option); builds with the `diag-query` feature answer it anyway.
    pub fn begin<P: PortIo>(
        &self,
        ports: &P,
        slots: &Slots,
        slot: u32,
        smbase: u32,
        diag_allowed: bool,
    ) -> Entry {
        let Some(count) = self.0.get(slot as usize) else {
            return Entry::Leave;
        };
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        // A CPU being relocated that takes a pending SMI at its new SMBASE leaves at once,
        // before the lock the monarch holds.
        if hotplug::must_return_early(slots, slot as usize) {
            return Entry::Leave;
        }
        if park_if_removing(slots, slot) {
            return Entry::Park;
        }
        // A CPU whose slot was taken for GONE (a racy status read) shows it is alive.
        slots.transition(slot as usize, crate::slots::GONE, crate::slots::ACTIVE);
        let apmc = ports.inb(APM_CNT);
        if apmc == diag::APMC_DIAG_QUERY && smbase != 0 && diag::answered(diag_allowed) {
            // SAFETY: `smbase` is this CPU's own slot's SMBASE (host contract), so the
            // save state above it is this CPU's own.
            unsafe { diag::answer_in_save_state(slot, smbase, n) };
        }
        Entry::Continue { apmc }
    }

    /// SMI entries counted at `slot` so far (0 beyond the table).
    pub fn count(&self, slot: u32) -> u64 {
        self.0
            .get(slot as usize)
            .map_or(0, |c| c.load(Ordering::SeqCst))
    }
}

impl Default for SmiEntries {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether the CPU at `slot` is to be ejected; if so, its slot says it parked. Call
/// before the SMI lock and while waiting for it.
pub fn park_if_removing(slots: &Slots, slot: u32) -> bool {
    let n = slot as usize;
    if !slots.is_removing(n) {
        return false;
    }
    slots.transition(n, crate::slots::REMOVING, crate::slots::PARKED);
    true
}

/// Run the handler for `apmc` on the monarch. Only APMC 4 (CPU hot-add) has one; the
/// diagnostic query was answered per CPU in [`SmiEntries::begin`].
pub fn dispatch<H: Host + ?Sized>(host: &H, apmc: u8) {
    if apmc == APMC_CPU_HOTPLUG {
        let s = hotplug::service(host);
        if s != hotplug::Summary::default() {
            smm_log!(
                host,
                Debug,
                "APMC 4 done: {} insert(s), {} relocated, {} skipped, {} quarantined",
                s.inserts,
                s.relocated,
                s.skipped,
                s.quarantined
            );
        }
    }
}

/// How long a CPU that lost the SMI lock waits for the monarch before it leaves SMM
/// without running the handlers: longer than the longest hot-add service.
pub const LOCK_WAIT_US: u64 = 60_000_000;
/// The same wait, capped by an iteration count.
pub const LOCK_WAIT_SPINS: u64 = 1_000_000_000;
/// A monarch that made no progress for this long is gone (INIT'd or ejected by the OS, or
/// stalled): a waiting CPU takes the lock over and recovers. Every wait of the service
/// reports progress on each poll, so a live monarch never comes near this.
pub const LOCK_STALE_US: u64 = 2_000_000;

/// The time of the monarch's last progress report (µs, 0 = none yet).
pub struct Heartbeat(AtomicU64);

impl Heartbeat {
    /// No beat yet.
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Record progress at `now_us`.
    pub fn beat(&self, now_us: u64) {
        self.0.store(now_us.max(1), Ordering::SeqCst);
    }

    /// Whether the last beat is at least [`LOCK_STALE_US`] older than `now_us`.
    pub fn is_stale(&self, now_us: u64) -> bool {
        let b = self.0.load(Ordering::SeqCst);
        b != 0 && now_us > b && now_us - b >= LOCK_STALE_US
    }
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self::new()
    }
}

/// How [`SmiLock::run`] ended for the calling CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locked {
    /// This CPU was the monarch and ran the handlers.
    Led,
    /// Another CPU was the monarch and finished.
    Done,
    /// The wait hit its bound.
    GaveUp,
    /// This CPU is to be ejected: halt inside SMM ([`halt_forever`]).
    Park,
}

/// coreboot-style SMI lock (one CPU runs the handlers, the others wait for it and then
/// leave) that records its owner's slot + 1 (0 = free) and the owner's progress. A CPU
/// that finds itself recorded as owner knows its earlier run was cut short — QEMU TCG
/// resets a CPU on INIT even inside SMM (`docs/qemu.md#t2`) — and takes the lock back;
/// a waiter takes it over from an owner that made no progress for [`LOCK_STALE_US`]
/// (INIT'd and never back, ejected, stalled). Either way the new owner runs recovery
/// first. Waiting is bounded.
pub struct SmiLock {
    owner: AtomicU32,
    heartbeat: Heartbeat,
}

impl SmiLock {
    /// A free lock.
    pub const fn new() -> Self {
        Self {
            owner: AtomicU32::new(0),
            heartbeat: Heartbeat::new(),
        }
    }

    /// Run `f` as the monarch if this CPU (at `slot`) gets the lock; `f` learns whether
    /// the lock was recovered from an interrupted monarch (recover first). Otherwise wait
    /// (bounded) until the monarch is done, or take over from a monarch that is gone; a
    /// waiter whose slot becomes REMOVING stops waiting and parks ([`Locked::Park`]).
    pub fn run<H: Host + ?Sized>(&self, host: &H, slot: u32, f: impl FnOnce(bool)) -> Locked {
        let me = slot + 1;
        // A CPU is in SMM at most once at a time: if the lock names us, our own earlier
        // run was cut short.
        let stale = self
            .owner
            .compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if stale {
            smm_log!(
                host,
                Warn,
                "SMI lock of slot {} left by a CPU reset inside SMM: recovered",
                slot
            );
        }
        if self.take(host, 0, me) {
            self.lead(me, || f(stale));
            return Locked::Led;
        }
        let start = host.now_us();
        let mut spins = 0u64;
        loop {
            let owner = self.owner.load(Ordering::Acquire);
            if owner == 0 {
                return Locked::Done;
            }
            if park_if_removing(host.data().slots, slot) {
                return Locked::Park;
            }
            let now = host.now_us();
            if self.heartbeat.is_stale(now) && self.take(host, owner, me) {
                smm_log!(host, Warn, "SMI lock: the monarch in slot {} made no progress; slot {} takes over and recovers", owner - 1, slot);
                self.lead(me, || f(true));
                return Locked::Led;
            }
            spins += 1;
            if spins >= LOCK_WAIT_SPINS || now.wrapping_sub(start) >= LOCK_WAIT_US {
                smm_log!(
                    host,
                    Warn,
                    "SMI lock held too long; slot {} leaves SMM without running the handlers",
                    slot
                );
                return Locked::GaveUp;
            }
            core::hint::spin_loop();
        }
    }

    fn take<H: Host + ?Sized>(&self, host: &H, from: u32, me: u32) -> bool {
        let ok = self
            .owner
            .compare_exchange(from, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if ok {
            self.heartbeat.beat(host.now_us());
        }
        ok
    }

    fn lead(&self, me: u32, f: impl FnOnce()) {
        f();
        // Release only if nobody took over meanwhile.
        let _ = self
            .owner
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
    }

    /// Whether a CPU holds the lock (a service is running).
    pub fn is_held(&self) -> bool {
        self.owner.load(Ordering::Acquire) != 0
    }

    /// The monarch is about to block for up to `us` from `now_us` ([`Host::expect_stall`]):
    /// its next progress report is due only then, so no waiter takes the lock over before
    /// `now_us + us + LOCK_STALE_US` (still bounded, should it never come back).
    pub fn expect_stall(&self, now_us: u64, us: u64) {
        self.heartbeat.beat(now_us.saturating_add(us));
    }

    /// The monarch's progress report from `slot` at `now_us`: records it and says whether
    /// `slot` still owns the lock ([`Host::still_monarch`]).
    pub fn still_owned_by(&self, slot: u32, now_us: u64) -> bool {
        self.heartbeat.beat(now_us);
        self.owner.load(Ordering::Acquire) == slot + 1
    }
}

impl Default for SmiLock {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether the canary at the bottom of a slot's stack (`stack_bottom`) is intact.
///
/// # Safety
/// `stack_bottom` must be the lowest address of the calling CPU's own slot stack in SMRAM.
pub unsafe fn canary_intact(stack_bottom: u32) -> bool {
    // SAFETY: the caller guarantees the address; the canary is one aligned qword.
    unsafe {
        core::ptr::read_volatile(stack_bottom as usize as *const u64) == crate::layout::STACK_CANARY
    }
}

/// Stop this CPU inside SMM for good (after memory corruption: fail closed).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: `cli; hlt` only stops this CPU; it touches no memory.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// The panic handler of an SMM image: unreachable by construction (the object check
/// finds no panicking code), it halts rather than return into an undefined state.
#[macro_export]
macro_rules! smm_panic_handler {
    () => {
        #[panic_handler]
        fn panic(_: &core::panic::PanicInfo) -> ! {
            $crate::entry::halt_forever()
        }
    };
}
