//! `recover_lost_monarch`: the CPU running the hot-add service was reset inside SMM
//! (QEMU TCG honours INIT in SMM) in the middle of a relocation.

mod common;

use common::Machine;
use smm_handler::first_smi::Window;
use smm_handler::hotplug;
use smm_handler::layout::GATE_CLOSED;
use smm_handler::slots::{self, Phase, FREE, NO_APIC, QUARANTINED, RELOCATING};

#[test]
fn a_relocation_whose_cpu_never_took_the_gate_is_undone() {
    let m = Machine::dense(4, 4);
    m.slots.set(2, RELOCATING, 2);
    assert!(
        Window::gate_cas(&m, GATE_CLOSED, 2),
        "gate opened for APIC 2"
    );
    hotplug::recover_lost_monarch(&m);
    assert_eq!(m.slot(2), (FREE, NO_APIC));
    assert_eq!(m.gate(), GATE_CLOSED);
    assert!(!m.slots.is_stopped());
    assert_eq!(
        m.logs_with("relocation of APIC ID 2 undone").len(),
        1,
        "{:#?}",
        m.logs()
    );
}

#[test]
fn a_relocation_cut_short_inside_the_handler_quarantines_and_stops_hot_add() {
    let m = Machine::dense(4, 4);
    // The CPU took the gate (closed it again) but never said it is about to leave.
    m.slots.set(3, RELOCATING, 3);
    hotplug::recover_lost_monarch(&m);
    assert_eq!(m.slot(3), (QUARANTINED, 3));
    assert!(m.slots.is_stopped());
    assert_eq!(hotplug::service(&m), hotplug::Summary::default());
}

#[test]
fn nothing_in_flight_changes_nothing() {
    let m = Machine::dense(4, 4);
    let before: Vec<_> = (0..4).map(|n| m.slot(n)).collect();
    hotplug::recover_lost_monarch(&m);
    assert_eq!((0..4).map(|n| m.slot(n)).collect::<Vec<_>>(), before);
    assert!(!m.slots.is_stopped());
}

#[test]
fn a_monarch_lost_before_the_gate_opened_is_undone_even_with_flags_left_by_the_previous_relocation()
{
    // A first CPU was relocated normally: it left `about_to_leave` and the pen byte set.
    let m = Machine::dense(4, 4);
    m.hot_add(1, common::Behaviour::Broadcast);
    let s = m.apmc4();
    assert_eq!(s.relocated, 1);
    assert_eq!(
        Window::about_to_leave(&m),
        1,
        "left by the relocation of APIC 1"
    );
    // The pen byte as the OS-writable page shows it (the relocated CPU or the OS set it).
    m.st.borrow_mut().pen_signal = 1;

    // The next relocation published slot 2 for APIC 2 and then the monarch was lost
    // before it cleared anything or opened the gate (the record says how far it got).
    m.slots.set_phase(2, Phase::Published);
    m.slots.set(2, RELOCATING, 2);
    hotplug::recover_lost_monarch(&m);

    // The stale flags must not make APIC 2 look relocated: it never left the default
    // SMBASE, so its slot is freed, not made ACTIVE.
    assert_eq!(m.slot(2), (FREE, NO_APIC));
    assert!(!m.slots.is_stopped());
    assert_eq!(m.gate(), GATE_CLOSED);
}

#[test]
fn a_monarch_lost_after_its_cpu_left_for_the_pen_completes_the_relocation() {
    let m = Machine::dense(4, 4);
    // This relocation opened the gate (recorded), the CPU took it, said it is leaving and
    // reached the pen: all written in this relocation.
    m.slots.set_phase(3, Phase::GateOpen);
    m.slots.set(3, RELOCATING, 3);
    m.st.borrow_mut().about_to_leave = 1;
    m.st.borrow_mut().pen_signal = 1;
    hotplug::recover_lost_monarch(&m);
    assert_eq!(m.slot(3), (slots::ACTIVE, 3));
    assert!(!m.slots.is_stopped());
}
