/* The host ROM's SMM entry stub, copied to every slot at SMBASE + 0x8000 (imitating
   coreboot's x86_64 smm_stub.S): real mode -> protected mode -> long mode on TSEG's
   identity map, CR4 = PAE only (SSE stays off, as coreboot's SMM), the slot's stack, the
   SMM module's Rust entry, RSM. Included through global_asm! by host-rom/src/smm_stub.rs,
   after platform/asm/gdt.S and long_mode.S; operands are the parameter offsets P_* and
   the selectors that tseg.rs writes into the far pointers.
   Each copy carries its own parameters at offset P_GDT (0x100) and above, filled in by
   host-rom/src/smm/tseg.rs; they are reached through CS (base = the slot's SMBASE, so
   the copy is at CS:0x8000) in real mode and through EBX (the copy's linear address)
   afterwards. */
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

    .code16
    .global smm_stub_start
smm_stub_start:
    /* 1. EBX = this copy's linear address (P_SELF). */
    movl %cs:(0x8000 + {self_}), %ebx
    /* 2. Load TSEG's GDT (P_GDT: limit, base). */
    lgdtl %cs:(0x8000 + {gdt})
    /* 3. Protected mode on, far jump through P_FAR32 to smm_stub32 of this copy. */
    PROTECTED_MODE_ON
    ljmpl *%cs:(0x8000 + {far32})

    .code32
    .global smm_stub32
smm_stub32:
    /* 4. Flat data segments. */
    LOAD_DATA_SEGMENTS
    /* 5. Long mode on TSEG's page tables (P_CR3), far jump through P_FAR64. */
    LONG_MODE_ON SMM_CR4, {cr3}(%ebx), SMM_CR0_CLEAR, SMM_CR0_SET
    ljmpl *{far64}(%ebx)

    .code64
    .global smm_stub64
smm_stub64:
    /* 6. The slot's stack (P_STACK), smm_entry(slot = P_SLOT) at P_ENTRY, then RSM. */
    movq {stack}(%rbx), %rsp
    movl {slot}(%rbx), %edi
    movq {entry}(%rbx), %rax
    call *%rax
    rsm
    .global smm_stub_end
smm_stub_end:
    .code64
