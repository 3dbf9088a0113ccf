//! CPU hot-remove against the simulated q35 (`smm_handler::eject`): the OS's `_EJ0`
//! sets `fw_remove` and raises APMC 4; SMM ejects the CPU by selector and keeps its slot
//! GONE until a CPU with the same APIC ID arrives at the default SMBASE, then forgets it,
//! so the same APIC ID can be plugged again (R14, R15, R10, R5).

mod common;

use common::{Behaviour, Machine};
use q35::cpuhp::{self, CpuHp};
use smm_handler::eject::{self, T_PARK_US};
use smm_handler::entry::{Entry, SmiEntries};
use smm_handler::slots::{ACTIVE, GONE, PARKED, QUARANTINED, REMOVING};

/// `-smp 1,maxcpus=4` with CPU 2 hot-added and relocated into slot 1.
fn with_cpu_2_relocated() -> Machine {
    let m = Machine::dense(4, 4);
    m.hot_add(2, Behaviour::Broadcast);
    let s = m.apmc4();
    assert_eq!(s.relocated, 1);
    assert_eq!(m.slot(1), (ACTIVE, 2));
    m
}

/// What QEMU's `CEJ0` does: select the CPU, set `fw_remove` (status bit 4).
fn os_requests_eject(m: &Machine, selector: u32) {
    let hp = CpuHp::new(&m.ports);
    hp.select(selector);
    hp.control(cpuhp::CTL_SET_FW_REMOVE);
}

fn present(m: &Machine, selector: usize) -> bool {
    m.sim().cpu_slot(selector).is_some_and(|s| s.present)
}

#[test]
fn an_eject_request_ejects_the_cpu_and_keeps_its_slot_until_the_apic_id_comes_back() {
    let m = with_cpu_2_relocated();
    os_requests_eject(&m, 2);

    let s = m.apmc4();

    assert_eq!(s.ejected, 1, "{:#?}", m.logs());
    assert!(!present(&m, 2), "QEMU no longer has the CPU");
    assert_eq!(m.slot(1), (GONE, 2), "reserved for APIC 2");
    assert_eq!(
        m.logs_with("ejected APIC ID 2; slot 1 kept for it until it is plugged again")
            .len(),
        1
    );

    // The same APIC ID arrives at the default SMBASE: the old CPU is gone for sure.
    m.hot_add(2, Behaviour::Broadcast);
    let s = m.apmc4();
    assert_eq!(s.relocated, 1, "{:#?}", m.logs());
    assert_eq!(
        m.zeroed_save_states.borrow().as_slice(),
        &[Machine::smbase_of_slot(1)],
        "the old slot's save state was zeroed"
    );
    assert_eq!(m.slot(1), (ACTIVE, 2));
    assert_eq!(m.route(1), Some(2));
    assert_eq!(m.arrived_mark(2), 0);
    assert_eq!(
        m.logs_with("APIC ID 2 is back at the default SMBASE: its old slot 1 freed")
            .len(),
        1
    );
}

#[test]
fn a_gone_slot_whose_cpu_takes_an_smi_is_active_again() {
    // A racy read made SMM take a live CPU for gone: its next SMI at the slot shows it
    // is alive, and the slot serves it again.
    let m = with_cpu_2_relocated();
    m.slots.set(1, GONE, 2);
    let e = SmiEntries::new();
    let go_on = e.begin(&m.ports, &m.slots, 1, Machine::smbase_of_slot(1), false);
    assert!(matches!(go_on, Entry::Continue { .. }));
    assert_eq!(m.slot(1), (ACTIVE, 2));
}

#[test]
fn the_same_socket_plugged_again_is_relocated_into_a_slot_of_its_own() {
    let m = with_cpu_2_relocated();
    os_requests_eject(&m, 2);
    assert_eq!(m.apmc4().ejected, 1);

    m.hot_add(2, Behaviour::Broadcast);
    let s = m.apmc4();

    assert_eq!(s.relocated, 1, "{:#?}", m.logs());
    assert_eq!(m.slot(1), (ACTIVE, 2));
    assert!(m.broken_invariants(&Default::default()).is_empty());
}

#[test]
fn a_target_that_parked_inside_smm_is_ejected_without_waiting() {
    let m = with_cpu_2_relocated();
    os_requests_eject(&m, 2);
    // The monarch planned the eject; the target then takes the SMI at its slot and parks
    // before the lock.
    let mut sels = heapless::Vec::new();
    let _ = sels.push(2);
    eject::plan(&m, &sels);
    assert_eq!(m.slot(1), (REMOVING, 2));
    let e = SmiEntries::new();
    assert_eq!(
        e.begin(&m.ports, &m.slots, 1, Machine::smbase_of_slot(1), false),
        Entry::Park
    );
    assert_eq!(m.slot(1), (PARKED, 2));

    let t0 = m.now();
    let s = m.service();

    assert_eq!(s.ejected, 1);
    assert!(m.now() - t0 < T_PARK_US, "no wait for a parked target");
    assert!(m.logs_with("did not park").is_empty(), "{:#?}", m.logs());
}

#[test]
fn eject_requests_for_the_boot_cpu_and_for_a_cpu_without_slot_change_nothing() {
    let m = with_cpu_2_relocated();
    // QEMU refuses bit 4 for its first CPU; a block that shows it anyway is refused too.
    m.sim()
        .set_cpu_events(
            0,
            q35_sim::CpuEvents {
                insert: false,
                remove: false,
                fw_remove: true,
            },
        )
        .unwrap();
    os_requests_eject(&m, 3); // not even plugged: QEMU ignores bit 4 there
    let before = m.slot_table();

    let s = m.apmc4();

    assert_eq!(s.ejected, 0);
    assert_eq!(m.slot_table(), before);
    assert!(present(&m, 0));
    assert_eq!(
        m.logs_with("eject request for the boot CPU (APIC ID 0) refused")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );
}

