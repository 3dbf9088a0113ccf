//! The OS role for CPU hot-remove (`docs/protocol.md#hot-remove`), after the hot-add
//! phase of [`crate::hotplug`]: what QEMU's AML and an OS do on `device_del`.
//!
//! 1. Wait for GPE0 bit 2 and run the `CSCN` scan: a CPU with the remove event becomes an
//!    eject request and its remove event is cleared; a CPU with the insert event is a new
//!    (or re-plugged) CPU.
//! 2. Offline the CPU as an OS does: the payload's APs end in `cli; hlt` once their work
//!    is done and say so ([`ap_idle`]); the OS waits (bounded) for that word, so the
//!    target is halted and runs no payload code.
//! 3. `CEJ0`: select the CPU, write status bit 4 (`fw_remove`), write 4 to port 0xB2.
//!    SMM ejects the CPU; when the SMI returns the OS reads its status: bit 0 must be
//!    clear. One `UNPLUG selector=N apic=A … gone=true` line per CPU and `CHECK` lines.
//! 4. A CPU added meanwhile (a re-plug of an ejected socket, or a new one) goes through
//!    the hot-add steps again (APMC 4, clear the insert event, INIT-SIPI-SIPI) and must
//!    take SMIs at a slot of its own: one `PLUG …` line each.
//!
//! Driven by fw_cfg: `opt/payload/unplug` = removals the harness requests with
//! `device_del`, `opt/payload/replug` = CPUs it adds during this phase,
//! `opt/payload/unplug-variant` = any of
//!
//! - `batch`: every eject request of one scan gets `fw_remove`, then one APMC 4 (SMM
//!   ejects several CPUs in one SMI);
//! - `add-pending`: the eject's SMI is raised while a hot-added CPU's insert event is
//!   still pending (the OS handles the eject request before the insert);
//! - `self-eject`: the OS ejects the CPU itself with status bit 3 (what the AML does when
//!   hot-unplug is not negotiated), then raises one APMC 4 as the next hot-add would: SMM
//!   must find the CPU gone, and a later re-plug must be relocated;
//! - `fw-remove-boot`: `fw_remove` and APMC 4 on the boot CPU (the OS's own fault;
//!   QEMU ignores the bit there): nothing changes, nothing hangs;
//! - `fw-remove-online`: `fw_remove` and APMC 4 on a CPU that runs payload code (not
//!   offlined: the OS's own fault): SMM parks and ejects it as asked; nothing hangs;
//! - `fw-remove-self`: that CPU sets its own `fw_remove` and raises APMC 4 itself, so it
//!   enters SMM first and is likely to hold the SMI lock: a CPU never ejects itself, so
//!   another one must, before the SMI returns;
//! - `attack`: after the eject and before the re-plug, code planted at the first-SMI
//!   handler's entry and in the pen ([`crate::attack`]), SMI IPIs to the re-plugged CPU
//!   before and after its relocation: nothing planted may run in SMM;
//! - `skip-smi`: negative control, `fw_remove` without APMC 4: the CPU stays and the
//!   payload fails.
//!
//! Without SMM (the benchmark's no-SMM baseline) `CEJ0` writes bit 3 itself, as QEMU's
//! AML does when the firmware did not take over CPU hot-unplug. Every wait is bounded.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::clock::{self, Stopwatch, Timer};
use crate::cpus::{self, init_sipi_sipi, APS};
use crate::entry::MAX_CPUS;
use crate::hotplug::{self, raise_apmc4, CpuEvent};
use crate::{attack, println, Report};
use q35::cpuhp::{self, CpuHp, CpuTopology};
use q35::fw_cfg::FwCfg;
use q35::ich9;
use q35::io::{HwPorts, PortIo};

/// What the harness asked for (fw_cfg `opt/payload/unplug*`, `opt/payload/replug`).
#[derive(Default)]
struct Plan {
    /// Removals the harness requests with `device_del`.
    removes: u32,
    /// CPUs the harness adds during the unplug phase.
    adds: u32,
    batch: bool,
    add_pending: bool,
    self_eject: bool,
    fw_remove_boot: bool,
    fw_remove_online: bool,
    fw_remove_self: bool,
    attack: bool,
    skip_smi: bool,
}

