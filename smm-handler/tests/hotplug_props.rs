//! Property tests of the hot-add handler: random event sequences and CPU behaviours, and
//! a register block that returns garbage (tests/common has the simulation).

mod common;

use std::collections::BTreeSet;

use common::{Behaviour, Machine, HP_BASE, HP_LEN, NO_ID};
use proptest::collection::vec;
use proptest::prelude::*;
use q35_sim::CpuEvents;
use smm_handler::host::Host;
use smm_handler::hotplug::{self, MAX_BATCH};
use smm_handler::slots::{ACTIVE, QUARANTINED};

fn behaviour() -> impl Strategy<Value = Behaviour> {
    // Mostly cooperative CPUs, so that sequences get far enough to relocate several.
    prop_oneof![
        3 => Just(Behaviour::Broadcast),
        2 => Just(Behaviour::AfterSmiIpi),
        1 => proptest::sample::select(Behaviour::ALL.to_vec()),
    ]
}

/// (arch IDs in selector order, possible APIC IDs recorded at boot by selector).
fn topology(i: usize) -> (Vec<u64>, Vec<u32>) {
    match i {
        0 => ((0..6).collect(), (0..6).collect()),
        // Holes in the APIC IDs (e.g. threads per core rounded up).
        1 => (vec![0, 1, 2, 4, 5, 6, 8], vec![0, 1, 2, 4, 5, 6, 8]),
        // A block that disagrees with boot: 77 is not possible; 300 and 0x8000_0001 are
        // x2APIC IDs (valid); selector 5's arch ID has a high dword (its low dword 3 is
        // possible; boot recorded no usable ID for selector 5); selector 7 reports the
        // x2APIC broadcast ID, which boot recorded as such (never a CPU's).
        _ => (
            vec![0, 1, 2, 77, 300, 0x1_0000_0003, 5, 0xFFFF_FFFF, 0x8000_0001],
            vec![0, 1, 2, 3, 300, NO_ID, 5, NO_ID, 0x8000_0001],
        ),
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// `device_add` with a simulated CPU of this behaviour and SMI-IPI delay (steps).
    Plug(usize, Behaviour, u32),
    /// Raw event bits (stale events, an OS or device that lies).
    SetEvents(usize, bool, bool, bool),
    RequestUnplug(usize),
    /// The OS ejects through control bit 3 (R15).
    OsEject(usize),
    /// The OS sends an SMI IPI to an un-relocated CPU (R18).
    OsSmiIpi(usize),
    /// The OS starts or stops writing the pen's signal byte (R4, R17).
    OsFakesPen(bool),
    /// Broadcast SMI + handler, then the AML clears insert events (or not).
    Apmc4 {
        clear: bool,
    },
    /// The handler alone (coreboot re-runs it on late CPUs, R10).
    ServiceOnly,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..8, behaviour(), prop_oneof![Just(2u32), 1u32..120])
            .prop_map(|(s, b, d)| Op::Plug(s, b, d)),
        1 => (0usize..8, any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(s, i, r, f)| Op::SetEvents(s, i, r, f)),
        1 => (0usize..8).prop_map(Op::RequestUnplug),
        1 => (0usize..8).prop_map(Op::OsEject),
        1 => (0usize..8).prop_map(Op::OsSmiIpi),
        4 => any::<bool>().prop_map(|clear| Op::Apmc4 { clear }),
        1 => Just(Op::ServiceOnly),
        1 => any::<bool>().prop_map(Op::OsFakesPen),
    ]
}

/// Slots serving a CPU: (ACTIVE, REMOVING or PARKED).
fn in_use(m: &Machine) -> (usize, usize) {
    (
        count(m, ACTIVE),
        count(m, smm_handler::slots::REMOVING) + count(m, smm_handler::slots::PARKED),
    )
}

