//! A host simulation of the hot-add path: a fake `Host` + `Window` over the q35-sim
//! ports, with a simulated clock, a log collector, an SMM slot table, a routing table,
//! recorded IPIs and simulated new CPUs that play the first-SMI handler's side of the
//! protocol (`docs/protocol.md#relocation-step-by-step`).
//!
//! Time only moves when the handler reads the clock: every `now_us` call advances it by
//! `TICK_US` and lets every simulated CPU take one step. Bounded waits therefore end
//! after a fixed number of polls and every run is deterministic.
//!
//! Besides the state the tests look at, the simulation records protocol violations it
//! can see from the CPUs' side (`Machine::violations`): the gate opened while another
//! relocation is in flight, the context written while the gate is open or a CPU is in
//! flight (R8), INIT or an SMI IPI sent to a CPU that is marked arrived or inside the
//! critical section (R13), a CPU admitted without a published RELOCATING mapping for the
//! SMBASE it was handed, or leaving SMM while that mapping is not (yet) RELOCATING (R12,
//! R15).
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU16, Ordering};

use q35::cpuhp::CpuHp;
use q35::io::PortIo;
use q35::lapic;
use q35_sim::Q35Sim;
use smm_handler::first_smi::Window;
use smm_handler::host::{Host, HostData, NO_ROUTE};
use smm_handler::hotplug::{self, Summary};
use smm_handler::layout::window::PEN;
use smm_handler::layout::{tseg, GATE_CLOSED};
use smm_handler::log::{Console, Level};
use smm_handler::slots::{self, Slots, MAX_SLOTS};

pub use smm_handler::layout::DEFAULT_SMBASE;

/// Simulated microseconds per `now_us` call.
pub const TICK_US: u64 = 2_000;
/// SMBASE of slot 0 (slot i is `TSEG.slot_smbase(TSEG_BASE, i)`).
pub const TOP_SMBASE: u32 = 0x7F00_0000;
/// The simulated TSEG, laid out as the host ROM lays out its TSEG for every slot.
pub const TSEG: tseg::Tseg = match tseg::Tseg::for_slots(MAX_SLOTS as u32) {
    Some(t) => t,
    None => panic!("MAX_SLOTS fits a TSEG"),
};
/// The simulated TSEG base.
pub const TSEG_BASE: u32 = TOP_SMBASE - TSEG.top_smbase();
/// A possible-list entry that names no CPU (never a valid xAPIC ID): boot recorded no
/// 32-bit APIC ID for that selector.
pub const NO_ID: u32 = u32::MAX;
/// Steps a cooperative CPU takes between taking the gate and `about_to_leave`, and
/// between `about_to_leave` and running the pen.
pub const ADMIT_STEPS: u32 = 2;
pub const LEAVE_STEPS: u32 = 2;
/// Steps from an SMI IPI to the CPU's arrival in the first-SMI handler.
pub const SMI_ARRIVE_STEPS: u32 = 2;

pub const HP_BASE: u16 = q35::cpuhp::BASE;
pub const HP_LEN: u16 = 12;

/// How a simulated hot-added CPU behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Pulled into the first-SMI handler by the broadcast SMI; cooperates.
    Broadcast,
    /// Plugged just after the broadcast: misses the first broadcast after its plug and
    /// arrives only when an SMI IPI reaches it (edk2 cbccf99592); then cooperates.
    AfterSmiIpi,
    /// Never enters SMM (an SMI latched in wait-for-SIPI, a dead vCPU thread).
    NeverArrives,
    /// Arrives at the broadcast but never takes the gate.
    NoGate,
    /// Takes (and closes) the gate but never sets `about_to_leave`.
    NoLeave,
    /// Sets `about_to_leave` (and RSMs) but never reaches the pen.
    NoPen,
}

