//! Losing the SMI-lock owner mid-hot-add, in the OS role (`docs/security.md#r11`, `#r15`;
//! `docs/protocol.md#lost-monarch-recovery`). Asked for by fw_cfg `opt/payload/lock-owner`
//! together with `opt/payload/hotplug` = `1`:
//!
//! - `init`: an AP (a relocated present CPU) becomes the monarch of an APMC 4 service that
//!   takes a while — a CPU hot-added over QMP that got no SMI, so the monarch waits for it
//!   in the arrival barrier — and the OS sends that AP an INIT mid-service. Under TCG an
//!   INIT resets a CPU even inside SMM (`docs/qemu.md#t2`): the lock stays recorded for a
//!   CPU that is now halted outside SMM, and at its next SMI the slot stub sends it to the
//!   pen (the INIT reset state) before it could recover its own lock. [`run`] is the last
//!   step before the normal hot-add, so that SMI is the hot-add's APMC 4 broadcast and
//!   the lock can come back only through a waiter's takeover. (A CPU that took one more
//!   SMI in the pen first would reach the lock at the next one and recover its own mark.)
//! - `eject`: the same, but the OS ejects the monarch by selector (register block status
//!   bit 3, which QEMU honours for any CPU but the first, even inside SMM:
//!   `docs/qemu.md#q-eject-in-smm`).
//!
//! The service is started without a broadcast: the OS writes 4 to port 0xB2 first (every
//! CPU runs APMC 4 with nothing pending), waits for the hot-added CPU, then sends an SMI
//! IPI only to the AP, which finds port 0xB2 still reading 4. The OS sees the service
//! start from outside: it leaves the register block's selector at 0 with command 0
//! (get next event), and the monarch's scan moves the selector to the new CPU's. It sees
//! that the barrier has not ended yet through the pen signal it set, which SMM clears
//! when the barrier ends. Then the normal hot-add of [`crate::hotplug`] (APMC 4 broadcast)
//! must relocate the new CPU into a slot of its own; [`after_hotplug`] then brings the
//! INIT'd AP back with INIT-SIPI-SIPI (it must answer from its own slot), or checks that
//! the ejected AP is gone and its slot was not given to the new CPU. Every wait is bounded.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::cpus::{self, find_ap, APS};
use crate::ipi_clock::{bring_back, pen_signal, set_pen_signal, Clock};
use crate::{println, Report};
use q35::cpuhp::{self, CpuHp};
use q35::fw_cfg::FwCfg;
use q35::io::HwPorts;
use q35::lapic;

/// fw_cfg file naming the job.
const JOB_FILE: &str = "opt/payload/lock-owner";

/// What the OS does to the monarch mid-service.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    /// An INIT IPI.
    Init,
    /// An eject by selector.
    Eject,
}

/// What the OS writes to the firmware's pen signal before the service: SMM clears the
/// signal when the arrival barrier ends, so while it reads this the monarch is still
/// waiting there.
const SIGNAL_BEFORE_SERVICE: u8 = 0x55;
/// How long the OS waits for the monarch's scan to move the selector.
const T_SCAN_US: u64 = 2_000_000;
/// The time between the scan and the INIT or eject: the monarch is past the scan (it
/// touches the register block no more) and well inside the barrier's 50 ms.
const T_INTO_BARRIER_US: u64 = 5_000;

/// Between [`run`] and [`after_hotplug`]: the job (0 = none, 1 = INIT, 2 = eject), the
/// monarch's APIC ID and selector, its diagnostic answer before (slot | SMBASE << 32),
/// and the hot-added CPU's APIC ID.
static JOB: AtomicU8 = AtomicU8::new(0);
static MONARCH: AtomicU32 = AtomicU32::new(u32::MAX);
static MONARCH_SELECTOR: AtomicU32 = AtomicU32::new(u32::MAX);
static MONARCH_SLOT: AtomicU64 = AtomicU64::new(u64::MAX);
static NEW_CPU: AtomicU32 = AtomicU32::new(u32::MAX);

fn job() -> Option<Job> {
    let cfg = FwCfg::detect(&HwPorts).ok()?;
    let mut b = [0u8; 32];
    match crate::fw_cfg_text(&cfg, JOB_FILE, &mut b)? {
        "init" => Some(Job::Init),
        "eject" => Some(Job::Eject),
        _ => None,
    }
}

/// The first insert event in the register block, left pending: (selector, APIC ID).
fn pending_insert(hp: &CpuHp<'_, HwPorts>, possible: u32) -> Option<(u32, u32)> {
    (0..possible).find_map(|sel| {
        hp.select(sel);
        (hp.status() & cpuhp::STS_INSERT != 0)
            .then(|| hp.arch_id())
            .flatten()
            .map(|a| (sel, a))
    })
}

