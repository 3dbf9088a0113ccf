/* linux_handoff(entry: RDI, zero_page: RSI): enter Linux at its 64-bit entry the way the
   x86 boot protocol asks: long mode on the firmware's identity map of the low 4 GiB
   (host-rom/src/entry.rs, in the reserved firmware window), interrupts off, a GDT with
   flat 64-bit code at 0x10 (__BOOT_CS) and flat data at 0x18 (__BOOT_DS), CS, DS, ES, SS
   loaded from it, RSI = the zero page. Included by host-rom/src/linux.rs after
   platform/asm/gdt.S, whose descriptor bits it uses. */
.set LINUX_BOOT_CS, 0x10
.set LINUX_BOOT_DS, 0x18

    .section .text.linux_handoff, "ax"
    .code64
    .global linux_handoff
linux_handoff:
    /* 1. Interrupts off. */
    cli
    /* 2. The boot protocol's GDT (it lives in the reserved firmware window). */
    lgdt linux_gdt_desc(%rip)
    /* 3. Data segments: __BOOT_DS. The stack stays the boot CPU's, also reserved. */
    movw $LINUX_BOOT_DS, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    /* 4. CS: __BOOT_CS, through a far return. */
    leaq 1f(%rip), %rax
    pushq $LINUX_BOOT_CS
    pushq %rax
    lretq
1:  /* 5. No firmware values in the other registers; RSI keeps the zero page. */
    xorl %eax, %eax
    xorl %ebx, %ebx
    xorl %ecx, %ecx
    xorl %edx, %edx
    xorl %ebp, %ebp
    xorl %r8d, %r8d
    xorl %r9d, %r9d
    xorl %r10d, %r10d
    xorl %r11d, %r11d
    xorl %r12d, %r12d
    xorl %r13d, %r13d
    xorl %r14d, %r14d
    xorl %r15d, %r15d
    /* 6. The kernel's startup_64. */
    jmpq *%rdi

    .section .data.linux_gdt, "aw"
    .balign 16
linux_gdt:
    /* 0x00 null, 0x08 unused */
    .quad 0
    .quad 0
    /* 0x10 __BOOT_CS: flat 64-bit code */
    .quad GDT_LIMIT_MAX | GDT_RW | GDT_E | GDT_S | GDT_P | GDT_L | GDT_G
    /* 0x18 __BOOT_DS: flat data */
    .quad GDT_LIMIT_MAX | GDT_RW | GDT_S | GDT_P | GDT_DB | GDT_G
linux_gdt_end:
    /* lgdt operand in long mode: u16 limit, u64 base */
linux_gdt_desc:
    .word linux_gdt_end - linux_gdt - 1
    .quad linux_gdt
    .code64
