//! The OS role for CPU hot-add (spec 12): what QEMU's AML (`CSCN`) and an OS do. Poll
//! GPE0 bit 2 and the register block, collect inserted CPUs, write 4 to port 0xB2 so
//! SMM relocates them, clear the insert events, then bring each new CPU online with
//! INIT-SIPI-SIPI into the payload's trampoline and check that it takes SMIs at a slot
//! of its own. Variants model hostile or early OS behaviour (spec 9 R18, section 12).

use core::sync::atomic::Ordering;

use crate::cpus::{self, find_ap, init_sipi_sipi};
use crate::{println, Report};
use q35::cpuhp::{self, CpuHp};
use q35::fw_cfg::FwCfg;
use q35::io::{HwPorts, PortIo};
use q35::{ich9, lapic};

/// What the harness asked for, read from fw_cfg `opt/payload/*` files.
pub struct Plan {
    pub expect_cpus: u32,
    pub early_init: bool,
    pub attack: bool,
    pub sipi_attack: bool,
    pub apmc4_storm: u32,
    pub storm_two_cpus: bool,
}

fn file_str<'b>(cfg: &FwCfg<'_, HwPorts>, name: &str, buf: &'b mut [u8; 32]) -> Option<&'b str> {
    let f = cfg.find_file(name)?;
    let n = (f.size as usize).min(buf.len());
    cfg.read_file(f, &mut buf[..n]).ok()?;
    core::str::from_utf8(&buf[..n])
        .ok()
        .map(|s| s.trim_matches(|c: char| c.is_whitespace() || c == '\0'))
}

impl Plan {
    pub fn read() -> Plan {
        let mut p = Plan {
            expect_cpus: 0,
            early_init: false,
            attack: false,
            sipi_attack: false,
            apmc4_storm: 0,
            storm_two_cpus: false,
        };
        let Ok(cfg) = FwCfg::detect(&HwPorts) else {
            return p;
        };
        let mut b = [0u8; 32];
        p.expect_cpus = file_str(&cfg, "opt/payload/hotplug", &mut b)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut b = [0u8; 32];
        if let Some(v) = file_str(&cfg, "opt/payload/hotplug-variant", &mut b) {
            p.early_init = v.contains("early-init");
            p.sipi_attack = v.contains("sipi-attack");
            p.attack = v.contains("attack");
        }
        let mut b = [0u8; 32];
        if let Some(v) = file_str(&cfg, "opt/payload/apmc4-storm", &mut b) {
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

/// One CSCN pass: the selectors and APIC IDs with an insert event. Eject requests are
/// acknowledged (remove event cleared) but not acted on here.
fn scan(hp: &CpuHp<'_, HwPorts>, possible: u32, out: &mut heapless::Vec<(u32, u32), 64>) {
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
            let apic = hp.arch_id().unwrap_or(u32::MAX);
            let _ = out.push((uid, apic));
        } else if st & cpuhp::STS_REMOVE != 0 {
            hp.control(cpuhp::CTL_CLEAR_REMOVE);
        } else {
            break;
        }
        uid += 1;
    }
}

// Attack: code the OS plants at 0x38000, in the pen page and in a page of its own (for
// a SIPI). In SMM it would copy the first 64 bytes of TSEG to the scratch page; anywhere
// it runs it stores a marker at scratch + 0x100.
fn leak_buf() -> u64 {
    u64::from(cpus::SCRATCH_PAGE.load(Ordering::SeqCst))
}

fn marker() -> u64 {
    leak_buf() + 0x100
}

fn sipi_plant() -> u64 {
    u64::from(cpus::PLANT_PAGE.load(Ordering::SeqCst))
}

fn plant(at: u64, tseg: u32) {
    // 16-bit code: mov esi,tseg; mov edi,leak; mov ecx,16;
    // 1: mov edx,[esi] (addr32); mov [edi],edx; add esi,4; add edi,4; loop 1b;
    // mov dword [marker],0x4B434148 ("HACK") (addr32); cli; hlt
    let t = tseg.to_le_bytes();
    let l = (leak_buf() as u32).to_le_bytes();
    let m = (marker() as u32).to_le_bytes();
    let code: [u8; 50] = [
        0x66, 0xBE, t[0], t[1], t[2], t[3], // mov esi, tseg
        0x66, 0xBF, l[0], l[1], l[2], l[3], // mov edi, leak
        0x66, 0xB9, 0x10, 0x00, 0x00, 0x00, // mov ecx, 16
        0x67, 0x66, 0x8B, 0x16, // mov edx, [esi]
        0x67, 0x66, 0x89, 0x17, // mov [edi], edx
        0x66, 0x83, 0xC6, 0x04, // add esi, 4
        0x66, 0x83, 0xC7, 0x04, // add edi, 4
        0xE2, 0xEE, // loop
        0x67, 0x66, 0xC7, 0x05, m[0], m[1], m[2], m[3], 0x48, 0x41, 0x43,
        0x4B, // mov dword [marker], "HACK"
        0xFA, 0xF4, // cli; hlt
    ];
    // SAFETY: the OS role writes where an attacker would; the firmware must make these
    // writes harmless (0x38000 is locked SMRAM, the pen page is re-installed by SMM).
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), at as *mut u8, code.len()) };
}

fn leak_state() -> (bool, bool) {
    // SAFETY: reading payload-owned low RAM (usable in the memory map).
    unsafe {
        let marker = core::ptr::read_volatile(marker() as *const u32) == 0x4B43_4148;
        let mut leaked = false;
        for i in 0..16u64 {
            let v = core::ptr::read_volatile((leak_buf() + 4 * i) as *const u32);
            leaked |= v != 0 && v != 0xFFFF_FFFF;
        }
        (marker, leaked)
    }
}

