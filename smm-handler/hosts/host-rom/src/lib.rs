//! The host ROM's SMM module: the host-specific rest of its SMM entry. Every CPU that
//! takes an SMI at a relocated SMBASE comes here from its slot's entry stub, in long mode
//! with SSE off and no stack yet ([`smm_slot_entry`]: the stack pool), then runs
//! [`smm_entry`] on a 4 KiB stack, as coreboot's x86_64 SMM stage calls its C handler.
//! What only this host has: the parameter block the boot code fills, a serial console,
//! the stack pool and its own SMI lock (coreboot brings its own). Everything else is
//! `smm_handler::entry`.
//!
//! The diagnostic query is answered only while the parameter block's boot-phase flag is
//! set (the boot code's slot check), or always when built with the `diag-query` feature
//! (the test image's module, `build/host-rom-smm-diag.elf`).
//!
//! SMM rules: no panics, no `core::fmt`, no floats, bounded loops; checked on the built
//! object by `fwtool check-smm` (tests/tests/smm_object.rs).
#![no_std]

use core::mem::offset_of;
use core::ptr::addr_of;
use core::sync::atomic::Ordering;

use q35::io::HwPorts;
use q35::serial::{Serial, COM1};
use smm_handler::boot_info::{SmmParams, PARAMS_MAGIC};
use smm_handler::entry::{self, Entry, Locked, SmiEntries, SmiLock};
use smm_handler::first_smi::{FixedWindow, Window};
use smm_handler::host::{Host, HostData};
use smm_handler::layout::tseg;
use smm_handler::log::{Console, Level};
use smm_handler::slots::{self, Slots, MAX_SLOTS};
use smm_handler::{eject, hotplug, smm_log};

extern crate fw_rt;

/// Filled in by the host ROM's boot code before SMRAM is closed. After that only the slot
/// table in it changes, and only from SMM.
#[no_mangle]
#[used]
pub static mut SMM_PARAMS: SmmParams = SmmParams::empty();

static ENTRIES: SmiEntries = SmiEntries::new();

/// Polls of the pool for a free stack before a CPU leaves SMM without running the
/// handler (only past `tseg::MAX_STACKS` CPUs in SMM at once, for seconds).
const STACK_WAIT_POLLS: u32 = 100_000_000;

// smm_slot_entry: where every slot's stub jumps (the module's entry), EDI = the slot, in
// long mode, with no stack yet.
// 1. A slot out of range: RSM.
// 2. Without a stack (R12, R14): a RELOCATING slot returns at once, so its CPU reaches the
//    pen however many CPUs hold stacks; a REMOVING one is marked PARKED with a
//    compare-and-swap and halts here for good. Bounded retries when the state moves.
// 3. A pool stack: the one its slot still owns (its earlier run was cut short: an INIT
//    inside SMM under TCG), else the first free one by compare-and-swap of its owner from
//    0 to slot + 1. None free: count the wait (once per entry), poll again after
//    `pause`, bounded; then count the give-up and RSM without the handler (the monarch
//    serves APMC 4 whatever this CPU does).
// 4. smm_entry(slot, stack) on that stack, then release it (owner back to 0) and RSM.
// Registers: R14 = &SMM_PARAMS, R13 = slot, R15 = slot + 1, R12 = stack index; R12-R15
// are callee-saved across smm_entry.
core::arch::global_asm!(
    ".section .text.smm_slot_entry, \"ax\"",
    ".global smm_slot_entry",
    "smm_slot_entry:",
    "    leaq SMM_PARAMS(%rip), %r14",
    "    cmpl ${max_slots}, %edi",
    "    jae 9f",
    "    movl %edi, %r13d",
    "    movl $8, %r8d",
    "1:  movl {off_state}(%r14,%r13,4), %eax",
    "    cmpl ${relocating}, %eax",
    "    je 9f",
    "    cmpl ${removing}, %eax",
    "    jne 3f",
    "    movl ${parked}, %ecx",
    "    lock cmpxchgl %ecx, {off_state}(%r14,%r13,4)",
    "    je 8f",
    "    decl %r8d",
    "    jnz 1b",
    "    jmp 9f",
    "8:  cli",
    "    hlt",
    "    jmp 8b",
    "3:  leal 1(%r13), %r15d",
    "    movl {off_count}(%r14), %ecx",
    "    cmpl ${max_stacks}, %ecx",
    "    jbe 4f",
    "    movl ${max_stacks}, %ecx",
    "4:  xorl %r12d, %r12d",
    "5:  cmpl %ecx, %r12d",
    "    jae 6f",
    "    cmpl %r15d, {off_owner}(%r14,%r12,4)",
    "    je 10f",
    "    incl %r12d",
    "    jmp 5b",
    "6:  movl ${wait_polls}, %r8d",
    "7:  xorl %r12d, %r12d",
    "11: cmpl %ecx, %r12d",
    "    jae 12f",
    "    xorl %eax, %eax",
    "    lock cmpxchgl %r15d, {off_owner}(%r14,%r12,4)",
    "    je 10f",
    "    incl %r12d",
    "    jmp 11b",
    "12: cmpl ${wait_polls}, %r8d",
    "    jne 13f",
    "    lock incl {off_waits}(%r14)",
    "13: pause",
    "    decl %r8d",
    "    jnz 7b",
    "    lock incl {off_gave_up}(%r14)",
    "    jmp 9f",
    "10: movl {off_tseg_base}(%r14), %eax",
    "    addl ${stacks_base}, %eax",
    "    leal 1(%r12), %edx",
    "    imull ${stack_size}, %edx, %edx",
    "    addl %edx, %eax",
    "    movq %rax, %rsp",
    "    movl %r13d, %edi",
    "    movl %r12d, %esi",
    "    call smm_entry",
    "    movl %r15d, %eax",
    "    xorl %ecx, %ecx",
    "    lock cmpxchgl %ecx, {off_owner}(%r14,%r12,4)",
    "9:  rsm",
    max_slots = const MAX_SLOTS,
    off_state = const offset_of!(SmmParams, slots) + offset_of!(Slots, state),
    relocating = const slots::RELOCATING,
    removing = const slots::REMOVING,
    parked = const slots::PARKED,
    off_count = const offset_of!(SmmParams, stack_count),
    max_stacks = const tseg::MAX_STACKS,
    off_owner = const offset_of!(SmmParams, stack_owner),
    off_waits = const offset_of!(SmmParams, stack_waits),
    off_gave_up = const offset_of!(SmmParams, stack_gave_up),
    wait_polls = const STACK_WAIT_POLLS,
    off_tseg_base = const offset_of!(SmmParams, tseg_base),
    stacks_base = const tseg::STACKS_BASE,
    stack_size = const tseg::STACK_SIZE,
    options(att_syntax)
);
static LOCK: SmiLock = SmiLock::new();

