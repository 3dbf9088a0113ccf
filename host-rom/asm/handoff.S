/* payload_handoff(entry: EDI, table: ESI, stack: EDX): enter an ELF payload the way
   coreboot does on x86 — 32-bit protected mode, paging off, flat segments, the coreboot
   table pointer at [esp+4]. Included by host-rom/src/payload.rs. */
    .section .text.handoff, "ax"
    .code64
    .global payload_handoff
payload_handoff:
    /* 1. Interrupts off; keep the stack top, which rdmsr below would clobber. */
    cli
    movl %edx, %ebp
    /* 2. Leave long mode through the flat 32-bit code segment (selector 0x08). */
    leaq 1f(%rip), %rax
    pushq $0x08
    pushq %rax
    lretq
    .code32
    /* 3. Flat data segments (selector 0x10). */
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    /* 4. Paging off: clear CR0.PG (bit 31). */
    movl %cr0, %eax
    andl $0x7FFFFFFF, %eax
    movl %eax, %cr0
    /* 5. Long mode off: clear EFER.LME (bit 8 of MSR 0xC0000080). */
    movl $0xC0000080, %ecx
    rdmsr
    andl $0xFFFFFEFF, %eax
    wrmsr
    /* 6. PAE off: clear CR4.PAE (bit 5). */
    movl %cr4, %eax
    andl $0xFFFFFFDF, %eax
    movl %eax, %cr4
    /* 7. The payload's stack, its one argument (the table) and a null return address. */
    movl %ebp, %esp
    pushl %esi
    pushl $0
    jmp *%edi
    .code64