impl Behaviour {
    pub const ALL: [Behaviour; 6] = [
        Behaviour::Broadcast,
        Behaviour::AfterSmiIpi,
        Behaviour::NeverArrives,
        Behaviour::NoGate,
        Behaviour::NoLeave,
        Behaviour::NoPen,
    ];
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuState {
    /// Outside SMM (fresh, reset by INIT, or in the pen); see `SimCpu::smbase`.
    Outside,
    /// An SMI IPI is on its way: arrives in the first-SMI handler after `n` steps.
    SmiPending(u32),
    /// Spinning on the gate in the first-SMI handler.
    AtGate,
    /// Took the gate; `n` more steps until `about_to_leave`.
    Admitted(u32),
    /// Set `about_to_leave` and left SMM at its new SMBASE; `n` steps until the pen.
    Leaving(u32),
    /// Ejected by the OS: gone for good.
    Gone,
}

#[derive(Clone, Debug)]
pub struct SimCpu {
    pub apic: u32,
    pub selector: usize,
    pub behaviour: Behaviour,
    pub state: CpuState,
    /// The SMBASE the CPU has now (the default until it RSMs after taking the gate).
    pub smbase: u32,
    /// The `new_smbase` it read when it took the gate.
    pub taken_smbase: Option<u32>,
    /// Ran the pen code (relocated or, after INIT/SIPI, un-relocated).
    pub in_pen: bool,
    pub missed_broadcast: bool,
    pub init_pending: bool,
    pub inits: u32,
    /// Steps from an SMI IPI to its arrival.
    pub smi_delay: u32,
}

impl SimCpu {
    /// Inside SMM at the default SMBASE, or past the gate.
    pub fn in_smm(&self) -> bool {
        matches!(self.state, CpuState::AtGate | CpuState::Admitted(_))
    }
    /// Took the gate and has not reached the pen.
    pub fn in_flight(&self) -> bool {
        matches!(self.state, CpuState::Admitted(_) | CpuState::Leaving(_))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ev {
    /// The monarch's `gate_cas(closed -> apic)` succeeded.
    GateOpened(u32),
    /// The monarch's `gate_cas(apic -> closed)` succeeded.
    GateClosedByMonarch(u32),
    GateCasFailed {
        old: u64,
        new: u64,
    },
    /// The CPU took the gate (and closed it) with this `new_smbase`.
    GateTaken(u32, u32),
    AboutToLeave(u32),
    Pen(u32),
    NewSmbase(u32),
    Arrived(u32),
    Ipi(u32, u32),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    pub apic: u32,
    pub icr: u32,
    pub at_us: u64,
}

pub fn delivery_mode(icr: u32) -> u32 {
    (icr >> 8) & 7
}

pub const DM_SMI: u32 = 2;
pub const DM_INIT: u32 = 5;
pub const DM_STARTUP: u32 = 6;

type ReadHook = Box<dyn FnMut(&Q35Sim, u16, u8, u32) -> u32>;

/// The q35-sim ports, with an optional hook that rewrites reads of the CPU hotplug block
/// (an OS moving the selector concurrently, a broken or hostile device) and counters.
pub struct Ports {
    pub sim: Q35Sim,
    hook: RefCell<Option<ReadHook>>,
    /// Dword writes to the selector register.
    pub selector_writes: Cell<u64>,
    /// Reads of the hotplug block.
    pub hp_reads: Cell<u64>,
}

impl Ports {
    fn new(sim: Q35Sim) -> Self {
        Self {
            sim,
            hook: RefCell::new(None),
            selector_writes: Cell::new(0),
            hp_reads: Cell::new(0),
        }
    }

    /// `f(sim, port, size, real value)` returns what the read of a hotplug port yields.
    pub fn set_read_hook(&self, f: impl FnMut(&Q35Sim, u16, u8, u32) -> u32 + 'static) {
        *self.hook.borrow_mut() = Some(Box::new(f));
    }

    pub fn clear_read_hook(&self) {
        *self.hook.borrow_mut() = None;
    }

    fn filter(&self, port: u16, size: u8, real: u32) -> u32 {
        if !(HP_BASE..HP_BASE + HP_LEN).contains(&port) {
            return real;
        }
        self.hp_reads.set(self.hp_reads.get() + 1);
        match self.hook.borrow_mut().as_mut() {
            Some(f) => f(&self.sim, port, size, real),
            None => real,
        }
    }
}

impl PortIo for Ports {
    fn inb(&self, port: u16) -> u8 {
        let v = u32::from(self.sim.inb(port));
        self.filter(port, 1, v) as u8
    }
    fn inw(&self, port: u16) -> u16 {
        let v = u32::from(self.sim.inw(port));
        self.filter(port, 2, v) as u16
    }
    fn inl(&self, port: u16) -> u32 {
        let v = self.sim.inl(port);
        self.filter(port, 4, v)
    }
    fn outb(&self, port: u16, value: u8) {
        self.sim.outb(port, value)
    }
    fn outw(&self, port: u16, value: u16) {
        self.sim.outw(port, value)
    }
    fn outl(&self, port: u16, value: u32) {
        if port == HP_BASE {
            self.selector_writes.set(self.selector_writes.get() + 1);
        }
        self.sim.outl(port, value)
    }
}

/// The default-SMBASE window at 0x30000 and the pen page, plus the simulated CPUs.
pub struct WinState {
    pub gate: u64,
    pub new_smbase: u32,
    pub about_to_leave: u8,
    /// Arrival marks by APIC ID (the handler stores them by selector; the [`Window`]
    /// impl maps).
    pub arrived: std::collections::HashMap<u32, u32>,
    /// Gate beats by APIC ID (the handler counts them by selector).
    pub beats: std::collections::HashMap<u32, u32>,
    /// Steps for which a CPU's vCPU is not scheduled (it does nothing).
    pub descheduled: std::collections::HashMap<u32, u32>,
    pub pen_signal: u8,
    pub pen_resets: u32,
    /// The arrival mark the first-SMI handler stores (the context's round).
    pub round: u32,
    pub cpus: Vec<SimCpu>,
    pub events: Vec<Ev>,
    pub ipis: Vec<Ipi>,
    pub violations: Vec<String>,
    /// The CPU the monarch opened the gate for in this service call and that has neither
    /// reached the pen nor been shut out again.
    pub in_flight: Option<u32>,
    /// Number of times a CPU left SMM after taking the gate (each checked for R12/T3).
    pub rsm_checks: u32,
}

struct Collect(RefCell<Vec<u8>>);

impl Console for Collect {
    fn write(&self, bytes: &[u8]) {
        self.0.borrow_mut().extend_from_slice(bytes);
    }
}

pub struct Machine {
    pub ports: Ports,
    pub arch_ids: Vec<u64>,
    clock: Cell<u64>,
    now_calls: Cell<u64>,
    pub slots: Slots,
    /// SMBASE of each laid-out slot (its length is the slot count).
    slot_smbase: Vec<u32>,
    /// The routing table the handler writes, one entry per laid-out slot ([`NO_ROUTE`] =
    /// none), as coreboot's `apic_id_to_cpu`.
    routes: Vec<AtomicU16>,
    /// The APIC ID of each possible CPU by selector, as recorded at boot: what the
    /// handler reads (its length bounds the register-block scan).
    possible_ids: Vec<u32>,
    /// The possible APIC IDs of the topology (the invariants check slots against them);
    /// `set_possible_count` changes only `possible_ids`.
    possible: Vec<u32>,
    /// Slots seeded with boot CPUs.
    pub boot_slots: Vec<usize>,
    /// The OS keeps writing 1 to the pen's signal byte (the pen page is OS-writable, R4).
    pub os_writes_pen: Cell<bool>,
    pen_faked: Cell<bool>,
    pub st: RefCell<WinState>,
    logs: RefCell<Vec<(Level, String)>>,
    /// The APIC ID of the CPU running the handler (the monarch); the boot CPU's by default.
    pub monarch_apic: Cell<u32>,
    /// SMBASEs whose save state the handler zeroed, in order.
    pub zeroed_save_states: RefCell<Vec<u32>>,
    /// The highest APIC ID the monarch's local APIC can address (`u32::MAX` in x2APIC
    /// mode; 0xFE when the OS keeps xAPIC mode): IPIs beyond it are not sent.
    pub ipi_reach: Cell<u32>,
    /// The host routes SMIs through a 16-bit table (coreboot); `false`: each slot's stub
    /// knows its slot (the host ROM).
    pub routed: Cell<bool>,
    /// Stalls the monarch announced (`Host::expect_stall`): the bound, the register
    /// block's selector then, and whether that selector's CPU was still present.
    pub stalls: RefCell<Vec<(u64, u32, bool)>>,
}

impl Machine {
    /// `arch_ids[i]` is the APIC ID of selector `i`; `boot` the selectors present at
    /// power-on (seeded into slots 0, 1, ... as ACTIVE); `slot_count` SMM slots. The
    /// possible list has one entry per selector: its arch ID, or [`NO_ID`] where the
    /// high dword is not 0.
    pub fn new(arch_ids: &[u64], boot: &[usize], slot_count: usize) -> Self {
        let sim = Q35Sim::builder().cpus(arch_ids, boot).build();
        CpuHp::new(&sim)
            .switch_to_modern()
            .expect("modern hotplug interface");
        let possible: Vec<u32> = arch_ids
            .iter()
            .map(|&a| u32::try_from(a).unwrap_or(NO_ID))
            .collect();
        let mut m = Self {
            ports: Ports::new(sim),
            arch_ids: arch_ids.to_vec(),
            clock: Cell::new(1_000_000),
            now_calls: Cell::new(0),
            slots: Slots::new(),
            slot_smbase: (0..slot_count).map(Self::smbase_of_slot).collect(),
            routes: (0..slot_count).map(|_| AtomicU16::new(NO_ROUTE)).collect(),
            possible_ids: possible.clone(),
            possible,
            boot_slots: Vec::new(),
            os_writes_pen: Cell::new(false),
            pen_faked: Cell::new(false),
            st: RefCell::new(WinState {
                gate: GATE_CLOSED,
                new_smbase: 0,
                about_to_leave: 0,
                arrived: std::collections::HashMap::new(),
                beats: std::collections::HashMap::new(),
                descheduled: std::collections::HashMap::new(),
                pen_signal: 0,
                pen_resets: 0,
                round: 1,
                cpus: Vec::new(),
                events: Vec::new(),
                ipis: Vec::new(),
                violations: Vec::new(),
                in_flight: None,
                rsm_checks: 0,
            }),
            logs: RefCell::new(Vec::new()),
            monarch_apic: Cell::new(u32::try_from(arch_ids[boot[0]]).unwrap_or(0)),
            zeroed_save_states: RefCell::new(Vec::new()),
            ipi_reach: Cell::new(u32::MAX),
            routed: Cell::new(true),
            stalls: RefCell::new(Vec::new()),
        };
        for (n, &sel) in boot.iter().enumerate() {
            let apic = arch_ids[sel] as u32;
            m.slots.set(n, slots::ACTIVE, apic);
            let route = u16::try_from(apic).expect("boot APIC ID fits the routing table");
            m.routes[n].store(route, Ordering::SeqCst);
            m.boot_slots.push(n);
        }
        m
    }

    /// `-smp 1,maxcpus=n`: dense APIC IDs, the boot CPU in slot 0, `slots` SMM slots.
    pub fn dense(n: usize, slots: usize) -> Self {
        let ids: Vec<u64> = (0..n as u64).collect();
        Self::new(&ids, &[0], slots)
    }

    /// The possible list recorded at boot, by selector (one entry per selector; [`NO_ID`]
    /// for a selector without a usable APIC ID).
    pub fn with_possible(mut self, possible: &[u32]) -> Self {
        assert_eq!(
            possible.len(),
            self.arch_ids.len(),
            "one entry per selector"
        );
        self.possible = possible.to_vec();
        self.possible_ids = possible.to_vec();
        self
    }

    /// Boot recorded `n` possible CPUs, whatever the block has: the possible list is cut
    /// to its first `n` selectors, or padded with [`NO_ID`] entries that name no CPU.
    /// The scan bound is the list's length.
    pub fn set_possible_count(&mut self, n: u32) {
        self.possible_ids.resize(n as usize, NO_ID);
    }

    pub fn sim(&self) -> &Q35Sim {
        &self.ports.sim
    }

    pub fn smbase_of_slot(n: usize) -> u32 {
        TSEG.slot_smbase(TSEG_BASE, n as u32)
    }

    // ---- the outside world ----------------------------------------------------------

    /// `device_add` of the CPU in `selector` (insert event, GPE) and its simulated CPU.
    pub fn hot_add(&self, selector: usize, behaviour: Behaviour) {
        self.sim().plug_cpu(selector).expect("plug_cpu");
        self.add_cpu(selector, behaviour);
    }

    /// A simulated CPU for `selector` without touching the register block.
    pub fn add_cpu(&self, selector: usize, behaviour: Behaviour) {
        let apic = self.arch_ids[selector] as u32;
        let mut st = self.st.borrow_mut();
        // A CPU plugged at this selector before was ejected (QEMU destroyed it).
        for old in st.cpus.iter_mut().filter(|c| c.selector == selector) {
            old.state = CpuState::Gone;
        }
        st.cpus.push(SimCpu {
            apic,
            selector,
            behaviour,
            state: CpuState::Outside,
            smbase: DEFAULT_SMBASE,
            taken_smbase: None,
            in_pen: false,
            missed_broadcast: false,
            init_pending: false,
            inits: 0,
            smi_delay: SMI_ARRIVE_STEPS,
        });
    }

    /// How many steps an SMI IPI takes to bring `apic` in (a slow vCPU thread).
    /// The host does not schedule `apic`'s vCPU for the next `steps` steps.
    pub fn deschedule(&self, apic: u32, steps: u32) {
        self.st.borrow_mut().descheduled.insert(apic, steps);
    }

    pub fn set_smi_delay(&self, apic: u32, steps: u32) {
        for c in self.st.borrow_mut().cpus.iter_mut() {
            if c.apic == apic {
                c.smi_delay = steps;
            }
        }
    }

    /// The broadcast SMI of an APMC write: every CPU outside SMM at the default SMBASE
    /// enters the first-SMI handler and announces itself (relocated CPUs enter their own
    /// slots, which is not simulated here).
    pub fn broadcast(&self) {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        for c in st.cpus.iter_mut() {
            if c.state != CpuState::Outside || c.smbase != DEFAULT_SMBASE {
                continue;
            }
            match c.behaviour {
                Behaviour::NeverArrives => continue,
                Behaviour::AfterSmiIpi if !c.missed_broadcast => {
                    c.missed_broadcast = true;
                    continue;
                }
                _ => {}
            }
            c.state = CpuState::AtGate;
            c.in_pen = false;
            c.init_pending = false;
            // The handler finds its APIC ID among the possible CPUs; others leave no mark.
            if self.possible_ids.contains(&c.apic) {
                st.arrived.insert(c.apic, st.round);
            }
            st.events.push(Ev::Arrived(c.apic));
        }
    }

    /// QEMU's AML after the SMI: clear every insert event (it notifies the OS).
    pub fn aml_clear_inserts(&self) {
        for (i, s) in self.sim().cpu_slots().iter().enumerate() {
            if s.inserting {
                let ev = q35_sim::CpuEvents {
                    insert: false,
                    remove: s.removing,
                    fw_remove: s.fw_remove,
                };
                self.sim().set_cpu_events(i, ev).unwrap();
            }
        }
    }

    /// The handler for one APMC 4, as the monarch runs it (checks reset per SMI).
    pub fn service(&self) -> Summary {
        self.st.borrow_mut().in_flight = None;
        self.ports.selector_writes.set(0);
        hotplug::service(self)
    }

    /// The AML's hot-add sequence: broadcast SMI, handler, clear insert events.
    pub fn apmc4(&self) -> Summary {
        self.broadcast();
        let s = self.service();
        self.aml_clear_inserts();
        s
    }

    /// The OS ejects `selector` through the register block (control bit 3); a simulated
    /// CPU there is destroyed. Returns whether it went away.
    pub fn os_eject(&self, selector: usize) -> bool {
        let hp = CpuHp::new(&self.ports);
        hp.select(selector as u32);
        hp.control(q35::cpuhp::CTL_EJECT);
        let gone = !self.sim().cpu_slot(selector).is_some_and(|s| s.present);
        if gone {
            for c in self.st.borrow_mut().cpus.iter_mut() {
                if c.selector == selector {
                    c.state = CpuState::Gone;
                }
            }
        }
        gone
    }

    /// An SMI IPI sent by the OS (not recorded as the handler's).
    pub fn os_smi_ipi(&self, apic: u32) {
        let mut st = self.st.borrow_mut();
        for c in st.cpus.iter_mut() {
            if c.apic == apic
                && c.state == CpuState::Outside
                && c.smbase == DEFAULT_SMBASE
                && c.behaviour != Behaviour::NeverArrives
            {
                c.state = CpuState::SmiPending(c.smi_delay);
            }
        }
    }

    // ---- observations -----------------------------------------------------------------

    pub fn now(&self) -> u64 {
        self.clock.get()
    }

    pub fn now_calls(&self) -> u64 {
        self.now_calls.get()
    }

    pub fn logs(&self) -> Vec<(Level, String)> {
        self.logs.borrow().clone()
    }

    pub fn log_count(&self) -> usize {
        self.logs.borrow().len()
    }

    /// Log lines (with their level tag) containing `needle`.
    pub fn logs_with(&self, needle: &str) -> Vec<String> {
        self.logs
            .borrow()
            .iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(_, l)| l.clone())
            .collect()
    }

    pub fn ipis(&self) -> Vec<Ipi> {
        self.st.borrow().ipis.clone()
    }

    pub fn ipis_to(&self, apic: u32) -> Vec<u32> {
        self.ipis()
            .iter()
            .filter(|i| i.apic == apic)
            .map(|i| i.icr)
            .collect()
    }

    pub fn events(&self) -> Vec<Ev> {
        self.st.borrow().events.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.st.borrow().violations.clone()
    }

    pub fn gate(&self) -> u64 {
        self.st.borrow().gate
    }

    pub fn arrived_mark(&self, apic: u32) -> u32 {
        self.st.borrow().arrived.get(&apic).copied().unwrap_or(0)
    }

    pub fn cpu(&self, apic: u32) -> SimCpu {
        self.st
            .borrow()
            .cpus
            .iter()
            .find(|c| c.apic == apic)
            .cloned()
            .expect("simulated CPU")
    }

    /// The APIC ID routed to `slot` (`None`: no route, or beyond the table).
    pub fn route(&self, slot: usize) -> Option<u32> {
        if !self.routed.get() {
            // The host ROM: the slot's own stub routes to it; the slot table is the map.
            let (state, apic) = self.slot(slot);
            return (state != slots::FREE).then_some(apic);
        }
        self.routes
            .get(slot)
            .map(|r| r.load(Ordering::SeqCst))
            .filter(|&r| r != NO_ROUTE)
            .map(u32::from)
    }

    pub fn slot(&self, n: usize) -> (u32, u32) {
        (self.slots.state(n), self.slots.apic(n))
    }

    /// (state, apic) of every slot laid out.
    pub fn slot_table(&self) -> Vec<(u32, u32)> {
        (0..self.slots_laid_out()).map(|n| self.slot(n)).collect()
    }

    pub fn slots_laid_out(&self) -> usize {
        self.slot_smbase.len()
    }

    pub fn possible_set(&self) -> &[u32] {
        &self.possible
    }

    pub fn quarantined(&self) -> BTreeSet<usize> {
        (0..MAX_SLOTS)
            .filter(|&n| self.slots.state(n) == slots::QUARANTINED)
            .collect()
    }

    /// The invariants that must hold whenever `service` has returned. Returns the broken
    /// ones (empty = all hold).
    pub fn broken_invariants(&self, quarantined_before: &BTreeSet<usize>) -> Vec<String> {
        let mut bad = self.violations();
        let mut seen = BTreeSet::new();
        for n in 0..MAX_SLOTS {
            let (state, apic) = self.slot(n);
            if n >= self.slots_laid_out() && state != slots::FREE {
                bad.push(format!(
                    "slot {n} beyond the slot count is in state {state}"
                ));
            }
            if state == slots::FREE {
                if self.route(n).is_some() {
                    bad.push(format!("free slot {n} still routed to {:?}", self.route(n)));
                }
                continue;
            }
            if !seen.insert(apic) {
                bad.push(format!("APIC ID {apic} owns more than one slot"));
            }
            if state == slots::RELOCATING {
                bad.push(format!("slot {n} RELOCATING after service returned"));
            }
            if state == slots::ACTIVE || state == slots::RELOCATING {
                if !self.possible.contains(&apic) || apic == NO_ID {
                    bad.push(format!("slot {n} serves invalid APIC ID {apic}"));
                }
                if self.route(n) != Some(apic) {
                    bad.push(format!("slot {n} ({apic}) routed to {:?}", self.route(n)));
                }
            }
            if state == slots::ACTIVE && !self.boot_slots.contains(&n) {
                let smbase = Self::smbase_of_slot(n);
                let st = self.st.borrow();
                // With a faked pen byte a CPU that left SMM but never ran the pen may be
                // taken for relocated (accepted residual, R17); it still has the SMBASE.
                let faked = self.pen_faked.get();
                let ok = st.cpus.iter().any(|c| {
                    c.apic == apic
                        && c.smbase == smbase
                        && (c.in_pen || c.state == CpuState::Gone || faked)
                });
                if !ok {
                    bad.push(format!(
                        "ACTIVE slot {n} ({apic}) has no CPU that ran the pen at {smbase:#x}"
                    ));
                }
            }
        }
        for &n in quarantined_before {
            if self.slots.state(n) != slots::QUARANTINED {
                bad.push(format!("quarantined slot {n} was reused"));
            }
        }
        if self.gate() != GATE_CLOSED {
            bad.push(format!("gate left open: {:#x}", self.gate()));
        }
        // Every CPU that left SMM at a non-default SMBASE got it from a slot that names it
        // (an ejected CPU no longer exists, and its slot may have been forgotten).
        for c in self.st.borrow().cpus.iter() {
            let ejected = c.state == CpuState::Gone
                || !self.sim().cpu_slot(c.selector).is_some_and(|s| s.present);
            if c.smbase != DEFAULT_SMBASE && !ejected {
                let n = self.slot_with_smbase(c.smbase);
                match n {
                    Some(n)
                        if self.slots.apic(n) == c.apic && self.slots.state(n) != slots::FREE => {}
                    _ => bad.push(format!(
                        "APIC ID {} runs at SMBASE {:#x} that no slot gives it",
                        c.apic, c.smbase
                    )),
                }
            }
        }
        bad
    }

    // ---- the CPUs' side -----------------------------------------------------------------

    fn slot_with_smbase(&self, smbase: u32) -> Option<usize> {
        self.slot_smbase.iter().position(|&s| s == smbase)
    }

    /// The mapping a CPU at `smbase` relies on must be published and RELOCATING (it may
    /// take an SMI at its new SMBASE right after RSM: R12, R15).
    fn check_relocating(&self, st: &mut WinState, apic: u32, smbase: u32, what: &str) {
        let ok = self.slot_with_smbase(smbase).is_some_and(|n| {
            self.slots.state(n) == slots::RELOCATING
                && self.slots.apic(n) == apic
                && self.route(n) == Some(apic)
                && hotplug::must_return_early(&self.slots, n)
        });
        if !ok {
            st.violations.push(format!(
                "APIC ID {apic} {what} at SMBASE {smbase:#x} without a RELOCATING mapping"
            ));
        }
    }

    /// One step of every simulated CPU.
    fn step(&self) {
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        if self.os_writes_pen.get() {
            st.pen_signal = 1;
            self.pen_faked.set(true);
        }
        for i in 0..st.cpus.len() {
            let c = st.cpus[i].clone();
            // A vCPU the host has not scheduled does nothing at all.
            if let Some(n) = st.descheduled.get_mut(&c.apic) {
                if *n > 0 {
                    *n -= 1;
                    continue;
                }
            }
            let mut next = c.clone();
            match c.state {
                CpuState::SmiPending(0) => {
                    next.state = CpuState::AtGate;
                    next.in_pen = false;
                    if self.possible_ids.contains(&c.apic) {
                        st.arrived.insert(c.apic, st.round);
                    }
                    st.events.push(Ev::Arrived(c.apic));
                }
                CpuState::SmiPending(n) => next.state = CpuState::SmiPending(n - 1),
                CpuState::AtGate => {
                    // Every knock at the closed gate counts a beat (a possible CPU only).
                    if self.possible_ids.contains(&c.apic) {
                        *st.beats.entry(c.apic).or_insert(0) += 1;
                    }
                    if st.gate == u64::from(c.apic) && c.behaviour != Behaviour::NoGate {
                        // lock cmpxchg8b: the CPU closes the gate behind itself.
                        st.gate = GATE_CLOSED;
                        next.taken_smbase = Some(st.new_smbase);
                        next.state = CpuState::Admitted(ADMIT_STEPS);
                        st.events.push(Ev::GateTaken(c.apic, st.new_smbase));
                        self.check_relocating(st, c.apic, st.new_smbase, "was admitted");
                    }
                }
                CpuState::Admitted(_) if c.behaviour == Behaviour::NoLeave => {}
                CpuState::Admitted(n) if n > 0 => next.state = CpuState::Admitted(n - 1),
                CpuState::Admitted(_) => {
                    let smbase = c.taken_smbase.unwrap_or(DEFAULT_SMBASE);
                    st.about_to_leave = 1;
                    st.events.push(Ev::AboutToLeave(c.apic));
                    // RSM: the new SMBASE is in force; a pending SMI is taken there at once.
                    self.check_relocating(st, c.apic, smbase, "left SMM");
                    st.rsm_checks += 1;
                    next.smbase = smbase;
                    next.state = CpuState::Leaving(LEAVE_STEPS);
                }
                CpuState::Leaving(_) if c.behaviour == Behaviour::NoPen => {}
                CpuState::Leaving(n) if n > 0 => next.state = CpuState::Leaving(n - 1),
                CpuState::Leaving(_) => {
                    st.pen_signal = 1;
                    st.events.push(Ev::Pen(c.apic));
                    next.in_pen = true;
                    next.state = CpuState::Outside;
                    if st.in_flight == Some(c.apic) {
                        st.in_flight = None;
                    }
                }
                CpuState::Outside | CpuState::Gone => {}
            }
            st.cpus[i] = next;
        }
    }

    fn context_write(&self, st: &mut WinState, what: &str) {
        if st.gate != GATE_CLOSED {
            st.violations
                .push(format!("{what} while the gate is open ({:#x})", st.gate));
        }
        // While the OS fakes the pen byte the monarch cannot tell when a CPU is out
        // (the accepted R17 window), so "in flight" is not checked then.
        if let (Some(a), false) = (st.in_flight, self.os_writes_pen.get()) {
            st.violations
                .push(format!("{what} while APIC ID {a} is in flight"));
        }
    }
}

impl Host for Machine {
    type Ports = Ports;