fn params() -> &'static SmmParams {
    // SAFETY: the boot code wrote SMM_PARAMS before closing SMRAM; afterwards only its
    // atomic slot table is written, so shared references are sound.
    unsafe { &*addr_of!(SMM_PARAMS) }
}

struct SerialConsole;

impl Console for SerialConsole {
    fn write(&self, bytes: &[u8]) {
        Serial::new(&HwPorts, COM1).write_bytes(bytes);
    }
}

/// The host ROM as the handler's host, on the CPU at `slot`.
struct HostRom(&'static SmmParams, u32);

impl Host for HostRom {
    type Ports = HwPorts;
    fn ports(&self) -> &HwPorts {
        &HwPorts
    }
    fn data(&self) -> HostData<'_> {
        HostData {
            slot_smbase: self.0.slot_smbases(),
            possible_apic_ids: smm_handler::first_smi::possible_apic_ids(),
            slots: &self.0.slots,
            // Each slot's stub copy knows its own slot index: no routing table.
            routes: None,
        }
    }
    fn now_us(&self) -> u64 {
        // SAFETY: RDTSC has no side effects; CR4.TSD is clear in SMM.
        let t = unsafe { core::arch::x86_64::_rdtsc() };
        t / self.0.boot.tsc_per_us.max(1)
    }
    fn log(&self, level: Level, template: &str, args: &[u64]) {
        if level as u32 <= self.0.boot.log_level {
            SerialConsole.line(level, template, args);
        }
    }
    fn send_ipi(&self, apic: u32, icr_low: u32) -> bool {
        q35::lapic::send_ipi(apic, icr_low).is_ok()
    }
    fn window(&self) -> &dyn Window {
        &FixedWindow
    }
    fn current_apic(&self) -> u32 {
        q35::lapic::cpuid_apic_id()
    }
    fn zero_save_state(&self, smbase: u32) {
        // SAFETY: the handler passes the SMBASE of one of this host's slots in SMRAM,
        // whose CPU was ejected or is gone.
        unsafe { smm_handler::first_smi::zero_save_state(smbase) }
    }
    fn slot_forgotten(&self, slot: usize) {
        // The CPU no longer exists: a pool stack it held (parked or reset inside SMM)
        // is free again.
        let me = slot as u32 + 1;
        for owner in &self.0.stack_owner {
            let _ = owner.compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
    fn still_monarch(&self) -> bool {
        LOCK.still_owned_by(self.1, self.now_us())
    }
    fn expect_stall(&self, us: u64) {
        LOCK.expect_stall(self.now_us(), us);
    }
}

/// The Rust entry, called by [`smm_slot_entry`] with the slot index and the pool stack it
/// runs on.
#[no_mangle]
pub extern "sysv64" fn smm_entry(slot: u32, stack: u32) {
    let p = params();
    if p.magic != PARAMS_MAGIC {
        return;
    }
    let Some(&smbase) = p.slot_smbases().get(slot as usize) else {
        return;
    };
    let host = HostRom(p, slot);
    // The host allows the diagnostic query only during its boot phase (the boot code
    // checks every CPU's slot with it, then clears the flag before the locks).
    // SAFETY: a plain aligned u32 of the parameter block in SMRAM, written only by the
    // boot code before SMRAM was locked.
    let boot_phase = unsafe { core::ptr::read_volatile(addr_of!(p.boot_phase)) } != 0;
    // Only APMC 4 has handlers; other SMIs (diagnostic queries, OS SMI IPIs) touch the
    // lock only while a service runs or an eject is left to do: no CPU leaves SMM before
    // that is done (R14). A CPU that reads port 0xB2 while the monarch ejects a CPU does
    // not read 4: QEMU drops the access as re-entrant I/O into the LPC device
    // (`docs/qemu.md#q-eject-blocks-lpc-io`).
    match ENTRIES.begin(&HwPorts, &p.slots, slot, smbase, boot_phase) {
        Entry::Park => entry::halt_forever(),
        Entry::Continue { apmc }
            if apmc == entry::APMC_CPU_HOTPLUG || LOCK.is_held() || eject::pending(&host) =>
        {
            hot_plug(&host, slot)
        }
        Entry::Continue { .. } | Entry::Leave => {}
    }
    // SAFETY: the bottom of the pool stack this CPU runs on, in TSEG (smm_slot_entry
    // passes an index below the pool's size).
    if !unsafe { entry::canary_intact(tseg::pool_stack(p.tseg_base, stack)) } {
        smm_log!(
            host,
            Error,
            "stack overflow on slot {} (pool stack {})",
            slot,
            stack
        );
        entry::halt_forever();
    }
}

/// The monarch reports (and clears) how many SMI entries had to wait for a pool stack
/// since the last report, and how many gave up waiting.
fn report_stack_waits(host: &HostRom) {
    let waits = host.0.stack_waits.swap(0, Ordering::SeqCst);
    let gave_up = host.0.stack_gave_up.swap(0, Ordering::SeqCst);
    if gave_up != 0 {
        smm_log!(
            host,
            Warn,
            "{} SMI entries waited for a free SMM stack, {} gave up waiting",
            waits,
            gave_up
        );
    } else if waits != 0 {
        smm_log!(
            host,
            Info,
            "{} SMI entries waited for a free SMM stack, {} gave up waiting",
            waits,
            gave_up
        );
    }
}

/// Most services one CPU runs again for ejects still pending after its own (each one
/// ejects every parked target; a target that never parks is ejected all the same).
const PENDING_RERUNS: u32 = 3;

/// APMC 4 on the CPU at `slot`: lead or wait under the SMI lock. A waiter runs the
/// service once more when the monarch left an eject for another CPU (it was the target
/// itself); a CPU to be ejected parks (`smm_handler::eject`).
fn hot_plug(host: &HostRom, slot: u32) {
    let service = |recovered: bool| {
        if recovered {
            hotplug::recover_lost_monarch(host);
        }
        entry::dispatch(host, entry::APMC_CPU_HOTPLUG);
    };
    let mut ended = LOCK.run(host, slot, service);
    if ended == Locked::Led {
        report_stack_waits(host);
    }
    // An eject left for another CPU (the monarch was a target itself and parked after it
    // released the lock, or an eject stayed undecided): run the service again, a bounded
    // number of times, rather than leave SMM with it undone (R14).
    for _ in 0..PENDING_RERUNS {
        match ended {
            Locked::Park => entry::halt_forever(),
            Locked::Led | Locked::Done if eject::pending(host) => {
                smm_log!(
                    host,
                    Info,
                    "slot {}: an eject is still pending (the monarch was a target): running the service again",
                    slot
                );
                ended = LOCK.run(host, slot, service);
            }
            Locked::Led | Locked::Done | Locked::GaveUp => break,
        }
    }
    if ended == Locked::Park {
        entry::halt_forever();
    }
    // The monarch itself was a target: it parks now that the lock is free.
    if entry::park_if_removing(&host.0.slots, slot) {
        entry::halt_forever();
    }
}

smm_handler::smm_panic_handler!();
