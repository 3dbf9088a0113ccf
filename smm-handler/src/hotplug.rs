//! APMC 4: find hot-added CPUs and relocate each one's SMBASE, one at a time, into a slot
//! of its own, behind an arrival barrier, with straggler recovery
//! (`docs/protocol.md#relocation-step-by-step`).
//!
//! Runs on the monarch (the CPU that holds the host's SMI lock). Every input from the register block
//! and from OS-writable memory is untrusted; every wait is bounded by the clock *and* by
//! an iteration count; nothing here blocks on anything the OS controls (R5, R11).

use crate::eject;
use crate::host::Host;
use crate::layout::GATE_CLOSED;
use crate::slots::{self, Phase, Slots, MAX_SLOTS};
use crate::smm_log;
use q35::cpuhp::{self, CpuHp};
use q35::lapic;

/// Bound of the wait for every new CPU to arrive in the first-SMI handler (µs).
pub const T_ARRIVE_US: u64 = 50_000;
/// Bound of the wait after a directed SMI IPI to a CPU that had not arrived (µs).
pub const T_SMI_IPI_US: u64 = 100_000;
/// Bound of the wait after INIT-SIPI-SIPI to a CPU that still had not arrived (µs).
pub const T_INIT_US: u64 = 100_000;
/// Bound of the wait for a waiting candidate to show that it runs, before the gate is
/// opened for the next one in order anyway (µs).
pub const T_PICK_US: u64 = 20_000;
/// Bound of the wait for the admitted CPU to set `about_to_leave` (µs).
pub const T_LEAVE_US: u64 = 1_000_000;
/// Bound of the wait for the relocated CPU to reach the pen (µs).
pub const T_PEN_US: u64 = 1_000_000;
/// Upper bound on polls in any wait, whatever the clock says (the OS cannot stop the
/// TSC, but a broken calibration must not turn a wait into a hang).
pub const MAX_POLLS: u64 = 200_000_000;

/// Most events one APMC 4 takes from the register block (it bounds the service's stack).
/// A CPU beyond it stays in the first-SMI handler, at the closed gate in locked SMRAM,
/// and is relocated by a later APMC 4 through its arrival mark (a straggler).
pub const MAX_BATCH: usize = 64;
const _: () = assert!(MAX_BATCH <= MAX_SLOTS);

/// What one service did (the hosts log it; the simulation tests check it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Insert events seen in the register block.
    pub inserts: u32,
    /// CPUs relocated into a slot of their own.
    pub relocated: u32,
    /// CPUs left at the default SMBASE (never arrived, no free slot, did not take the gate).
    pub skipped: u32,
    /// Slots quarantined (and the gate-not-closed stop).
    pub quarantined: u32,
    /// CPUs ejected, or found gone, and their slots forgotten.
    pub ejected: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Next,
    Stop,
}

/// How a bounded wait ended.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The condition held.
    Met,
    /// The bound passed first.
    TimedOut,
    /// Another CPU took over as monarch while this one stalled: stop at once.
    Deposed,
}

pub(crate) fn wait<H: Host + ?Sized>(h: &H, us: u64, mut cond: impl FnMut() -> bool) -> Wait {
    let start = h.now_us();
    let mut polls = 0u64;
    loop {
        if cond() {
            return Wait::Met;
        }
        if !h.still_monarch() {
            return Wait::Deposed;
        }
        polls += 1;
        if h.now_us().wrapping_sub(start) >= us || polls >= MAX_POLLS {
            return if cond() { Wait::Met } else { Wait::TimedOut };
        }
        core::hint::spin_loop();
    }
}

fn delay<H: Host + ?Sized>(h: &H, us: u64) {
    let _ = wait(h, us, || false);
}

/// Before taking the host's SMI lock: a CPU whose slot is RELOCATING returns at once
/// (R12), or it would wait on the lock the monarch holds while the monarch waits for it.
pub fn must_return_early(slots: &Slots, slot: usize) -> bool {
    slots.state(slot) == slots::RELOCATING
}