    fn ports(&self) -> &Ports {
        &self.ports
    }

    fn data(&self) -> HostData<'_> {
        HostData {
            slot_smbase: &self.slot_smbase,
            possible_apic_ids: &self.possible_ids,
            slots: &self.slots,
            routes: self.routed.get().then_some(&self.routes[..]),
        }
    }

    fn now_us(&self) -> u64 {
        let t = self.clock.get() + TICK_US;
        self.clock.set(t);
        self.now_calls.set(self.now_calls.get() + 1);
        self.step();
        t
    }

    fn log(&self, level: Level, template: &str, args: &[u64]) {
        let c = Collect(RefCell::new(Vec::new()));
        c.line(level, template, args);
        let line = String::from_utf8(c.0.into_inner()).expect("log lines are ASCII");
        self.logs
            .borrow_mut()
            .push((level, line.trim_end().to_string()));
    }

    fn expect_stall(&self, us: u64) {
        let sim = self.sim();
        let sel = sim.cpuhp_selector();
        let present = sim.cpu_slot(sel as usize).is_some_and(|c| c.present);
        self.stalls.borrow_mut().push((us, sel, present));
    }

    fn send_ipi(&self, apic: u32, icr_low: u32) -> bool {
        if apic > self.ipi_reach.get() {
            return false;
        }
        let at_us = self.clock.get();
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        st.ipis.push(Ipi {
            apic,
            icr: icr_low,
            at_us,
        });
        st.events.push(Ev::Ipi(apic, icr_low));
        let marked = st.arrived.get(&apic).is_some_and(|&a| a != 0);
        let Some(c) = st
            .cpus
            .iter_mut()
            .find(|c| c.apic == apic && c.state != CpuState::Gone)
        else {
            return true;
        };
        match delivery_mode(icr_low) {
            DM_SMI => {
                // As for INIT below: a CPU on the gate whose mark the monarch cleared
                // cannot be known; a marked one or one past the gate can.
                if marked || c.in_flight() {
                    st.violations.push(format!(
                        "SMI IPI to APIC ID {apic}, which arrived or took the gate (R13)"
                    ));
                } else if c.state == CpuState::Outside
                    && c.smbase == DEFAULT_SMBASE
                    && c.behaviour != Behaviour::NeverArrives
                {
                    c.state = CpuState::SmiPending(c.smi_delay);
                }
            }
            DM_INIT => {
                // An INIT to a CPU spinning on the gate whose arrival mark the monarch has
                // already cleared is harmless (it touched nothing) and cannot be known;
                // one to a marked CPU or to one past the gate is a violation.
                if marked || c.in_flight() {
                    st.violations.push(format!(
                        "INIT to APIC ID {apic}, which arrived or took the gate (R13)"
                    ));
                }
                // TCG: INIT discards a pending SMI and resets a CPU out of SMM (T2, T5).
                c.state = CpuState::Outside;
                c.init_pending = true;
                c.inits += 1;
            }
            DM_STARTUP if c.init_pending && c.state == CpuState::Outside => {
                c.init_pending = false;
                if (icr_low & 0xFF) << 12 == PEN.base {
                    // Un-relocated in the pen: its write sets the pen byte.
                    c.in_pen = true;
                    st.pen_signal = 1;
                }
            }
            _ => {}
        }
        true
    }

