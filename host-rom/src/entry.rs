//! Reset vector → 32-bit protected mode → copy the image to RAM → long mode → Rust.
//!
//! Runs from flash until the far jump into `entry64`. Page tables identity-map the low
//! 4 GiB with 2 MiB pages at `BOOT_PAGE_TABLES` (inside the firmware's reserved window,
//! so parked APs keep valid tables after the payload starts).

/// PML4 at +0, PDPT at +0x1000, four page directories at +0x2000..+0x5FFF.
pub const BOOT_PAGE_TABLES: u32 = 0x10_0000;

core::arch::global_asm!(
    r#"
    .section .resetvec, "ax"
    .code16
    .global reset_vector
reset_vector:
    jmp entry16

    .section .rom16, "ax"
    .code16
entry16:
    cli
    cld
    lgdtl %cs:(rom_gdt_desc - 0xFFFF0000)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $0x08, $entry32

    .balign 16
    .global rom_gdt
rom_gdt:
    .quad 0                          /* null */
    .quad 0x00CF9A000000FFFF         /* 0x08: 32-bit code, flat */
    .quad 0x00CF92000000FFFF         /* 0x10: data, flat */
    .quad 0x00AF9A000000FFFF         /* 0x18: 64-bit code */
    .global rom_gdt_end
rom_gdt_end:
    .global rom_gdt_desc
rom_gdt_desc:
    .word rom_gdt_end - rom_gdt - 1
    .long rom_gdt

    .code32
entry32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs

    /* Copy the Rust image from flash to RAM and clear .bss. */
    movl $_ram_image_lma, %esi
    movl $_ram_start, %edi
    movl $_ram_image_end, %ecx
    subl $_ram_start, %ecx
    rep movsb
    movl $_bss_start, %edi
    movl $_bss_end, %ecx
    subl $_bss_start, %ecx
    xorl %eax, %eax
    rep stosb

    /* Identity map 4 GiB: clear six pages, then PML4[0] -> PDPT, PDPT[0..3] -> PDs,
       2048 PD entries of 2 MiB (present, writable, PS). */
    movl ${pt}, %edi
    movl $(6 * 4096 / 4), %ecx
    xorl %eax, %eax
    rep stosl
    movl $({pt} + 0x1003), {pt}
    movl ${pt} + 0x1000, %edi
    movl $({pt} + 0x2003), %eax
    movl $4, %ecx
1:  movl %eax, (%edi)
    addl $0x1000, %eax
    addl $8, %edi
    loop 1b
    movl ${pt} + 0x2000, %edi
    movl $0x83, %eax
    xorl %edx, %edx
    movl $2048, %ecx
2:  movl %eax, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 2b

    .global enter_long_mode32
enter_long_mode32:
    /* Shared with the AP trampoline: PAE + OSFXSR + OSXMMEXCPT, CR3, EFER.LME, paging. */
    movl $0x620, %eax
    movl %eax, %cr4
    movl ${pt}, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9FFFFFFB, %eax           /* caches on (CD/NW clear), EM clear */
    orl $0x80000003, %eax            /* PG | MP | PE */
    movl %eax, %cr0
    ljmpl $0x18, $entry64

    .section .text.entry64, "ax"
    .code64
entry64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    /* The BSP takes the first pass; APs arrive here too (see mp.rs) and branch off. */
    movl $1, %eax
    lock xaddl %eax, cpu_entry_count(%rip)
    testl %eax, %eax
    jnz ap_entry64
    leaq bsp_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    call rom_main
3:  cli
    hlt
    jmp 3b

    .section .bss.bsp_stack, "aw", @nobits
    .balign 16
bsp_stack:
    .skip 65536
bsp_stack_top:

    .section .data.cpu_entry_count, "aw"
    .balign 4
    .global cpu_entry_count
cpu_entry_count:
    .long 0
    .code64
"#,
    pt = const BOOT_PAGE_TABLES,
    options(att_syntax)
);
