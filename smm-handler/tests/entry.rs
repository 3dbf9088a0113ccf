//! The SMI entry steps both hosts share (`smm_handler::entry`): `SmiEntries::begin` and
//! the owner-aware `SmiLock`, against the simulated host in tests/common (its clock
//! advances by `TICK_US` on every read).

mod common;

use std::cell::Cell;

use common::{Machine, TICK_US};
use q35::ich9::APM_CNT;
use q35::io::PortIo;
use smm_handler::entry::{
    Entry, SmiEntries, SmiLock, APMC_CPU_HOTPLUG, LOCK_STALE_US, LOCK_WAIT_US,
};
use smm_handler::first_smi::Window;
use smm_handler::host::{Host, HostData};
use smm_handler::log::Level;
use smm_handler::slots::{ACTIVE, MAX_SLOTS, RELOCATING};

// ---- SmiEntries::begin ----------------------------------------------------------------------

#[test]
fn begin_counts_every_entry_per_slot_and_passes_on_the_apmc_command() {
    let m = Machine::dense(4, 4);
    let e = SmiEntries::new();
    m.ports.outb(APM_CNT, APMC_CPU_HOTPLUG);
    let go_on = Entry::Continue {
        apmc: APMC_CPU_HOTPLUG,
    };

    for _ in 0..3 {
        assert_eq!(e.begin(&m.ports, &m.slots, 0, 0, false), go_on);
    }
    assert_eq!(e.begin(&m.ports, &m.slots, 2, 0, false), go_on);

    assert_eq!(e.count(0), 3);
    assert_eq!(e.count(1), 0, "a slot without SMIs counts none");
    assert_eq!(e.count(2), 1);
    assert_eq!(e.count(3), 0);
}

#[test]
fn begin_sends_a_cpu_of_a_relocating_slot_out_before_the_lock() {
    let m = Machine::dense(4, 4);
    let e = SmiEntries::new();
    m.ports.outb(APM_CNT, APMC_CPU_HOTPLUG);
    m.slots.set(1, RELOCATING, 1);

    assert_eq!(
        e.begin(&m.ports, &m.slots, 1, 0, false),
        Entry::Leave,
        "R12"
    );
    assert_eq!(e.count(1), 1, "the entry is still counted");
    assert_eq!(
        e.begin(&m.ports, &m.slots, 0, 0, false),
        Entry::Continue {
            apmc: APMC_CPU_HOTPLUG
        },
        "other slots are not affected"
    );

    // Once the relocation is finished the slot's SMIs go on to the lock.
    m.slots.set(1, ACTIVE, 1);
    assert_eq!(
        e.begin(&m.ports, &m.slots, 1, 0, false),
        Entry::Continue {
            apmc: APMC_CPU_HOTPLUG
        }
    );
    assert_eq!(e.count(1), 2);
}

#[test]
fn begin_sends_a_cpu_of_a_slot_beyond_the_table_out_and_counts_nothing() {
    let m = Machine::dense(4, 4);
    let e = SmiEntries::new();
    m.ports.outb(APM_CNT, APMC_CPU_HOTPLUG);

    for slot in [MAX_SLOTS as u32, MAX_SLOTS as u32 + 1, u32::MAX] {
        assert_eq!(
            e.begin(&m.ports, &m.slots, slot, 0, false),
            Entry::Leave,
            "slot {slot}"
        );
        assert_eq!(e.count(slot), 0);
    }
    assert!((0..MAX_SLOTS as u32).all(|n| e.count(n) == 0));
}

// ---- SmiLock ----------------------------------------------------------------------------------

/// The simulated host, with a live monarch in slot `monarch` on another CPU: every clock
/// reading anyone makes is also a progress report of that monarch (its waits poll).
struct LiveMonarch<'a> {
    m: &'a Machine,
    lock: &'a SmiLock,
    monarch: u32,
}