/// Scan the register block for insert events only (the eject requests it sees are left
/// for [`scan_events`]). Returns the number of insert events; their selectors go to `out`.
pub fn scan_inserts<H: Host + ?Sized>(h: &H, out: &mut heapless::Vec<u32, MAX_BATCH>) -> u32 {
    let mut ejects = heapless::Vec::new();
    scan_events(h, out, &mut ejects)
}

/// Scan the register block for events (`docs/protocol.md#the-cpu-hotplug-register-block`).
/// Bounded by the possible count; inconsistent status combinations are skipped (R5). The
/// APIC ID comes from the table recorded at boot by selector; the block's own arch ID
/// must agree, and the selector must still be the one read after every register read, or
/// the selector is read again (another CPU moved it meanwhile); an event counts only when a
/// second status read at that selector shows it too (the selector can move away and back
/// between two reads). A re-read uses up one of
/// the scan's `possible` steps, so a CPU that keeps moving the selector can only make the
/// scan miss events (those CPUs are found later through their arrival marks), never make
/// it longer.
/// Returns the number of insert events seen; the selectors of the consistent ones go to
/// `inserts_out`, those with an eject request (`fw_remove`) to `ejects`.
pub fn scan_events<H: Host + ?Sized>(
    h: &H,
    inserts_out: &mut heapless::Vec<u32, MAX_BATCH>,
    ejects: &mut heapless::Vec<u32, MAX_BATCH>,
) -> u32 {
    let hp = CpuHp::new(h.ports());
    let d = h.data();
    let possible = d.possible_count();
    let mut cur = 0u32;
    let mut inserts = 0;
    let mut moved = false;
    for _ in 0..possible {
        if cur >= possible {
            break;
        }
        hp.select(cur);
        hp.command(cpuhp::CMD_GET_NEXT_EVENT);
        let pend = hp.data();
        if pend < cur || pend >= possible {
            break;
        }
        let st = hp.status();
        let insert = st & cpuhp::STS_INSERT != 0;
        let consistent = st & cpuhp::STS_ENABLED != 0 && st & cpuhp::STS_FW_REMOVE == 0;
        let block_id = (insert && consistent).then(|| hp.arch_id());
        // Command 0 is selected again: Command data reads the selector. A selector that
        // changed, or an arch ID of another possible CPU than the one boot recorded here,
        // means another CPU moved the selector between the reads: read again.
        let recorded = d.possible_apic_ids.get(pend as usize).copied();
        let other_cpu =
            matches!(block_id, Some(Some(a)) if Some(a) != recorded && d.is_possible(a));
        if hp.data() != pend || other_cpu {
            moved = true;
            continue;
        }
        // The selector can also have moved away and back between the reads (another CPU
        // writing selectors in a loop): the event bits then were another CPU's. An event
        // counts only when a second status read at this selector, read back unchanged,
        // shows it too.
        let event = st & (cpuhp::STS_INSERT | cpuhp::STS_FW_REMOVE);
        if event != 0 && !event_confirmed(&hp, pend, event) {
            moved = true;
            continue;
        }
        cur = pend;
        if insert {
            inserts += 1;
            insert_event(h, cur, st, block_id, inserts_out);
        } else if st & cpuhp::STS_FW_REMOVE != 0 {
            if st & cpuhp::STS_ENABLED == 0 {
                smm_log!(
                    h,
                    Warn,
                    "cpuhp: inconsistent status {:#x} at selector {}, skipped",
                    st,
                    cur
                );
            } else if !ejects.contains(&cur) {
                let _ = ejects.push(cur);
            }
        } else if st & cpuhp::STS_REMOVE == 0 {
            break;
        }
        cur += 1;
    }
    hp.command(cpuhp::CMD_GET_NEXT_EVENT);
    if moved {
        smm_log!(h, Warn, "cpuhp: another CPU moved the selector during the scan; what it read then was read again");
    }
    inserts
}

