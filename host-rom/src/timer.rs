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

pub fn tsc_per_us() -> u64 {
    timer().tsc_per_us()
}
