//! APMC 4: find hot-added CPUs and relocate each one's SMBASE, one at a time, into a slot
//! of its own (spec 6.4 with the review's arrival barrier and straggler recovery).
//!
//! Runs on the CPU that holds the host's SMI lock. Every input from the register block
//! and from OS-writable memory is untrusted; every wait is bounded by the clock *and* by
//! an iteration count; nothing here blocks on anything the OS controls (R5, R11).

use crate::log::{Level, Part};
use crate::slots::{self, Slots};
use q35::cpuhp::{self, CpuHp};
use q35::io::PortIo;
use q35::lapic;

/// Bounds (microseconds) of the relocation protocol's waits.
pub const T_ARRIVE_US: u64 = 50_000;
pub const T_SMI_IPI_US: u64 = 100_000;
pub const T_INIT_US: u64 = 100_000;
pub const T_LEAVE_US: u64 = 1_000_000;
pub const T_PEN_US: u64 = 1_000_000;
/// Upper bound on polls in any wait, whatever the clock says (the OS cannot stop the
/// TSC, but a broken calibration must not turn a wait into a hang).
pub const MAX_POLLS: u64 = 200_000_000;

/// Most CPUs one APMC 4 handles (QEMU's AML batches at most 255; slots are fewer).
pub const MAX_BATCH: usize = crate::params::MAX_SLOTS;

