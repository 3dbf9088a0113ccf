//! 32-bit entry (coreboot's calling convention: table pointer at [esp+4]) → own GDT and
//! page tables → long mode → `payload_main`. APs started by the payload come through a
//! real-mode trampoline and join the same path.
//!
//! The code is `payload/asm/entry32.S` on the boot pieces shared with the host ROM in
//! `platform/asm/` (GDT, page-table builder, long-mode entry, AP trampoline, AP stacks).

use core::ptr::addr_of;

/// Bytes of each AP's stack.
pub const AP_STACK_SIZE: usize = 16 * 1024;
/// CPUs the payload runs at most (the BSP included); later arrivals halt.
pub const MAX_CPUS: usize = 64;

core::arch::global_asm!(
    concat!(
        include_str!("../../platform/asm/gdt.S"),
        include_str!("../../platform/asm/long_mode.S"),
        include_str!("../../platform/asm/page_tables.S"),
        include_str!("../../platform/asm/ap_entry64.S"),
        include_str!("../asm/entry32.S"),
        include_str!("../../platform/asm/ap_trampoline.S")
    ),
    max = const MAX_CPUS,
    stack = const AP_STACK_SIZE,
    options(att_syntax)
);

/// On libpayload: libpayload's start code (long mode on its own identity map, SSE on,
/// console up) calls `main`. The payload's APs still come up through its own trampoline
/// and `payload_entry32` path, so `main` builds the page tables that path loads, counts
/// the boot CPU in (APs get indices from 1), and runs `payload_main` on the payload's
/// boot-CPU stack with libpayload's coreboot table pointer.
#[cfg(feature = "libpayload")]
#[no_mangle]
extern "C" fn main(_argc: i32, _argv: *mut *mut u8) -> i32 {
    extern "C" {
        static mut payload_pt: [u64; 6 * 512];
        static payload_bsp_stack_top: u8;
        static payload_cpu_count: core::sync::atomic::AtomicU32;
    }
    // SAFETY: payload_pt is the payload's own .bss page-table area, used by no one until
    // an AP starts; the layout is IDENTITY_MAP_4GIB's (platform/asm/page_tables.S).
    unsafe {
        let pt = &mut *core::ptr::addr_of_mut!(payload_pt);
        let base = pt.as_ptr() as u64;
        pt.fill(0);
        pt[0] = (base + 0x1000) | PTE_P | PTE_RW;
        for i in 0..4u64 {
            pt[512 + i as usize] = (base + 0x2000 + i * 0x1000) | PTE_P | PTE_RW;
        }
        for j in 0..2048u64 {
            pt[1024 + j as usize] = (j << 21) | PTE_P | PTE_RW | PTE_PS;
        }
    }
    // SAFETY: an atomic in the payload's .data; no AP runs yet.
    unsafe { payload_cpu_count.store(1, core::sync::atomic::Ordering::SeqCst) };
    // SAFETY: a pointer libpayload's start code wrote before `main`; coreboot's tables
    // lie below 4 GiB.
    let tables = unsafe { core::ptr::addr_of!(libpayload_sys::cb_header_ptr).read() } as u64 as u32;
    // SAFETY: payload_main never returns; the stack is the payload's own boot-CPU stack
    // (64 KiB in .bss), larger than libpayload's, and nothing else uses it.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "call payload_main",
            top = in(reg) core::ptr::addr_of!(payload_bsp_stack_top),
            in("edi") tables,
            options(noreturn)
        )
    }
}

#[cfg(feature = "libpayload")]
const PTE_P: u64 = 1 << 0;
#[cfg(feature = "libpayload")]
const PTE_RW: u64 = 1 << 1;
#[cfg(feature = "libpayload")]
const PTE_PS: u64 = 1 << 7;

extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline32: u8;
    static ap_trampoline_far: u8;
    static ap_trampoline_end: u8;
}

/// Copy the AP trampoline (`platform/asm/ap_trampoline.S`) to `page` (a usable 4 KiB
/// page below 1 MiB) and point its far jump at the copy's 32-bit code.
///
/// # Safety
/// `page` must be usable RAM below 1 MiB that nothing else uses.
pub unsafe fn install_ap_trampoline(page: u32) {
    // SAFETY: the four symbols lie in one blob in .rodata, in this order; the caller
    // owns `page`, which is larger than the blob.
    unsafe {
        let s = addr_of!(ap_trampoline_start);
        let len = addr_of!(ap_trampoline_end) as usize - s as usize;
        let far = addr_of!(ap_trampoline_far) as usize - s as usize;
        let off32 = addr_of!(ap_trampoline32) as usize - s as usize;
        core::ptr::copy_nonoverlapping(s, page as usize as *mut u8, len);
        let p = (page as usize + far) as *mut u32;
        p.write_unaligned(page + off32 as u32);
    }
}
