//! The OS role for CPU hot-add (`docs/protocol.md#relocation-step-by-step`): what QEMU's
//! AML (`CSCN`, `docs/protocol.md#the-cpu-hotplug-register-block`) and an OS do. Poll GPE0
//! bit 2 and the register block, collect inserted CPUs, write 4 to port 0xB2 so SMM
//! relocates them, clear the insert events, then bring each new CPU online with
//! INIT-SIPI-SIPI into the payload's trampoline and check that it takes SMIs at a slot of
//! its own. Variants model early OS behaviour (`early-init`, R18) here and hostile OS
//! behaviour in [`crate::attack`].

use core::sync::atomic::Ordering;

use crate::clock::{self, Stopwatch, Timer};
use crate::cpus::{self, find_ap, init_sipi_sipi};
use crate::{attack, println, Report};
use q35::cpuhp::{self, CpuHp};
use q35::fw_cfg::FwCfg;
use q35::io::{HwPorts, PortIo};
use q35::{ich9, lapic};

/// What the harness asked for, read from fw_cfg `opt/payload/*` files.
pub struct Plan {
    /// CPUs the harness will hot-add (`opt/payload/hotplug`); 0 = no hot-add test.
    pub expect_cpus: u32,
    /// `early-init` variant: start each new CPU before the hotplug SMI (R18).
    pub early_init: bool,
    /// `attack` variant (also set by `sipi-attack`): plant code and send SMI IPIs
    /// ([`crate::attack`]).
    pub attack: bool,
    /// `sipi-attack` variant: a SIPI to planted code while the new CPU waits in SMM.
    pub sipi_attack: bool,
    /// APMC 4 writes with nothing pending (`opt/payload/apmc4-storm`); 0 = none.
    pub apmc4_storm: u32,
    /// `apmc4-storm` with `:2cpu`: an AP writes APMC 4 at the same time as the BSP.
    pub storm_two_cpus: bool,
    /// `x2apic` variant: every CPU switches its local APIC to x2APIC mode, as Linux does
    /// with APIC IDs above 254 (the BSP before the hot-add, each AP as it starts).
    pub x2apic: bool,
}

impl Plan {
    /// Read the plan from fw_cfg; a missing file (or no fw_cfg) means "not asked for".
    pub fn read() -> Plan {
        let mut p = Plan {
            expect_cpus: 0,
            early_init: false,
            attack: false,
            sipi_attack: false,
            apmc4_storm: 0,
            storm_two_cpus: false,
            x2apic: false,
        };
        let Ok(cfg) = FwCfg::detect(&HwPorts) else {
            return p;
        };
        let mut b = [0u8; 32];
        p.expect_cpus = crate::fw_cfg_text(&cfg, "opt/payload/hotplug", &mut b)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut b = [0u8; 32];
        if let Some(v) = crate::fw_cfg_text(&cfg, "opt/payload/hotplug-variant", &mut b) {
            p.early_init = v.contains("early-init");
            p.sipi_attack = v.contains("sipi-attack");
            p.attack = v.contains("attack");
            p.x2apic = v.contains("x2apic");
        }
        let mut b = [0u8; 32];
        if let Some(v) = crate::fw_cfg_text(&cfg, "opt/payload/apmc4-storm", &mut b) {
            let (n, two) = match v.split_once(':') {
                Some((n, w)) => (n, w == "2cpu"),
                None => (v, false),
            };
            p.apmc4_storm = n.parse().unwrap_or(0);
            p.storm_two_cpus = two;
        }
        p
    }
}

/// `out 0xB2, 4` as QEMU's AML does (`\_SB.PCI0.SMI0.SMIC`), then `pause` so the SMI is
/// taken before the next step under TCG.
pub fn raise_apmc4() {
    if !crate::smm_present() {
        return;
    }
    // SAFETY: an I/O write to the APM control port; SMM handles it and returns.
    unsafe {
        core::arch::asm!("out dx, al", "pause", "pause", in("dx") ich9::APM_CNT, in("al") 4u8, options(nostack))
    };
}

/// What a `CSCN` pass found at one selector.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum CpuEvent {
    Insert,
    Remove,
}

/// One `CSCN` pass as QEMU's AML makes it: from selector 0, "get next event" moves the
/// selector to the next CPU with one; `found(selector, event)` runs with that CPU still
/// selected, after a remove event was cleared (the AML clears it once it has notified the
/// OS). The pass stops at a CPU with neither event, as the AML's does (a CPU whose
/// `fw_remove` stays pending stops it: `docs/qemu.md#q-fw-remove-stall`). Bounded by
/// `possible` steps.
pub(crate) fn cscn(hp: &CpuHp<'_, HwPorts>, possible: u32, mut found: impl FnMut(u32, CpuEvent)) {
    let mut uid = 0u32;
    for _ in 0..possible {
        if uid >= possible {
            break;
        }
        hp.select(uid);
        hp.command(cpuhp::CMD_GET_NEXT_EVENT);
        let d = hp.data();
        if d < uid {
            break;
        }
        uid = d;
        let st = hp.status();
        if st & cpuhp::STS_INSERT != 0 {
            found(uid, CpuEvent::Insert);
        } else if st & cpuhp::STS_REMOVE != 0 {
            hp.control(cpuhp::CTL_CLEAR_REMOVE);
            found(uid, CpuEvent::Remove);
        } else {
            break;
        }
        uid += 1;
    }
}

