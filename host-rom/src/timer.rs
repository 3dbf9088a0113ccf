//! The ROM's clock: the PM timer at the PMBASE the ROM programs.

use q35::io::HwPorts;
use q35::pmtimer::PmTimer;

fn timer() -> PmTimer<'static, HwPorts> {
    PmTimer::new(&HwPorts, q35::ich9::PMBASE)
}

pub fn delay_us(us: u64) {
    timer().delay_us(us)
}

pub fn wait_until(us: u64, cond: impl FnMut() -> bool) -> bool {
    timer().wait_until(us, cond)
}

/// TSC ticks per microsecond, measured over 10 ms of PM timer.
pub fn tsc_per_us() -> u64 {
    // SAFETY: RDTSC has no side effects.
    let t0 = unsafe { core::arch::x86_64::_rdtsc() };
    delay_us(10_000);
    // SAFETY: as above.
    let t1 = unsafe { core::arch::x86_64::_rdtsc() };
    (t1.wrapping_sub(t0) / 10_000).max(1)
}
