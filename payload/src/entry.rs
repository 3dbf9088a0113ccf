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