impl Plan {
    fn read() -> Plan {
        let mut p = Plan::default();
        let Ok(cfg) = FwCfg::detect(&HwPorts) else {
            return p;
        };
        let num = |name: &str| {
            let mut b = [0u8; 64];
            crate::fw_cfg_text(&cfg, name, &mut b)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        p.removes = num("opt/payload/unplug");
        p.adds = num("opt/payload/replug");
        let mut b = [0u8; 64];
        if let Some(v) = crate::fw_cfg_text(&cfg, "opt/payload/unplug-variant", &mut b) {
            for w in v.split([',', '+']) {
                match w {
                    "batch" => p.batch = true,
                    "add-pending" => p.add_pending = true,
                    "self-eject" => p.self_eject = true,
                    "fw-remove-boot" => p.fw_remove_boot = true,
                    "fw-remove-online" => p.fw_remove_online = true,
                    "fw-remove-self" => {
                        p.fw_remove_online = true;
                        p.fw_remove_self = true;
                    }
                    "attack" => p.attack = true,
                    "skip-smi" => p.skip_smi = true,
                    other => println!("payload: unplug variant {:?} unknown, ignored", other),
                }
            }
        }
        p
    }

    fn active(&self) -> bool {
        self.removes > 0 || self.adds > 0 || self.fw_remove_boot || self.fw_remove_online
    }

    /// How the OS asks for an eject, as printed.
    fn method(&self) -> &'static str {
        if !crate::smm_present() {
            "os-eject-no-smm"
        } else if self.self_eject {
            "os-eject"
        } else if self.skip_smi {
            "fw-remove-without-smi"
        } else if self.batch {
            "fw-remove-batch"
        } else {
            "fw-remove"
        }
    }
}

// ---------------------------------------------------------------------------------------
// The APs' side: "offline" is an AP that finished its work and halts.

/// Per AP record (index = arrival order): 1 once the AP is about to halt for good
/// (`cli; hlt`), the state an OS waits for before it ejects a CPU.
static HALTED: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];
/// The APIC ID of the AP that is to keep running payload code (`fw-remove-online`).
static BUSY_APIC: AtomicU32 = AtomicU32::new(u32::MAX);
/// Iterations of the busy AP's loop.
static BUSY_COUNT: AtomicU64 = AtomicU64::new(0);
/// `fw-remove-self`: the busy AP's own selector + 1 (0 = the OS's CPU asks instead).
static SELF_SELECTOR: AtomicU32 = AtomicU32::new(0);
/// `fw-remove-self`: 1 once the busy AP set its `fw_remove` and is about to raise APMC 4;
/// 2 if it ever runs on after that (it was not ejected).
static SELF_STEP: AtomicU32 = AtomicU32::new(0);

/// An AP's last step before its halt loop (from `cpus::ap_main`): the AP that the
/// `fw-remove-online` variant armed keeps running payload code instead; every other AP
/// says it halts.
pub fn ap_idle(index: u32) {
    if BUSY_APIC.load(Ordering::SeqCst) == q35::lapic::cpuid_apic_id() {
        for _ in 0..100_000 {
            BUSY_COUNT.fetch_add(1, Ordering::SeqCst);
            core::hint::spin_loop();
        }
        let sel = SELF_SELECTOR.load(Ordering::SeqCst);
        if sel != 0 {
            let hp = CpuHp::new(&HwPorts);
            hp.select(sel - 1);
            hp.control(cpuhp::CTL_SET_FW_REMOVE);
            SELF_STEP.store(1, Ordering::SeqCst);
            raise_apmc4();
            SELF_STEP.store(2, Ordering::SeqCst);
        }
        loop {
            BUSY_COUNT.fetch_add(1, Ordering::SeqCst);
            core::hint::spin_loop();
        }
    }
    if let Some(h) = HALTED.get(index as usize) {
        h.store(1, Ordering::SeqCst);
    }
}

