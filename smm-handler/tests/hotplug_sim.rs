//! Hot-add handler logic (`hotplug::service`, `scan_inserts`, `must_return_early`,
//! `Slots`) against the q35-sim register block and simulated new CPUs (tests/common).

mod common;

use std::collections::BTreeSet;

use common::{init_sipi, Behaviour, CpuState, Ev, Machine, DEFAULT_SMBASE, HP_BASE, NO_ID};
use q35::cpuhp::OFF_DATA;
use q35::io::PortIo;
use q35::lapic::ICR_SMI;
use q35_sim::CpuEvents;
use smm_handler::host::Host;
use smm_handler::hotplug::{
    self, Summary, MAX_BATCH, T_ARRIVE_US, T_INIT_US, T_LEAVE_US, T_PEN_US, T_SMI_IPI_US,
};
use smm_handler::layout::GATE_CLOSED;
use smm_handler::slots::{self, Slots, ACTIVE, FREE, MAX_SLOTS, NO_APIC, QUARANTINED, RELOCATING};

fn no_quarantine() -> BTreeSet<usize> {
    BTreeSet::new()
}

fn assert_sound(m: &Machine, quarantined_before: &BTreeSet<usize>) {
    let bad = m.broken_invariants(quarantined_before);
    assert!(bad.is_empty(), "broken invariants: {bad:#?}");
}

fn opened(m: &Machine) -> Vec<u32> {
    m.events()
        .iter()
        .filter_map(|e| match e {
            Ev::GateOpened(a) => Some(*a),
            _ => None,
        })
        .collect()
}

fn insert_only() -> CpuEvents {
    CpuEvents {
        insert: true,
        ..CpuEvents::default()
    }
}

#[test]
fn one_inserted_cpu_is_relocated_into_the_first_free_slot() {
    // Selectors 0..4; the boot CPU holds slot 0; APIC ID 2 (selector 2) is hot-added, so
    // slot and selector differ: the first free slot is 1.
    let m = Machine::dense(4, 4);
    m.hot_add(2, Behaviour::Broadcast);
    m.broadcast();
    assert_eq!(m.arrived_mark(2), 1, "the broadcast pulled it in");

    let s = m.service();

    assert_eq!(
        s,
        Summary {
            inserts: 1,
            relocated: 1,
            skipped: 0,
            quarantined: 0,
            ejected: 0
        }
    );
    assert_eq!(m.slot(1), (ACTIVE, 2));
    assert_eq!(m.slot(2), (FREE, NO_APIC));
    assert_eq!(m.route(1), Some(2));
    assert_eq!(m.arrived_mark(2), 0, "arrival mark cleared");
    let cpu = m.cpu(2);
    assert_eq!(cpu.smbase, Machine::smbase_of_slot(1));
    assert!(cpu.in_pen);
    assert_eq!(m.gate(), GATE_CLOSED);
    assert!(
        m.ipis().is_empty(),
        "an arrived CPU gets no IPI: {:?}",
        m.ipis()
    );
    let smbase = Machine::smbase_of_slot(1);
    assert_eq!(
        m.events(),
        vec![
            Ev::Arrived(2),
            Ev::NewSmbase(smbase),
            Ev::GateOpened(2),
            Ev::GateTaken(2, smbase),
            Ev::AboutToLeave(2),
            Ev::Pen(2),
        ]
    );
    // It left SMM once, with its slot published as RELOCATING (checked by the CPU side).
    assert_eq!(m.st.borrow().rsm_checks, 1);
    assert!(m.violations().is_empty(), "{:#?}", m.violations());
    let line = format!("relocated APIC ID 2 to slot 1 SMBASE {smbase:#x} in ");
    assert_eq!(m.logs_with(&line).len(), 1, "{:#?}", m.logs());
    assert_eq!(m.logs_with("APMC 4: 1 new CPU(s) to relocate").len(), 1);
    assert_sound(&m, &no_quarantine());
}