/// What the handler needs from its host (the host ROM or coreboot).
pub trait Platform {
    type Ports: PortIo;
    fn ports(&self) -> &Self::Ports;
    /// Monotonic microseconds (e.g. the TSC calibrated at boot; not the OS-movable PM timer).
    fn now_us(&self) -> u64;
    fn log(&self, level: Level, parts: &[Part<'_>]);
    fn slots(&self) -> &Slots;
    /// Slots laid out (possible CPUs).
    fn slot_count(&self) -> usize;
    fn slot_smbase(&self, slot: usize) -> Option<u32>;
    /// Route SMIs of `apic` to `slot` in the host's SMM entry (coreboot: apic_id_to_cpu).
    fn set_route(&self, slot: usize, apic: Option<u32>);
    /// Whether `apic` is one of the possible CPUs recorded at boot (R6).
    fn is_possible_apic(&self, apic: u32) -> bool;
    /// Possible CPUs recorded at boot (bounds the register-block scan).
    fn possible_count(&self) -> u32;
    fn send_ipi(&self, apic: u32, icr_low: u32) -> bool;
    fn window(&self) -> &dyn Window;
}

/// The default-SMBASE window (context at 0x30000, first-SMI handler) and the pen page.
pub trait Window {
    /// `cmpxchg` on the 64-bit gate.
    fn gate_cas(&self, old: u64, new: u64) -> bool;
    fn set_new_smbase(&self, smbase: u32);
    fn about_to_leave(&self) -> u8;
    fn clear_about_to_leave(&self);
    /// The arrival mark of `apic` (0 = not arrived); IDs >= 256 have none.
    fn arrived(&self, apic: u32) -> u32;
    fn clear_arrived(&self, apic: u32);
    /// Re-install the pen code (the page is OS-writable) and clear its signal byte.
    fn reset_pen(&self);
    fn pen_signal(&self) -> u8;
    fn pen_base(&self) -> u32;
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub inserts: u32,
    pub relocated: u32,
    pub skipped: u32,
    pub quarantined: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Next,
    Stop,
}

fn wait<P: Platform + ?Sized>(p: &P, us: u64, mut cond: impl FnMut() -> bool) -> bool {
    let start = p.now_us();
    let mut polls = 0u64;
    loop {
        if cond() {
            return true;
        }
        polls += 1;
        if p.now_us().wrapping_sub(start) >= us || polls >= MAX_POLLS {
            return cond();
        }
        core::hint::spin_loop();
    }
}

fn delay<P: Platform + ?Sized>(p: &P, us: u64) {
    let _ = wait(p, us, || false);
}

/// Before taking the host's SMI lock: a CPU whose slot is RELOCATING returns at once
/// (R12; spec 7.3 item 5), or it would wait on the lock the monarch holds while the
/// monarch waits for it.
pub fn must_return_early(slots: &Slots, slot: usize) -> bool {
    slots.state(slot) == slots::RELOCATING
}

/// Scan the register block for insert events (spec 4.4). Bounded by the possible count;
/// inconsistent status combinations are skipped (R5).
pub fn scan_inserts<P: Platform + ?Sized>(p: &P, out: &mut heapless::Vec<u32, MAX_BATCH>) -> u32 {
    let hp = CpuHp::new(p.ports());
    let possible = p.possible_count();
    let mut cur = 0u32;
    let mut inserts = 0;
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
        cur = pend;
        let st = hp.status();
        if st & cpuhp::STS_INSERT != 0 {
            inserts += 1;
            if st & cpuhp::STS_ENABLED == 0 || st & cpuhp::STS_FW_REMOVE != 0 {
                p.log(
                    Level::Warn,
                    &[
                        Part::Str(b"cpuhp: inconsistent status "),
                        Part::Hex(st.into()),
                        Part::Str(b" at selector "),
                        Part::Dec(cur.into()),
                        Part::Str(b", skipped"),
                    ],
                );
            } else {
                match hp.arch_id() {
                    Some(apic) => push_unique(out, apic),
                    None => p.log(
                        Level::Warn,
                        &[
                            Part::Str(b"cpuhp: arch ID above 32 bits at selector "),
                            Part::Dec(cur.into()),
                            Part::Str(b", skipped"),
                        ],
                    ),
                }
            }
        } else if st & cpuhp::STS_FW_REMOVE != 0 {
            p.log(
                Level::Warn,
                &[
                    Part::Str(b"cpuhp: eject request for selector "),
                    Part::Dec(cur.into()),
                    Part::Str(b" ignored: hot-unplug is not serviced by this handler"),
                ],
            );
        } else if st & cpuhp::STS_REMOVE == 0 {
            break;
        }
        cur += 1;
    }
    hp.command(cpuhp::CMD_GET_NEXT_EVENT);
    inserts
}

fn push_unique(v: &mut heapless::Vec<u32, MAX_BATCH>, apic: u32) {
    if !v.contains(&apic) {
        let _ = v.push(apic);
    }
}

/// Validate a candidate APIC ID (R6); logs why it is skipped.
fn acceptable<P: Platform + ?Sized>(p: &P, apic: u32) -> bool {
    let why: &[u8] = if apic >= 256 {
        b" does not fit xAPIC, skipped"
    } else if !p.is_possible_apic(apic) {
        b" is not a possible CPU, skipped"
    } else if p.slots().slot_of(apic, p.slot_count()).is_some() {
        return false; // already known: the idempotent case (edk2 020bb4b46d), quietly
    } else {
        return true;
    };
    p.log(
        Level::Warn,
        &[
            Part::Str(b"APIC ID "),
            Part::Dec(apic.into()),
            Part::Str(why),
        ],
    );
    false
}

/// Service APMC 4. Idempotent: with nothing pending it changes nothing (R10).
pub fn service<P: Platform + ?Sized>(p: &P) -> Summary {
    let mut s = Summary::default();
    if p.slots().is_stopped() {
        p.log(
            Level::Debug,
            &[Part::Str(
                b"APMC 4 ignored: CPU hot-add stopped after a stuck relocation",
            )],
        );
        return s;
    }
    let mut cands: heapless::Vec<u32, MAX_BATCH> = heapless::Vec::new();
    s.inserts = scan_inserts(p, &mut cands);
    // Stragglers: CPUs that arrived in the first-SMI handler earlier and were never
    // relocated (their insert event is gone): found through the arrival marks.
    for apic in 0..256u32 {
        if p.window().arrived(apic) != 0 && p.is_possible_apic(apic) {
            push_unique(&mut cands, apic);
        }
    }
    cands.retain(|&a| acceptable(p, a));
    if cands.is_empty() {
        if s.inserts > 0 {
            p.log(
                Level::Debug,
                &[
                    Part::Str(b"APMC 4: "),
                    Part::Dec(s.inserts.into()),
                    Part::Str(b" insert event(s), all CPUs already known"),
                ],
            );
        }
        return s;
    }
    p.log(
        Level::Info,
        &[
            Part::Str(b"APMC 4: "),
            Part::Dec(cands.len() as u64),
            Part::Str(b" new CPU(s) to relocate"),
        ],
    );

    // Arrival barrier: no SMI may still be on its way to a default-SMBASE CPU while the
    // gate is open (ERRATA E01), so everyone must have arrived, or be cancelled, first.
    let w = p.window();
    let all_arrived = |c: &heapless::Vec<u32, MAX_BATCH>| c.iter().all(|&a| w.arrived(a) != 0);
    if !wait(p, T_ARRIVE_US, || all_arrived(&cands)) {
        for &a in cands.iter().filter(|&&a| w.arrived(a) == 0) {
            // Plugged just after the broadcast (edk2 cbccf99592): a directed SMI.
            p.send_ipi(a, lapic::ICR_SMI);
        }
        if !wait(p, T_SMI_IPI_US, || all_arrived(&cands)) {
            for &a in cands.iter().filter(|&&a| w.arrived(a) == 0) {
                // Cancel whatever SMI is still outstanding (TCG: INIT discards it) and, on
                // KVM semantics, let a latched SMI be taken at the pen. Never sent to a
                // CPU that arrived (R13).
                let vec = w.pen_base() >> 12;
                p.send_ipi(a, lapic::ICR_INIT);
                delay(p, 10_000);
                p.send_ipi(a, lapic::ICR_STARTUP | vec);
                delay(p, 200);
                p.send_ipi(a, lapic::ICR_STARTUP | vec);
            }
            let _ = wait(p, T_INIT_US, || all_arrived(&cands));
        }
        let before = cands.len();
        cands.retain(|&a| {
            let ok = w.arrived(a) != 0;
            if !ok {
                p.log(
                    Level::Warn,
                    &[
                        Part::Str(b"APIC ID "),
                        Part::Dec(a.into()),
                        Part::Str(
                            b" never arrived in the first-SMI handler; left at the default SMBASE",
                        ),
                    ],
                );
            }
            ok
        });
        s.skipped += (before - cands.len()) as u32;
        w.reset_pen();
    }

    for &apic in cands.iter() {
        match relocate(p, apic, &mut s) {
            Step::Next => {}
            Step::Stop => break,
        }
    }
    s
}

fn relocate<P: Platform + ?Sized>(p: &P, apic: u32, s: &mut Summary) -> Step {
    let slots = p.slots();
    let Some(n) = slots.first_free(p.slot_count()) else {
        p.log(
            Level::Warn,
            &[
                Part::Str(b"no free SMM slot for APIC ID "),
                Part::Dec(apic.into()),
                Part::Str(b": it waits at the closed gate in locked SMRAM"),
            ],
        );
        s.skipped += 1;
        return Step::Next;
    };
    let Some(smbase) = p.slot_smbase(n) else {
        s.skipped += 1;
        return Step::Next;
    };
    let t0 = p.now_us();
    let w = p.window();
    // Publish the mapping before the CPU can take an SMI at its new SMBASE.
    slots.set(n, slots::RELOCATING, apic);
    p.set_route(n, Some(apic));
    w.reset_pen();
    w.clear_about_to_leave();
    w.set_new_smbase(smbase);
    if !w.gate_cas(crate::first_smi::GATE_CLOSED, u64::from(apic)) {
        p.log(
            Level::Error,
            &[Part::Str(
                b"gate was not closed: CPU hot-add stopped until reset",
            )],
        );
        undo(p, n);
        slots.stop();
        return Step::Stop;
    }
    if !wait(p, T_LEAVE_US, || w.about_to_leave() != 0) {
        if w.gate_cas(u64::from(apic), crate::first_smi::GATE_CLOSED) {
            // It never took the gate: nothing happened to it.
            undo(p, n);
            w.clear_arrived(apic);
            p.log(
                Level::Warn,
                &[
                    Part::Str(b"APIC ID "),
                    Part::Dec(apic.into()),
                    Part::Str(b" did not take the gate; slot "),
                    Part::Dec(n as u64),
                    Part::Str(b" freed"),
                ],
            );
            s.skipped += 1;
            return Step::Next;
        }
        slots.set(n, slots::QUARANTINED, apic);
        p.log(
            Level::Error,
            &[
                Part::Str(b"APIC ID "),
                Part::Dec(apic.into()),
                Part::Str(b" stuck inside the first-SMI handler; slot "),
                Part::Dec(n as u64),
                Part::Str(b" quarantined; CPU hot-add stopped until reset"),
            ],
        );
        // A slow CPU may still read `new_smbase` or write the shared save area: never
        // open the gate again (a second CPU could get the same SMBASE).
        slots.stop();
        s.quarantined += 1;
        return Step::Stop;
    }
    // Only now look at the OS-writable pen byte (R4).
    if !wait(p, T_PEN_US, || w.pen_signal() != 0) {
        slots.set(n, slots::QUARANTINED, apic);
        p.log(
            Level::Error,
            &[
                Part::Str(b"APIC ID "),
                Part::Dec(apic.into()),
                Part::Str(b" never reached the pen; slot "),
                Part::Dec(n as u64),
                Part::Str(b" quarantined"),
            ],
        );
        s.quarantined += 1;
        return Step::Stop;
    }
    slots.set(n, slots::ACTIVE, apic);
    w.clear_arrived(apic);
    s.relocated += 1;
    let us = p.now_us().wrapping_sub(t0);
    p.log(
        Level::Info,
        &[
            Part::Str(b"relocated APIC ID "),
            Part::Dec(apic.into()),
            Part::Str(b" to slot "),
            Part::Dec(n as u64),
            Part::Str(b" SMBASE "),
            Part::Hex(smbase.into()),
            Part::Str(b" in "),
            Part::Dec(us),
            Part::Str(b" us"),
        ],
    );
    Step::Next
}

fn undo<P: Platform + ?Sized>(p: &P, n: usize) {
    p.set_route(n, None);
    p.slots().set(n, slots::FREE, slots::NO_APIC);
}

/// The monarch was lost mid-service: under QEMU TCG an INIT resets a CPU even inside
/// SMM (spec 6.4 T2), e.g. when the OS starts a CPU that had taken a late SMI and was
/// re-running this handler. Call with the host's SMI lock recovered, before the next
/// service. A relocation that was in flight is finished like a timeout: undone if its
/// CPU never took the gate, else its slot is quarantined and hot-add stops (fail closed).
pub fn recover_lost_monarch<P: Platform + ?Sized>(p: &P) {
    let slots = p.slots();
    let w = p.window();
    for n in 0..p.slot_count() {
        if slots.state(n) != slots::RELOCATING {
            continue;
        }
        let apic = slots.apic(n);
        if w.gate_cas(u64::from(apic), crate::first_smi::GATE_CLOSED) {
            undo(p, n);
            p.log(
                Level::Warn,
                &[
                    Part::Str(b"lost monarch: relocation of APIC ID "),
                    Part::Dec(apic.into()),
                    Part::Str(b" undone, slot "),
                    Part::Dec(n as u64),
                    Part::Str(b" freed"),
                ],
            );
        } else if w.about_to_leave() != 0 && w.pen_signal() != 0 {
            // It finished: the monarch died after the CPU reached the pen.
            slots.set(n, slots::ACTIVE, apic);
            w.clear_arrived(apic);
        } else {
            slots.set(n, slots::QUARANTINED, apic);
            slots.stop();
            p.log(
                Level::Error,
                &[
                    Part::Str(b"lost monarch during the relocation of APIC ID "),
                    Part::Dec(apic.into()),
                    Part::Str(b"; slot "),
                    Part::Dec(n as u64),
                    Part::Str(b" quarantined; CPU hot-add stopped until reset"),
                ],
            );
        }
    }
}
