//! CPU hot-remove (`docs/protocol.md#hot-remove`): the OS asks QEMU, through the register
//! block's `fw_remove` bit and APMC 4, to have the firmware eject a CPU it offlined.
//!
//! 1. The monarch plans: each requested CPU that has an ACTIVE slot (not the boot CPU)
//!    becomes REMOVING. The plan is the slot table itself, so it survives a lost monarch.
//! 2. A REMOVING CPU, at its next SMI entry (before any lock, [`crate::entry`]), marks its
//!    slot PARKED and halts inside SMM for good: it never takes the SMI lock or touches
//!    SMM state again (R14), so ejecting it at any moment leaves nothing half done.
//! 3. The monarch — never the target itself, and not necessarily the boot CPU — waits
//!    (bounded) for each target to park, ejects it by selector (status bit 3), reads the
//!    status back and forgets the slot if the CPU is gone, else quarantines it.
//!
//! A slot whose CPU QEMU reports absent — after our eject, or behind our back (the OS
//! ejected it itself with bit 3), checked on every APMC 4 — becomes GONE: reserved for
//! its APIC ID. It is forgotten (routing entry, arrival mark, save state zeroed, slot
//! FREE) when a CPU with that APIC ID arrives at the default SMBASE, the one proof that
//! the old CPU no longer exists: the OS can move the selector between SMM's register
//! reads (R5), so "absent" alone never frees a slot a live CPU may still use.

use crate::host::Host;
use crate::hotplug::{wait, Step, Summary, Wait, MAX_BATCH};
use crate::slots::{self, NO_APIC};
use crate::smm_log;
use q35::cpuhp::{self, CpuHp};

/// Bound of the wait for a target CPU to park inside SMM (µs). A target that does not
/// park in time is not in SMM (the OS offlined it outside SMM, or never offlined it): it
/// is ejected all the same, as the OS asked.
pub const T_PARK_US: u64 = 100_000;
/// How long the eject's port write may block the monarch (µs): QEMU destroys the vCPU
/// inside the write (it joins the vCPU's thread), typically in well under 20 ms, seen
/// taking seconds on a loaded host. The SMI lock's waiters must not take the monarch for
/// gone meanwhile ([`Host::expect_stall`]).
pub const T_EJECT_STALL_US: u64 = 30_000_000;

/// Step 1: mark the slots of the CPUs at `selectors` REMOVING. Idempotent: a CPU already
/// being removed is skipped quietly (R10); unknown CPUs and the boot CPU are refused.
pub fn plan<H: Host + ?Sized>(h: &H, selectors: &heapless::Vec<u32, MAX_BATCH>) {
    let d = h.data();
    for &sel in selectors {
        let Some(&apic) = d.possible_apic_ids.get(sel as usize) else {
            continue;
        };
        if sel == 0 {
            // QEMU never ejects its first CPU; neither do we plan it.
            smm_log!(
                h,
                Warn,
                "cpuhp: eject request for the boot CPU (APIC ID {}) refused",
                apic
            );
            continue;
        }
        let Some(slot) = d.slots.slot_of(apic, d.slot_count()) else {
            smm_log!(
                h,
                Warn,
                "cpuhp: eject request for APIC ID {}, which has no slot, skipped",
                apic
            );
            continue;
        };
        match d.slots.state(slot) {
            slots::ACTIVE => {
                d.slots.set(slot, slots::REMOVING, apic);
                smm_log!(
                    h,
                    Info,
                    "APMC 4: APIC ID {} (slot {}) to be ejected",
                    apic,
                    slot
                );
            }
            slots::REMOVING | slots::PARKED => {}
            st => smm_log!(
                h,
                Warn,
                "cpuhp: eject request for APIC ID {} in slot {} (state {}) skipped",
                apic,
                slot,
                st
            ),
        }
    }
}

/// Step 3: eject every planned target except the calling CPU.
pub(crate) fn eject_planned<H: Host + ?Sized>(h: &H, s: &mut Summary) -> Step {
    let d = h.data();
    let me = h.current_apic();
    for slot in 0..d.slot_count() {
        if !d.slots.is_removing(slot) {
            continue;
        }
        let apic = d.slots.apic(slot);
        if apic == me {
            // Another CPU ejects this one once it parked (the host runs the service
            // again after this CPU left the lock).
            continue;
        }
        let parked = match wait(h, T_PARK_US, || d.slots.state(slot) == slots::PARKED) {
            Wait::Met => true,
            Wait::TimedOut => false,
            Wait::Deposed => return Step::Stop,
        };
        if !parked {
            smm_log!(
                h,
                Warn,
                "APIC ID {} did not park inside SMM; ejected all the same",
                apic
            );
        }
        eject(h, slot, apic, s);
    }
    Step::Next
}

/// Reads of one selector's status that must agree before SMM believes a CPU is gone.
const GONE_READS: u32 = 2;
/// Attempts at those reads (another CPU may keep moving the selector, R5).
const GONE_TRIES: u32 = 8;