#[test]
fn several_inserts_in_one_smi_are_relocated_one_at_a_time_into_distinct_slots() {
    let m = Machine::dense(6, 6);
    for sel in 1..=4 {
        m.hot_add(sel, Behaviour::Broadcast);
    }
    let s = m.apmc4();

    assert_eq!(s.inserts, 4);
    assert_eq!(s.relocated, 4);
    for n in 1..=4 {
        assert_eq!(m.slot(n), (ACTIVE, n as u32));
        assert_eq!(m.route(n), Some(n as u32));
        assert_eq!(m.cpu(n as u32).smbase, Machine::smbase_of_slot(n));
        assert_eq!(m.arrived_mark(n as u32), 0);
    }
    assert_eq!(m.slot(5), (FREE, NO_APIC));
    let smbases: BTreeSet<u32> = (1..=4).map(|a| m.cpu(a).smbase).collect();
    assert_eq!(smbases.len(), 4, "distinct SMBASEs");

    // One relocation in flight at a time: after the gate opens for X, X reaches the pen
    // before the gate opens for anybody else, and the context is only written while
    // nobody is in flight (the simulation flags that as a violation).
    assert_eq!(opened(&m), vec![1, 2, 3, 4]);
    let ev = m.events();
    let mut in_flight: Option<u32> = None;
    for e in &ev {
        match *e {
            Ev::GateOpened(a) => {
                assert_eq!(in_flight, None, "gate opened for {a} during {in_flight:?}");
                in_flight = Some(a);
            }
            Ev::Pen(a) => {
                assert_eq!(in_flight, Some(a));
                in_flight = None;
            }
            Ev::NewSmbase(_) => assert_eq!(in_flight, None, "new_smbase changed in flight"),
            _ => {}
        }
    }
    assert_eq!(in_flight, None);
    assert!(m.violations().is_empty(), "{:#?}", m.violations());
    assert_eq!(m.st.borrow().rsm_checks, 4);
    assert_sound(&m, &no_quarantine());
}

#[test]
fn servicing_again_with_the_same_insert_events_relocates_nothing_new() {
    let m = Machine::dense(4, 4);
    m.hot_add(1, Behaviour::Broadcast);
    m.hot_add(3, Behaviour::Broadcast);
    m.broadcast();
    let first = m.service();
    assert_eq!(first.relocated, 2);
    let table = m.slot_table();
    let events = m.events().len();
    let ipis = m.ipis().len();

    // The insert events are still set (the AML has not run): R10, edk2 020bb4b46d.
    assert!(m.sim().cpu_slot(1).unwrap().inserting);
    let again = m.service();

    assert_eq!(
        again,
        Summary {
            inserts: 2,
            ..Summary::default()
        }
    );
    assert_eq!(m.slot_table(), table);
    assert_eq!(m.events().len(), events, "no gate or context activity");
    assert_eq!(m.ipis().len(), ipis);
    assert_eq!(
        m.logs_with("APMC 4: 2 insert event(s), all CPUs already known")
            .len(),
        1
    );
    assert_sound(&m, &no_quarantine());
}

#[test]
fn a_thousand_calls_with_nothing_pending_change_nothing_and_send_no_ipis() {
    let m = Machine::dense(4, 4);
    m.hot_add(1, Behaviour::Broadcast);
    assert_eq!(m.apmc4().relocated, 1);
    let table = m.slot_table();
    let events = m.events().len();
    let logs = m.log_count();
    let clock = m.now();
    let pen_resets = m.st.borrow().pen_resets;

    for _ in 0..1000 {
        assert_eq!(m.service(), Summary::default());
    }

    assert_eq!(m.slot_table(), table);
    assert_eq!(m.events().len(), events);
    assert_eq!(m.ipis().len(), 0);
    assert_eq!(m.log_count(), logs, "nothing logged: {:#?}", m.logs());
    assert_eq!(m.now(), clock, "no waiting at all");
    assert_eq!(m.st.borrow().pen_resets, pen_resets);
    assert_eq!(m.gate(), GATE_CLOSED);
    // The scan leaves command 0 and a valid selector behind.
    assert_eq!(m.sim().cpuhp_command(), 0);
    assert!(m.sim().cpuhp_selector() < 4);
    assert_sound(&m, &no_quarantine());
}

// ---- hostile register-block states (R5, R6) ---------------------------------------------

/// Nothing relocated, no gate activity, no IPIs, and the scan stayed within `possible`
/// selector writes.
fn assert_untouched(m: &Machine, s: Summary) {
    assert_eq!(s.relocated, 0);
    assert!(opened(m).is_empty());
    assert!(m.ipis().is_empty(), "{:?}", m.ipis());
    for n in 1..m.slots_laid_out() {
        assert_eq!(m.slot(n), (FREE, NO_APIC));
        assert_eq!(m.route(n), None);
    }
    assert!(m.ports.selector_writes.get() <= u64::from(hotplug_possible(m)));
    assert_sound(m, &no_quarantine());
}

fn hotplug_possible(m: &Machine) -> u32 {
    m.data().possible_count()
}