#[test]
fn a_cpu_the_os_ejected_itself_is_forgotten_at_the_next_apmc4_and_can_come_back() {
    let m = with_cpu_2_relocated();
    // The OS ejects the CPU with status bit 3, behind SMM's back.
    assert!(m.os_eject(2));
    assert_eq!(m.slot(1), (ACTIVE, 2), "SMM does not know yet");

    let s = m.apmc4();
    assert_eq!(s.ejected, 1);
    assert_eq!(m.slot(1), (GONE, 2), "{:#?}", m.logs());
    assert_eq!(
        m.logs_with(
            "APIC ID 2 is gone (ejected by the OS); slot 1 kept for it until it is plugged again"
        )
        .len(),
        1
    );

    m.hot_add(2, Behaviour::Broadcast);
    assert_eq!(m.apmc4().relocated, 1);
    assert_eq!(m.slot(1), (ACTIVE, 2));
}

#[test]
fn a_monarch_that_is_itself_the_target_leaves_the_eject_to_the_next_monarch() {
    let m = with_cpu_2_relocated();
    os_requests_eject(&m, 2);
    m.monarch_apic.set(2);

    let s = m.apmc4();
    assert_eq!(s.ejected, 0, "a CPU never ejects itself");
    assert_eq!(m.slot(1), (REMOVING, 2));
    assert!(present(&m, 2));
    assert!(!eject::pending(&m), "nothing for this CPU to do");

    // Another CPU sees the pending eject and runs the service again.
    m.monarch_apic.set(0);
    assert!(eject::pending(&m));
    let s = m.service();
    assert_eq!(s.ejected, 1);
    assert_eq!(m.slot(1), (GONE, 2));
}

#[test]
fn repeated_apmc4_with_the_request_still_set_ejects_once() {
    let m = with_cpu_2_relocated();
    os_requests_eject(&m, 2);
    m.monarch_apic.set(2); // the first service cannot eject
    assert_eq!(m.apmc4().ejected, 0);
    assert_eq!(m.apmc4().ejected, 0);
    assert_eq!(m.slot(1), (REMOVING, 2), "planned once, still planned");
    m.monarch_apic.set(0);
    assert_eq!(m.apmc4().ejected, 1);
    assert_eq!(m.apmc4().ejected, 0, "nothing left to do (R10)");
}

#[test]
fn a_cpu_that_is_still_present_after_the_eject_is_quarantined() {
    let m = with_cpu_2_relocated();
    os_requests_eject(&m, 2);
    // QEMU keeps reporting the CPU enabled (an eject that did not take).
    m.ports.set_read_hook(|sim, port, size, real| {
        if port == common::HP_BASE + cpuhp::OFF_STATUS && size == 1 && sim.cpuhp_selector() == 2 {
            real | u32::from(cpuhp::STS_ENABLED)
        } else {
            real
        }
    });

    let s = m.apmc4();

    assert_eq!(s.quarantined, 1);
    assert_eq!(m.slot(1), (QUARANTINED, 2));
    assert_eq!(
        m.logs_with("APIC ID 2 still present after the eject; slot 1 quarantined")
            .len(),
        1
    );
    // The quarantined slot is never reused: a new CPU gets another one.
    m.ports.clear_read_hook();
    m.hot_add(3, Behaviour::Broadcast);
    assert_eq!(m.apmc4().relocated, 1);
    assert_eq!(m.slot(2), (ACTIVE, 3));
}

#[test]
fn removing_and_adding_in_one_apmc4_both_happen() {
    let m = with_cpu_2_relocated();
    os_requests_eject(&m, 2);
    m.hot_add(3, Behaviour::Broadcast);

    let s = m.apmc4();

    assert_eq!((s.ejected, s.relocated), (1, 1), "{:#?}", m.logs());
    assert!(!present(&m, 2));
    assert_eq!(m.slot(1), (GONE, 2), "kept for APIC 2");
    assert_eq!(m.slot(2), (ACTIVE, 3), "the new CPU gets a free slot");
}

#[test]
fn a_live_cpu_is_never_forgotten_while_another_cpu_moves_the_selector() {
    let m = with_cpu_2_relocated();
    // Another CPU keeps moving the selector: every status SMM reads belongs to selector 3
    // (absent), and the selector reads back as 3.
    m.ports.set_read_hook(|sim, port, _size, real| {
        if sim.cpuhp_command() == 0 && port == common::HP_BASE + cpuhp::OFF_DATA {
            3
        } else if port == common::HP_BASE + cpuhp::OFF_STATUS {
            0
        } else {
            real
        }
    });

    let s = m.service();

    assert_eq!(s.ejected, 0, "{:#?}", m.logs());
    assert_eq!(
        m.slot(1),
        (ACTIVE, 2),
        "a racy read never frees a live CPU's slot"
    );
}

#[test]
fn the_monarch_announces_the_ejects_stall_to_its_lock_right_before_the_eject_write() {
    // QEMU destroys the vCPU inside the eject's port write, which can block the monarch
    // for seconds on a loaded host: its SMI lock must not take it for gone meanwhile.
    let m = with_cpu_2_relocated();
    os_requests_eject(&m, 2);

    assert_eq!(m.apmc4().ejected, 1);

    assert_eq!(
        m.stalls.borrow().as_slice(),
        &[(eject::T_EJECT_STALL_US, 2, true)],
        "one announcement, with CPU 2 selected and still present: before the write"
    );
}
