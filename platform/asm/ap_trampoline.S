/* The AP trampoline of the two boot images: where an application processor starts after
   INIT-SIPI-SIPI (real mode, CS = page >> 4, IP = 0) and how it reaches the image's
   enter_long_mode32. Shared file in platform/asm/, included through global_asm! once per
   image, after gdt.S and long_mode.S: by host-rom/src/mp.rs (copied to
   smm_handler::layout::window::AP_TRAMPOLINE) and by payload/src/entry.rs (copied to a
   page the payload picks at run time).
   The blob is copied, not run in place: the copier must write the copy's linear address
   of ap_trampoline32 into the offset of ap_trampoline_far (page +
   (ap_trampoline32 - ap_trampoline_start)); everything else is position independent. */
    .section .rodata.ap_trampoline, "a"
    .code16
    .global ap_trampoline_start
ap_trampoline_start:
    /* 1. Interrupts off, string operations upwards. */
    cli
    cld
    /* 2. Load the image's flat GDT through the descriptor copy below (CS-relative). */
    lgdtl %cs:(ap_trampoline_gdt_desc - ap_trampoline_start)
    /* 3. Protected mode on (CR0.PE). */
    PROTECTED_MODE_ON
    /* 4. Far jump through the patched pointer to this copy's 32-bit code. */
    ljmpl *%cs:(ap_trampoline_far - ap_trampoline_start)

    .code32
    .global ap_trampoline32
ap_trampoline32:
    /* 5. Flat data segments. */
    LOAD_DATA_SEGMENTS
    /* 6. On to the image's long-mode entry (long_mode.S), an absolute address. */
    movl $enter_long_mode32, %eax
    jmp *%eax

    .balign 4
ap_trampoline_gdt_desc:
    /* lgdt operand: u16 limit, u32 linear base of boot_gdt (gdt.S) */
    .word BOOT_GDT_SIZE - 1
    .long boot_gdt
    .balign 4
    /* m16:32 far pointer: u32 offset (patched at copy time), u16 selector. */
    .global ap_trampoline_far
ap_trampoline_far:
    .long 0
    .word GDT_SEL_CODE32
    .global ap_trampoline_end
ap_trampoline_end:
    .code64
