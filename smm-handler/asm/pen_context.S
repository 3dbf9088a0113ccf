/* The return context at the post-SMM pen (docs/protocol.md#fields-the-first-smi-handler-rewrites):
   macro PEN_RETURN_CONTEXT, shared by the first-SMI handler (smm-handler/asm/first_smi.S,
   step 5) and the host ROM's slot entry stub (host-rom/asm/smm_stub.S, INIT reset state).
   Included through global_asm! by smm-handler/src/first_smi.rs and
   host-rom/src/smm_stub.rs; both pass the same operands (save-state offsets relative to
   SMBASE from save_state.rs, the pen from layout.rs, PEN_CR0 from first_smi.rs), which
   become the PCTX_* symbols below.

   Every value is a constant, never derived from the saved context (R16); 64-bit fields
   are written as two dwords (docs/qemu.md#q-rsm). SMBASE and the general registers are
   left as they are. 16-bit code, DS base 0 with a 4 GiB limit (the SMM entry state,
   docs/qemu.md#q-entry-state); no stack, nothing that can fault. */

/* Outside the guard: every includer sets them from its own operands (.set may redefine
   an absolute symbol; both includers pass the same values). */
.set PCTX_ES, {pctx_es}                    /* save-state offsets from SMBASE */
.set PCTX_CS, {pctx_cs}
.set PCTX_SEG_SELECTOR, {pctx_seg_selector} /* inside one segment entry */
.set PCTX_SEG_ATTRIBUTES, {pctx_seg_attributes}
.set PCTX_SEG_LIMIT, {pctx_seg_limit}
.set PCTX_SEG_BASE, {pctx_seg_base}
.set PCTX_SEG_SIZE, {pctx_seg_size}
.set PCTX_RIP, {pctx_rip}
.set PCTX_RFLAGS, {pctx_rflags}
.set PCTX_CR0, {pctx_cr0}
.set PCTX_CR3, {pctx_cr3}
.set PCTX_CR4, {pctx_cr4}
.set PCTX_EFER, {pctx_efer}
.set PCTX_IDTR_LIMIT, {pctx_idtr_limit}
.set PCTX_IDTR_BASE, {pctx_idtr_base}
.set PCTX_DR7, {pctx_dr7}
.set PCTX_PEN, {pctx_pen}                  /* the pen page (layout::window::PEN) */
.set PCTX_PEN_CR0, {pctx_pen_cr0}          /* first_smi::PEN_CR0, the reset value */

/* Guarded: both includers end up in one assembly unit in the host ROM's boot image. */
.ifndef SMM_PEN_CONTEXT_S
.set SMM_PEN_CONTEXT_S, 1

.set PCTX_SEGMENTS, 6                      /* ES, CS, SS, DS, FS, GS */
.set PCTX_CODE16, 0x009B                   /* present, DPL 0, code, readable, accessed */
.set PCTX_DATA16, 0x0093                   /* present, DPL 0, data, writable, accessed */

/* PEN_RETURN_CONTEXT base, bias: rewrite the save state whose field at offset OFF (from
   SMBASE) lies at linear address bias + OFF + base, where base is a 32-bit register and
   bias a constant (first-SMI handler: EDI = 0, bias = the default SMBASE; slot stub: EDI
   = the slot's SMBASE, bias = 0). Afterwards RSM lands in real mode at pen:0000 with:
   CS = pen >> 4, base pen, attributes 0x009B, limit 0xFFFF; ES, SS, DS, FS, GS selector
   0, base 0, attributes 0x0093, limit 0xFFFF; RIP 0, RFLAGS 0x2, CR0 = PEN_CR0, CR3 0,
   CR4 0, EFER 0, IDTR limit 0x3FF base 0 (the real-mode vector table), DR7 0x400.
   Clobbers EAX, EBX, CX. */
.macro PEN_RETURN_CONTEXT base:req, bias:req
    xorl %eax, %eax
    /* 1. All six segments as real-mode data segments (CS is fixed up in step 2). */
    leal (\bias + PCTX_ES)(\base), %ebx
    movw $PCTX_SEGMENTS, %cx
.Lpctx_segment\@:
    movw %ax, PCTX_SEG_SELECTOR(%ebx)
    movw $PCTX_DATA16, PCTX_SEG_ATTRIBUTES(%ebx)
    movl $0xFFFF, PCTX_SEG_LIMIT(%ebx)
    movl %eax, PCTX_SEG_BASE(%ebx)
    movl %eax, (PCTX_SEG_BASE + 4)(%ebx)
    addl $PCTX_SEG_SIZE, %ebx
    loop .Lpctx_segment\@
    /* 2. CS: the pen page, real-mode code (its limit and upper base dword are set). */
    movw $(PCTX_PEN >> 4), (\bias + PCTX_CS + PCTX_SEG_SELECTOR)(\base)
    movw $PCTX_CODE16, (\bias + PCTX_CS + PCTX_SEG_ATTRIBUTES)(\base)
    movl $PCTX_PEN, (\bias + PCTX_CS + PCTX_SEG_BASE)(\base)
    /* 3. RIP = 0: the pen's first byte. */
    movl %eax, (\bias + PCTX_RIP)(\base)
    movl %eax, (\bias + PCTX_RIP + 4)(\base)
    /* 4. RFLAGS: only the reserved bit 1. */
    movl $2, (\bias + PCTX_RFLAGS)(\base)
    movl %eax, (\bias + PCTX_RFLAGS + 4)(\base)
    /* 5. CR0: the reset value, never the saved one; CR3, CR4, EFER: 0 (no paging, no
          long mode). */
    movl $PCTX_PEN_CR0, (\bias + PCTX_CR0)(\base)
    movl %eax, (\bias + PCTX_CR3)(\base)
    movl %eax, (\bias + PCTX_CR3 + 4)(\base)
    movl %eax, (\bias + PCTX_CR4)(\base)
    movl %eax, (\bias + PCTX_EFER)(\base)
    movl %eax, (\bias + PCTX_EFER + 4)(\base)
    /* 6. IDTR: the real-mode vector table; DR7: the reset value, no breakpoints. */
    movl $0x3FF, (\bias + PCTX_IDTR_LIMIT)(\base)
    movl %eax, (\bias + PCTX_IDTR_BASE)(\base)
    movl %eax, (\bias + PCTX_IDTR_BASE + 4)(\base)
    movl $0x400, (\bias + PCTX_DR7)(\base)
.endm

.endif