impl Host for LiveMonarch<'_> {
    type Ports = <Machine as Host>::Ports;
    fn ports(&self) -> &Self::Ports {
        self.m.ports()
    }
    fn data(&self) -> HostData<'_> {
        self.m.data()
    }
    fn now_us(&self) -> u64 {
        let t = self.m.now_us();
        self.lock.still_owned_by(self.monarch, t);
        t
    }
    fn log(&self, level: Level, template: &str, args: &[u64]) {
        self.m.log(level, template, args)
    }
    fn send_ipi(&self, apic: u32, icr_low: u32) -> bool {
        self.m.send_ipi(apic, icr_low)
    }
    fn window(&self) -> &dyn Window {
        self.m.window()
    }
    fn current_apic(&self) -> u32 {
        self.m.current_apic()
    }
    fn zero_save_state(&self, smbase: u32) {
        self.m.zero_save_state(smbase)
    }
}

#[test]
fn a_second_cpu_waiting_on_a_held_lock_leaves_after_a_wait_bounded_by_the_clock() {
    let m = Machine::dense(2, 2);
    let lock = SmiLock::new();
    let (monarch_ran, waiter_ran) = (Cell::new(None), Cell::new(false));
    let t0 = m.now();

    let live = LiveMonarch {
        m: &m,
        lock: &lock,
        monarch: 0,
    };
    lock.run(&m, 0, |recovered| {
        monarch_ran.set(Some(recovered));
        // While slot 0 holds the lock (and keeps making progress), the CPU of slot 1
        // takes an SMI and waits for it.
        lock.run(&live, 1, |_| waiter_ran.set(true));
    });

    assert_eq!(
        monarch_ran.get(),
        Some(false),
        "a free lock is not a recovered one"
    );
    assert!(!waiter_ran.get(), "the waiter never runs the handlers");
    let waited = m.now() - t0;
    assert!(waited >= LOCK_WAIT_US, "left after {waited} us");
    // It left at the first clock reading past the bound: the clock ended the wait, not
    // the spin cap (one tick more than the bound: the monarch's first heartbeat).
    assert!(
        waited < LOCK_WAIT_US + 3 * TICK_US,
        "left after {waited} us"
    );
    // One more reading: the monarch's first heartbeat when it took the lock.
    assert!(
        m.now_calls() <= LOCK_WAIT_US / TICK_US + 2,
        "{}",
        m.now_calls()
    );
    assert_eq!(
        m.logs_with("SMI lock held too long; slot 1 leaves SMM without running the handlers")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );

    // The monarch released the lock: the next CPU runs at once, without waiting.
    let calls = m.now_calls();
    let next = Cell::new(None);
    lock.run(&m, 1, |recovered| next.set(Some(recovered)));
    assert_eq!(next.get(), Some(false));
    assert_eq!(
        m.now_calls(),
        calls + 1,
        "no wait on a free lock: one clock reading, the first heartbeat"
    );
}

#[test]
fn a_cpu_that_finds_itself_recorded_as_owner_takes_the_lock_back_as_recovered() {
    let m = Machine::dense(4, 4);
    let lock = SmiLock::new();
    let (first, again) = (Cell::new(None), Cell::new(None));

    lock.run(&m, 3, |recovered| {
        first.set(Some(recovered));
        // The CPU of slot 3 is reset inside SMM (QEMU TCG honours INIT there,
        // `docs/qemu.md#t2`) while it holds the lock, and its next SMI finds the lock
        // still naming slot 3: its own run was cut short.
        lock.run(&m, 3, |recovered| again.set(Some(recovered)));
    });

    assert_eq!(first.get(), Some(false));
    assert_eq!(
        again.get(),
        Some(true),
        "the lock was recovered, not waited on"
    );
    assert_eq!(
        m.now_calls(),
        2,
        "no wait at all: only the two first heartbeats read the clock"
    );
    assert_eq!(
        m.logs_with("SMI lock of slot 3 left by a CPU reset inside SMM: recovered")
            .len(),
        1,
        "{:#?}",
        m.logs()
    );

    // Released afterwards: another CPU takes it normally.
    let other = Cell::new(None);
    lock.run(&m, 0, |recovered| other.set(Some(recovered)));
    assert_eq!(other.get(), Some(false));
    assert_eq!(m.logs_with("recovered").len(), 1);
}

