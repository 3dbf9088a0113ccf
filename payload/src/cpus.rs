//! CPU checks in the OS role: start every present AP with INIT-SIPI-SIPI into the
//! payload's own trampoline, have each CPU raise an SMI and learn which slot served it,
//! and require one distinct slot (and SMBASE inside TSEG) per CPU. Every wait is
//! bounded: a CPU that never answers is reported, not waited out.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::cbtables::Tables;
use crate::clock;
use crate::entry::{self, MAX_CPUS};
use crate::{println, Report};
use q35::cpuhp::{CpuHp, CpuTopology};
use q35::io::HwPorts;
use q35::lapic;

/// What one AP reports once it runs payload code (index = its arrival order).
pub(crate) struct Ap {
    /// Its APIC ID (`u32::MAX` until it checked in).
    pub apic: AtomicU32,
    /// The diagnostic query's answer: slot in the low dword, SMBASE in the high dword
    /// (`u64::MAX` when SMM did not answer).
    pub slot: AtomicU64,
    /// SMI entries of its slot, as the diagnostic query reports them.
    pub count: AtomicU64,
    /// Set to 1 once the fields above are written.
    pub done: AtomicU32,
}

/// One record per CPU the payload started (index 0 is the BSP's, unused).
pub(crate) static APS: [Ap; MAX_CPUS] = [const {
    Ap {
        apic: AtomicU32::new(u32::MAX),
        slot: AtomicU64::new(0),
        count: AtomicU64::new(0),
        done: AtomicU32::new(0),
    }
}; MAX_CPUS];
/// APs that checked in.
pub(crate) static STARTED: AtomicU32 = AtomicU32::new(0);

/// APMC 4 writes each AP makes right after it checked in (the two-CPU storm test).
pub(crate) static AP_APMC4_WRITES: AtomicU32 = AtomicU32::new(0);

/// Each AP switches its local APIC to x2APIC mode as it starts (the `x2apic` variant).
pub(crate) static AP_X2APIC: AtomicBool = AtomicBool::new(false);

/// Lowest SMBASE a relocated CPU may have: every slot lies in TSEG, above 1 MiB (well
/// clear of the default SMBASE).
pub(crate) const MIN_SLOT_SMBASE: u32 = 0x10_0000;

/// An AP's life in the payload: record its APIC ID, write APMC 4 if the storm test asks,
/// raise one diagnostic SMI, report the answer and halt.
pub fn ap_main(index: u32) -> ! {
    if let Some(me) = APS.get(index as usize) {
        if AP_X2APIC.load(Ordering::SeqCst) {
            lapic::enable_x2apic();
        } else {
            lapic::enable();
        }
        me.apic.store(lapic::cpuid_apic_id(), Ordering::SeqCst);
        for _ in 0..AP_APMC4_WRITES.load(Ordering::SeqCst) {
            crate::hotplug::raise_apmc4();
        }
        let (s, c) = crate::smi_query().unwrap_or((u64::MAX, 0));
        me.slot.store(s, Ordering::SeqCst);
        me.count.store(c, Ordering::SeqCst);
        me.done.store(1, Ordering::SeqCst);
        STARTED.fetch_add(1, Ordering::SeqCst);
    }
    // Hot-remove: the AP says it halts for good (an OS's "offline"), or keeps running.
    crate::unplug::ap_idle(index);
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

// Low pages the payload uses (usable RAM below 1 MiB per the coreboot memory map):
// the AP trampoline, a scratch page for the attack checks, and a page to plant code in.

/// The page the AP trampoline is copied to (its SIPI vector is this >> 12).
pub(crate) static TRAMPOLINE_PAGE: AtomicU32 = AtomicU32::new(0);
/// The scratch page the attack checks use ([`crate::attack`]).
pub(crate) static SCRATCH_PAGE: AtomicU32 = AtomicU32::new(0);
/// The page the `attack` variant plants code in (the SIPI attack's target).
pub(crate) static PLANT_PAGE: AtomicU32 = AtomicU32::new(0);

/// Pick the first three usable 4 KiB pages in 0x1000..0xA0000.
fn pick_low_pages(t: &Tables) -> bool {
    let mut found = [0u32; 3];
    let mut n = 0;
    let mut page = 0x1000u64;
    while page < 0xA0000 && n < found.len() {
        let usable = t.memory[..t.memory_len]
            .iter()
            .any(|m| m.kind == 1 && m.start <= page && page + 0x1000 <= m.start + m.size);
        if usable {
            found[n] = page as u32;
            n += 1;
        }
        page += 0x1000;
    }
    TRAMPOLINE_PAGE.store(found[0], Ordering::SeqCst);
    SCRATCH_PAGE.store(found[1], Ordering::SeqCst);
    PLANT_PAGE.store(found[2], Ordering::SeqCst);
    n == found.len()
}

/// Start `apic` in the payload's trampoline, as an OS brings a CPU online.
pub(crate) fn init_sipi_sipi(apic: u32) -> bool {
    let tm = clock::timer();
    let vec = TRAMPOLINE_PAGE.load(Ordering::SeqCst) >> 12;
    let ok = lapic::send_ipi(apic, lapic::ICR_INIT).is_ok()
        && {
            tm.delay_us(10_000);
            lapic::send_ipi(apic, lapic::ICR_STARTUP | vec).is_ok()
        }
        && {
            tm.delay_us(200);
            lapic::send_ipi(apic, lapic::ICR_STARTUP | vec).is_ok()
        };
    if !ok {
        println!("payload: INIT-SIPI-SIPI to APIC {} failed", apic);
    }
    ok
}

/// The record of the AP with `apic` that checked in, if any.
pub(crate) fn find_ap(apic: u32) -> Option<&'static Ap> {
    APS.iter()
        .skip(1)
        .find(|a| a.done.load(Ordering::SeqCst) == 1 && a.apic.load(Ordering::SeqCst) == apic)
}

