//! Delays and bounded waits on the ACPI PM timer (3.579545 MHz, 24 bits, wraps).

use crate::ich9::{pm_timer, PM_TIMER_HZ};
use crate::io::PortIo;

/// The ACPI PM timer (ICH9 PM_TMR) of the PM block at one PMBASE.
pub struct PmTimer<'a, P: PortIo> {
    ports: &'a P,
    pmbase: u16,
}

/// A running measurement started by [`PmTimer::start`]: PM timer ticks since then,
/// accumulating 24-bit wraps; valid while polled more often than every 4.6 s (the
/// timer wraps every 4.69 s).
pub struct Stopwatch {
    last: u32,
    elapsed: u64,
}

impl<'a, P: PortIo> PmTimer<'a, P> {
    /// The timer of the PM block at `pmbase`; touches no register.
    pub const fn new(ports: &'a P, pmbase: u16) -> Self {
        Self { ports, pmbase }
    }

    /// The current 24-bit timer value in ticks (1 tick = 1 / 3.579545 MHz, about
    /// 279 ns).
    pub fn now(&self) -> u32 {
        pm_timer(self.ports, self.pmbase)
    }

    /// Start a measurement at the current timer value.
    pub fn start(&self) -> Stopwatch {
        Stopwatch {
            last: self.now(),
            elapsed: 0,
        }
    }

    /// Ticks since `sw` started; advances `sw` past any wrap since the last call.
    pub fn elapsed_ticks(&self, sw: &mut Stopwatch) -> u64 {
        let t = self.now();
        sw.elapsed += u64::from(t.wrapping_sub(sw.last) & 0x00FF_FFFF);
        sw.last = t;
        sw.elapsed
    }

    /// Microseconds since `sw` started (see [`Self::elapsed_ticks`]).
    pub fn elapsed_us(&self, sw: &mut Stopwatch) -> u64 {
        self.elapsed_ticks(sw) * 1_000_000 / u64::from(PM_TIMER_HZ)
    }

    /// Busy-wait `us` microseconds.
    pub fn delay_us(&self, us: u64) {
        let _ = self.wait_until(us, || false);
    }

    /// TSC ticks per microsecond, measured against this timer over 10 ms (for clocks in
    /// code that must not rely on the OS-movable PM timer later, e.g. SMM).
    pub fn tsc_per_us(&self) -> u64 {
        // SAFETY: RDTSC has no side effects.
        let t0 = unsafe { core::arch::x86_64::_rdtsc() };
        self.delay_us(10_000);
        // SAFETY: as above.
        let t1 = unsafe { core::arch::x86_64::_rdtsc() };
        (t1.wrapping_sub(t0) / 10_000).max(1)
    }

    /// Poll `cond` until it holds or `us` microseconds pass; returns the last verdict.
    pub fn wait_until(&self, us: u64, mut cond: impl FnMut() -> bool) -> bool {
        let mut sw = self.start();
        let end = us * u64::from(PM_TIMER_HZ) / 1_000_000;
        loop {
            if cond() {
                return true;
            }
            if self.elapsed_ticks(&mut sw) >= end {
                return cond();
            }
            core::hint::spin_loop();
        }
    }
}
