//! Application processors: INIT-SIPI-SIPI into a trampoline in the default-SMBASE window
//! (`smm_handler::layout::window::AP_TRAMPOLINE`, before the window becomes SMRAM, as
//! coreboot also starts its APs there), a stack each, and a mailbox loop the BSP
//! drives during SMM setup. At hand-off every AP parks in `cli; hlt` inside the
//! firmware's reserved window, where the payload can restart it with INIT-SIPI-SIPI.

use core::ptr::addr_of;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use q35::lapic;

use crate::timer;

/// SIPI page of the AP trampoline.
pub const AP_TRAMPOLINE: u32 = smm_handler::layout::window::AP_TRAMPOLINE.base;
/// Most CPUs the ROM starts at boot: it starts and relocates present CPUs through xAPIC
/// IPIs and its boot mailbox, both addressed by xAPIC ID (0-254; 0xFF is the broadcast).
/// Hot-added CPUs are not started by the ROM and may have any APIC ID.
pub const MAX_CPUS: usize = smm_handler::layout::XAPIC_IDS - 1;
/// Bytes of each AP's stack (`AP_STACKS`, picked by `host-rom/asm/mp.S`).
const AP_STACK_SIZE: usize = 16 * 1024;

/// Mailbox command: nothing to do (also what the AP writes back when done).
pub const CMD_IDLE: u32 = 0;
/// Mailbox command: raise an SMI and record which slot served it.
pub const CMD_SMM_QUERY: u32 = 1;
/// Mailbox command: park in `cli; hlt` for good.
pub const CMD_PARK: u32 = 2;
/// Mailbox command: answer at once (the AP runs its loop outside SMM).
pub const CMD_PING: u32 = 3;