#[test]
fn a_waiter_takes_over_from_a_monarch_that_made_no_progress_and_recovers() {
    let m = Machine::dense(4, 4);
    let lock = SmiLock::new();
    let (took_over, t_take) = (Cell::new(None), Cell::new(0));
    let t0 = m.now();

    lock.run(&m, 2, |_| {
        // The monarch in slot 2 is INIT'd or ejected by the OS mid-service: it never
        // reports progress again. The CPU of slot 1 takes an SMI and waits.
        lock.run(&m, 1, |recovered| {
            took_over.set(Some(recovered));
            t_take.set(m.now());
        });
        // Had it only stalled, its next progress report says it is no longer the monarch.
        assert!(
            !lock.still_owned_by(2, m.now()),
            "the stalled monarch was deposed"
        );
    });

    assert_eq!(
        took_over.get(),
        Some(true),
        "the new monarch recovers first"
    );
    let waited = t_take.get() - t0;
    assert!(
        (LOCK_STALE_US..LOCK_STALE_US + 4 * TICK_US).contains(&waited),
        "took over after {waited} us"
    );
    assert_eq!(
        m.logs_with(
            "SMI lock: the monarch in slot 2 made no progress; slot 1 takes over and recovers"
        )
        .len(),
        1,
        "{:#?}",
        m.logs()
    );
    // The deposed monarch's release did not free the new owner's lock, and the new owner
    // released it when done: the next CPU runs at once.
    let next = Cell::new(None);
    lock.run(&m, 3, |recovered| next.set(Some(recovered)));
    assert_eq!(next.get(), Some(false));
}

#[test]
fn a_waiter_does_not_take_over_from_a_monarch_blocked_in_an_announced_eject() {
    // QEMU destroys an ejected vCPU inside the monarch's port write, which can block the
    // monarch for seconds on a loaded host without a progress report. The monarch
    // announced it (`Host::expect_stall`), so a waiter keeps waiting instead of taking
    // over and running a service whose register-block accesses QEMU would drop meanwhile.
    let m = Machine::dense(4, 4);
    let lock = SmiLock::new();
    let (took_over, t_take) = (Cell::new(None), Cell::new(0));
    let stall = smm_handler::eject::T_EJECT_STALL_US;
    assert!(stall + LOCK_STALE_US < LOCK_WAIT_US);
    let t0 = m.now();

    lock.run(&m, 2, |_| {
        lock.expect_stall(m.now(), stall);
        // The CPU of slot 1 takes an SMI while slot 2 is blocked in the eject.
        lock.run(&m, 1, |recovered| {
            took_over.set(Some(recovered));
            t_take.set(m.now());
        });
    });

    // Still bounded: a monarch that never comes back is taken over once the announced
    // stall and the usual staleness have passed.
    assert_eq!(took_over.get(), Some(true));
    let waited = t_take.get() - t0;
    assert!(
        (stall + LOCK_STALE_US..stall + LOCK_STALE_US + 6 * TICK_US).contains(&waited),
        "took over after {waited} us"
    );
}

#[test]
fn a_lock_reports_whether_a_service_holds_it() {
    // The host ROM sends a CPU whose APMC read is not 4 through the lock while a service
    // runs (QEMU 10.0.2 reads port 0xB2 as 0 during an eject), so that no CPU leaves SMM
    // before the service's ejects are done (R14).
    let m = Machine::dense(2, 2);
    let lock = SmiLock::new();
    assert!(!lock.is_held());
    lock.run(&m, 0, |_| assert!(lock.is_held()));
    assert!(!lock.is_held());
}
