//! What the IPI-driven OS-role scenarios (`init_smi`, `lock_owner`) share: a TSC clock for
//! tight waits, the pen's signal byte, and starting an INIT'd CPU again.

use core::sync::atomic::Ordering;

use crate::clock;
use crate::cpus::{find_ap, init_sipi_sipi};
use crate::Report;
use smm_handler::layout::window::{PEN, PEN_SIGNAL};

/// A busy-wait clock on the TSC, calibrated once against the PM timer. Waits between IPIs
/// use it rather than the PM timer, so the BSP's polling makes no I/O exits: under TCG each
/// takes QEMU's global lock, which the target vCPU needs as well to take its INIT and SMI
/// and to run the service's I/O.
pub(crate) struct Clock {
    tsc_per_us: u64,
}

impl Clock {
    pub fn calibrate() -> Clock {
        Clock {
            tsc_per_us: clock::timer().tsc_per_us(),
        }
    }

    pub fn now_us(&self) -> u64 {
        // SAFETY: RDTSC has no side effects.
        unsafe { core::arch::x86_64::_rdtsc() / self.tsc_per_us }
    }

    /// Poll `cond` until it holds or `us` microseconds pass; returns the last verdict.
    pub fn wait_until(&self, us: u64, cond: impl FnMut() -> bool) -> bool {
        self.poll_until(us, 0, cond)
    }

    /// Poll `cond` every `every_us` until it holds or `us` microseconds pass (a poll that
    /// does I/O leaves the lock to other vCPUs in between); returns the last verdict.
    pub fn poll_until(&self, us: u64, every_us: u64, mut cond: impl FnMut() -> bool) -> bool {
        let start = self.now_us();
        loop {
            if cond() {
                return true;
            }
            if self.now_us().wrapping_sub(start) >= us {
                return cond();
            }
            let t = self.now_us();
            while self.now_us().wrapping_sub(t) < every_us {
                core::hint::spin_loop();
            }
        }
    }

    pub fn delay_us(&self, us: u64) {
        let _ = self.wait_until(us, || false);
    }
}

/// The pen's signal byte: the firmware sets it when a CPU reaches the pen.
pub(crate) fn pen_signal() -> u8 {
    // SAFETY: the pen page is reserved low RAM the OS can read and write (R4).
    unsafe { core::ptr::read_volatile((PEN.base + PEN_SIGNAL) as usize as *const u8) }
}

pub(crate) fn set_pen_signal(v: u8) {
    // SAFETY: as for `pen_signal`.
    unsafe { core::ptr::write_volatile((PEN.base + PEN_SIGNAL) as usize as *mut u8, v) }
}

/// Start `apic` again as an OS would (INIT-SIPI-SIPI) and require, as check `name`, that
/// it answers the diagnostic query from `slot_before`, the slot it had before its INIT.
pub(crate) fn bring_back(
    r: &mut Report,
    name: &'static str,
    apic: u32,
    slot_before: u64,
    tm: &Clock,
) {
    if let Some(a) = find_ap(apic) {
        a.done.store(0, Ordering::SeqCst);
    }
    let started = init_sipi_sipi(apic) && tm.wait_until(3_000_000, || find_ap(apic).is_some());
    let Some(a) = find_ap(apic) else {
        r.check(
            name,
            false,
            format_args!("APIC {} did not come back after INIT-SIPI-SIPI", apic),
        );
        return;
    };
    if crate::diag_query_absent() {
        r.skip(name, format_args!("{}", crate::DIAG_ABSENT));
        return;
    }
    let s = a.slot.load(Ordering::SeqCst);
    r.check(
        name,
        started && s == slot_before && s != u64::MAX,
        format_args!(
            "APIC {} back after INIT-SIPI-SIPI, SMI served by slot {} SMBASE {:#x} (before: slot {} SMBASE {:#x})",
            apic,
            s as u32 as i64,
            s >> 32,
            slot_before as u32 as i64,
            slot_before >> 32
        ),
    );
}
