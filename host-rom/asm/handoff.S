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
    /* 2. Leave long mode through the flat 32-bit code segment. */
    leaq 1f(%rip), %rax
    pushq $GDT_SEL_CODE32
    pushq %rax
    lretq
    .code32
    /* 3. Flat data segments. */
1:  LOAD_DATA_SEGMENTS
    /* 4. Paging off: clear CR0.PG. */
    movl %cr0, %eax
    andl $~CR0_PG, %eax
    movl %eax, %cr0
    /* 5. Long mode off: clear EFER.LME. */
    movl $MSR_EFER, %ecx
    rdmsr
    andl $~EFER_LME, %eax
    wrmsr
    /* 6. PAE off: clear CR4.PAE. */
    movl %cr4, %eax
    andl $~CR4_PAE, %eax
    movl %eax, %cr4
    /* 7. The payload's stack, its one argument (the table) and a null return address. */
    movl %ebp, %esp
    pushl %esi
    pushl $0
    jmp *%edi
    .code64
