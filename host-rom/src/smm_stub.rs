//! The SMM entry stub copied to every slot at SMBASE+0x8000 (`host-rom/asm/smm_stub.S`),
//! imitating coreboot's x86_64 smm_stub.S: an IDT of limit 0, then a CPU in the INIT reset
//! state goes straight back to the post-SMM pen; every other CPU goes real mode →
//! protected mode → long mode with an identity map of 4 GiB (page 0 not mapped), CR4 =
//! PAE only (SSE stays off), then a jump to the module's entry, which takes a stack of the
//! pool, runs the handler and ends with RSM. Each copy carries its own parameters at offset [`P_GDT`] and above, reached
//! through CS (whose base is the slot's SMBASE) in real mode and through EBX (the copy's
//! absolute address) afterwards. Also the boot GDT's bytes (`platform/asm/gdt.S`) for
//! TSEG.

use smm_handler::first_smi::PEN_CR0;
use smm_handler::layout::{tseg, window::PEN};
use smm_handler::save_state as ss;

// Per-copy parameters: offsets from the stub start, filled in by `smm/tseg.rs`. They sit
// at the top of the stub's STUB_MAX bytes; the code must end below P_GDT (checked by
// `tseg::load` at boot and by tests/tests/smm_object.rs).
/// Parameter: lgdt operand for TSEG's GDT (u16 limit, u32 base). The first parameter.
pub const P_GDT: usize = 0x1C0;
/// Parameter: u32 linear address of this copy (loaded into EBX).
pub const P_SELF: usize = 0x1C8;
/// Parameter: u32 address of TSEG's PML4 (CR3).
pub const P_CR3: usize = 0x1CC;
/// Parameter: m16:32 far pointer to this copy's 32-bit part.
pub const P_FAR32: usize = 0x1D0;
/// Parameter: m16:32 far pointer to this copy's 64-bit part.
pub const P_FAR64: usize = 0x1D8;
/// Parameter: u64 address of the SMM module's entry (`smm_slot_entry`).
pub const P_ENTRY: usize = 0x1E0;
/// Parameter: u32 slot number, the entry's argument.
pub const P_SLOT: usize = 0x1E8;

const _: () = assert!(P_SLOT + 4 <= tseg::STUB_MAX as usize);

core::arch::global_asm!(
    concat!(
        include_str!("../../platform/asm/gdt.S"),
        include_str!("../../platform/asm/long_mode.S"),
        include_str!("../../smm-handler/asm/pen_context.S"),
        include_str!("../asm/smm_stub.S")
    ),
    self_ = const P_SELF,
    gdt = const P_GDT,
    far32 = const P_FAR32,
    far64 = const P_FAR64,
    cr3 = const P_CR3,
    slot = const P_SLOT,
    entry = const P_ENTRY,
    sel_code32 = const SEL_CODE32,
    sel_code64 = const SEL_CODE64,
    // The INIT-reset-state check: save-state fields, relative to SMBASE (= CS base).
    ss_cs_selector = const ss::CS + ss::SEG_SELECTOR,
    ss_rip = const ss::RIP,
    ss_cr0 = const ss::CR0,
    ss_smbase = const ss::SMBASE,
    // smm-handler/asm/pen_context.S (PEN_RETURN_CONTEXT), the same operands as
    // smm-handler/src/first_smi.rs:
    pctx_es = const ss::ES,
    pctx_cs = const ss::CS,
    pctx_seg_selector = const ss::SEG_SELECTOR,
    pctx_seg_attributes = const ss::SEG_ATTRIBUTES,
    pctx_seg_limit = const ss::SEG_LIMIT,
    pctx_seg_base = const ss::SEG_BASE,
    pctx_seg_size = const ss::SEGMENT_SIZE,
    pctx_rip = const ss::RIP,
    pctx_rflags = const ss::RFLAGS,
    pctx_cr0 = const ss::CR0,
    pctx_cr3 = const ss::CR3,
    pctx_cr4 = const ss::CR4,
    pctx_efer = const ss::EFER,
    pctx_idtr_limit = const ss::IDTR_LIMIT,
    pctx_idtr_base = const ss::IDTR_BASE,
    pctx_dr7 = const ss::DR7,
    pctx_pen = const PEN.base,
    pctx_pen_cr0 = const PEN_CR0,
    options(att_syntax)
);

extern "C" {
    static smm_stub_start: u8;
    static smm_stub32: u8;
    static smm_stub64: u8;
    static smm_stub_idt: u8;
    static smm_stub_end: u8;
    static boot_gdt: u8;
    static boot_gdt_end: u8;
}

fn span(a: *const u8, b: *const u8) -> &'static [u8] {
    // SAFETY: `a`..`b` bracket one assembled blob in .rodata, alive for the program.
    unsafe { core::slice::from_raw_parts(a, b as usize - a as usize) }
}

/// The stub's code and the offsets of its 32- and 64-bit parts (the far pointers'
/// targets in each copy) and of its IDT descriptor.
pub struct StubCode {
    /// The whole stub, from `smm_stub_start` to `smm_stub_end`.
    pub code: &'static [u8],
    /// Offset of `smm_stub32` (target of the `P_FAR32` far pointer).
    pub off32: usize,
    /// Offset of `smm_stub64` (target of the `P_FAR64` far pointer).
    pub off64: usize,
    /// Offset of `smm_stub_idt`, the lidt operand: u16 limit (assembled as 0, never
    /// written), u32 base (written per copy: the copy's own address, in SMRAM).
    pub off_idt: usize,
}

/// The assembled stub, to be copied to each slot's SMBASE + 0x8000.
pub fn smm_stub() -> StubCode {
    // SAFETY: addresses of symbols defined in the global_asm above.
    let (s, s32, s64, idt, e) = unsafe {
        (
            &smm_stub_start as *const u8,
            &smm_stub32 as *const u8,
            &smm_stub64 as *const u8,
            &smm_stub_idt as *const u8,
            &smm_stub_end as *const u8,
        )
    };
    StubCode {
        code: span(s, e),
        off32: s32 as usize - s as usize,
        off64: s64 as usize - s as usize,
        off_idt: idt as usize - s as usize,
    }
}

/// The flat GDT of the boot code (null, 32-bit code, data, 64-bit code; the one copy in
/// `platform/asm/gdt.S`), which the slot stubs load too.
pub fn gdt() -> &'static [u8] {
    span(
        core::ptr::addr_of!(boot_gdt),
        core::ptr::addr_of!(boot_gdt_end),
    )
}

/// GDT selector of the flat 32-bit code segment (`GDT_SEL_CODE32` of `gdt.S`; the
/// stub's assembly checks that they agree).
pub const SEL_CODE32: u16 = 0x08;
/// GDT selector of the 64-bit code segment (`GDT_SEL_CODE64` of `gdt.S`, checked too).
pub const SEL_CODE64: u16 = 0x18;
