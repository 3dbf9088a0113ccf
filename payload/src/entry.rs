//! 32-bit entry (coreboot's calling convention: table pointer at [esp+4]) → own GDT and
//! page tables → long mode → `payload_main`. APs started by the payload come through a
//! real-mode trampoline and join the same path.

/// Bytes of each AP's stack.
pub const AP_STACK_SIZE: usize = 16 * 1024;
/// CPUs the payload runs at most (the BSP included); later arrivals halt.
pub const MAX_CPUS: usize = 64;

core::arch::global_asm!(
    r#"
    .section .text.entry32, "ax"
    .code32
    .global payload_entry32
payload_entry32:
    cli
    cld
    movl 4(%esp), %ebx                /* coreboot tables */
    lgdtl payload_gdt_desc
    ljmpl $0x08, $1f
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %ebx, payload_table_ptr
    /* Identity map 4 GiB with 2 MiB pages in .bss (zeroed by the loader). */
    movl $payload_pt, %edi
    leal 0x1003(%edi), %eax
    movl %eax, (%edi)
    leal 0x1000(%edi), %edx
    leal 0x2003(%edi), %eax
    movl $4, %ecx
2:  movl %eax, (%edx)
    addl $0x1000, %eax
    addl $8, %edx
    loop 2b
    leal 0x2000(%edi), %edx
    movl $0x83, %eax
    xorl %esi, %esi
    movl $2048, %ecx
3:  movl %eax, (%edx)
    movl %esi, 4(%edx)
    addl $0x200000, %eax
    adcl $0, %esi
    addl $8, %edx
    loop 3b
    .global payload_long_mode32
payload_long_mode32:
    movl $0x620, %eax                 /* PAE | OSFXSR | OSXMMEXCPT */
    movl %eax, %cr4
    movl $payload_pt, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9FFFFFFB, %eax
    orl $0x80000003, %eax
    movl %eax, %cr0
    ljmpl $0x18, $payload_entry64

    .code64
payload_entry64:
    movl $1, %eax
    lock xaddl %eax, payload_cpu_count(%rip)
    testl %eax, %eax
    jnz 5f
    leaq payload_bsp_stack_top(%rip), %rsp
    movl payload_table_ptr(%rip), %edi
    call payload_main
4:  cli
    hlt
    jmp 4b
5:  cmpl ${max}, %eax
    jae 4b
    movl %eax, %edi
    movl %eax, %ecx
    imulq ${stack}, %rcx
    leaq payload_ap_stacks(%rip), %rsp
    addq %rcx, %rsp
    call payload_ap_main
    jmp 4b

    .section .rodata.payload_gdt, "a"
    .balign 16
    .global payload_gdt
payload_gdt:
    .quad 0
    .quad 0x00CF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0x00AF9A000000FFFF
payload_gdt_desc:
    .word 31
    .long payload_gdt

    .section .rodata.payload_ap_trampoline, "a"
    .code16
    .global payload_ap_trampoline_start
payload_ap_trampoline_start:
    cli
    cld
    lgdtl %cs:(6f - payload_ap_trampoline_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *%cs:(payload_ap_trampoline_far - payload_ap_trampoline_start)
    .code32
    .global payload_ap_trampoline32
payload_ap_trampoline32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $payload_long_mode32, %eax
    jmp *%eax
    .balign 4
6:  .word 31
    .long payload_gdt
    .balign 4
    /* m16:32 far pointer to payload_ap_trampoline32 in the copy; patched at copy time. */
    .global payload_ap_trampoline_far
payload_ap_trampoline_far:
    .long 0
    .word 0x08
    .global payload_ap_trampoline_end
payload_ap_trampoline_end:
    .code64

    .section .data.payload_vars, "aw"
    .balign 8
    .global payload_table_ptr
payload_table_ptr: .long 0
    .global payload_cpu_count
payload_cpu_count: .long 0

    .section .bss.payload_pt, "aw", @nobits
    .balign 4096
payload_pt: .skip 6 * 4096
    .balign 16
    .skip 65536
payload_bsp_stack_top:
    .global payload_ap_stacks
payload_ap_stacks: .skip {stack} * {max}
"#,
    max = const MAX_CPUS,
    stack = const AP_STACK_SIZE,
    options(att_syntax)
);

extern "C" {
    static payload_ap_trampoline_start: u8;
    static payload_ap_trampoline32: u8;
    static payload_ap_trampoline_far: u8;
    static payload_ap_trampoline_end: u8;
}

/// Copy the AP trampoline to `page` (a usable 4 KiB page below 1 MiB) and patch its far
/// jump for that address.
///
/// # Safety
/// `page` must be usable RAM below 1 MiB that nothing else uses.
pub unsafe fn install_ap_trampoline(page: u32) {
    // SAFETY: the symbols bracket one blob in .rodata; the caller owns `page`.
    unsafe {
        let s = &payload_ap_trampoline_start as *const u8;
        let e = &payload_ap_trampoline_end as *const u8;
        let len = e as usize - s as usize;
        core::ptr::copy_nonoverlapping(s, page as *mut u8, len);
        let far = &payload_ap_trampoline_far as *const u8 as usize - s as usize;
        let off32 = &payload_ap_trampoline32 as *const u8 as usize - s as usize;
        core::ptr::write_unaligned((page as usize + far) as *mut u32, page + off32 as u32);
    }
}