/// Whether the status at `sel` still shows `event`, with the selector read back as `sel`.
fn event_confirmed<P: q35::io::PortIo>(hp: &CpuHp<'_, P>, sel: u32, event: u8) -> bool {
    hp.select(sel);
    let st = hp.status();
    hp.data() == sel && st & event == event
}

/// One insert event at `selector`: the selector goes to `out` if the status is consistent
/// and the block reports the APIC ID boot recorded there.
fn insert_event<H: Host + ?Sized>(
    h: &H,
    selector: u32,
    st: u8,
    block_id: Option<Option<u32>>,
    out: &mut heapless::Vec<u32, MAX_BATCH>,
) {
    let d = h.data();
    let recorded = d.possible_apic_ids.get(selector as usize).copied();
    match (block_id, recorded) {
        (None, _) => smm_log!(
            h,
            Warn,
            "cpuhp: inconsistent status {:#x} at selector {}, skipped",
            st,
            selector
        ),
        (Some(None), _) => {
            smm_log!(
                h,
                Warn,
                "cpuhp: arch ID above 32 bits at selector {}, skipped",
                selector
            )
        }
        (Some(Some(a)), Some(r)) if a == r => push_unique(out, selector),
        (Some(Some(a)), _) if !d.is_possible(a) => {
            smm_log!(h, Warn, "APIC ID {} is not a possible CPU, skipped", a)
        }
        (Some(Some(a)), r) => smm_log!(
            h,
            Warn,
            "cpuhp: selector {} reports APIC ID {} but boot recorded {:#x}, skipped",
            selector,
            a,
            r.unwrap_or(NO_ID)
        ),
    }
}

/// The boot table's entry for a selector whose arch ID does not fit 32 bits.
const NO_ID: u32 = u32::MAX;

fn push_unique(v: &mut heapless::Vec<u32, MAX_BATCH>, selector: u32) {
    if !v.contains(&selector) {
        let _ = v.push(selector);
    }
}

/// The APIC ID boot recorded for the possible CPU at `selector` (all-ones, which no CPU
/// has, past the table).
fn apic_at<H: Host + ?Sized>(h: &H, selector: u32) -> u32 {
    h.data()
        .possible_apic_ids
        .get(selector as usize)
        .copied()
        .unwrap_or(slots::NO_APIC)
}

/// Validate the candidate at `selector` (R6); logs why it is skipped.
fn acceptable<H: Host + ?Sized>(h: &H, selector: u32) -> bool {
    let d = h.data();
    let apic = apic_at(h, selector);
    if apic > crate::host::APIC_ID_LIMIT {
        smm_log!(
            h,
            Warn,
            "APIC ID {:#x} is the x2APIC broadcast, skipped",
            apic
        );
    } else if !d.is_possible(apic) {
        smm_log!(h, Warn, "APIC ID {} is not a possible CPU, skipped", apic);
    } else if d.routes.is_some() && apic > crate::host::ROUTED_APIC_ID_MAX {
        smm_log!(
            h,
            Warn,
            "APIC ID {:#x} does not fit the host's 16-bit routing table, skipped",
            apic
        );
    } else {
        // Already known is the idempotent case (edk2 020bb4b46d): skipped quietly. A GONE
        // slot is known too, but a CPU with its APIC ID is a new one if it arrives.
        return match d.slots.slot_of(apic, d.slot_count()) {
            None => true,
            Some(n) => d.slots.state(n) == slots::GONE,
        };
    }
    false
}