/// The selectors and APIC IDs with an insert event. Eject requests are acknowledged
/// (remove event cleared) but not acted on here.
fn scan(hp: &CpuHp<'_, HwPorts>, possible: u32, out: &mut Batch) {
    cscn(hp, possible, |uid, ev| {
        if ev == CpuEvent::Insert {
            let _ = out.push((uid, hp.arch_id().unwrap_or(u32::MAX)));
        }
    });
}

/// Run the storm of APMC 4 with nothing pending; every CPU must still answer after it.
pub fn storm(r: &mut Report, plan: &Plan) {
    if plan.apmc4_storm == 0 {
        return;
    }
    let tm = clock::timer();
    let mut sw = tm.start();
    if plan.storm_two_cpus {
        cpus::AP_APMC4_WRITES.store(plan.apmc4_storm, Ordering::SeqCst);
        // The AP that comes up next does its writes while the BSP does its own.
        for ap in cpus::APS.iter().skip(1) {
            let apic = ap.apic.load(Ordering::SeqCst);
            if apic != u32::MAX {
                ap.done.store(0, Ordering::SeqCst);
                init_sipi_sipi(apic);
                break;
            }
        }
    }
    for _ in 0..plan.apmc4_storm {
        raise_apmc4();
    }
    let us = tm.elapsed_us(&mut sw);
    let aps_ok = !plan.storm_two_cpus
        || tm.wait_until(20_000_000, || {
            cpus::APS
                .iter()
                .skip(1)
                .any(|a| a.done.load(Ordering::SeqCst) == 1)
        });
    // Asked only once the AP's writes are over: port 0xB2 holds one command for every
    // CPU, so a query raced by the AP's APMC 4 finds 4 there and is not answered (an OS
    // serializes its APM port writes the same way).
    // Without the diagnostic query only the CPUs' return from SMM can be seen.
    let back = (!crate::diag_query_absent()).then(|| crate::smi_query().is_some());
    let answers = match back {
        Some(true) if aps_ok => "true",
        Some(_) => "false",
        None if aps_ok => "not asked (diagnostic query absent), every CPU came back",
        None => "not asked (diagnostic query absent), an AP did not come back",
    };
    r.check(
        "apmc4-storm",
        back != Some(false) && aps_ok,
        format_args!(
            "{} x APMC 4 with nothing pending{} in {} us ({} us each); SMM still answers: {}",
            plan.apmc4_storm,
            if plan.storm_two_cpus {
                " from two CPUs at once"
            } else {
                ""
            },
            us,
            us / u64::from(plan.apmc4_storm),
            answers
        ),
    );
}

/// Null SMI round trip, measured from the OS side (PM timer, 100 diagnostic queries).
pub fn smi_round_trip() {
    let tm = clock::timer();
    let mut sw = tm.start();
    for _ in 0..100 {
        crate::null_smi();
    }
    println!(
        "payload: null SMI round trip {} us (mean of 100)",
        tm.elapsed_us(&mut sw) / 100
    );
}

/// A batch of new CPUs the scan found: (selector, APIC ID).
type Batch = heapless::Vec<(u32, u32), 64>;