/// Whether the CPU at `sel` is gone: `Some(true)` after [`GONE_READS`] reads of its own
/// status (the selector read back unchanged each time) said "not enabled", `Some(false)`
/// as soon as one such read says "enabled", `None` when another CPU kept moving the
/// selector. A single racy read never decides it.
fn is_gone<H: Host + ?Sized>(h: &H, sel: u32) -> Option<bool> {
    let hp = CpuHp::new(h.ports());
    let mut absent = 0;
    for _ in 0..GONE_TRIES {
        hp.select(sel);
        hp.command(cpuhp::CMD_GET_NEXT_EVENT);
        hp.select(sel);
        let st = hp.status();
        // With command 0, Command data reads the selector back.
        if hp.data() != sel {
            continue;
        }
        if st & cpuhp::STS_ENABLED != 0 {
            return Some(false);
        }
        absent += 1;
        if absent >= GONE_READS {
            return Some(true);
        }
    }
    None
}

/// Eject the CPU of `slot` by selector and check that it is gone.
fn eject<H: Host + ?Sized>(h: &H, slot: usize, apic: u32, s: &mut Summary) {
    let d = h.data();
    let Some(sel) = d.selector_of(apic) else {
        d.slots.set(slot, slots::QUARANTINED, apic);
        return;
    };
    let hp = CpuHp::new(h.ports());
    hp.select(sel);
    h.expect_stall(T_EJECT_STALL_US);
    hp.control(cpuhp::CTL_EJECT);
    // Only this selector's own status, read back consistently, says whether this CPU is
    // gone: another CPU may have moved the selector (R5).
    match is_gone(h, sel) {
        Some(true) => {
            d.slots.set(slot, slots::GONE, apic);
            s.ejected += 1;
            smm_log!(
                h,
                Info,
                "ejected APIC ID {}; slot {} kept for it until it is plugged again",
                apic,
                slot
            );
        }
        Some(false) => {
            d.slots.set(slot, slots::QUARANTINED, apic);
            s.quarantined += 1;
            smm_log!(
                h,
                Error,
                "APIC ID {} still present after the eject; slot {} quarantined",
                apic,
                slot
            );
        }
        // Undecided: the slot stays planned and the next APMC 4 ejects again (an eject of
        // a CPU that is already gone changes nothing).
        None => smm_log!(
            h,
            Warn,
            "APIC ID {}: the selector kept moving; eject retried at the next APMC 4",
            apic
        ),
    }
}

/// Slots whose CPU QEMU reports absent although we did not eject it (the OS ejected it
/// with status bit 3): forget them, so the same APIC ID can come back.
pub fn forget_gone<H: Host + ?Sized>(h: &H, s: &mut Summary) {
    let d = h.data();
    let me = h.current_apic();
    for slot in 0..d.slot_count() {
        if d.slots.state(slot) != slots::ACTIVE {
            continue;
        }
        let apic = d.slots.apic(slot);
        let Some(sel) = d.selector_of(apic) else {
            continue;
        };
        if apic == me || sel == 0 {
            continue;
        }
        if is_gone(h, sel) == Some(true) {
            d.slots.set(slot, slots::GONE, apic);
            s.ejected += 1;
            smm_log!(h, Info, "APIC ID {} is gone (ejected by the OS); slot {} kept for it until it is plugged again", apic, slot);
        }
    }
}

/// A CPU with `apic` arrived at the default SMBASE: if its APIC ID still holds a GONE slot,
/// the old CPU no longer exists, so forget that slot. Call only for an arrived CPU.
pub(crate) fn forget_if_replugged<H: Host + ?Sized>(h: &H, apic: u32) {
    let d = h.data();
    if let Some(slot) = d.slots.slot_of(apic, d.slot_count()) {
        if d.slots.state(slot) == slots::GONE {
            forget(h, slot, apic);
            smm_log!(
                h,
                Info,
                "APIC ID {} is back at the default SMBASE: its old slot {} freed",
                apic,
                slot
            );
        }
    }
}

/// Forget everything SMM knew about the CPU of `slot`: routing entry first (no SMI can be
/// routed to the slot any more), then its save state, then the slot. The arrival mark
/// stays: it belongs to the new CPU with this APIC ID.
fn forget<H: Host + ?Sized>(h: &H, slot: usize, apic: u32) {
    let d = h.data();
    d.set_route(slot, None);
    let _ = apic;
    if let Some(smbase) = d.slot_smbase(slot) {
        h.zero_save_state(smbase);
    }
    h.slot_forgotten(slot);
    d.slots.set(slot, slots::FREE, NO_APIC);
}

/// Whether a target other than the calling CPU waits to be ejected: a CPU that left the
/// SMI lock as a waiter runs the service again then (the monarch may have been a target
/// itself and parked after it released the lock).
pub fn pending<H: Host + ?Sized>(h: &H) -> bool {
    let d = h.data();
    let me = h.current_apic();
    (0..d.slot_count()).any(|n| d.slots.is_removing(n) && d.slots.apic(n) != me)
}