/// Service APMC 4: eject the CPUs the OS asked to remove, forget those QEMU reports gone,
/// then relocate the new ones. Idempotent: with nothing pending it changes nothing (R10).
pub fn service<H: Host + ?Sized>(h: &H) -> Summary {
    let mut s = Summary::default();
    // Candidates by selector (the possible-CPU index the arrival marks use).
    let mut cands: heapless::Vec<u32, MAX_BATCH> = heapless::Vec::new();
    let mut ejects: heapless::Vec<u32, MAX_BATCH> = heapless::Vec::new();
    s.inserts = scan_events(h, &mut cands, &mut ejects);
    eject::plan(h, &ejects);
    eject::forget_gone(h, &mut s);
    if eject::eject_planned(h, &mut s) == Step::Stop {
        return s;
    }
    if h.data().slots.is_stopped() {
        smm_log!(
            h,
            Debug,
            "APMC 4: CPU hot-add stopped after a stuck relocation"
        );
        return s;
    }
    add_stragglers(h, &mut cands);
    cands.retain(|&sel| acceptable(h, sel));
    if cands.is_empty() {
        if s.inserts > 0 {
            smm_log!(
                h,
                Debug,
                "APMC 4: {} insert event(s), all CPUs already known",
                s.inserts
            );
        }
        return s;
    }
    smm_log!(h, Info, "APMC 4: {} new CPU(s) to relocate", cands.len());
    match arrival_barrier(h, &mut cands) {
        Some(never_arrived) => s.skipped += never_arrived,
        None => return s,
    }
    // One at a time, each time the candidate that runs right now (`pick_running`).
    let mut done = 0u64;
    for _ in 0..cands.len() {
        let Some(i) = pick_running(h, &cands, done) else {
            break;
        };
        done |= 1u64.checked_shl(i as u32).unwrap_or(0);
        let Some(&sel) = cands.get(i) else {
            break;
        };
        if relocate(h, sel, &mut s) == Step::Stop {
            break;
        }
    }
    s
}

/// The index in `cands` (those not in `done`, a bit per index) of the candidate to admit
/// next: the first whose gate beat moves within [`T_PICK_US`], that is, one whose vCPU runs
/// right now, else the first not done. Under TCG every waiting CPU spins on its own host
/// thread; opening the gate for one that the host has not scheduled costs a time slice
/// (milliseconds), while one that runs takes it at once. The beat only orders the
/// admissions: the gate still opens for one APIC ID at a time (R8). `None`: another CPU
/// took over as monarch meanwhile.
#[inline(never)]
fn pick_running<H: Host + ?Sized>(h: &H, cands: &[u32], done: u64) -> Option<usize> {
    let w = h.window();
    let open = |i: usize| done & 1u64.checked_shl(i as u32).unwrap_or(0) == 0;
    let first = (0..cands.len()).find(|&i| open(i))?;
    if (first + 1..cands.len()).all(|i| !open(i)) {
        return Some(first);
    }
    // Low 16 bits of each beat: enough to see a change between two polls.
    let mut seen = [0u16; MAX_BATCH];
    for (b, &sel) in seen.iter_mut().zip(cands) {
        *b = w.beat(sel) as u16;
    }
    let mut running = None;
    let moved = wait(h, T_PICK_US, || {
        running = cands
            .iter()
            .zip(seen.iter())
            .enumerate()
            .position(|(i, (&sel, &b))| open(i) && w.beat(sel) as u16 != b);
        running.is_some()
    });
    match moved {
        Wait::Deposed => None,
        Wait::Met | Wait::TimedOut => Some(running.unwrap_or(first)),
    }
}

