/* The checker payload's entry: payload_entry32, called like a coreboot payload (32-bit
   protected mode, paging off, coreboot table pointer at [esp+4]), through long mode to
   payload_main on the boot CPU and payload_ap_main on the APs the payload starts.
   Included through global_asm! by payload/src/entry.rs, after platform/asm/gdt.S,
   long_mode.S, page_tables.S and ap_entry64.S; operands max = MAX_CPUS,
   stack = AP_STACK_SIZE. */
    .section .text.entry32, "ax"
    .code32
    .global payload_entry32
payload_entry32:
    /* 1. Interrupts off, string operations upwards; EBX = the coreboot tables. */
    cli
    cld
    movl 4(%esp), %ebx
    /* 2. The payload's own flat GDT (below), reload CS and the data segments. */
    lgdtl boot_gdt_desc
    ljmpl $GDT_SEL_CODE32, $1f
1:  LOAD_DATA_SEGMENTS
    movl %ebx, payload_table_ptr
    /* 3. Identity map the low 4 GiB at payload_pt (platform/asm/page_tables.S). */
    IDENTITY_MAP_4GIB payload_pt
    /* 4. enter_long_mode32: long mode on those tables, far jump to payload_entry64. APs
          enter here too, from the AP trampoline (platform/asm/ap_trampoline.S). */
    ENTER_LONG_MODE32 payload_pt, payload_entry64

    .code64
payload_entry64:
    /* 5. Count the CPU in: the first through is the boot CPU, later ones are APs. */
    movl $1, %eax
    lock xaddl %eax, payload_cpu_count(%rip)
    testl %eax, %eax
    jnz 3f
    /* 6. Boot CPU: its stack, then payload_main(tables), which does not return. */
    leaq payload_bsp_stack_top(%rip), %rsp
    movl payload_table_ptr(%rip), %edi
    call payload_main
2:  cli
    hlt
    jmp 2b
    /* 7. AP with 1-based index EAX: its stack, then payload_ap_main(index). */
3:  AP_ENTRY64 {max}, {stack}, payload_ap_stacks, payload_ap_main

    /* The image's one copy of the GDT (platform/asm/gdt.S). */
    .section .rodata.boot_gdt, "a"
    BOOT_GDT

    .section .data.payload_vars, "aw"
    .balign 8
    .global payload_table_ptr
payload_table_ptr: .long 0
    .global payload_cpu_count
payload_cpu_count: .long 0

    .section .bss.payload_pt, "aw", @nobits
    .balign 4096
    .global payload_pt
payload_pt: .skip IDENTITY_MAP_SIZE
    .balign 16
    .skip 65536
    .global payload_bsp_stack_top
payload_bsp_stack_top:
    .global payload_ap_stacks
payload_ap_stacks: .skip {stack} * {max}
    .code64