/// The index of the newest AP record of `apic` that checked in.
fn newest_ap(apic: u32) -> Option<usize> {
    (1..MAX_CPUS).rev().find(|&i| {
        APS[i].done.load(Ordering::SeqCst) == 1 && APS[i].apic.load(Ordering::SeqCst) == apic
    })
}

/// Forget every AP record of `apic` (the CPU was ejected; a re-plug checks in anew).
fn forget_ap(apic: u32) {
    for a in APS.iter().skip(1) {
        if a.apic.load(Ordering::SeqCst) == apic {
            a.done.store(0, Ordering::SeqCst);
            a.apic.store(u32::MAX, Ordering::SeqCst);
        }
    }
}

/// Offline `apic` as an OS does before an eject: wait (bounded) until it halts for good.
fn offline(tm: &Timer, apic: u32) -> bool {
    tm.wait_until(1_000_000, || {
        newest_ap(apic).is_some_and(|i| HALTED[i].load(Ordering::SeqCst) == 1)
    })
}

// ---------------------------------------------------------------------------------------
// The OS's side.

/// (selector, APIC ID) pairs.
type Batch = heapless::Vec<(u32, u32), 64>;

fn push_unique(b: &mut Batch, e: (u32, u32)) {
    if !b.iter().any(|x| x.0 == e.0) {
        let _ = b.push(e);
    }
}

/// One `CSCN` pass ([`hotplug::cscn`]): insert events go to `inserts`; remove events
/// become eject requests (`ejects`), as they do for the AML's OS.
fn scan(hp: &CpuHp<'_, HwPorts>, topo: &CpuTopology, inserts: &mut Batch, ejects: &mut Batch) {
    hotplug::cscn(hp, topo.possible, |uid, ev| {
        let e = (uid, topo.apic_id(uid).unwrap_or(u32::MAX));
        match ev {
            CpuEvent::Insert => push_unique(inserts, e),
            CpuEvent::Remove => push_unique(ejects, e),
        }
    });
}

/// The selected CPU's status.
fn status(hp: &CpuHp<'_, HwPorts>, sel: u32) -> u8 {
    hp.select(sel);
    hp.status()
}

/// Everything the unplug phase keeps.
struct Os<'a> {
    plan: Plan,
    hp: CpuHp<'a, HwPorts>,
    topo: CpuTopology,
    tm: Timer,
    tseg: Option<u32>,
    /// Selectors ejected in this phase (a later add there is a re-plug).
    removed: heapless::Vec<u32, 64>,
    removes_done: u32,
    adds_done: u32,
    planted: bool,
}

/// The unplug phase (after [`hotplug::run`]): the fault variants, then eject requests and
/// adds as they come, until the harness's removals and adds are done (bounded: 120 s
/// without an event).
pub fn run(r: &mut Report, tseg: Option<u32>) {
    let plan = Plan::read();
    if !plan.active() {
        return;
    }
    let Some((hp, topo)) = cpus::register_block(r, "unplug") else {
        return;
    };
    let mut os = Os {
        plan,
        hp,
        topo,
        tm: clock::timer(),
        tseg,
        removed: heapless::Vec::new(),
        removes_done: 0,
        adds_done: 0,
        planted: false,
    };
    if os.plan.fw_remove_boot {
        os.fw_remove_boot(r);
    }
    if os.plan.fw_remove_online {
        os.fw_remove_online(r);
    }
    println!(
        "payload: ready for unplug ({} removal(s), {} add(s) expected)",
        os.plan.removes, os.plan.adds
    );
    os.events(r);
    os.finish(r);
}

