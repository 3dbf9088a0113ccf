//! The host ROM's SMM module. Every CPU that takes an SMI at a relocated SMBASE comes
//! here from its slot's entry stub, in long mode with SSE off and a 2 KiB stack, exactly
//! as coreboot's x86_64 SMM stage calls its C handler. Like coreboot, one CPU at a time
//! runs the handlers (a lock, not a rendezvous); CPUs that lose wait for the winner to
//! finish, then leave.
//!
//! SMM rules: no panics, no `core::fmt`, no floats, bounded loops; checked on the built
//! object by `fwtool check-smm`.
#![no_std]

use core::ptr::{addr_of, read_volatile, write_volatile};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use q35::ich9::APM_CNT;
use q35::io::{HwPorts, PortIo};
use q35::serial::{Serial, COM1};
use smm_handler::diag;
use smm_handler::params::{SmmParams, MAX_SLOTS, PARAMS_MAGIC, STACK_CANARY};

extern crate fw_rt;

/// Filled in by the host ROM before SMRAM is closed; read-only afterwards.
#[no_mangle]
#[used]
pub static mut SMM_PARAMS: SmmParams = SmmParams::empty();

static LOCK: AtomicBool = AtomicBool::new(false);
#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
static ENTRIES: [AtomicU64; MAX_SLOTS] = [ZERO; MAX_SLOTS];

/// Save-state offsets (64-bit map, relative to SMBASE).
const SS_RAX: u32 = 0xFFF8;
const SS_RSI: u32 = 0xFFC8;
const SS_RDI: u32 = 0xFFC0;

/// How long a CPU that lost the lock waits for the winner (iterations of `pause`).
const LOCK_WAIT_SPINS: u32 = 50_000_000;

fn params() -> &'static SmmParams {
    // SAFETY: the host wrote SMM_PARAMS before closing SMRAM; nothing writes it after, so
    // shared references are sound.
    unsafe { &*addr_of!(SMM_PARAMS) }
}

fn console() -> Serial<'static, HwPorts> {
    Serial::new(&HwPorts, COM1)
}

fn read_ss(smbase: u32, off: u32) -> u64 {
    // SAFETY: `smbase` comes from the SMRAM parameter block for this CPU's own slot, so
    // the save state is this CPU's, inside TSEG.
    unsafe { read_volatile((smbase + off) as *const u64) }
}

fn write_ss(smbase: u32, off: u32, v: u64) {
    // SAFETY: as for `read_ss`; only this CPU's own save state is written.
    unsafe { write_volatile((smbase + off) as *mut u64, v) }
}

/// The Rust entry called by each slot's stub with the slot index.
#[no_mangle]
pub extern "sysv64" fn smm_entry(slot: u32) {
    let p = params();
    if p.magic != PARAMS_MAGIC || slot >= p.num_slots {
        return;
    }
    let (Some(&smbase), Some(count)) =
        (p.slot_smbase.get(slot as usize), ENTRIES.get(slot as usize))
    else {
        return;
    };
    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
    let apmc = HwPorts.inb(APM_CNT);

    // Per-CPU part: the diagnostic query answers in this CPU's own save state only.
    if apmc == diag::APMC_DIAG_QUERY && diag::is_request(read_ss(smbase, SS_RAX)) {
        let (rax, rsi, rdi) = diag::answer(slot, smbase, n);
        write_ss(smbase, SS_RSI, rsi);
        write_ss(smbase, SS_RDI, rdi);
        write_ss(smbase, SS_RAX, rax);
    }

    if LOCK
        .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        dispatch(apmc);
        LOCK.store(false, Ordering::Release);
    } else {
        let mut spins = 0;
        while LOCK.load(Ordering::Acquire) && spins < LOCK_WAIT_SPINS {
            core::hint::spin_loop();
            spins += 1;
        }
    }
    check_canary(p, slot);
}

fn dispatch(apmc: u8) {
    if apmc == smm_handler::APMC_CPU_HOTPLUG {
        smm_handler::cpu_hotplug_smi(&console());
    }
}

fn check_canary(p: &SmmParams, slot: u32) {
    let lo = p.stack_base + slot * p.stack_size;
    // SAFETY: the canary is the lowest qword of this slot's own stack in TSEG.
    if unsafe { read_volatile(lo as *const u64) } != STACK_CANARY {
        let c = console();
        c.write_bytes(b"[SMM ERROR] stack overflow on slot ");
        c.write_dec(u64::from(slot));
        c.write_bytes(b"\n");
        loop {
            // SAFETY: halting inside SMM after memory corruption: fail closed.
            unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
        }
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // Unreachable by construction (the object check finds no panicking code); halt
    // rather than return into an undefined state.
    loop {
        // SAFETY: stops this CPU inside SMM.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}
