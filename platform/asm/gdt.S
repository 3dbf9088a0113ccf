/* The flat GDT of the two boot images (host ROM and payload): selectors, descriptors, and
   the macros that use them. Shared file in platform/asm/, included through global_asm! by
   host-rom/src/entry.rs, host-rom/src/mp.rs, host-rom/src/smm_stub.rs and
   payload/src/entry.rs. It only defines assembler symbols and macros; each image emits
   the table once with BOOT_GDT (host-rom/asm/reset.S in flash, payload/asm/entry32.S in
   .rodata), so the global symbols boot_gdt, boot_gdt_end and boot_gdt_desc exist once
   per image. The host ROM also copies the table's bytes into TSEG for its SMM entry
   stubs (host-rom/src/smm_stub.rs gdt()).

   Selectors: 0x00 null, 0x08 flat 32-bit code, 0x10 flat data, 0x18 64-bit code.

   Descriptor fields (one 64-bit value per entry; Intel SDM Vol. 3A, 3.4.5):
     bits 15:0   segment limit 15:0
     bits 39:16  base 23:0 (0: every segment is flat)
     bit  40     A, accessed (0; the CPU sets it)
     bit  41     R/W: code readable, data writable
     bit  42     C/E: conforming code, expand-down data (0)
     bit  43     E, executable: 1 for code, 0 for data
     bit  44     S, descriptor type: 1 for code or data (0 would be a system segment)
     bits 46:45  DPL, privilege level (0)
     bit  47     P, present
     bits 51:48  segment limit 19:16
     bit  52     AVL, free for software (0)
     bit  53     L, 64-bit code segment
     bit  54     D/B, default operand size 32 bits (must be 0 when L is 1)
     bit  55     G, granularity: the limit counts 4 KiB units
     bits 63:56  base 31:24 (0) */
/* Guarded: several global_asm! blocks of one image include this file and, in the
   image's single LTO unit, end up in one assembly unit. */
.ifndef PLATFORM_GDT_S
.set PLATFORM_GDT_S, 1

.set GDT_SEL_CODE32, 0x08              /* flat 32-bit code */
.set GDT_SEL_DATA, 0x10                /* flat data (and stack) */
.set GDT_SEL_CODE64, 0x18              /* 64-bit code */
.set BOOT_GDT_SIZE, 4 * 8              /* four descriptors of 8 bytes */

.set GDT_LIMIT_MAX, 0xFFFF | (0xF << 48) /* limit 0xFFFFF: bits 15:0 and 51:48 */
.set GDT_RW, 1 << 41                   /* code readable / data writable */
.set GDT_E, 1 << 43                    /* executable: code segment */
.set GDT_S, 1 << 44                    /* code or data segment */
.set GDT_P, 1 << 47                    /* present */
.set GDT_L, 1 << 53                    /* 64-bit code */
.set GDT_DB, 1 << 54                   /* 32-bit default operand size */
.set GDT_G, 1 << 55                    /* limit in 4 KiB units: 0xFFFFF = 4 GiB */

/* BOOT_GDT: emit the table and its descriptor (for lgdt) into the current section,
   16-byte aligned. Once per image. */
.macro BOOT_GDT
    .balign 16
    .global boot_gdt
boot_gdt:
    /* 0x00: null */
    .quad 0
    /* 0x08: flat 32-bit code (0x00CF9A000000FFFF) */
    .quad GDT_LIMIT_MAX | GDT_RW | GDT_E | GDT_S | GDT_P | GDT_DB | GDT_G
    /* 0x10: flat data (0x00CF92000000FFFF) */
    .quad GDT_LIMIT_MAX | GDT_RW | GDT_S | GDT_P | GDT_DB | GDT_G
    /* 0x18: 64-bit code (0x00AF9A000000FFFF); base and limit are ignored in long mode */
    .quad GDT_LIMIT_MAX | GDT_RW | GDT_E | GDT_S | GDT_P | GDT_L | GDT_G
    .global boot_gdt_end
boot_gdt_end:
    /* lgdt operand: u16 limit (size - 1), u32 linear base */
    .global boot_gdt_desc
boot_gdt_desc:
    .word BOOT_GDT_SIZE - 1
    .long boot_gdt
.endm

/* LOAD_DATA_SEGMENTS: DS, ES, SS, FS, GS = the flat data selector (32- or 64-bit code;
   clobbers AX). */
.macro LOAD_DATA_SEGMENTS
    movw $GDT_SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
.endm

.endif