impl Os<'_> {
    /// Wait for and handle hotplug events until the harness's removals and adds are done.
    fn events(&mut self, r: &mut Report) {
        let ports = HwPorts;
        let pmbase = ich9::pmbase(&ports).unwrap_or(ich9::PMBASE);
        let mut idle = self.tm.start();
        let mut inserts = Batch::new();
        let mut ejects = Batch::new();
        let mut t_event: Option<Stopwatch> = None;
        while (self.removes_done < self.plan.removes || self.adds_done < self.plan.adds)
            && self.tm.elapsed_us(&mut idle) < 120_000_000
        {
            let gpe = ports.inb(pmbase + ich9::GPE0_STS) & ich9::GPE0_CPU_HOTPLUG != 0;
            scan(&self.hp, &self.topo, &mut inserts, &mut ejects);
            if gpe {
                ports.outb(pmbase + ich9::GPE0_STS, ich9::GPE0_CPU_HOTPLUG);
            }
            if inserts.is_empty() && ejects.is_empty() {
                crate::console::copy_smm_log();
                self.tm.delay_us(500);
                continue;
            }
            if t_event.is_none() {
                t_event = Some(self.tm.start());
            }
            // `add-pending`: hold both until an insert and an eject request are pending
            // at once, then handle the eject first. `batch`: hold the eject requests until
            // every outstanding removal was requested. Both bounded (10 s).
            let (adds_left, removes_left) = (
                self.plan.adds - self.adds_done.min(self.plan.adds),
                self.plan.removes - self.removes_done.min(self.plan.removes),
            );
            let holding = (self.plan.add_pending
                && adds_left > 0
                && removes_left > 0
                && (inserts.is_empty() || ejects.is_empty()))
                || (self.plan.batch && inserts.is_empty() && (ejects.len() as u32) < removes_left);
            if holding {
                let waited = t_event
                    .as_mut()
                    .map_or(0, |sw| self.tm.elapsed_us(&mut *sw));
                if waited < 10_000_000 {
                    self.tm.delay_us(500);
                    continue;
                }
                println!("payload: unplug: the events held for this variant did not all come within 10 s");
            }
            let mut sw = t_event.take().unwrap_or_else(|| self.tm.start());
            if self.plan.add_pending && !ejects.is_empty() && !inserts.is_empty() {
                println!(
                    "payload: add-pending: eject request(s) handled while {} insert event(s) pending",
                    inserts.len()
                );
                self.eject_batch(r, &ejects, &mut sw);
                self.add_batch(r, &inserts, &mut sw);
            } else {
                // As the AML: the scan's inserts get their SMI first; the eject requests
                // it notified are handled afterwards.
                if !inserts.is_empty() {
                    self.add_batch(r, &inserts, &mut sw);
                }
                if !ejects.is_empty() {
                    self.eject_batch(r, &ejects, &mut sw);
                }
            }
            inserts.clear();
            ejects.clear();
            idle = self.tm.start();
        }
    }

    /// Offline and eject every CPU of `ejects`, check each is gone.
    fn eject_batch(&mut self, r: &mut Report, ejects: &Batch, sw: &mut Stopwatch) {
        let mut ready = Batch::new();
        for &(sel, apic) in ejects {
            if offline(&self.tm, apic) {
                let _ = ready.push((sel, apic));
            } else {
                println!(
                    "UNPLUG selector={} apic={} method={} offline=false gone=false",
                    sel,
                    apic,
                    self.plan.method()
                );
                r.check(
                    "unplug-cpu",
                    false,
                    format_args!("APIC {} did not go offline (halt) within 1 s", apic),
                );
                self.removes_done += 1;
            }
        }
        if self.plan.batch && crate::smm_present() {
            // Every request with fw_remove, then one SMI for all of them.
            for &(sel, _) in &ready {
                self.hp.select(sel);
                self.hp.control(cpuhp::CTL_SET_FW_REMOVE);
            }
            raise_apmc4();
            for &(sel, apic) in &ready {
                self.check_gone(r, sel, apic, sw);
            }
        } else {
            for &(sel, apic) in &ready {
                self.cej0(sel);
                self.check_gone(r, sel, apic, sw);
            }
        }
    }

    /// `CEJ0` for `sel`, as QEMU's AML with CPU hot-unplug negotiated: select, set
    /// `fw_remove`, APMC 4. `self-eject` and a machine without SMM eject with bit 3.
    fn cej0(&self, sel: u32) {
        self.hp.select(sel);
        if self.plan.self_eject || !crate::smm_present() {
            self.hp.control(cpuhp::CTL_EJECT);
            return;
        }
        self.hp.control(cpuhp::CTL_SET_FW_REMOVE);
        if !self.plan.skip_smi {
            raise_apmc4();
        }
    }

    /// After `CEJ0` for (`sel`, `apic`): the CPU must be gone when the SMI returned (status
    /// bit 0 clear, no event left). Prints the `UNPLUG` line and the check.
    fn check_gone(&mut self, r: &mut Report, sel: u32, apic: u32, sw: &mut Stopwatch) {
        let st = status(&self.hp, sel);
        let at_once = st & cpuhp::STS_ENABLED == 0;
        // A late eject would break R14 (no CPU leaves the SMI before every eject); wait a
        // little to tell "late" from "never".
        let gone = at_once
            || self.tm.wait_until(1_000_000, || {
                status(&self.hp, sel) & cpuhp::STS_ENABLED == 0
            });
        let us = self.tm.elapsed_us(sw);
        let st_after = status(&self.hp, sel);
        if self.plan.self_eject && gone && crate::smm_present() {
            // The next APMC 4 (as a later hot-add's) must find the CPU gone.
            raise_apmc4();
        }
        self.removes_done += 1;
        if gone {
            forget_ap(apic);
            if !self.removed.contains(&sel) {
                let _ = self.removed.push(sel);
            }
        }
        println!(
            "UNPLUG selector={} apic={} method={} offline=halted gone={} at-smi-return={} status={:#04x} remove-event-to-gone-us={}",
            sel,
            apic,
            self.plan.method(),
            gone,
            at_once,
            st_after,
            us
        );
        r.check(
            "unplug-cpu",
            gone && at_once && st_after == 0,
            format_args!(
                "APIC {} (selector {}) gone when the eject returned: {}; status afterwards {:#04x}",
                apic, sel, at_once, st_after
            ),
        );
        if gone && self.plan.attack && !self.planted {
            // Before the re-plug: plant code where the new CPU's first SMI and its pen
            // would run it.
            attack::plant(&attack_plan(), self.tseg);
            self.planted = true;
            println!("payload: attack: code planted at the first-SMI handler's entry and in the pen before the re-plug");
        }
    }

    /// A CPU added during the unplug phase: SMM relocates it (APMC 4), the OS clears the
    /// insert event and starts it; it must take SMIs at a slot of its own.
    fn add_batch(&mut self, r: &mut Report, inserts: &Batch, sw: &mut Stopwatch) {
        let ap = attack_plan();
        if self.plan.attack {
            attack::before_hotplug_smi(&ap, inserts, &self.tm);
        }
        raise_apmc4();
        for &(sel, _) in inserts {
            self.hp.select(sel);
            self.hp.control(cpuhp::CTL_CLEAR_INSERT);
        }
        for &(sel, apic) in inserts {
            forget_ap(apic);
            let ok =
                init_sipi_sipi(apic) && self.tm.wait_until(3_000_000, || newest_ap(apic).is_some());
            let us = self.tm.elapsed_us(sw);
            if self.plan.attack {
                attack::after_online(&ap, apic, &self.tm);
            }
            self.adds_done += 1;
            let replug = self.removed.contains(&sel);
            let (slot, smbase, count) = match newest_ap(apic) {
                Some(i) => {
                    let s = APS[i].slot.load(Ordering::SeqCst);
                    (
                        s as u32,
                        (s >> 32) as u32,
                        APS[i].count.load(Ordering::SeqCst),
                    )
                }
                None => (u32::MAX, 0, 0),
            };
            if !crate::smm_present() || crate::diag_query_absent() {
                println!(
                    "PLUG selector={} apic={} replug={} online={} slot=unknown event-to-online-us={} smi=not-queried",
                    sel, apic, replug, ok, us
                );
                r.check(
                    "replug-cpu",
                    ok,
                    format_args!(
                        "APIC {} online; its SMM slot not checked (no diagnostic query)",
                        apic
                    ),
                );
                continue;
            }
            let own = slot != u32::MAX
                && smbase >= cpus::MIN_SLOT_SMBASE
                && count > 0
                && !slot_taken_by_other(apic, slot, smbase);
            println!(
                "PLUG selector={} apic={} replug={} online={} slot={} smbase={:#x} smi-entries={} event-to-online-us={} smi={}",
                sel,
                apic,
                replug,
                ok,
                slot as i64,
                smbase,
                count,
                us,
                if ok && own { "ok" } else { "FAIL" }
            );
            r.check(
                "replug-cpu",
                ok && own,
                format_args!(
                    "APIC {} ({}) online, takes SMIs at its own SMM slot {}",
                    apic,
                    if replug { "re-plugged" } else { "new" },
                    slot as i64
                ),
            );
        }
    }

    /// `fw-remove-boot`: the OS sets `fw_remove` on its boot CPU and raises APMC 4.
    fn fw_remove_boot(&mut self, r: &mut Report) {
        let before = status(&self.hp, 0);
        self.hp.select(0);
        self.hp.control(cpuhp::CTL_SET_FW_REMOVE);
        let after_bit = status(&self.hp, 0);
        raise_apmc4();
        let st = status(&self.hp, 0);
        let back = smi_back();
        println!(
            "UNPLUG selector=0 apic={} method=fw-remove-boot-cpu gone={} status={:#04x}",
            self.topo.apic_id(0).unwrap_or(u32::MAX),
            st & cpuhp::STS_ENABLED == 0,
            st
        );
        r.check(
            "fw-remove-boot-cpu",
            st & cpuhp::STS_ENABLED != 0 && back != Some(false),
            format_args!(
                "status {:#04x}, after bit 4 {:#04x}, after APMC 4 {:#04x}: the boot CPU stays; SMM answers afterwards: {}",
                before,
                after_bit,
                st,
                smi_back_text(back)
            ),
        );
    }

    /// `fw-remove-online`: an AP keeps running payload code (never offlined) and the OS
    /// sets `fw_remove` on it and raises APMC 4: SMM parks it inside SMM and ejects it,
    /// as asked; the OS loses that CPU's work, and nothing else changes.
    fn fw_remove_online(&mut self, r: &mut Report) {
        let me = q35::lapic::cpuid_apic_id();
        let target = (1..self.topo.possible).find_map(|sel| {
            let apic = self.topo.apic_id(sel)?;
            (apic != me && newest_ap(apic).is_some()).then_some((sel, apic))
        });
        let Some((sel, apic)) = target else {
            r.check(
                "fw-remove-online-cpu",
                false,
                format_args!("no online AP to test with"),
            );
            return;
        };
        BUSY_APIC.store(apic, Ordering::SeqCst);
        let count0 = BUSY_COUNT.load(Ordering::SeqCst);
        let by_itself = self.plan.fw_remove_self;
        if by_itself {
            SELF_SELECTOR.store(sel + 1, Ordering::SeqCst);
        }
        init_sipi_sipi(apic);
        let running = self.tm.wait_until(3_000_000, || {
            BUSY_COUNT.load(Ordering::SeqCst) > count0 + 1000
        });
        let mut sw = self.tm.start();
        if by_itself {
            // Its APMC 4 holds this CPU in SMM until the service is done (R14): once it
            // said it raised it and a moment passed, the eject is over or never came.
            let raised = self
                .tm
                .wait_until(3_000_000, || SELF_STEP.load(Ordering::SeqCst) != 0);
            self.tm.delay_us(50_000);
            if !raised || SELF_STEP.load(Ordering::SeqCst) == 2 {
                println!(
                    "payload: fw-remove-self: APIC {} raised APMC 4: {}; came back: {}",
                    apic,
                    raised,
                    SELF_STEP.load(Ordering::SeqCst) == 2
                );
            }
        } else {
            self.hp.select(sel);
            self.hp.control(cpuhp::CTL_SET_FW_REMOVE);
            raise_apmc4();
        }
        let st = status(&self.hp, sel);
        let gone = st & cpuhp::STS_ENABLED == 0;
        let us = self.tm.elapsed_us(&mut sw);
        // Its code no longer runs.
        let c1 = BUSY_COUNT.load(Ordering::SeqCst);
        self.tm.delay_us(20_000);
        let stopped = BUSY_COUNT.load(Ordering::SeqCst) == c1;
        let back = smi_back();
        if gone {
            forget_ap(apic);
            let _ = self.removed.push(sel);
        }
        println!(
            "UNPLUG selector={} apic={} method={} offline=false gone={} status={:#04x} its-code-stopped={} us={}",
            sel,
            apic,
            if by_itself { "fw-remove-self" } else { "fw-remove-online" },
            gone,
            st,
            stopped,
            us
        );
        r.check(
            if by_itself { "fw-remove-self-cpu" } else { "fw-remove-online-cpu" },
            running && gone && stopped && st == 0 && back != Some(false),
            format_args!(
                "APIC {} ran payload code: {}; ejected when the SMI returned: {}; its code stopped: {}; SMM answers afterwards: {}",
                apic,
                running,
                gone,
                stopped,
                smi_back_text(back)
            ),
        );
    }

    /// The phase's verdict: counts, SMM still answers, SMRAM still locked, the attack.
    fn finish(&mut self, r: &mut Report) {
        r.check(
            "unplug-count",
            self.removes_done == self.plan.removes,
            format_args!(
                "{} of {} requested removals handled",
                self.removes_done, self.plan.removes
            ),
        );
        if self.plan.adds > 0 {
            r.check(
                "replug-count",
                self.adds_done == self.plan.adds,
                format_args!(
                    "{} of {} CPUs added after removals came online",
                    self.adds_done, self.plan.adds
                ),
            );
        }
        if self.plan.attack {
            attack::check_leak(r, &attack_plan());
        }
        match smi_back() {
            Some(b) => r.check(
                "smi-after-unplug",
                b,
                format_args!("BSP SMI round trip after the removals"),
            ),
            None if crate::smm_present() => r.skip(
                "smi-after-unplug",
                format_args!("{}: SMI round trip not checked", crate::DIAG_ABSENT),
            ),
            None => {}
        }
        if crate::smm_present() {
            crate::smram::check_locked_as(r, self.tseg, "smram-locked-after-unplug");
        }
        println!(
            "payload: unplug phase done: {} removal(s), {} add(s) ({} re-plug(s) possible)",
            self.removes_done,
            self.adds_done,
            self.removed.len()
        );
    }
}