/// The CPU hotplug register block and the topology it reports; when it cannot be read,
/// check `name` fails with the reason and the caller gives up its phase.
pub(crate) fn register_block(
    r: &mut Report,
    name: &'static str,
) -> Option<(CpuHp<'static, HwPorts>, CpuTopology)> {
    let hp = CpuHp::new(&HwPorts);
    match hp.count() {
        Ok(t) => Some((hp, t)),
        Err(e) => {
            r.check(
                name,
                false,
                format_args!("CPU hotplug register block unreadable: {:?}", e),
            );
            None
        }
    }
}

/// Start every present AP, have every CPU take an SMI and check that each one has a slot
/// and an SMBASE of its own (`docs/protocol.md#slots-and-routing`).
pub fn check(r: &mut Report, t: &Tables) {
    // The trampoline and scratch pages must be RAM the firmware gave us.
    if !pick_low_pages(t) {
        r.check(
            "low-pages",
            false,
            format_args!("fewer than 3 usable pages below 640 KiB"),
        );
        return;
    }
    let tp = TRAMPOLINE_PAGE.load(Ordering::SeqCst);
    println!("payload: AP trampoline at {:#x}", tp);
    // SAFETY: the page is usable RAM per the memory map and nothing else of ours uses it.
    unsafe { entry::install_ap_trampoline(tp) };

    let Some((_, topo)) = register_block(r, "cpu-count") else {
        return;
    };
    println!(
        "payload: cpus present={} possible={}",
        topo.present, topo.possible
    );
    lapic::enable();
    let bsp = lapic::cpuid_apic_id();
    let tm = clock::timer();
    let mut expected = 0u32;
    for sel in 0..topo.possible {
        let (Some(true), Some(apic)) = (
            topo.present_mask.get(sel as usize).copied(),
            topo.apic_id(sel),
        ) else {
            continue;
        };
        if apic == bsp {
            continue;
        }
        expected += 1;
        init_sipi_sipi(apic);
    }
    let all = tm.wait_until(3_000_000, || STARTED.load(Ordering::SeqCst) >= expected);
    let started = STARTED.load(Ordering::SeqCst);
    r.check(
        "aps-started",
        all,
        format_args!(
            "{} of {} APs ran payload code after INIT-SIPI-SIPI",
            started, expected
        ),
    );

    check_slots(r, bsp, topo.present);
}

/// Collect the BSP's own diagnostic SMI and every AP's answer, print one `CPU` line per
/// CPU and require a distinct slot and SMBASE (in TSEG) for each of the `present` CPUs.
/// Skipped (not failed) when the firmware does not answer the query after boot.
fn check_slots(r: &mut Report, bsp: u32, present: u32) {
    if crate::diag_query_absent() {
        r.skip("cpu-smi-slots", format_args!("{}", crate::DIAG_ABSENT));
        return;
    }
    // The BSP's own SMI, then each AP's answer.
    let mut seen: heapless::Vec<(u32, u32, u32, u64), MAX_CPUS> = heapless::Vec::new();
    let b = crate::smi_query();
    let _ = seen.push(match b {
        Some((s, c)) => (bsp, s as u32, (s >> 32) as u32, c),
        None => (bsp, u32::MAX, 0, 0),
    });
    for ap in APS.iter().skip(1) {
        if ap.done.load(Ordering::SeqCst) == 1 {
            let s = ap.slot.load(Ordering::SeqCst);
            let _ = seen.push((
                ap.apic.load(Ordering::SeqCst),
                if s == u64::MAX { u32::MAX } else { s as u32 },
                (s >> 32) as u32,
                ap.count.load(Ordering::SeqCst),
            ));
        }
    }
    let mut all_ok = true;
    for (i, &(apic, slot, smbase, count)) in seen.iter().enumerate() {
        let distinct = seen
            .iter()
            .enumerate()
            .all(|(j, o)| j == i || (o.1 != slot && o.2 != smbase));
        let ok = slot != u32::MAX && count > 0 && distinct && smbase >= MIN_SLOT_SMBASE;
        all_ok &= ok;
        println!(
            "CPU apic={} slot={} smbase={:#x} smi-entries={} smi={}",
            apic,
            slot as i64,
            smbase,
            count,
            if ok { "ok" } else { "FAIL" }
        );
    }
    r.check(
        "cpu-smi-slots",
        all_ok && seen.len() as u32 == present,
        format_args!(
            "{} of {} present CPUs took an SMI at their own SMBASE and came back",
            seen.len(),
            present
        ),
    );
}