/// Hook right before the normal hot-add ([`crate::hotplug::run`], which follows with no
/// SMI in between): run the job `opt/payload/lock-owner` asks for, if any.
pub fn run(r: &mut Report) {
    let Some(job) = job() else {
        return;
    };
    if !crate::smm_present() {
        r.check("lock-owner", false, format_args!("no SMM to test"));
        return;
    }
    if crate::hotplug::Plan::read().expect_cpus != 1 {
        r.check(
            "lock-owner",
            false,
            format_args!("needs opt/payload/hotplug = 1 (the hot-add after the loss)"),
        );
        return;
    }
    let Some(ap) = APS
        .iter()
        .skip(1)
        .find(|a| a.done.load(Ordering::SeqCst) == 1)
    else {
        r.check("lock-owner", false, format_args!("no online AP"));
        return;
    };
    let Some((hp, topo)) = cpus::register_block(r, "lock-owner") else {
        return;
    };
    let monarch = ap.apic.load(Ordering::SeqCst);
    let Some(sel) = (0..topo.possible).find(|&s| topo.apic_id(s) == Some(monarch)) else {
        r.check(
            "lock-owner",
            false,
            format_args!("APIC {} has no selector", monarch),
        );
        return;
    };
    JOB.store(if job == Job::Init { 1 } else { 2 }, Ordering::SeqCst);
    MONARCH.store(monarch, Ordering::SeqCst);
    MONARCH_SELECTOR.store(sel, Ordering::SeqCst);
    MONARCH_SLOT.store(ap.slot.load(Ordering::SeqCst), Ordering::SeqCst);
    let tm = Clock::calibrate();

    // Port 0xB2 keeps the last command: after this broadcast (nothing pending, nothing to
    // do) the AP's SMI below runs as APMC 4 and takes the SMI lock.
    crate::hotplug::raise_apmc4();
    println!(
        "payload: lock-owner: ready for hotplug (monarch APIC {} at selector {}, {})",
        monarch,
        sel,
        if job == Job::Init { "INIT" } else { "eject" }
    );
    let mut new = None;
    tm.poll_until(120_000_000, 1_000, || {
        new = pending_insert(&hp, topo.possible);
        new.is_some()
    });
    let Some((new_sel, new_apic)) = new else {
        r.check("lock-owner", false, format_args!("no CPU was hot-added"));
        return;
    };
    NEW_CPU.store(new_apic, Ordering::SeqCst);

    // Selector 0 with command 0: the monarch's scan (command 0 from selector 0) moves the
    // selector to the new CPU's, and reading Command data then shows it.
    hp.command(cpuhp::CMD_GET_NEXT_EVENT);
    hp.select(0);
    set_pen_signal(SIGNAL_BEFORE_SERVICE);
    let _ = lapic::send_ipi(monarch, lapic::ICR_SMI);
    let t0 = tm.now_us();
    let scanned = tm.poll_until(T_SCAN_US, 50, || hp.data() == new_sel);
    let scan_us = tm.now_us().wrapping_sub(t0);
    tm.delay_us(T_INTO_BARRIER_US);
    let before = pen_signal() == SIGNAL_BEFORE_SERVICE;
    match job {
        Job::Init => {
            let _ = lapic::send_ipi(monarch, lapic::ICR_INIT);
        }
        Job::Eject => {
            hp.select(sel);
            hp.control(cpuhp::CTL_EJECT);
        }
    }
    // A CPU still in the barrier when the INIT or eject went out cannot have ended it
    // since; give a late end the time to show.
    tm.delay_us(2_000);
    let mid = scanned && before && pen_signal() == SIGNAL_BEFORE_SERVICE;
    let gone = job == Job::Init || {
        hp.select(sel);
        hp.status() & cpuhp::STS_ENABLED == 0
    };
    hp.command(cpuhp::CMD_GET_NEXT_EVENT);
    println!(
        "payload: lock-owner: {} APIC {} (the SMI-lock owner) {} us after its SMI, during the APMC 4 service for APIC {}: {}",
        if job == Job::Init { "INIT sent to" } else { "ejected" },
        monarch,
        scan_us + T_INTO_BARRIER_US,
        new_apic,
        mid
    );
    r.check(
        "lock-owner-lost-mid-service",
        mid && gone,
        format_args!(
            "APIC {} started the service (scan seen: {}) and was {} while it waited in the arrival barrier (barrier still on: {}); gone from the register block: {}",
            monarch,
            scanned,
            if job == Job::Init { "INIT'd" } else { "ejected" },
            mid,
            gone
        ),
    );
}

/// Hook after the normal hot-add: an INIT'd monarch comes back with INIT-SIPI-SIPI and
/// answers from its own slot; an ejected one is gone and its slot went to nobody else.
pub fn after_hotplug(r: &mut Report) {
    let job = match JOB.load(Ordering::SeqCst) {
        1 => Job::Init,
        2 => Job::Eject,
        _ => return,
    };
    let monarch = MONARCH.load(Ordering::SeqCst);
    let before = MONARCH_SLOT.load(Ordering::SeqCst);
    let tm = Clock::calibrate();
    match job {
        Job::Init => bring_back(r, "lock-owner-back", monarch, before, &tm),
        Job::Eject => {
            let hp = CpuHp::new(&HwPorts);
            hp.select(MONARCH_SELECTOR.load(Ordering::SeqCst));
            let gone = hp.status() & cpuhp::STS_ENABLED == 0;
            hp.command(cpuhp::CMD_GET_NEXT_EVENT);
            if crate::diag_query_absent() {
                r.check(
                    "lock-owner-ejected-gone",
                    gone,
                    format_args!("APIC {} absent after the eject: {}", monarch, gone),
                );
                r.skip(
                    "lock-owner-slot-kept",
                    format_args!("{}", crate::DIAG_ABSENT),
                );
                return;
            }
            let new_apic = NEW_CPU.load(Ordering::SeqCst);
            let new_slot = find_ap(new_apic).map_or(u64::MAX, |a| a.slot.load(Ordering::SeqCst));
            let kept = new_slot != u64::MAX && new_slot as u32 != before as u32;
            r.check(
                "lock-owner-slot-kept",
                gone && kept,
                format_args!(
                    "ejected APIC {} absent: {}; its slot {} not given to the new APIC {} (slot {})",
                    monarch,
                    gone,
                    before as u32 as i64,
                    new_apic,
                    new_slot as u32 as i64
                ),
            );
        }
    }
}