/// Hot-add as an OS does it: wait for insert events (bounded: 120 s), have SMM relocate
/// each batch, start every new CPU and check that it takes SMIs in a slot of its own. The
/// `attack` variants hook in through [`attack`].
pub fn run(r: &mut Report, plan: &Plan, tseg: Option<u32>) {
    if plan.expect_cpus == 0 {
        return;
    }
    let ports = HwPorts;
    let Some((hp, topo)) = cpus::register_block(r, "hotplug") else {
        return;
    };
    let pmbase = ich9::pmbase(&ports).unwrap_or(ich9::PMBASE);
    let tm = clock::timer();
    attack::plant(plan, tseg);
    if plan.x2apic {
        // As Linux with APIC IDs above 254: only x2APIC mode can start such a CPU.
        let on = lapic::enable_x2apic();
        cpus::AP_X2APIC.store(on, Ordering::SeqCst);
        r.check(
            "x2apic-mode",
            on,
            format_args!(
                "BSP local APIC in x2APIC mode (APs switch as they start; QEMU needs -cpu ...,x2apic=on)"
            ),
        );
    }
    println!("payload: ready for hotplug of {} CPU(s)", plan.expect_cpus);
    let mut onlined = 0u32;
    let mut slots: heapless::Vec<u32, 64> = heapless::Vec::new();
    let mut sw = tm.start();
    // Bounded: 120 s of waiting for events at most.
    while onlined < plan.expect_cpus && tm.elapsed_us(&mut sw) < 120_000_000 {
        let gpe = ports.inb(pmbase + ich9::GPE0_STS) & ich9::GPE0_CPU_HOTPLUG != 0;
        let mut new = Batch::new();
        scan(&hp, topo.possible, &mut new);
        if new.is_empty() {
            if gpe {
                ports.outb(pmbase + ich9::GPE0_STS, ich9::GPE0_CPU_HOTPLUG);
            }
            crate::console::copy_smm_log();
            tm.delay_us(500);
            continue;
        }
        let mut t_event = tm.start();
        ports.outb(pmbase + ich9::GPE0_STS, ich9::GPE0_CPU_HOTPLUG);
        relocate(plan, &hp, &new, &tm);
        for &(uid, apic) in &new {
            online(r, plan, &tm, &mut t_event, &mut slots, uid, apic);
            onlined += 1;
        }
    }
    r.check(
        "hotplug-count",
        onlined == plan.expect_cpus,
        format_args!(
            "{} of {} expected hot-added CPUs came online",
            onlined, plan.expect_cpus
        ),
    );
    attack::check_leak(r, plan);
    crate::selector_hammer::check(r);
    if !crate::diag_query_absent() {
        // Every CPU, old and new, still takes SMIs and comes back.
        let back = crate::smi_query().is_some();
        r.check(
            "smi-after-hotplug",
            back,
            format_args!("BSP SMI round trip after hot-add"),
        );
    } else {
        r.skip(
            "hotplug-cpu-slots",
            format_args!(
                "{}: slots and the SMI round trip after hot-add not checked",
                crate::DIAG_ABSENT
            ),
        );
    }
    if crate::smm_present() {
        crate::smram::check_still_locked(r, tseg);
    }
}

/// Have SMM relocate the batch `new`, as the AML does after its scan: APMC 4, then clear
/// each insert event. `early-init` starts the CPUs before the SMI (R18).
fn relocate(plan: &Plan, hp: &CpuHp<'_, HwPorts>, new: &Batch, tm: &Timer) {
    if plan.early_init {
        // A hostile or eager OS starts the CPU before the SMI (R18).
        for &(_, apic) in new {
            init_sipi_sipi(apic);
        }
    }
    attack::before_hotplug_smi(plan, new, tm);
    if !crate::selector_hammer::hotplug_smi(tm) {
        raise_apmc4();
    }
    for &(uid, _) in new {
        hp.select(uid);
        hp.control(cpuhp::CTL_CLEAR_INSERT);
    }
}

/// Start the relocated CPU `apic` (selector `uid`) with INIT-SIPI-SIPI, wait for it to
/// check in and require a slot no other new CPU has, with its SMBASE above 1 MiB.
/// `t_event` runs from the insert event; `slots` collects the slots seen so far.
fn online(
    r: &mut Report,
    plan: &Plan,
    tm: &Timer,
    t_event: &mut Stopwatch,
    slots: &mut heapless::Vec<u32, 64>,
    uid: u32,
    apic: u32,
) {
    let ok = init_sipi_sipi(apic) && tm.wait_until(3_000_000, || find_ap(apic).is_some());
    let us = tm.elapsed_us(t_event);
    let (slot, smbase, count) = match find_ap(apic) {
        Some(a) => {
            let s = a.slot.load(Ordering::SeqCst);
            (s as u32, (s >> 32) as u32, a.count.load(Ordering::SeqCst))
        }
        None => (u32::MAX, 0, 0),
    };
    attack::after_online(plan, apic, tm);
    if crate::diag_query_absent() {
        // Without the query only "it came online" can be checked (the SMRAM locks are
        // checked again after the hot-add).
        println!(
            "HOTPLUG selector={} apic={} online={} slot=unknown event-to-online-us={} smi=not-queried",
            uid, apic, ok, us
        );
        r.check(
            "hotplug-cpu",
            ok,
            format_args!(
                "APIC {} online; its SMM slot not checked (diagnostic query absent)",
                apic
            ),
        );
        return;
    }
    let fresh = slot != u32::MAX && !slots.contains(&slot) && smbase >= cpus::MIN_SLOT_SMBASE;
    let _ = slots.push(slot);
    println!(
        "HOTPLUG selector={} apic={} online={} slot={} smbase={:#x} smi-entries={} event-to-online-us={} smi={}",
        uid,
        apic,
        ok,
        slot as i64,
        smbase,
        count,
        us,
        if ok && fresh { "ok" } else { "FAIL" }
    );
    r.check(
        "hotplug-cpu",
        ok && fresh,
        format_args!("APIC {} online with its own SMM slot {}", apic, slot as i64),
    );
}