/// Run the storm of APMC 4 with nothing pending; every CPU must still answer after it.
pub fn storm(r: &mut Report, plan: &Plan) {
    if plan.apmc4_storm == 0 {
        return;
    }
    let tm = cpus::timer();
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
    let back = crate::smi_query().is_some();
    let aps_ok = !plan.storm_two_cpus
        || tm.wait_until(20_000_000, || {
            cpus::APS
                .iter()
                .skip(1)
                .any(|a| a.done.load(Ordering::SeqCst) == 1)
        });
    r.check(
        "apmc4-storm",
        back && aps_ok,
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
            back && aps_ok
        ),
    );
}

/// Null SMI round trip, measured from the OS side (PM timer, 100 diagnostic queries).
pub fn smi_round_trip() {
    let tm = cpus::timer();
    let mut sw = tm.start();
    for _ in 0..100 {
        let _ = crate::smi_query();
    }
    println!(
        "payload: null SMI round trip {} us (mean of 100)",
        tm.elapsed_us(&mut sw) / 100
    );
}

pub fn run(r: &mut Report, plan: &Plan, tseg: Option<u32>) {
    if plan.expect_cpus == 0 {
        return;
    }
    let ports = HwPorts;
    let hp = CpuHp::new(&ports);
    let Ok(topo) = hp.count() else {
        r.check(
            "hotplug",
            false,
            format_args!("CPU hotplug register block unreadable"),
        );
        return;
    };
    let pmbase = ich9::pmbase(&ports).unwrap_or(ich9::PMBASE);
    let tm = cpus::timer();
    if plan.attack {
        if let Some(t) = tseg {
            plant(sipi_plant(), t);
            plant(0x38000, t);
            plant(u64::from(smm_handler::first_smi::PEN_BASE), t);
        }
    }
    println!("payload: ready for hotplug of {} CPU(s)", plan.expect_cpus);
    let mut onlined = 0u32;
    let mut slots: heapless::Vec<u32, 64> = heapless::Vec::new();
    let mut sw = tm.start();
    // Bounded: 120 s of waiting for events at most.
    while onlined < plan.expect_cpus && tm.elapsed_us(&mut sw) < 120_000_000 {
        let gpe = ports.inb(pmbase + ich9::GPE0_STS) & ich9::GPE0_CPU_HOTPLUG != 0;
        let mut new: heapless::Vec<(u32, u32), 64> = heapless::Vec::new();
        scan(&hp, topo.possible, &mut new);
        if new.is_empty() {
            if gpe {
                ports.outb(pmbase + ich9::GPE0_STS, ich9::GPE0_CPU_HOTPLUG);
            }
            tm.delay_us(500);
            continue;
        }
        let mut t_event = tm.start();
        ports.outb(pmbase + ich9::GPE0_STS, ich9::GPE0_CPU_HOTPLUG);
        if plan.early_init {
            // A hostile or eager OS starts the CPU before the SMI (R18).
            for &(_, apic) in &new {
                init_sipi_sipi(apic);
            }
        }
        if plan.sipi_attack {
            // The new CPU waits at the gate inside SMM with its LAPIC in wait-for-SIPI;
            // a SIPI to planted code must not move it there while it is in SMM (QEMU
            // builds without the SIPI-in-SMM fix do; the first-SMI handler's self-SIPI
            // narrows that window).
            for &(_, apic) in &new {
                let _ = lapic::send_ipi(apic, lapic::ICR_SMI);
                tm.delay_us(5_000);
                let _ = lapic::send_ipi(apic, lapic::ICR_STARTUP | (sipi_plant() >> 12) as u32);
                tm.delay_us(5_000);
            }
        }
        if plan.attack {
            // SMI IPIs to the new CPUs before the hotplug SMI: they must only ever reach
            // the firmware's first-SMI handler.
            for &(_, apic) in &new {
                let _ = lapic::send_ipi(apic, lapic::ICR_SMI);
            }
        }
        raise_apmc4();
        for &(uid, _) in &new {
            hp.select(uid);
            hp.control(cpuhp::CTL_CLEAR_INSERT);
        }
        for &(uid, apic) in &new {
            let ok = init_sipi_sipi(apic) && tm.wait_until(3_000_000, || find_ap(apic).is_some());
            let us = tm.elapsed_us(&mut t_event);
            let (slot, smbase, count) = match find_ap(apic) {
                Some(a) => {
                    let s = a.slot.load(Ordering::SeqCst);
                    (s as u32, (s >> 32) as u32, a.count.load(Ordering::SeqCst))
                }
                None => (u32::MAX, 0, 0),
            };
            if plan.attack {
                // After relocation: more SMI IPIs; they must land in TSEG.
                for _ in 0..3 {
                    let _ = lapic::send_ipi(apic, lapic::ICR_SMI);
                    tm.delay_us(1000);
                }
            }
            let fresh = slot != u32::MAX && !slots.contains(&slot) && smbase >= 0x10_0000;
            let _ = slots.push(slot);
            onlined += 1;
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
    }
    r.check(
        "hotplug-count",
        onlined == plan.expect_cpus,
        format_args!(
            "{} of {} expected hot-added CPUs came online",
            onlined, plan.expect_cpus
        ),
    );
    if plan.attack {
        let (marker, leaked) = leak_state();
        r.check(
            "attack-nothing-planted-ran-in-smm",
            !leaked,
            format_args!(
                "planted code ran: {}; bytes copied out of TSEG: {}",
                marker, leaked
            ),
        );
    }
    // Every CPU, old and new, still takes SMIs and comes back.
    let back = crate::smi_query().is_some();
    r.check(
        "smi-after-hotplug",
        back,
        format_args!("BSP SMI round trip after hot-add"),
    );
}
