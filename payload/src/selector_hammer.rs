//! R5 from the OS side (`docs/security.md#r5`), the `selector-hammer` hot-add variant
//! (`opt/payload/hotplug-variant` containing `selector-hammer`): while SMM services a
//! hot-add, other CPUs of the OS write the CPU hotplug register block's selector (I/O
//! 0xCD8, dword) in a tight loop, cycling through every possible selector and one past
//! the last (so mostly CPUs that are not present).
//!
//! With broadcast SMIs every CPU enters SMM at APMC 4 and the CPUs take the SMI lock one
//! after the other: the first relocates the new CPU, each later one runs the service
//! again and scans the register block (the insert event stays pending until the OS clears
//! it) while the CPUs that already left SMM are back in OS code. So both CPUs of the OS
//! hammer whenever they run OS code: an AP the payload restarts into [`ap_entry`] does it
//! until told to stop, and the BSP does it for [`BSP_HAMMER_US`] after each of its
//! [`ROUNDS`] APMC 4 writes. A scan that read the status of one selector and the APIC ID of
//! another would pair the insert event with a possible but absent CPU and send it IPIs
//! (the QEMU test looks for SMM's "never arrived" line for an APIC ID that was not
//! plugged). Under TCG the hammer lands between a scan's register reads in only a few per
//! cent of the rounds, hence the many rounds.
//!
//! Once the hammer has stopped the BSP writes APMC 4 once more, as the OS's AML would on
//! the next GPE, so a CPU that the hammered scans missed is relocated then; the normal
//! flow of [`crate::hotplug`] then clears the insert events and starts the CPU. Every
//! wait is bounded.

use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::clock::Timer;
use crate::cpus::{self, init_sipi_sipi};
use crate::hotplug::raise_apmc4;
use crate::{println, Report};
use q35::cpuhp::{self, CpuHp};
use q35::fw_cfg::FwCfg;
use q35::io::{HwPorts, PortIo};

/// APMC 4 writes made while the hammer runs.
const ROUNDS: u32 = 100;
/// How long the BSP hammers after each of them (µs).
const BSP_HAMMER_US: u64 = 2_000;

/// Hammer states, [`STATE`].
const IDLE: u8 = 0;
/// The BSP started an AP that is to hammer.
const ARMED: u8 = 1;
/// The AP took the job and hammers.
const RUNNING: u8 = 2;
/// The BSP asks the AP to stop.
const STOP: u8 = 3;
/// The AP stopped and halts.
const STOPPED: u8 = 4;

static STATE: AtomicU8 = AtomicU8::new(IDLE);
/// Selector values the hammer cycles through: `0..=possible`.
static SPAN: AtomicU32 = AtomicU32::new(1);
/// Selector writes by the AP and by the BSP.
static AP_WRITES: AtomicU64 = AtomicU64::new(0);
static BSP_WRITES: AtomicU64 = AtomicU64::new(0);
/// APMC 4 writes made while the AP hammered.
static HAMMERED_ROUNDS: AtomicU32 = AtomicU32::new(0);
/// Whether the variant was asked for: 0 unknown, 1 no, 2 yes.
static WANTED: AtomicU8 = AtomicU8::new(0);

/// Whether `opt/payload/hotplug-variant` asks for `selector-hammer`.
fn wanted() -> bool {
    match WANTED.load(Ordering::SeqCst) {
        0 => {
            let yes = FwCfg::detect(&HwPorts).is_ok_and(|cfg| {
                let mut b = [0u8; 64];
                crate::fw_cfg_text(&cfg, "opt/payload/hotplug-variant", &mut b)
                    .is_some_and(|s| s.contains("selector-hammer"))
            });
            WANTED.store(if yes { 2 } else { 1 }, Ordering::SeqCst);
            yes
        }
        v => v == 2,
    }
}

