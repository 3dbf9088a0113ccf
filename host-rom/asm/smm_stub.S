/* The host ROM's SMM entry stub, copied to every slot at SMBASE + 0x8000 (imitating
   coreboot's x86_64 smm_stub.S): an IDT of limit 0, the INIT-reset-state check, then real
   mode -> protected mode -> long mode on TSEG's page tables, CR4 = PAE only (SSE stays
   off, as coreboot's SMM), then a jump to the SMM module's entry with the slot number,
   which takes a stack of the pool, runs the handler and executes the RSM. Included
   through global_asm! by host-rom/src/smm_stub.rs, after platform/asm/gdt.S, long_mode.S
   and smm-handler/asm/pen_context.S; operands are the parameter offsets P_*, the
   save-state offsets (relative to SMBASE, smm_handler::save_state) and the selectors
   that tseg.rs writes into the far pointers.
   Each copy carries its own parameters at offset P_GDT and above, filled in by
   host-rom/src/smm/tseg.rs; they are reached through CS (base = the slot's SMBASE, so
   the copy is at CS:0x8000 and the save state at CS:0xFE00) in real mode and through EBX
   (the copy's linear address) afterwards. */
    .section .rodata.smm_stub, "a"

/* The far pointers hold the selectors of smm_stub.rs SEL_CODE32 / SEL_CODE64; they must
   be those of the GDT in platform/asm/gdt.S, whose bytes fill TSEG's GDT. */
.if GDT_SEL_CODE32 != {sel_code32} || GDT_SEL_CODE64 != {sel_code64}
.error "smm_stub.rs SEL_CODE32/SEL_CODE64 differ from platform/asm/gdt.S"
.endif

/* SMM runs the module compiled without SSE: */
.set SMM_CR4, CR4_PAE                  /* 0x20: PAE only, OSFXSR/OSXMMEXCPT clear */
.set SMM_CR0_CLEAR, CR0_CD | CR0_NW    /* caches on; EM and MP as SMM entry left them */
.set SMM_CR0_SET, CR0_PG | CR0_PE      /* 0x80000001 */

/* Where the per-copy parameters begin (smm_stub.rs P_GDT): the code must end below it.
   An absolute symbol, so that the object checks (tests/tests/smm_stub.rs) can read it. */
    .global smm_stub_params
.set smm_stub_params, {gdt}

/* The INIT reset state (docs/qemu.md#t1): CS selector 0xF000 at RIP 0xFFF0, real mode. */
.set INIT_CS_SELECTOR, 0xF000
.set INIT_RIP, 0xFFF0

    .code16
    .global smm_stub_start
smm_stub_start:
    /* 0. An IDT of SMRAM's own with limit 0 before anything else (R16): QEMU keeps the
          interrupted context's IDTR on SMM entry (docs/qemu.md#q-entry-state), so a fault
          here would vector through OS memory. With limit 0 no vector has an entry, and
          any exception ends in a shutdown, in real, protected and long mode alike. */
    lidtl %cs:(0x8000 + smm_stub_idt - smm_stub_start)

    /* 1. A CPU the OS sent INIT and then an SMI enters here with the reset state as its
          saved context (docs/qemu.md#t1, #t5). RSM into it would run the firmware's reset
          code at OS time; a SIPI that QEMU delivers inside SMM (docs/qemu.md#q-sipi-in-smm)
          would run OS code here. So never go on to long mode or the SMI lock: send it
          straight to the pen with the first-SMI handler's return context and RSM, where
          it halts until the OS starts it with INIT-SIPI-SIPI. Real-mode F000:FFF0 counts
          whatever the CS base (QEMU also maps the reset vector at 0xFFFF0). */
    cmpw $INIT_CS_SELECTOR, %cs:{ss_cs_selector}
    jne 2f
    cmpl $INIT_RIP, %cs:{ss_rip}
    jne 2f
    testb $CR0_PE, %cs:{ss_cr0}
    jnz 2f
    /* EDI = this CPU's SMBASE (from the save state); DS base is 0 at SMM entry, so
       save-state field OFF lies at OFF(%edi). */
    movl %cs:{ss_smbase}, %edi
    PEN_RETURN_CONTEXT %edi, 0
    rsm

2:  /* 2. EBX = this copy's linear address (P_SELF). */
    movl %cs:(0x8000 + {self_}), %ebx
    /* 3. Load TSEG's GDT (P_GDT: limit, base). */
    lgdtl %cs:(0x8000 + {gdt})
    /* 4. Protected mode on, far jump through P_FAR32 to smm_stub32 of this copy. */
    PROTECTED_MODE_ON
    ljmpl *%cs:(0x8000 + {far32})

    .code32
    .global smm_stub32
smm_stub32:
    /* 5. Flat data segments. */
    LOAD_DATA_SEGMENTS
    /* 6. Long mode on TSEG's page tables (P_CR3), far jump through P_FAR64. */
    LONG_MODE_ON SMM_CR4, {cr3}(%ebx), SMM_CR0_CLEAR, SMM_CR0_SET
    ljmpl *{far64}(%ebx)

    .code64
    .global smm_stub64
smm_stub64:
    /* 7. Jump to the module's entry (P_ENTRY) with EDI = the slot (P_SLOT): no stack
          here, it picks one of the pool, and it ends with the RSM. */
    movl {slot}(%rbx), %edi
    movq {entry}(%rbx), %rax
    jmp *%rax

    /* The lidt operand of step 0: limit 0 (assembled here, so the image shows it);
       tseg.rs points the base at the copy itself, in SMRAM. */
    .global smm_stub_idt
smm_stub_idt:
    .word 0
    .long 0
    .global smm_stub_end
smm_stub_end:
    .code64
