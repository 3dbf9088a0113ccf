//! The payload's clock for delays, bounded waits and stopwatches: the ACPI PM timer in the
//! freestanding build, libpayload's timer (`timer_us`) on libpayload. Both have the same
//! methods, so the checks are written once against [`Timer`].

#[cfg(not(feature = "libpayload"))]
pub(crate) use q35::pmtimer::Stopwatch;

/// The clock type of this build.
#[cfg(not(feature = "libpayload"))]
pub(crate) type Timer = q35::pmtimer::PmTimer<'static, q35::io::HwPorts>;

/// The clock of this build.
#[cfg(not(feature = "libpayload"))]
pub(crate) fn timer() -> Timer {
    use q35::io::HwPorts;
    let base = q35::ich9::pmbase(&HwPorts).unwrap_or(q35::ich9::PMBASE);
    q35::pmtimer::PmTimer::new(&HwPorts, base)
}

/// A running measurement (libpayload build).
#[cfg(feature = "libpayload")]
pub(crate) struct Stopwatch {
    start_us: u64,
}

/// libpayload's timer, with the PM timer's interface.
#[cfg(feature = "libpayload")]
pub(crate) struct Timer;

/// The clock of this build.
#[cfg(feature = "libpayload")]
pub(crate) fn timer() -> Timer {
    Timer
}

#[cfg(feature = "libpayload")]
impl Timer {
    fn now_us(&self) -> u64 {
        // SAFETY: libpayload's timer is set up before `main`; it only reads the TSC.
        unsafe { libpayload_sys::timer_us(0) }
    }

    /// Start a stopwatch.
    pub fn start(&self) -> Stopwatch {
        Stopwatch {
            start_us: self.now_us(),
        }
    }

    /// Microseconds since `sw` started.
    pub fn elapsed_us(&self, sw: &mut Stopwatch) -> u64 {
        self.now_us().saturating_sub(sw.start_us)
    }

    /// Busy-wait `us` microseconds.
    pub fn delay_us(&self, us: u64) {
        // SAFETY: a busy-wait on libpayload's timer.
        unsafe { libpayload_sys::ndelay(us.saturating_mul(1000)) }
    }

    /// TSC ticks per microsecond: libpayload's timer on x86 is the TSC at this rate.
    pub fn tsc_per_us(&self) -> u64 {
        // SAFETY: a plain read of the rate libpayload calibrated at start.
        (unsafe { libpayload_sys::timer_hz() } / 1_000_000).max(1)
    }

    /// Poll `cond` until it holds or `us` microseconds pass; returns the last verdict.
    pub fn wait_until(&self, us: u64, mut cond: impl FnMut() -> bool) -> bool {
        let sw = self.start();
        loop {
            if cond() {
                return true;
            }
            if self.now_us().saturating_sub(sw.start_us) >= us {
                return cond();
            }
            core::hint::spin_loop();
        }
    }
}