/// Write the selector in a tight loop until `stop()` says so, checking every 64 writes;
/// returns the number of writes.
fn hammer(mut stop: impl FnMut() -> bool) -> u64 {
    let span = SPAN.load(Ordering::SeqCst).max(1);
    let mut sel = 0u32;
    let mut writes = 0u64;
    while !stop() {
        for _ in 0..64 {
            HwPorts.outl(cpuhp::BASE + cpuhp::OFF_SELECTOR, sel);
            sel = if sel + 1 >= span { 0 } else { sel + 1 };
        }
        writes += 64;
    }
    writes
}

/// An AP's first step (from `payload_ap_main`): the AP the BSP armed hammers until told to
/// stop, then halts; every other AP returns to its normal life.
pub fn ap_entry() {
    if STATE
        .compare_exchange(ARMED, RUNNING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return;
    }
    let n = hammer(|| STATE.load(Ordering::SeqCst) == STOP);
    AP_WRITES.store(n, Ordering::SeqCst);
    STATE.store(STOPPED, Ordering::SeqCst);
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// The hotplug SMI of [`crate::hotplug`]'s relocation step in this variant: start the
/// hammering AP, write APMC 4 [`ROUNDS`] times with the BSP hammering after each, stop the
/// AP, then write APMC 4 once more with nobody hammering. Returns false (nothing done,
/// the caller raises APMC 4 itself) unless the variant was asked for.
pub fn hotplug_smi(tm: &Timer) -> bool {
    if !wanted() || STATE.load(Ordering::SeqCst) != IDLE {
        return false;
    }
    // The selector range, counted before anyone hammers.
    let possible = CpuHp::new(&HwPorts).count().map_or(1, |t| t.possible);
    SPAN.store(possible + 1, Ordering::SeqCst);
    let ap = cpus::APS
        .iter()
        .skip(1)
        .map(|a| a.apic.load(Ordering::SeqCst))
        .find(|&a| a != u32::MAX);
    let Some(apic) = ap else {
        println!("payload: selector-hammer: no AP to hammer with (boot with 2 or more CPUs)");
        return false;
    };
    STATE.store(ARMED, Ordering::SeqCst);
    init_sipi_sipi(apic);
    if !tm.wait_until(3_000_000, || STATE.load(Ordering::SeqCst) == RUNNING) {
        println!("payload: selector-hammer: AP APIC {} did not start", apic);
        STATE.store(STOPPED, Ordering::SeqCst);
        return false;
    }
    let mut bsp = 0u64;
    for _ in 0..ROUNDS {
        raise_apmc4();
        HAMMERED_ROUNDS.fetch_add(1, Ordering::SeqCst);
        let mut sw = tm.start();
        bsp += hammer(|| tm.elapsed_us(&mut sw) >= BSP_HAMMER_US);
    }
    BSP_WRITES.store(bsp, Ordering::SeqCst);
    STATE.store(STOP, Ordering::SeqCst);
    let stopped = tm.wait_until(1_000_000, || STATE.load(Ordering::SeqCst) == STOPPED);
    println!(
        "payload: selector-hammer: AP APIC {} and the BSP wrote the selector (0..={}) {} and {} times during {} x APMC 4; AP stopped: {}; APMC 4 once more with the hammer stopped, as the AML would on the next GPE",
        apic,
        possible,
        AP_WRITES.load(Ordering::SeqCst),
        bsp,
        ROUNDS,
        stopped
    );
    raise_apmc4();
    true
}

/// After the hot-add: `CHECK selector-hammer` (only in this variant): the AP hammered
/// during every APMC 4 and stopped when told to.
pub fn check(r: &mut Report) {
    if !wanted() {
        return;
    }
    let state = STATE.load(Ordering::SeqCst);
    let ap = AP_WRITES.load(Ordering::SeqCst);
    let rounds = HAMMERED_ROUNDS.load(Ordering::SeqCst);
    r.check(
        "selector-hammer",
        state == STOPPED && ap > 0 && rounds == ROUNDS,
        format_args!(
            "an AP wrote the selector {} times and the BSP {} times during {} of {} APMC 4 writes; the AP stopped: {}",
            ap,
            BSP_WRITES.load(Ordering::SeqCst),
            rounds,
            ROUNDS,
            state == STOPPED
        ),
    );
}
