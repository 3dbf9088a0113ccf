//! `recover_lost_monarch`: the CPU running the hot-add service was reset inside SMM
//! (QEMU TCG honours INIT in SMM) in the middle of a relocation.

mod common;

use common::Machine;
use smm_handler::first_smi::Window;
use smm_handler::hotplug;
use smm_handler::layout::GATE_CLOSED;
use smm_handler::slots::{FREE, NO_APIC, QUARANTINED, RELOCATING};

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