/// Per AP (index = order of check-in, from 1): APIC ID, command, result.
pub struct ApSlot {
    /// The AP's APIC ID (`u32::MAX` until it checked in).
    pub apic_id: AtomicU32,
    /// The BSP's command (`CMD_*`); the AP sets it back to [`CMD_IDLE`] when done.
    pub cmd: AtomicU32,
    /// [`CMD_SMM_QUERY`] result: `slot | smbase << 32` of the slot that served the SMI
    /// (`u64::MAX` if SMM did not answer).
    pub result_slot: AtomicU64,
    /// [`CMD_SMM_QUERY`] result: the SMI entry count SMM reported.
    pub result_count: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const AP_INIT: ApSlot = ApSlot {
    apic_id: AtomicU32::new(u32::MAX),
    cmd: AtomicU32::new(CMD_IDLE),
    result_slot: AtomicU64::new(0),
    result_count: AtomicU64::new(0),
};
/// The AP mailboxes, by 1-based arrival index (entry 0, the BSP's, is unused).
pub static APS: [ApSlot; MAX_CPUS] = [AP_INIT; MAX_CPUS];
/// APs that checked in.
pub static CHECKED_IN: AtomicU32 = AtomicU32::new(0);

/// The APs' stacks; AP `i` (from 1) runs on the `i - 1`th.
#[repr(C, align(16))]
struct Stacks([u8; AP_STACK_SIZE * MAX_CPUS]);
#[no_mangle]
static mut AP_STACKS: Stacks = Stacks([0; AP_STACK_SIZE * MAX_CPUS]);

core::arch::global_asm!(
    concat!(
        include_str!("../../platform/asm/gdt.S"),
        include_str!("../../platform/asm/long_mode.S"),
        include_str!("../../platform/asm/ap_trampoline.S"),
        include_str!("../../platform/asm/ap_entry64.S"),
        include_str!("../asm/mp.S")
    ),
    max = const MAX_CPUS,
    size = const AP_STACK_SIZE,
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline32: u8;
    static ap_trampoline_far: u8;
    static ap_trampoline_end: u8;
}

/// Copy the AP trampoline (`platform/asm/ap_trampoline.S`) to [`AP_TRAMPOLINE`] and
/// point its far jump at the copy's 32-bit code.
///
/// # Safety
/// The trampoline page must be RAM that nothing else uses.
unsafe fn install_trampoline() {
    // SAFETY: the four symbols lie in one blob in .rodata, in this order; the caller
    // owns the page, which is larger than the blob.
    unsafe {
        let s = addr_of!(ap_trampoline_start);
        let len = addr_of!(ap_trampoline_end) as usize - s as usize;
        let far = addr_of!(ap_trampoline_far) as usize - s as usize;
        let off32 = addr_of!(ap_trampoline32) as usize - s as usize;
        core::ptr::copy_nonoverlapping(s, AP_TRAMPOLINE as usize as *mut u8, len);
        let p = (AP_TRAMPOLINE as usize + far) as *mut u32;
        p.write_unaligned(AP_TRAMPOLINE + off32 as u32);
    }
}

/// An AP's Rust entry (from `host-rom/asm/mp.S`): check in, then serve the mailbox.
#[no_mangle]
extern "sysv64" fn ap_main(index: u32) -> ! {
    let i = index as usize;
    let Some(me) = APS.get(i) else { park() };
    lapic::enable();
    me.apic_id.store(lapic::cpuid_apic_id(), Ordering::SeqCst);
    CHECKED_IN.fetch_add(1, Ordering::SeqCst);
    loop {
        match me.cmd.load(Ordering::SeqCst) {
            CMD_SMM_QUERY => {
                let (s, c) = smm_handler::diag::query().unwrap_or((u64::MAX, 0));
                me.result_slot.store(s, Ordering::SeqCst);
                me.result_count.store(c, Ordering::SeqCst);
                me.cmd.store(CMD_IDLE, Ordering::SeqCst);
            }
            CMD_PARK => park(),
            CMD_PING => me.cmd.store(CMD_IDLE, Ordering::SeqCst),
            _ => core::hint::spin_loop(),
        }
    }
}

/// `cli; hlt` forever. An SMI wakes the CPU, which then halts again after RSM.
pub fn park() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Copy the trampoline to `AP_TRAMPOLINE` and start every present CPU except this one
/// with INIT-SIPI-SIPI; wait (bounded) until `expected` APs checked in.
pub fn start_aps(apic_ids: &[u32], bsp_apic: u32) -> Result<u32, u32> {
    // SAFETY: the trampoline page is RAM that nothing uses before SMM setup (inside the
    // default-SMBASE window, which stays unlocked until after MP init).
    unsafe { install_trampoline() };
    let vector = AP_TRAMPOLINE >> 12;
    let mut expected = 0;
    for &id in apic_ids.iter().filter(|&&id| id != bsp_apic) {
        expected += 1;
        let r = lapic::send_ipi(id, lapic::ICR_INIT)
            .and_then(|_| {
                timer::delay_us(10_000);
                lapic::send_ipi(id, lapic::ICR_STARTUP | vector)
            })
            .and_then(|_| {
                timer::delay_us(200);
                lapic::send_ipi(id, lapic::ICR_STARTUP | vector)
            });
        if let Err(e) = r {
            log::error!("INIT-SIPI-SIPI to APIC {} failed: {:?}", id, e);
        }
    }
    let ok = timer::wait_until(1_000_000, || CHECKED_IN.load(Ordering::SeqCst) >= expected);
    let got = CHECKED_IN.load(Ordering::SeqCst);
    if ok {
        Ok(got)
    } else {
        Err(got)
    }
}

/// The AP mailbox entry of the AP with `apic_id`.
pub fn ap_by_apic(apic_id: u32) -> Option<&'static ApSlot> {
    APS.iter()
        .skip(1)
        .find(|a| a.apic_id.load(Ordering::SeqCst) == apic_id)
}

/// Run `cmd` on one AP and wait (bounded) until it is done.
pub fn run_on_ap(ap: &ApSlot, cmd: u32) -> bool {
    ap.cmd.store(cmd, Ordering::SeqCst);
    timer::wait_until(2_000_000, || ap.cmd.load(Ordering::SeqCst) == CMD_IDLE)
}

/// Tell every AP that checked in to park.
pub fn park_all() {
    for ap in APS.iter().skip(1) {
        if ap.apic_id.load(Ordering::SeqCst) != u32::MAX {
            ap.cmd.store(CMD_PARK, Ordering::SeqCst);
        }
    }
}