/// Stragglers: CPUs that arrived in the first-SMI handler earlier and were never
/// relocated (their insert event is gone), found through the arrival marks (a walk of
/// SMRAM; the register block is read only for marked CPUs).
/// Only a CPU whose selector QEMU reports present, with the APIC ID boot recorded there,
/// is taken: the same evidence that later decides whether it is gone
/// ([`eject::forget_gone`]).
fn add_stragglers<H: Host + ?Sized>(h: &H, cands: &mut heapless::Vec<u32, MAX_BATCH>) {
    let (w, d) = (h.window(), h.data());
    let hp = CpuHp::new(h.ports());
    for (sel, &apic) in d.possible_apic_ids.iter().enumerate() {
        let sel = sel as u32;
        if w.arrived(sel) == 0 || cands.contains(&sel) {
            continue;
        }
        hp.select(sel);
        if hp.status() & cpuhp::STS_ENABLED == 0 {
            // The CPU is gone (ejected before it was relocated): its mark is stale.
            w.clear_arrived(sel);
        } else if hp.arch_id() == Some(apic) {
            push_unique(cands, sel);
        }
    }
}

/// Clear the arrival mark of the possible CPU with `apic`.
fn clear_arrived<H: Host + ?Sized>(h: &H, apic: u32) {
    if let Some(sel) = h.data().selector_of(apic) {
        h.window().clear_arrived(sel);
    }
}

/// The arrival barrier: no SMI may still be on its way to a default-SMBASE CPU while the
/// gate is open (`docs/qemu.md#q-late-entry`), so every candidate must have arrived, or
/// be cancelled, first. Removes the ones that never arrived and returns how many; `None`
/// when another CPU took over as monarch meanwhile.
fn arrival_barrier<H: Host + ?Sized>(
    h: &H,
    cands: &mut heapless::Vec<u32, MAX_BATCH>,
) -> Option<u32> {
    let w = h.window();
    let all_arrived = || cands.iter().all(|&sel| w.arrived(sel) != 0);
    match wait(h, T_ARRIVE_US, all_arrived) {
        Wait::Met => return Some(0),
        Wait::Deposed => return None,
        Wait::TimedOut => {}
    }
    for &sel in cands.iter().filter(|&&sel| w.arrived(sel) == 0) {
        // Plugged just after the broadcast (edk2 cbccf99592): a directed SMI.
        send_ipi_or_log(h, apic_at(h, sel), lapic::ICR_SMI);
    }
    match wait(h, T_SMI_IPI_US, all_arrived) {
        Wait::Met => {}
        Wait::Deposed => return None,
        Wait::TimedOut => {
            for &sel in cands.iter().filter(|&&sel| w.arrived(sel) == 0) {
                // Cancel whatever SMI is still outstanding (TCG: INIT discards it) and,
                // on KVM semantics, let a latched SMI be taken at the pen. Never sent to
                // a CPU that arrived (R13).
                let (a, vec) = (apic_at(h, sel), crate::layout::window::PEN.base >> 12);
                if !send_ipi_or_log(h, a, lapic::ICR_INIT) {
                    continue;
                }
                delay(h, 10_000);
                h.send_ipi(a, lapic::ICR_STARTUP | vec);
                delay(h, 200);
                h.send_ipi(a, lapic::ICR_STARTUP | vec);
            }
            if wait(h, T_INIT_US, all_arrived) == Wait::Deposed {
                return None;
            }
        }
    }
    let before = cands.len();
    cands.retain(|&sel| {
        let ok = w.arrived(sel) != 0;
        if !ok {
            smm_log!(
                h,
                Warn,
                "APIC ID {} never arrived in the first-SMI handler; left at the default SMBASE",
                apic_at(h, sel)
            );
        }
        ok
    });
    w.reset_pen();
    Some((before - cands.len()) as u32)
}

/// Send an IPI the barrier needs; when the host cannot (an x2APIC ID while the OS keeps
/// the local APIC in xAPIC mode, whose ICR addresses 8 bits and whose ID 0xFF is the
/// broadcast), say so: the CPU can then only arrive through a broadcast SMI.
fn send_ipi_or_log<H: Host + ?Sized>(h: &H, apic: u32, icr_low: u32) -> bool {
    let sent = h.send_ipi(apic, icr_low);
    if !sent {
        smm_log!(
            h,
            Warn,
            "IPI {:#x} to APIC ID {} not sent (xAPIC mode cannot address it)",
            icr_low,
            apic
        );
    }
    sent
}

