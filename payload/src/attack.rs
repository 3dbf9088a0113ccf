//! The hostile-OS variants of hot-add (`attack`, `sipi-attack`), kept apart from the normal
//! flow in [`crate::hotplug::run`], which calls them at four hook points:
//!
//! 1. [`plant`] before the payload says it is ready: code the OS plants at the first-SMI
//!    handler's entry (locked SMRAM, `docs/protocol.md#the-default-smbase-window`), in the
//!    OS-writable pen page (R4) and in a page of its own (the target of a SIPI).
//! 2. [`before_hotplug_smi`] once the scan found new CPUs, before APMC 4: the SIPI attack
//!    and SMI IPIs to the CPUs that still have the default SMBASE (R18).
//! 3. [`after_online`] once a new CPU checked in: more SMI IPIs, which must land in its
//!    TSEG slot.
//! 4. [`check_leak`] after the hot-add: nothing planted may have run in SMM.
//!
//! In SMM the planted code would copy the first 64 bytes of TSEG to the scratch page;
//! anywhere it runs it stores [`MARKER`] at scratch + [`MARKER_OFFSET`].

use core::sync::atomic::Ordering;

use crate::clock::Timer;
use crate::cpus;
use crate::hotplug::Plan;
use crate::Report;
use q35::lapic;
use smm_handler::layout::window;

/// The value the planted code stores when it ran: "HACK" in little-endian byte order.
const MARKER: u32 = 0x4B43_4148;
/// Offset of the marker in the scratch page (past the 64 bytes of leaked TSEG).
const MARKER_OFFSET: u64 = 0x100;
/// Dwords the planted code copies out of TSEG.
const LEAK_DWORDS: u64 = 16;

/// The scratch page the planted code copies TSEG to.
fn leak_buf() -> u64 {
    u64::from(cpus::SCRATCH_PAGE.load(Ordering::SeqCst))
}

/// Where the planted code stores [`MARKER`].
fn marker() -> u64 {
    leak_buf() + MARKER_OFFSET
}

/// The payload's own page for planted code, the target of the SIPI attack.
pub(crate) fn sipi_plant() -> u64 {
    u64::from(cpus::PLANT_PAGE.load(Ordering::SeqCst))
}

/// Write the attack code to `at`; in SMM it would copy TSEG (at `tseg`) out.
pub(crate) fn plant_at(at: u64, tseg: u32) {
    // 16-bit code: mov esi,tseg; mov edi,leak; mov ecx,16;
    // 1: mov edx,[esi] (addr32); mov [edi],edx; add esi,4; add edi,4; loop 1b;
    // mov dword [marker],0x4B434148 ("HACK") (addr32); cli; hlt
    let t = tseg.to_le_bytes();
    let l = (leak_buf() as u32).to_le_bytes();
    let m = (marker() as u32).to_le_bytes();
    let n = (LEAK_DWORDS as u32).to_le_bytes();
    let h = MARKER.to_le_bytes();
    let code: [u8; 50] = [
        0x66, 0xBE, t[0], t[1], t[2], t[3], // mov esi, tseg
        0x66, 0xBF, l[0], l[1], l[2], l[3], // mov edi, leak
        0x66, 0xB9, n[0], n[1], n[2], n[3], // mov ecx, 16
        0x67, 0x66, 0x8B, 0x16, // mov edx, [esi]
        0x67, 0x66, 0x89, 0x17, // mov [edi], edx
        0x66, 0x83, 0xC6, 0x04, // add esi, 4
        0x66, 0x83, 0xC7, 0x04, // add edi, 4
        0xE2, 0xEE, // loop
        0x67, 0x66, 0xC7, 0x05, m[0], m[1], m[2], m[3], h[0], h[1], h[2],
        h[3], // mov dword [marker], "HACK"
        0xFA, 0xF4, // cli; hlt
    ];
    // SAFETY: the OS role writes where an attacker would; the firmware must make these
    // writes harmless (the handler page is locked SMRAM, the pen page is re-installed by
    // SMM, R4). The plant page is the payload's own usable RAM.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
}

/// Hook before "ready for hotplug": with the `attack` variant and a known TSEG, plant the
/// code in the payload's own page, at the first-SMI handler's entry and in the pen.
pub fn plant(plan: &Plan, tseg: Option<u32>) {
    if !plan.attack {
        return;
    }
    if let Some(t) = tseg {
        plant_at(sipi_plant(), t);
        plant_at(u64::from(window::HANDLER.base), t);
        plant_at(u64::from(window::PEN.base), t);
    }
}

/// Hook after the scan found `new` CPUs (selector, APIC ID), before APMC 4.
///
/// `sipi-attack`: each new CPU gets an SMI, then a SIPI to the planted code while it waits
/// at the gate inside SMM with its LAPIC in wait-for-SIPI; the SIPI must not move it there
/// while it is in SMM (QEMU builds without the SIPI-in-SMM fix do; the first-SMI handler's
/// self-SIPI narrows that window).
///
/// `attack`: SMI IPIs to the new CPUs before the hotplug SMI; they must only ever reach
/// the firmware's first-SMI handler (R18).
pub fn before_hotplug_smi(plan: &Plan, new: &[(u32, u32)], tm: &Timer) {
    if plan.sipi_attack {
        for &(_, apic) in new {
            let _ = lapic::send_ipi(apic, lapic::ICR_SMI);
            tm.delay_us(5_000);
            let _ = lapic::send_ipi(apic, lapic::ICR_STARTUP | (sipi_plant() >> 12) as u32);
            tm.delay_us(5_000);
        }
    }
    if plan.attack {
        for &(_, apic) in new {
            let _ = lapic::send_ipi(apic, lapic::ICR_SMI);
        }
    }
}

/// Hook after the new CPU `apic` was started and looked up: with `attack`, three more SMI
/// IPIs (1 ms apart); after relocation they must land in its TSEG slot.
pub fn after_online(plan: &Plan, apic: u32, tm: &Timer) {
    if !plan.attack {
        return;
    }
    for _ in 0..3 {
        let _ = lapic::send_ipi(apic, lapic::ICR_SMI);
        tm.delay_us(1000);
    }
}

/// Whether the planted code ran anywhere (the marker) and whether it copied anything out
/// of TSEG (a leaked dword neither 0 nor all-ones).
pub(crate) fn leak_state() -> (bool, bool) {
    // SAFETY: reading payload-owned low RAM (usable in the memory map): the scratch page.
    unsafe {
        let marker = core::ptr::read_volatile(marker() as *const u32) == MARKER;
        let mut leaked = false;
        for i in 0..LEAK_DWORDS {
            let v = core::ptr::read_volatile((leak_buf() + 4 * i) as *const u32);
            leaked |= v != 0 && v != 0xFFFF_FFFF;
        }
        (marker, leaked)
    }
}

/// Hook after the hot-add: with `attack`, check that no planted code ran in SMM.
pub fn check_leak(r: &mut Report, plan: &Plan) {
    if !plan.attack {
        return;
    }
    let (marker, leaked) = leak_state();
    r.check(
        "attack-nothing-planted-ran-in-smm",
        !leaked,
        format_args!(
            "planted code ran: {}; bytes copied out of TSEG: {}",
            marker, leaked
        ),
    );
}