fn count(m: &Machine, state: u32) -> usize {
    m.slot_table().iter().filter(|(s, _)| *s == state).count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_event_sequences_keep_the_slot_table_sound(
        topo in 0usize..3,
        extra_slots in 0usize..8,
        ops in vec(op(), 1..24),
    ) {
        let (ids, possible) = topology(topo);
        let n = ids.len();
        let slot_count = 2 + extra_slots % (n - 1);
        let m = Machine::new(&ids, &[0], slot_count).with_possible(&possible);
        let mut quarantined = BTreeSet::new();
        for op in ops {
            let service = match op {
                Op::Plug(sel, b, delay) => {
                    let sel = sel % n;
                    if m.sim().plug_cpu(sel).is_ok() {
                        m.add_cpu(sel, b);
                        m.set_smi_delay(ids[sel] as u32, delay);
                    }
                    None
                }
                Op::SetEvents(sel, insert, remove, fw_remove) => {
                    let ev = CpuEvents { insert, remove, fw_remove };
                    m.sim().set_cpu_events(sel % n, ev).unwrap();
                    None
                }
                Op::RequestUnplug(sel) => {
                    let _ = m.sim().request_cpu_unplug(sel % n);
                    None
                }
                Op::OsEject(sel) => {
                    m.os_eject(sel % n);
                    None
                }
                Op::OsSmiIpi(sel) => {
                    m.os_smi_ipi(ids[sel % n] as u32);
                    None
                }
                Op::OsFakesPen(on) => {
                    m.os_writes_pen.set(on);
                    None
                }
                Op::Apmc4 { clear } => {
                    m.broadcast();
                    let before = in_use(&m);
                    let s = m.service();
                    if clear {
                        m.aml_clear_inserts();
                    }
                    Some((s, before))
                }
                Op::ServiceOnly => {
                    let before = in_use(&m);
                    Some((m.service(), before))
                }
            };
            if let Some((s, active_before)) = service {
                let bad = m.broken_invariants(&quarantined);
                prop_assert!(bad.is_empty(), "after {:?}: {:#?}\n{:#?}", s, bad, m.logs());
                // Slots serving a CPU (ACTIVE, or to be ejected) grow by the relocated CPUs
                // and shrink by the ejected ones and by failed ejects (quarantined).
                let q = m.quarantined();
                let (act, rem) = in_use(&m);
                let after = (act + rem) as i64;
                let expect = (active_before.0 + active_before.1) as i64 + s.relocated as i64
                    - s.ejected as i64;
                prop_assert!(
                    (expect - s.quarantined as i64..=expect).contains(&after),
                    "in use {} -> {} with {:?}",
                    active_before.0 + active_before.1,
                    after,
                    s
                );
                prop_assert_eq!(q.len() - quarantined.len(), s.quarantined as usize);
                // Linear in the selectors: the scan (at most one write each), the check for
                // CPUs gone behind SMM's back (one per slot) and two per eject.
                prop_assert!(m.ports.selector_writes.get() <= 4 * n as u64);
                quarantined = q;
            }
        }
        // Every IPI the handler sent went to a valid, unmapped-at-the-time candidate.
        for ipi in m.ipis() {
            prop_assert!(ipi.apic != NO_ID && possible.contains(&ipi.apic), "{:?}", ipi);
        }
        prop_assert_eq!(count(&m, QUARANTINED), quarantined.len());
    }

    #[test]
    fn a_register_block_returning_garbage_never_panics_nor_relocates_an_invalid_id(
        topo in 0usize..3,
        garbage in vec(
            prop_oneof![any::<u32>(), 0u32..10, Just(0x03), Just(0x13), Just(0x02)],
            1..48,
        ),
        plugged in vec((0usize..8, behaviour()), 0..4),
        possible_count in prop_oneof![Just(None), (0u32..=70).prop_map(Some)],
    ) {
        let (ids, possible) = topology(topo);
        let n = ids.len();
        let mut m = Machine::new(&ids, &[0], n).with_possible(&possible);
        for (sel, b) in plugged {
            if m.sim().plug_cpu(sel % n).is_ok() {
                m.add_cpu(sel % n, b);
            }
        }
        if let Some(c) = possible_count {
            m.set_possible_count(c);
        }
        let bound = u64::from(m.data().possible_count());
        let mut i = 0usize;
        m.ports.set_read_hook(move |_, port, _, _| {
            debug_assert!((HP_BASE..HP_BASE + HP_LEN).contains(&port));
            let v = garbage[i % garbage.len()];
            i += 1;
            v
        });

        let mut found = heapless::Vec::<u32, MAX_BATCH>::new();
        let inserts = hotplug::scan_inserts(&m, &mut found);
        // One selector write per step, and one more where the step confirms an event.
        prop_assert!(m.ports.selector_writes.get() <= 2 * bound);
        prop_assert!(u64::from(inserts) <= bound);
        prop_assert!(found.len() as u64 <= bound);

        m.broadcast();
        let s = m.service();
        // A whole service stays linear: the scan (at most one selector write per possible
        // CPU), the straggler check (one per possible CPU), the check for CPUs gone
        // behind SMM's back (one per slot) and two per eject (slots = possible CPUs here).
        prop_assert!(m.ports.selector_writes.get() <= 5 * bound);
        let bad = m.broken_invariants(&BTreeSet::new());
        prop_assert!(bad.is_empty(), "{:?}: {:#?}\n{:#?}", s, bad, m.logs());
        for ipi in m.ipis() {
            prop_assert!(ipi.apic != NO_ID && possible.contains(&ipi.apic), "{:?}", ipi);
        }
        for (state, apic) in m.slot_table() {
            if state != 0 {
                prop_assert!(apic != NO_ID && possible.contains(&apic));
            }
        }
    }
}
