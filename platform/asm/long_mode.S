/* Control-register bits and the mode switches of the two boot images: real mode to
   protected mode (PROTECTED_MODE_ON), 32-bit protected mode to long mode (LONG_MODE_ON),
   and the boot images' own long-mode entry enter_long_mode32 (ENTER_LONG_MODE32). Shared
   file in platform/asm/, included through global_asm! after gdt.S by
   host-rom/src/entry.rs, host-rom/src/mp.rs, host-rom/src/smm_stub.rs and
   payload/src/entry.rs. Only assembler symbols and macros; ENTER_LONG_MODE32 is expanded
   once per image (host-rom/asm/reset.S, payload/asm/entry32.S), where both the boot CPU
   (falling through from the page-table setup) and every AP (from ap_trampoline.S) enter.
   SMM entry (host-rom/asm/smm_stub.S) uses LONG_MODE_ON with its own bits. */
/* Guarded: included by several global_asm! blocks that share one assembly unit. */
.ifndef PLATFORM_LONG_MODE_S
.set PLATFORM_LONG_MODE_S, 1

/* CR0 */
.set CR0_PE, 1 << 0                    /* protection enable */
.set CR0_MP, 1 << 1                    /* monitor coprocessor: WAIT honours CR0.TS */
.set CR0_EM, 1 << 2                    /* x87 emulation: x87 and SSE instructions fault */
.set CR0_NW, 1 << 29                   /* not write-through */
.set CR0_CD, 1 << 30                   /* cache disable */
.set CR0_PG, 1 << 31                   /* paging */
/* CR4 */
.set CR4_PAE, 1 << 5                   /* physical address extension (4-level paging) */
.set CR4_OSFXSR, 1 << 9                /* OS supports FXSAVE/FXRSTOR: SSE enabled */
.set CR4_OSXMMEXCPT, 1 << 10           /* OS handles SIMD floating-point exceptions (#XM) */
/* EFER */
.set MSR_EFER, 0xC0000080              /* extended feature enable register */
.set EFER_LME, 1 << 8                  /* long mode enable */

/* The boot images run Rust compiled with SSE: */
.set BOOT_CR4, CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT  /* 0x620 */
.set BOOT_CR0_CLEAR, CR0_CD | CR0_NW | CR0_EM          /* caches on, no x87 emulation */
.set BOOT_CR0_SET, CR0_PG | CR0_MP | CR0_PE            /* 0x80000003 */

/* PROTECTED_MODE_ON: set CR0.PE (16-bit code after lgdt; clobbers EAX). The caller's next
   instruction must be a far jump into a protected-mode code segment. */
.macro PROTECTED_MODE_ON
    movl %cr0, %eax
    orl $CR0_PE, %eax
    movl %eax, %cr0
.endm

/* LONG_MODE_ON cr4, cr3, cr0_clear, cr0_set: from 32-bit protected mode with paging off
   to long mode (compatibility submode); the caller then far-jumps to a 64-bit code
   segment. cr4, cr0_clear and cr0_set are constants, cr3 is an operand (immediate or
   memory) holding the PML4 address. Clobbers EAX, ECX, EDX. */
.macro LONG_MODE_ON cr4:req, cr3:req, cr0_clear:req, cr0_set:req
    /* 1. CR4 = cr4 (must include PAE). */
    movl $(\cr4), %eax
    movl %eax, %cr4
    /* 2. CR3 = the PML4. */
    movl \cr3, %eax
    movl %eax, %cr3
    /* 3. EFER.LME = 1. */
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    /* 4. CR0: clear cr0_clear, set cr0_set (with PG: long mode becomes active). */
    movl %cr0, %eax
    andl $~(\cr0_clear), %eax
    orl $(\cr0_set), %eax
    movl %eax, %cr0
.endm

/* ENTER_LONG_MODE32 pt, entry64: define the global enter_long_mode32 (32-bit code, flat
   segments loaded): long mode with BOOT_CR4 and the identity map at pt
   (page_tables.S), then a far jump to entry64 through the 64-bit code selector. */
.macro ENTER_LONG_MODE32 pt:req, entry64:req
    .global enter_long_mode32
enter_long_mode32:
    LONG_MODE_ON BOOT_CR4, $(\pt), BOOT_CR0_CLEAR, BOOT_CR0_SET
    ljmpl $GDT_SEL_CODE64, $\entry64
.endm

.endif