/// Relocate one arrived CPU into the first free slot
/// (`docs/protocol.md#relocation-step-by-step`). Each step is recorded in SMRAM
/// ([`slots::Phase`]) before it is taken, and the window's flags are cleared before the
/// slot is published, so a recovery after a lost monarch trusts only what this
/// relocation wrote (R15).
fn relocate<H: Host + ?Sized>(h: &H, sel: u32, s: &mut Summary) -> Step {
    let apic = apic_at(h, sel);
    // It arrived (the barrier kept only arrived CPUs): an old slot of its APIC ID is free.
    eject::forget_if_replugged(h, apic);
    let d = h.data();
    let Some(n) = d.slots.first_free(d.slot_count()) else {
        smm_log!(
            h,
            Warn,
            "no free SMM slot for APIC ID {}: it waits at the closed gate in locked SMRAM",
            apic
        );
        s.skipped += 1;
        return Step::Next;
    };
    let Some(smbase) = d.slot_smbase(n) else {
        s.skipped += 1;
        return Step::Next;
    };
    let t0 = h.now_us();
    let w = h.window();
    w.reset_pen();
    w.clear_about_to_leave();
    w.clear_gate_taken_tsc();
    w.set_new_smbase(smbase);
    // Publish the mapping before the CPU can take an SMI at its new SMBASE.
    d.slots.set_phase(n, Phase::Published);
    d.slots.set(n, slots::RELOCATING, apic);
    d.set_route(n, Some(apic));
    d.slots.set_phase(n, Phase::GateOpen);
    let tsc_open = tsc();
    if !w.gate_cas(GATE_CLOSED, u64::from(apic)) {
        smm_log!(
            h,
            Error,
            "gate was not closed: CPU hot-add stopped until reset"
        );
        undo(h, n);
        d.slots.stop();
        return Step::Stop;
    }
    match wait(h, T_LEAVE_US, || w.about_to_leave() != 0) {
        Wait::Met => d.slots.set_phase(n, Phase::Left),
        Wait::TimedOut => return gate_timeout(h, sel, n, s),
        Wait::Deposed => return Step::Stop,
    }
    let tsc_left = tsc();
    // Only now look at the OS-writable pen byte (R4).
    match wait(h, T_PEN_US, || w.pen_signal() != 0) {
        Wait::Met => {}
        Wait::TimedOut => {
            d.slots.set(n, slots::QUARANTINED, apic);
            d.slots.set_phase(n, Phase::Idle);
            smm_log!(
                h,
                Error,
                "APIC ID {} never reached the pen; slot {} quarantined",
                apic,
                n
            );
            s.quarantined += 1;
            return Step::Stop;
        }
        Wait::Deposed => return Step::Stop,
    }
    let tsc_pen = tsc();
    d.slots.set(n, slots::ACTIVE, apic);
    d.slots.set_phase(n, Phase::Idle);
    w.clear_arrived(sel);
    s.relocated += 1;
    let us = h.now_us().wrapping_sub(t0);
    smm_log!(
        h,
        Info,
        "relocated APIC ID {} to slot {} SMBASE {:#x} in {} us",
        apic,
        n,
        smbase,
        us
    );
    // Where the hand-off's time goes, in TSC ticks (the admitted CPU's stamp is a hint
    // for this log only: a CPU that never stamped shows 0).
    let taken = w.gate_taken_tsc();
    let (to_taken, to_left) = match taken {
        0 => (0, 0),
        t => (t.wrapping_sub(tsc_open), tsc_left.wrapping_sub(t)),
    };
    smm_log!(
        h,
        Debug,
        "hand-off of APIC ID {}: gate open to taken {} ticks, taken to seen leaving {} ticks, to pen {} ticks",
        apic,
        to_taken,
        to_left,
        tsc_pen.wrapping_sub(tsc_left)
    );
    Step::Next
}

