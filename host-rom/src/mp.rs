//! Application processors: INIT-SIPI-SIPI into a trampoline in the default-SMBASE window
//! (`smm_handler::layout::window::AP_TRAMPOLINE`, before the window becomes SMRAM, as
//! coreboot also starts its APs there), a stack each, and a mailbox loop the BSP
//! drives during SMM setup. At hand-off every AP parks in `cli; hlt` inside the
//! firmware's reserved window, where the payload can restart it with INIT-SIPI-SIPI.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use q35::lapic;

use crate::timer;

/// SIPI page of the AP trampoline.
pub const AP_TRAMPOLINE: u32 = smm_handler::layout::window::AP_TRAMPOLINE.base;
/// Most CPUs the ROM starts (one per SMM slot).
pub const MAX_CPUS: usize = smm_handler::slots::MAX_SLOTS;
const AP_STACK_SIZE: usize = 16 * 1024;

pub const CMD_IDLE: u32 = 0;
pub const CMD_SMM_QUERY: u32 = 1;
pub const CMD_PARK: u32 = 2;

/// Per AP (index = order of check-in, from 1): APIC ID, command, result.
pub struct ApSlot {
    pub apic_id: AtomicU32,
    pub cmd: AtomicU32,
    pub result_slot: AtomicU64,
    pub result_count: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const AP_INIT: ApSlot = ApSlot {
    apic_id: AtomicU32::new(u32::MAX),
    cmd: AtomicU32::new(CMD_IDLE),
    result_slot: AtomicU64::new(0),
    result_count: AtomicU64::new(0),
};
pub static APS: [ApSlot; MAX_CPUS] = [AP_INIT; MAX_CPUS];
pub static CHECKED_IN: AtomicU32 = AtomicU32::new(0);

#[repr(C, align(16))]
struct Stacks([u8; AP_STACK_SIZE * MAX_CPUS]);
#[no_mangle]
static mut AP_STACKS: Stacks = Stacks([0; AP_STACK_SIZE * MAX_CPUS]);

core::arch::global_asm!(
    r#"
    .section .rodata.ap_trampoline, "a"
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    cli
    cld
    lgdtl %cs:(ap_gdt_desc - ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $({base} + ap_trampoline32 - ap_trampoline_start)
    .code32
ap_trampoline32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $enter_long_mode32, %eax
    jmp *%eax
    .balign 4
ap_gdt_desc:
    .word 31
    .long rom_gdt
    .global ap_trampoline_end
ap_trampoline_end:

    .section .text.ap_entry64, "ax"
    .code64
    .global ap_entry64
ap_entry64:
    /* eax = 1-based AP index from the entry counter; stack = AP_STACKS[index - 1]. */
    cmpl ${max}, %eax
    jae 2f
    movl %eax, %edi
    movl %eax, %ecx
    imulq ${size}, %rcx
    leaq AP_STACKS(%rip), %rsp
    addq %rcx, %rsp
    call ap_main
2:  cli
    hlt
    jmp 2b
"#,
    base = const AP_TRAMPOLINE,
    max = const MAX_CPUS,
    size = const AP_STACK_SIZE,
    options(att_syntax)
);

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_end: u8;
}

#[no_mangle]
extern "sysv64" fn ap_main(index: u32) -> ! {
    let i = index as usize;
    let Some(me) = APS.get(i) else { park() };
    lapic::enable();
    me.apic_id.store(lapic::cpuid_apic_id(), Ordering::SeqCst);
    CHECKED_IN.fetch_add(1, Ordering::SeqCst);
    loop {
        match me.cmd.load(Ordering::SeqCst) {
            CMD_SMM_QUERY => {
                let (s, c) = smm_handler::diag::query().unwrap_or((u64::MAX, 0));
                me.result_slot.store(s, Ordering::SeqCst);
                me.result_count.store(c, Ordering::SeqCst);
                me.cmd.store(CMD_IDLE, Ordering::SeqCst);
            }
            CMD_PARK => park(),
            _ => core::hint::spin_loop(),
        }
    }
}

/// `cli; hlt` forever. An SMI wakes the CPU, which then halts again after RSM.
pub fn park() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}

/// Copy the trampoline to `AP_TRAMPOLINE` and start every present CPU except this one
/// with INIT-SIPI-SIPI; wait (bounded) until `expected` APs checked in.
pub fn start_aps(apic_ids: &[u32], bsp_apic: u32) -> Result<u32, u32> {
    // SAFETY: the linker places both symbols around one blob in .rodata.
    let (start, end) = unsafe {
        (
            &ap_trampoline_start as *const u8,
            &ap_trampoline_end as *const u8,
        )
    };
    let len = end as usize - start as usize;
    // SAFETY: the trampoline page is RAM that nothing uses before SMM setup (inside the
    // default-SMBASE window, which stays unlocked until after MP init).
    unsafe { core::ptr::copy_nonoverlapping(start, AP_TRAMPOLINE as *mut u8, len) };
    let vector = AP_TRAMPOLINE >> 12;
    let mut expected = 0;
    for &id in apic_ids.iter().filter(|&&id| id != bsp_apic) {
        expected += 1;
        let r = lapic::send_ipi(id, lapic::ICR_INIT)
            .and_then(|_| {
                timer::delay_us(10_000);
                lapic::send_ipi(id, lapic::ICR_STARTUP | vector)
            })
            .and_then(|_| {
                timer::delay_us(200);
                lapic::send_ipi(id, lapic::ICR_STARTUP | vector)
            });
        if let Err(e) = r {
            log::error!("INIT-SIPI-SIPI to APIC {} failed: {:?}", id, e);
        }
    }
    let ok = timer::wait_until(1_000_000, || CHECKED_IN.load(Ordering::SeqCst) >= expected);
    let got = CHECKED_IN.load(Ordering::SeqCst);
    if ok {
        Ok(got)
    } else {
        Err(got)
    }
}

/// The AP mailbox entry of the AP with `apic_id`.
pub fn ap_by_apic(apic_id: u32) -> Option<&'static ApSlot> {
    APS.iter()
        .skip(1)
        .find(|a| a.apic_id.load(Ordering::SeqCst) == apic_id)
}

/// Run `cmd` on one AP and wait (bounded) until it is done.
pub fn run_on_ap(ap: &ApSlot, cmd: u32) -> bool {
    ap.cmd.store(cmd, Ordering::SeqCst);
    timer::wait_until(2_000_000, || ap.cmd.load(Ordering::SeqCst) == CMD_IDLE)
}

pub fn park_all() {
    for ap in APS.iter().skip(1) {
        if ap.apic_id.load(Ordering::SeqCst) != u32::MAX {
            ap.cmd.store(CMD_PARK, Ordering::SeqCst);
        }
    }
}