    fn window(&self) -> &dyn Window {
        self
    }

    fn current_apic(&self) -> u32 {
        self.monarch_apic.get()
    }

    fn zero_save_state(&self, smbase: u32) {
        self.zeroed_save_states.borrow_mut().push(smbase);
    }
}

impl Window for Machine {
    fn gate_cas(&self, old: u64, new: u64) -> bool {
        let mut guard = self.st.borrow_mut();
        let st = &mut *guard;
        if st.gate != old {
            st.events.push(Ev::GateCasFailed { old, new });
            return false;
        }
        st.gate = new;
        if old == GATE_CLOSED && new != GATE_CLOSED {
            if let (Some(a), false) = (st.in_flight, self.os_writes_pen.get()) {
                st.violations.push(format!(
                    "gate opened for {new} while APIC ID {a} is still in flight"
                ));
            }
            st.in_flight = u32::try_from(new).ok();
            st.events.push(Ev::GateOpened(new as u32));
        } else if new == GATE_CLOSED {
            st.events.push(Ev::GateClosedByMonarch(old as u32));
            if st.in_flight == u32::try_from(old).ok() {
                st.in_flight = None;
            }
        }
        true
    }

    fn set_new_smbase(&self, smbase: u32) {
        let mut st = self.st.borrow_mut();
        self.context_write(&mut st, "new_smbase written");
        st.new_smbase = smbase;
        st.events.push(Ev::NewSmbase(smbase));
    }