/// The TSC, for the hand-off trace.
fn tsc() -> u64 {
    // SAFETY: RDTSC has no side effects and cannot fault at CPL 0 (or in host tests).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The admitted CPU never said it is leaving: undo if it never took the gate, else
/// quarantine its slot and stop hot-add (a slow CPU may still read `new_smbase` or write
/// the shared save area, so the gate must never open again: R11).
fn gate_timeout<H: Host + ?Sized>(h: &H, sel: u32, n: usize, s: &mut Summary) -> Step {
    let (w, d, apic) = (h.window(), h.data(), apic_at(h, sel));
    if w.gate_cas(u64::from(apic), GATE_CLOSED) {
        undo(h, n);
        w.clear_arrived(sel);
        smm_log!(
            h,
            Warn,
            "APIC ID {} did not take the gate; slot {} freed",
            apic,
            n
        );
        s.skipped += 1;
        return Step::Next;
    }
    d.slots.set(n, slots::QUARANTINED, apic);
    smm_log!(h, Error, "APIC ID {} stuck inside the first-SMI handler; slot {} quarantined; CPU hot-add stopped until reset", apic, n);
    d.slots.stop();
    s.quarantined += 1;
    Step::Stop
}

fn undo<H: Host + ?Sized>(h: &H, n: usize) {
    let d = h.data();
    d.set_route(n, None);
    d.slots.set(n, slots::FREE, slots::NO_APIC);
    d.slots.set_phase(n, Phase::Idle);
}

/// The monarch was lost mid-service: under QEMU TCG an INIT resets a CPU even inside SMM
/// (`docs/qemu.md#t2`), e.g. when the OS starts a CPU that had taken a late SMI and was
/// re-running this handler; the OS can also eject it. Call with the host's SMI lock
/// recovered, before the next service. A relocation that was in flight is finished from
/// the phase recorded in SMRAM, trusting the window's flags only where this relocation
/// wrote them: undone if its CPU never took the gate, made ACTIVE if the CPU left for the
/// pen, else its slot is quarantined and hot-add stops (fail closed).
pub fn recover_lost_monarch<H: Host + ?Sized>(h: &H) {
    let (w, d) = (h.window(), h.data());
    for n in 0..d.slot_count() {
        if d.slots.state(n) != slots::RELOCATING {
            continue;
        }
        let apic = d.slots.apic(n);
        let phase = d.slots.phase_of(n);
        // Closing a gate opened for this CPU is always right: it never took it.
        let took_gate = !w.gate_cas(u64::from(apic), GATE_CLOSED);
        let left = match phase {
            Some(Phase::GateOpen) => w.about_to_leave() != 0,
            Some(Phase::Left) => true,
            _ => false,
        };
        if !took_gate || phase == Some(Phase::Published) {
            undo(h, n);
            smm_log!(
                h,
                Warn,
                "lost monarch: relocation of APIC ID {} undone, slot {} freed",
                apic,
                n
            );
        } else if left && w.pen_signal() != 0 {
            // It finished: the monarch died after the CPU reached the pen.
            d.slots.set(n, slots::ACTIVE, apic);
            d.slots.set_phase(n, Phase::Idle);
            clear_arrived(h, apic);
        } else if left {
            // It left SMM with its new SMBASE but never reached the pen: as in service.
            d.slots.set(n, slots::QUARANTINED, apic);
            d.slots.set_phase(n, Phase::Idle);
            smm_log!(
                h,
                Error,
                "lost monarch: APIC ID {} left SMM but never reached the pen; slot {} quarantined",
                apic,
                n
            );
        } else {
            d.slots.set(n, slots::QUARANTINED, apic);
            d.slots.set_phase(n, Phase::Idle);
            d.slots.stop();
            smm_log!(h, Error, "lost monarch during the relocation of APIC ID {}; slot {} quarantined; CPU hot-add stopped until reset", apic, n);
        }
    }
}