#[test]
fn an_insert_event_without_enabled_is_skipped() {
    // The OS ejected the CPU through control bit 3 before its insert event was cleared.
    let m = Machine::dense(4, 4);
    m.sim().set_cpu_events(2, insert_only()).unwrap();
    assert_eq!(m.sim().cpu_slot(2).unwrap().status(), 0x02);

    let s = m.service();

    assert_eq!(s.inserts, 1);
    assert_eq!(
        m.logs_with("cpuhp: inconsistent status 0x2 at selector 2, skipped")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_untouched(&m, s);
}

#[test]
fn an_insert_event_with_fw_remove_is_skipped() {
    let m = Machine::dense(4, 4);
    // Present, but its CPU never shows up in SMM, so only the scan could queue it.
    m.hot_add(3, Behaviour::NeverArrives);
    m.sim()
        .set_cpu_events(
            3,
            CpuEvents {
                insert: true,
                remove: false,
                fw_remove: true,
            },
        )
        .unwrap();

    let s = m.service();

    assert_eq!(
        m.logs_with("cpuhp: inconsistent status 0x13 at selector 3, skipped")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_untouched(&m, s);
}

#[test]
fn an_arch_id_with_a_non_zero_high_dword_is_skipped() {
    // The low dword (2) is a possible APIC ID: only the high-dword check stops it.
    let m = Machine::new(&[0, 1, 0x1_0000_0002], &[0], 3).with_possible(&[0, 1, 2]);
    m.sim().plug_cpu(2).unwrap();

    let s = m.service();

    assert_eq!(s.inserts, 1);
    assert_eq!(
        m.logs_with("cpuhp: arch ID above 32 bits at selector 2, skipped")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_untouched(&m, s);
}

#[test]
fn an_apic_id_outside_the_possible_set_is_skipped() {
    // The block reports 77 where boot recorded 3; the CPU even entered the first-SMI
    // handler, which finds no possible CPU with its APIC ID and leaves no mark.
    let m = Machine::new(&[0, 1, 2, 77], &[0], 4).with_possible(&[0, 1, 2, 3]);
    m.hot_add(3, Behaviour::Broadcast);
    m.broadcast();
    assert_eq!(m.arrived_mark(77), 0);

    let s = m.service();

    assert_eq!(
        m.logs_with("APIC ID 77 is not a possible CPU, skipped")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_untouched(&m, s);
    assert_eq!(m.cpu(77).smbase, DEFAULT_SMBASE);
}

#[test]
fn the_gate_opens_first_for_a_waiting_cpu_that_runs() {
    // CPUs 1, 2 and 3 wait at the gate; the host has not scheduled CPU 1's vCPU for a
    // while. The monarch sees CPUs 2 and 3 knock (their beats move) and admits them
    // first, then CPU 1 once it runs: all three relocated, one at a time.
    let m = Machine::new(&[0, 1, 2, 3], &[0], 4);
    for sel in 1..4 {
        m.hot_add(sel, Behaviour::Broadcast);
    }
    m.broadcast();
    m.deschedule(1, 40);

    let s = m.service();

    assert_eq!((s.relocated, s.skipped), (3, 0), "{:#?}", m.logs());
    let taken: Vec<u32> = m
        .events()
        .iter()
        .filter_map(|e| match e {
            Ev::GateTaken(a, _) => Some(*a),
            _ => None,
        })
        .collect();
    assert_eq!(taken, [2, 3, 1]);
    let bad = m.broken_invariants(&Default::default());
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn x2apic_ids_are_relocated_into_slots_of_their_own() {
    // 32-bit APIC IDs from a sparse x2APIC topology, plugged at once.
    let ids = [0u32, 1, 300, 0x8000_0001, 0xFFFF_FFFE];
    let arch: Vec<u64> = ids.iter().map(|&a| u64::from(a)).collect();
    let m = Machine::new(&arch, &[0], 5).with_possible(&ids);
    // The host ROM: each slot's stub knows its slot, no 16-bit routing table.
    m.routed.set(false);
    for sel in 2..5 {
        m.hot_add(sel, Behaviour::Broadcast);
    }
    m.broadcast();
    assert_eq!(m.arrived_mark(0x8000_0001), 1, "marked at its selector");

    let s = m.service();

    assert_eq!(
        (s.inserts, s.relocated, s.skipped),
        (3, 3, 0),
        "{:#?}",
        m.logs()
    );
    for (apic, slot) in [(300, 1), (0x8000_0001, 2), (0xFFFF_FFFE, 3)] {
        assert_eq!(
            m.cpu(apic).smbase,
            Machine::smbase_of_slot(slot),
            "{apic:#x}"
        );
        assert_eq!(m.slot(slot), (slots::ACTIVE, apic));
        assert_eq!(m.arrived_mark(apic), 0, "mark cleared");
    }
    let bad = m.broken_invariants(&Default::default());
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn an_apic_id_beyond_a_16_bit_routing_table_is_skipped() {
    // coreboot's stub routes by a u16 table: its boot policy refuses such a topology, and
    // SMM refuses the ID all the same should one be plugged.
    let m = Machine::new(&[0, 1, 0x1_0000], &[0], 3).with_possible(&[0, 1, 0x1_0000]);
    m.hot_add(2, Behaviour::Broadcast);
    m.broadcast();

    let s = m.service();

    assert_eq!(
        m.logs_with("APIC ID 0x10000 does not fit the host's 16-bit routing table, skipped")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_untouched(&m, s);
}

#[test]
fn the_x2apic_broadcast_id_is_skipped() {
    // A block and a boot table that both say all-ones: no CPU can have it.
    let m = Machine::new(&[0, 1, 0xFFFF_FFFF], &[0], 3).with_possible(&[0, 1, NO_ID]);
    m.sim().plug_cpu(2).unwrap();

    let s = m.service();

    assert_eq!(
        m.logs_with("APIC ID 0xffffffff is the x2APIC broadcast, skipped")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_untouched(&m, s);
}

#[test]
fn an_x2apic_cpu_the_monarch_cannot_address_is_left_at_the_default_smbase() {
    // The OS keeps the local APIC in xAPIC mode: a CPU with APIC ID 300 that missed the
    // broadcast cannot get a directed SMI, nor an INIT; it stays where it is, unharmed.
    let m = Machine::new(&[0, 1, 300], &[0], 3).with_possible(&[0, 1, 300]);
    m.ipi_reach.set(0xFE);
    m.hot_add(2, Behaviour::AfterSmiIpi);
    m.broadcast();

    let s = m.service();

    assert_eq!((s.relocated, s.skipped), (0, 1), "{:#?}", m.logs());
    assert_eq!(
        m.logs_with("IPI 0x4200 to APIC ID 300 not sent (xAPIC mode cannot address it)")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_eq!(
        m.logs_with("IPI 0x4500 to APIC ID 300 not sent").len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert!(m.ipis().is_empty());
    assert_eq!(m.cpu(300).smbase, DEFAULT_SMBASE);
    assert!(m.slots.slot_of(300, MAX_SLOTS).is_none());

    // In x2APIC mode the same CPU is reached and relocated by the next APMC 4.
    m.ipi_reach.set(u32::MAX);
    let s = m.service();
    assert_eq!(s.relocated, 1, "{:#?}", m.logs());
    assert_eq!(m.cpu(300).smbase, Machine::smbase_of_slot(1));
}

#[test]
fn a_selector_reported_below_the_current_one_ends_the_scan() {
    // Events at selectors 1 and 3. The "Command data" read of the scan looking from
    // selector 2 (the fourth with command 0: the first found selector 1, the second
    // re-checked that the selector still is 1, the third confirmed its event) is forced
    // to 0, as if the OS had moved the selector back.
    let m = Machine::dense(5, 5);
    m.hot_add(1, Behaviour::Broadcast);
    m.hot_add(3, Behaviour::AfterSmiIpi);
    let mut reads = 0;
    m.ports.set_read_hook(move |sim, port, _size, real| {
        if port == HP_BASE + OFF_DATA && sim.cpuhp_command() == 0 {
            reads += 1;
            if reads == 4 {
                return 0;
            }
        }
        real
    });
    let mut found = heapless::Vec::<u32, MAX_BATCH>::new();
    let inserts = hotplug::scan_inserts(&m, &mut found);
    assert_eq!(inserts, 1);
    assert_eq!(found.as_slice(), &[1]);
    // Selector 0 to start, 1 to confirm its event, 2 to look on.
    assert_eq!(m.ports.selector_writes.get(), 3);

    // The same in a full service: only CPU 1 is relocated, CPU 3 is not even IPI'd.
    m.ports.set_read_hook({
        let mut reads = 0;
        move |sim, port, _size, real| {
            if port == HP_BASE + OFF_DATA && sim.cpuhp_command() == 0 {
                reads += 1;
                if reads == 4 {
                    return 0;
                }
            }
            real
        }
    });
    m.broadcast();
    let s = m.service();
    assert_eq!(s.relocated, 1);
    assert_eq!(m.slot(1), (ACTIVE, 1));
    assert!(m.ipis().is_empty());
    assert_eq!(m.cpu(3).smbase, DEFAULT_SMBASE);

    // With an honest block the insert event of selector 3 is still there and serviced.
    m.ports.clear_read_hook();
    let s = m.service();
    assert_eq!(s.relocated, 1);
    assert_eq!(m.slot(2), (ACTIVE, 3));
    assert_eq!(m.ipis_to(3), vec![ICR_SMI]);
    assert_sound(&m, &no_quarantine());
}

#[test]
fn the_scan_is_bounded_by_the_possible_count_even_if_every_slot_has_an_event() {
    let mut m = Machine::dense(8, 8);
    for sel in 1..8 {
        m.sim().set_cpu_events(sel, insert_only()).unwrap();
    }
    // Boot recorded fewer possible CPUs than the block has (the possible list is cut to
    // selectors 0..3): the scan must not look past them.
    m.set_possible_count(4);
    assert_eq!(hotplug_possible(&m), 4);
    let mut found = heapless::Vec::<u32, MAX_BATCH>::new();
    let inserts = hotplug::scan_inserts(&m, &mut found);
    assert_eq!(inserts, 3, "selectors 1..3 only");
    // One write per step, one more per confirmed event.
    assert!(m.ports.selector_writes.get() <= 2 * 4);
    assert_eq!(m.logs_with("inconsistent status").len(), 3);
}

// ---- resources and misbehaving CPUs (R7, R11, R13) ---------------------------------------

#[test]
fn more_hot_added_cpus_than_free_slots_leave_the_extras_unmapped() {
    // Four possible CPUs but only three SMM slots.
    let m = Machine::dense(4, 3);
    for sel in 1..=3 {
        m.hot_add(sel, Behaviour::Broadcast);
    }
    let s = m.apmc4();

    assert_eq!(s.relocated, 2);
    assert_eq!(s.skipped, 1);
    assert_eq!(m.slot(1), (ACTIVE, 1));
    assert_eq!(m.slot(2), (ACTIVE, 2));
    assert_eq!(
        m.logs_with("no free SMM slot for APIC ID 3: it waits at the closed gate")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    let c = m.cpu(3);
    assert_eq!(c.smbase, DEFAULT_SMBASE);
    assert_eq!(c.state, CpuState::AtGate);
    assert!(!opened(&m).contains(&3));
    assert!(m.ipis().is_empty());
    assert!(m.slots.slot_of(3, MAX_SLOTS).is_none());

    // Later SMIs find it again through its arrival mark and still have no slot for it.
    let s = m.apmc4();
    assert_eq!(s.skipped, 1);
    assert_eq!(m.logs_with("no free SMM slot for APIC ID 3").len(), 2);
    assert!(!opened(&m).contains(&3));
    assert_sound(&m, &no_quarantine());
}

#[test]
fn a_cpu_that_never_arrives_gets_an_smi_ipi_then_init_sipi_and_is_skipped() {
    let m = Machine::dense(4, 4);
    m.hot_add(1, Behaviour::NeverArrives);
    m.hot_add(2, Behaviour::Broadcast);
    let t0 = m.now();
    let s = m.apmc4();

    let ipis = m.ipis();
    let icrs: Vec<u32> = ipis.iter().map(|i| i.icr).collect();
    let [init, sipi, sipi2] = init_sipi();
    assert_eq!(icrs, vec![ICR_SMI, init, sipi, sipi2]);
    assert!(ipis.iter().all(|i| i.apic == 1), "{ipis:?}");
    // The SMI IPI only after the first wait, INIT only after the second.
    assert!(ipis[0].at_us - t0 >= T_ARRIVE_US);
    assert!(ipis[1].at_us - ipis[0].at_us >= T_SMI_IPI_US);
    assert!(ipis[2].at_us - ipis[1].at_us >= 10_000);
    assert!(m.now() - t0 >= T_ARRIVE_US + T_SMI_IPI_US + T_INIT_US);
    assert_eq!(
        m.logs_with("APIC ID 1 never arrived in the first-SMI handler; left at the default SMBASE")
            .len(),
        1
    );
    assert_eq!(s.skipped, 1);
    assert_eq!(s.relocated, 1);
    assert!(m.slots.slot_of(1, MAX_SLOTS).is_none());
    assert_eq!(m.cpu(1).smbase, DEFAULT_SMBASE);
    assert_eq!(m.cpu(1).inits, 1);
    // CPU 2 got the first free slot; CPU 1's slot was never taken.
    assert_eq!(m.slot(1), (ACTIVE, 2));
    assert_eq!(m.slot(2), (FREE, NO_APIC));
    assert_eq!(m.slot(3), (FREE, NO_APIC));
    assert!(!opened(&m).contains(&1));
    assert!(m.violations().is_empty(), "{:#?}", m.violations());
    assert_sound(&m, &no_quarantine());
}

#[test]
fn init_is_never_sent_to_a_cpu_that_arrived() {
    // 1 arrives only after the SMI IPI, 2 never, 3 at the broadcast.
    let m = Machine::dense(4, 4);
    m.hot_add(1, Behaviour::AfterSmiIpi);
    m.hot_add(2, Behaviour::NeverArrives);
    m.hot_add(3, Behaviour::Broadcast);
    let s = m.apmc4();

    assert_eq!(m.ipis_to(1), vec![ICR_SMI], "no INIT once it arrived (R13)");
    let mut to_2 = vec![ICR_SMI];
    to_2.extend(init_sipi());
    assert_eq!(m.ipis_to(2), to_2);
    assert!(m.ipis_to(3).is_empty(), "no SMI IPI to an arrived CPU");
    assert_eq!(s.relocated, 2);
    assert_eq!(s.skipped, 1);
    assert_eq!(m.slot(1), (ACTIVE, 1));
    assert_eq!(m.slot(2), (ACTIVE, 3));
    assert_eq!(m.cpu(1).inits, 0);
    assert_eq!(m.cpu(3).inits, 0);
    assert!(m.violations().is_empty(), "{:#?}", m.violations());
    assert_sound(&m, &no_quarantine());
}

#[test]
fn an_smi_still_on_its_way_when_init_is_sent_is_cancelled_and_the_cpu_recovered_later() {
    // A slow vCPU: its SMI IPI would land after the INIT (TCG: INIT discards it), i.e.
    // never while a gate is open (`docs/protocol.md#the-arrival-barrier`). The next SMI picks it up.
    let m = Machine::dense(3, 3);
    m.hot_add(1, Behaviour::AfterSmiIpi);
    m.set_smi_delay(1, 500);
    let s = m.apmc4();
    let mut expect = vec![ICR_SMI];
    expect.extend(init_sipi());
    assert_eq!(m.ipis_to(1), expect);
    assert_eq!(s.skipped, 1);
    let c = m.cpu(1);
    assert_eq!(c.state, CpuState::Outside, "the pending SMI was discarded");
    assert!(c.in_pen);
    assert_eq!(c.smbase, DEFAULT_SMBASE);
    assert!(!m.events().contains(&Ev::Arrived(1)));
    assert_eq!(m.slot(1), (FREE, NO_APIC));

    // Its insert event is gone; the next broadcast brings it in as a straggler.
    let s = m.apmc4();
    assert_eq!(s.relocated, 1);
    assert_eq!(m.slot(1), (ACTIVE, 1));
    assert_eq!(m.ipis_to(1).len(), 4, "no further IPI");
    assert_sound(&m, &no_quarantine());
}

#[test]
fn the_pen_byte_left_by_a_sipi_to_a_missing_cpu_does_not_count_as_a_relocation() {
    // The INIT/SIPI lands CPU 1 un-relocated in the pen, which sets the pen byte; CPU 2
    // then never reaches the pen itself and must be quarantined, not marked ACTIVE.
    let m = Machine::dense(4, 4);
    m.hot_add(1, Behaviour::NeverArrives);
    m.hot_add(2, Behaviour::NoPen);
    let s = m.apmc4();

    assert!(m.cpu(1).in_pen);
    assert_eq!(m.slot(1), (QUARANTINED, 2));
    assert_eq!(s.quarantined, 1);
    assert_eq!(s.relocated, 0);
    assert_sound(&m, &no_quarantine());
}

#[test]
fn a_pen_byte_faked_by_the_os_is_not_taken_for_about_to_leave() {
    // R4: the pen byte is looked at only after about_to_leave (SMRAM) is set.
    let m = Machine::dense(3, 3);
    m.hot_add(1, Behaviour::NoLeave);
    m.os_writes_pen.set(true);
    let s = m.apmc4();
    assert_eq!(s.quarantined, 1);
    assert_eq!(s.relocated, 0);
    assert_eq!(m.slot(1), (QUARANTINED, 1));
    assert_eq!(
        m.logs_with("APIC ID 1 stuck inside the first-SMI handler")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_sound(&m, &no_quarantine());
}

#[test]
fn a_cpu_that_arrives_but_never_takes_the_gate_is_shut_out_and_its_slot_freed() {
    let m = Machine::dense(4, 4);
    m.hot_add(1, Behaviour::NoGate);
    m.hot_add(2, Behaviour::Broadcast);
    let t0 = m.now();
    let s = m.apmc4();

    assert_eq!(s.skipped, 1);
    assert_eq!(s.relocated, 1);
    let ev = m.events();
    let open = ev.iter().position(|e| *e == Ev::GateOpened(1)).unwrap();
    let close = ev
        .iter()
        .position(|e| *e == Ev::GateClosedByMonarch(1))
        .unwrap();
    assert!(open < close);
    assert!(!ev.contains(&Ev::GateTaken(1, Machine::smbase_of_slot(1))));
    assert_eq!(
        m.logs_with("APIC ID 1 did not take the gate; slot 1 freed")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert_eq!(m.arrived_mark(1), 0, "arrival mark cleared");
    assert!(m.now() - t0 >= T_LEAVE_US, "waited the full T_leave");
    // The freed slot went to the next CPU in the same SMI.
    assert_eq!(m.slot(1), (ACTIVE, 2));
    assert_eq!(m.route(1), Some(2));
    assert!(m.slots.slot_of(1, MAX_SLOTS).is_none());
    assert_eq!(m.gate(), GATE_CLOSED);
    assert!(m.ipis().is_empty());
    assert!(m.violations().is_empty(), "{:#?}", m.violations());
    assert_sound(&m, &no_quarantine());
}

#[test]
fn a_cpu_stuck_after_taking_the_gate_quarantines_its_slot_for_good() {
    let m = Machine::dense(5, 5);
    m.hot_add(1, Behaviour::NoLeave);
    m.hot_add(2, Behaviour::Broadcast);
    let s = m.apmc4();

    assert_eq!(
        s,
        Summary {
            inserts: 2,
            relocated: 0,
            skipped: 0,
            quarantined: 1,
            ejected: 0
        }
    );
    assert_eq!(m.slot(1), (QUARANTINED, 1));
    assert_eq!(m.route(1), Some(1), "the mapping is kept");
    assert!(!hotplug::must_return_early(&m.slots, 1));
    assert_eq!(
        m.logs_with(
            "APIC ID 1 stuck inside the first-SMI handler; slot 1 quarantined; CPU hot-add stopped until reset"
        )
        .len(),
        1,
        "{:#?}",
        m.logs()
    );
    // Processing stopped: CPU 2 was never admitted and still waits at the gate.
    assert_eq!(opened(&m), vec![1]);
    assert_eq!(m.cpu(2).state, CpuState::AtGate);
    assert_eq!(m.arrived_mark(2), 1);
    assert_eq!(
        m.gate(),
        GATE_CLOSED,
        "the stuck CPU closed it behind itself"
    );
    let quarantined = m.quarantined();
    assert_eq!(quarantined, BTreeSet::from([1]));
    assert_sound(&m, &no_quarantine());

    // The stuck CPU may still be inside the handler's critical section (it could still
    // read `new_smbase` or write the shared save area): the gate is never opened again
    // until reset (fail closed). Later SMIs relocate nobody; slot 1 stays quarantined.
    assert!(m.slots.is_stopped());
    m.hot_add(3, Behaviour::Broadcast);
    let s = m.apmc4();
    assert_eq!(s.relocated, 0);
    assert_eq!(m.slot(1), (QUARANTINED, 1));
    assert_eq!(m.cpu(2).state, CpuState::AtGate);
    assert_eq!(opened(&m), vec![1]);
    assert_sound(&m, &quarantined);
}

#[test]
fn a_cpu_that_never_reaches_the_pen_is_quarantined() {
    let m = Machine::dense(4, 4);
    m.hot_add(1, Behaviour::NoPen);
    m.hot_add(2, Behaviour::Broadcast);
    let t0 = m.now();
    let s = m.apmc4();

    assert_eq!(s.quarantined, 1);
    assert_eq!(s.relocated, 0);
    assert_eq!(m.slot(1), (QUARANTINED, 1));
    assert_eq!(
        m.logs_with("APIC ID 1 never reached the pen; slot 1 quarantined")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
    assert!(m.now() - t0 >= T_PEN_US);
    assert_eq!(opened(&m), vec![1], "stopped after the quarantine");
    assert_eq!(m.cpu(1).smbase, Machine::smbase_of_slot(1));
    let quarantined = m.quarantined();
    assert_sound(&m, &no_quarantine());

    // Not retried, not reused.
    let s = m.apmc4();
    assert_eq!(s.relocated, 1);
    assert_eq!(m.slot(2), (ACTIVE, 2));
    assert_eq!(opened(&m), vec![1, 2]);
    assert_sound(&m, &quarantined);
}

#[test]
fn a_straggler_whose_insert_event_is_gone_is_relocated_on_the_next_service_call() {
    // Round 1: CPU 1 never reaches the pen and stops the SMI; CPU 2 arrived but was not
    // relocated, and the AML then clears both insert events.
    let m = Machine::dense(4, 4);
    m.hot_add(1, Behaviour::NoPen);
    m.hot_add(2, Behaviour::Broadcast);
    m.apmc4();
    assert!(!m.sim().cpu_slot(2).unwrap().inserting);
    assert_eq!(m.arrived_mark(2), 1);
    let quarantined = m.quarantined();

    // Round 2: no insert event anywhere, the arrival mark is all that is left.
    let s = m.service();
    assert_eq!(s.inserts, 0);
    assert_eq!(s.relocated, 1);
    assert_eq!(m.slot(2), (ACTIVE, 2));
    assert_eq!(m.arrived_mark(2), 0);
    assert_eq!(m.cpu(2).smbase, Machine::smbase_of_slot(2));
    assert!(m.ipis().is_empty());
    assert_sound(&m, &quarantined);
}

#[test]
fn a_cpu_with_an_arrival_mark_but_no_insert_event_at_all_is_relocated() {
    // E.g. an OS SMI IPI pulled a present CPU into the first-SMI handler.
    let m = Machine::dense(4, 4);
    m.hot_add(2, Behaviour::Broadcast);
    m.aml_clear_inserts();
    m.broadcast();
    let s = m.service();
    assert_eq!(s.inserts, 0);
    assert_eq!(s.relocated, 1);
    assert_eq!(m.slot(1), (ACTIVE, 2));
    assert_sound(&m, &no_quarantine());
}

#[test]
fn a_stale_arrival_mark_of_an_ejected_cpu_is_forgotten_without_a_timeout() {
    // The CPU arrived, then the OS ejected it before SMM relocated it. SMM sees its
    // selector absent and drops the mark (before hot-remove existed this cost one
    // arrival timeout: `skipped` was 1).
    let m = Machine::dense(4, 4);
    m.hot_add(2, Behaviour::NoGate);
    m.broadcast();
    assert!(m.os_eject(2));
    m.aml_clear_inserts();
    let t0 = m.now();
    let s = m.service();
    assert_eq!(s.skipped, 0);
    assert!(m.now() - t0 < T_ARRIVE_US, "no arrival wait");
    assert_eq!(m.slot(1), (FREE, NO_APIC));
    assert_eq!(m.arrived_mark(2), 0);
    let t = m.now();
    assert_eq!(m.service(), Summary::default());
    assert_eq!(m.now(), t);
    assert_sound(&m, &no_quarantine());
}

// ---- must_return_early and the slot table ------------------------------------------------

#[test]
fn must_return_early_is_true_only_for_relocating_slots() {
    let s = Slots::new();
    s.set(0, ACTIVE, 0);
    s.set(1, RELOCATING, 5);
    s.set(2, QUARANTINED, 6);
    s.set(3, 7, 7); // garbage state
    assert!(!hotplug::must_return_early(&s, 0));
    assert!(hotplug::must_return_early(&s, 1));
    assert!(!hotplug::must_return_early(&s, 2));
    assert!(!hotplug::must_return_early(&s, 3));
    assert!(!hotplug::must_return_early(&s, 4), "FREE");
    assert!(!hotplug::must_return_early(&s, MAX_SLOTS));
    assert!(!hotplug::must_return_early(&s, usize::MAX));
    s.set(1, ACTIVE, 5);
    assert!(!hotplug::must_return_early(&s, 1));
}

#[test]
fn a_cpu_leaving_smm_finds_its_slot_relocating_and_returns_early() {
    // The simulated CPU checks at its RSM that its slot is RELOCATING for it and that
    // must_return_early says so (R12, R15); the slot is ACTIVE only afterwards.
    let m = Machine::dense(3, 3);
    m.hot_add(1, Behaviour::Broadcast);
    m.hot_add(2, Behaviour::NoPen);
    m.apmc4();
    assert_eq!(m.st.borrow().rsm_checks, 2);
    assert!(m.violations().is_empty(), "{:#?}", m.violations());
    assert!(!hotplug::must_return_early(&m.slots, 1), "ACTIVE now");
    assert!(!hotplug::must_return_early(&m.slots, 2), "QUARANTINED now");
}

#[test]
fn the_slot_table_skips_quarantined_slots_and_ignores_free_ones() {
    let s = Slots::new();
    assert_eq!(s.first_free(4), Some(0));
    s.set(0, ACTIVE, 0);
    s.set(1, QUARANTINED, 9);
    assert_eq!(s.first_free(4), Some(2));
    assert_eq!(
        s.slot_of(9, 4),
        Some(1),
        "quarantined slots still own their APIC ID"
    );
    s.set(3, FREE, 4); // a stale APIC ID in a FREE slot is not a mapping
    assert_eq!(s.slot_of(4, 4), None);
    for n in 2..4 {
        s.set(n, ACTIVE, n as u32);
    }
    assert_eq!(s.first_free(4), None);
    assert_eq!(
        s.first_free(usize::MAX),
        Some(4),
        "count clamped to MAX_SLOTS"
    );
    assert_eq!(
        s.state(MAX_SLOTS),
        slots::QUARANTINED,
        "out of range reads as unusable"
    );
    assert_eq!(s.apic(MAX_SLOTS), NO_APIC);
    s.set(MAX_SLOTS, ACTIVE, 1); // ignored
    assert_eq!(s.slot_of(1, usize::MAX), None);
}

#[test]
fn a_selector_moved_by_another_cpu_between_the_status_and_the_arch_id_is_read_again() {
    // The insert is at selector 2 (APIC 2). While SMM reads its arch ID, another CPU
    // moves the selector to selector 1 (a possible CPU that is not plugged): the arch ID
    // read then belongs to selector 1 (R5).
    let m = Machine::dense(4, 4);
    m.hot_add(2, Behaviour::Broadcast);
    m.broadcast();
    let mut moved = false;
    m.ports.set_read_hook(move |sim, port, _size, real| {
        if !moved
            && port == HP_BASE + OFF_DATA
            && sim.cpuhp_command() == q35::cpuhp::CMD_GET_ARCH_ID
        {
            moved = true;
            sim.outl(HP_BASE, 1);
            return 1;
        }
        real
    });

    let s = m.service();

    assert_eq!(s.relocated, 1, "{:#?}", m.logs());
    assert_eq!(m.slot(1), (ACTIVE, 2), "the real new CPU got the slot");
    assert!(
        m.ipis_to(1).is_empty(),
        "no IPI to the absent CPU: {:?}",
        m.ipis_to(1)
    );
    assert_eq!(
        m.logs_with("another CPU moved the selector during the scan")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
}