    fn about_to_leave(&self) -> u8 {
        self.st.borrow().about_to_leave
    }

    fn clear_about_to_leave(&self) {
        let mut st = self.st.borrow_mut();
        self.context_write(&mut st, "about_to_leave cleared");
        st.about_to_leave = 0;
    }

    fn arrived(&self, selector: u32) -> u32 {
        self.possible_ids
            .get(selector as usize)
            .map_or(0, |&apic| self.arrived_mark(apic))
    }

    fn beat(&self, selector: u32) -> u32 {
        let st = self.st.borrow();
        self.possible_ids
            .get(selector as usize)
            .and_then(|a| st.beats.get(a).copied())
            .unwrap_or(0)
    }

    fn clear_arrived(&self, selector: u32) {
        if let Some(apic) = self.possible_ids.get(selector as usize) {
            self.st.borrow_mut().arrived.remove(apic);
        }
    }

    fn reset_pen(&self) {
        let mut st = self.st.borrow_mut();
        self.context_write(&mut st, "pen reset");
        st.pen_signal = 0;
        st.pen_resets += 1;
    }

    fn pen_signal(&self) -> u8 {
        self.st.borrow().pen_signal
    }
}

/// The ICR low words of the INIT/SIPI sequence to the pen, in order.
pub fn init_sipi() -> [u32; 3] {
    let vec = PEN.base >> 12;
    [
        lapic::ICR_INIT,
        lapic::ICR_STARTUP | vec,
        lapic::ICR_STARTUP | vec,
    ]
}
