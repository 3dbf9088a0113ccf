/* The host ROM's boot path from the reset vector to rom_main. Included through global_asm!
   by host-rom/src/entry.rs, after platform/asm/gdt.S, long_mode.S and page_tables.S;
   operand pt = BOOT_PAGE_TABLES. Runs from flash (.resetvec, .rom16; see rom.ld) until
   the far jump into entry64, which runs from the RAM copy. */
    .section .resetvec, "ax"
    .code16
    .global reset_vector
reset_vector:
    /* 1. At 0xFFFFFFF0 (CS base 0xFFFF0000): on to entry16 in the same 64 KiB. */
    jmp entry16

    .section .rom16, "ax"
    .code16
entry16:
    /* 2. Interrupts off, string operations upwards. */
    cli
    cld
    /* 3. Load the flat GDT (in flash, just below) through CS, whose base is 0xFFFF0000. */
    lgdtl %cs:(boot_gdt_desc - 0xFFFF0000)
    /* 4. Protected mode on, then into the 32-bit code segment. */
    PROTECTED_MODE_ON
    ljmpl $GDT_SEL_CODE32, $entry32

    /* The image's one copy of the GDT (platform/asm/gdt.S), in flash so that step 3 can
       reach it; the AP trampoline and the SMM stubs' TSEG copy use it too. */
    BOOT_GDT

    .code32
entry32:
    /* 5. Flat data segments. */
    LOAD_DATA_SEGMENTS
    /* 6. Copy the Rust image from flash to RAM and clear its .bss (symbols of rom.ld). */
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
    /* 7. Identity map the low 4 GiB at BOOT_PAGE_TABLES (platform/asm/page_tables.S). */
    IDENTITY_MAP_4GIB {pt}
    /* 8. enter_long_mode32: long mode on those tables, far jump to entry64. APs enter
          here too, from the AP trampoline (platform/asm/ap_trampoline.S). */
    ENTER_LONG_MODE32 {pt}, entry64

    .section .text.entry64, "ax"
    .code64
entry64:
    /* 9. Flat data segments in long mode. */
    LOAD_DATA_SEGMENTS
    /* 10. Count the CPU in: the first through is the boot CPU; every later one is an AP,
           which goes to ap_entry64 (host-rom/asm/mp.S) with its 1-based index in EAX. */
    movl $1, %eax
    lock xaddl %eax, cpu_entry_count(%rip)
    testl %eax, %eax
    jnz ap_entry64
    /* 11. Boot CPU: its stack, then rom_main, which does not return. */
    leaq bsp_stack_top(%rip), %rsp
    xorl %ebp, %ebp
    call rom_main
1:  cli
    hlt
    jmp 1b

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