/// Whether another live CPU (the BSP or an AP record other than `apic`'s newest) has
/// `slot` or `smbase`.
fn slot_taken_by_other(apic: u32, slot: u32, smbase: u32) -> bool {
    let mine = newest_ap(apic);
    let aps = (1..MAX_CPUS).filter(|&i| Some(i) != mine).any(|i| {
        let a = &APS[i];
        let s = a.slot.load(Ordering::SeqCst);
        a.done.load(Ordering::SeqCst) == 1
            && a.apic.load(Ordering::SeqCst) != u32::MAX
            && s != u64::MAX
            && (s as u32 == slot || (s >> 32) as u32 == smbase)
    });
    let bsp = crate::smi_query().is_some_and(|(s, _)| s as u32 == slot);
    aps || bsp
}

/// The BSP's SMI round trip: `Some(answered)` where the diagnostic query exists.
fn smi_back() -> Option<bool> {
    (crate::smm_present() && !crate::diag_query_absent()).then(|| crate::smi_query().is_some())
}

fn smi_back_text(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "true",
        Some(false) => "false",
        None => "not asked (diagnostic query absent)",
    }
}

/// The hot-add plan the attack hooks of [`crate::attack`] read: the `attack` variant.
fn attack_plan() -> hotplug::Plan {
    hotplug::Plan {
        expect_cpus: 0,
        early_init: false,
        attack: true,
        sipi_attack: false,
        apmc4_storm: 0,
        storm_two_cpus: false,
        x2apic: false,
    }
}
