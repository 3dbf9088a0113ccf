//! The first-SMI handler, its context and the post-SMM pen
//! (`docs/protocol.md#relocation-step-by-step`), and the monarch's view of them.
//!
//! Both blobs are position-dependent 16-bit assembly (`smm-handler/asm/`), copied to
//! fixed addresses named in [`crate::layout::window`]. Their constants come from the
//! layout and save-state modules as `const` operands, so the assembly and the Rust side
//! cannot disagree about an offset.

use core::mem::offset_of;
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_bytes, write_volatile};
use core::sync::atomic::{AtomicU64, Ordering};

use crate::layout::window::{CONTEXT, HANDLER, PEN, PEN_SIGNAL, POSSIBLE};
use crate::layout::{Context, PossibleCpus, DEFAULT_SMBASE, GATE_CLOSED};
use crate::save_state as ss;
use crate::slots::MAX_SLOTS;
use q35::lapic;

/// Real-mode reset value of CR0 (CD, NW, ET) written into the return context; never
/// derived from the saved CR0 (R16).
pub const PEN_CR0: u32 = 0x6000_0010;
/// The INIT reset state's CS selector and RIP (`docs/qemu.md#t1`), and CR0.PE.
const INIT_CS_SELECTOR: u16 = 0xF000;
const INIT_RIP: u64 = 0xFFF0;
const CR0_PE: u32 = 1;
/// Real-mode segment attributes of the pen's return context: present, DPL 0, code
/// readable / data writable, accessed (`PCTX_CODE16`, `PCTX_DATA16` in the assembly).
const PEN_CODE16: u16 = 0x009B;
const PEN_DATA16: u16 = 0x0093;

/// ICR low of the handler's SIPI to itself: shorthand self, level assert, STARTUP with
/// the handler's page as vector.
const SELF_SIPI: u32 = lapic::ICR_SELF | lapic::ICR_STARTUP | (HANDLER.base >> 12);

/// Absolute address of save-state field `off` of a CPU at the default SMBASE.
const fn at(off: u32) -> u32 {
    DEFAULT_SMBASE + off
}

/// Absolute address of context field at `off`.
const fn ctx(off: usize) -> u32 {
    CONTEXT.base + off as u32
}

/// Absolute address of possible-CPU table field at `off`.
const fn pos(off: usize) -> u32 {
    POSSIBLE.base + off as u32
}

core::arch::global_asm!(
    concat!(
        include_str!("../asm/cpuid_apic_id.S"),
        include_str!("../asm/pen_context.S"),
        include_str!("../asm/first_smi.S"),
        include_str!("../asm/pen.S")
    ),
    icr_high = const lapic::XAPIC_DEFAULT_BASE + lapic::XAPIC_ICR_HIGH,
    icr_low = const lapic::XAPIC_DEFAULT_BASE + lapic::XAPIC_ICR_LOW,
    self_sipi = const SELF_SIPI,
    max_possible = const MAX_SLOTS,
    ctx_gate = const ctx(offset_of!(Context, gate)),
    ctx_new_smbase = const ctx(offset_of!(Context, new_smbase)),
    ctx_about_to_leave = const ctx(offset_of!(Context, about_to_leave)),
    ctx_round = const ctx(offset_of!(Context, round)),
    ctx_gate_taken_tsc = const ctx(offset_of!(Context, gate_taken_tsc)),
    pos_count = const pos(offset_of!(PossibleCpus, count)),
    pos_apic_ids = const pos(offset_of!(PossibleCpus, apic_ids)),
    pos_arrived = const pos(offset_of!(PossibleCpus, arrived)),
    pos_beat = const pos(offset_of!(PossibleCpus, beat)),
    ss_revision = const at(ss::REVISION),
    ss_smbase = const at(ss::SMBASE),
    default_smbase = const DEFAULT_SMBASE,
    // pen_context.S (PEN_RETURN_CONTEXT), the same operands as host-rom/src/smm_stub.rs:
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
    pen_signal = const PEN_SIGNAL,
    options(att_syntax)
);

extern "C" {
    static first_smi_handler_start: u8;
    static first_smi_handler_end: u8;
    static post_smm_pen_start: u8;
    static post_smm_pen_end: u8;
}

/// The bytes between two symbols of one assembled blob.
pub(crate) fn blob(start: *const u8, end: *const u8) -> &'static [u8] {
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: `start`/`end` bracket one assembled blob in .rodata, which lives for the
    // whole program and is never written.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// The assembled first-SMI handler, to be copied to [`HANDLER`].
pub fn handler_code() -> &'static [u8] {
    blob(
        addr_of!(first_smi_handler_start),
        addr_of!(first_smi_handler_end),
    )
}

/// The assembled post-SMM pen, to be copied to [`PEN`].
pub fn pen_code() -> &'static [u8] {
    blob(addr_of!(post_smm_pen_start), addr_of!(post_smm_pen_end))
}

fn context() -> *mut Context {
    CONTEXT.base as usize as *mut Context
}

fn possible_table() -> *mut PossibleCpus {
    POSSIBLE.base as usize as *mut PossibleCpus
}

/// Install the context (gate closed, round 1), the possible CPUs' APIC IDs by selector
/// (`possible`: none when CPU hotplug was not negotiated; the first [`MAX_SLOTS`] are
/// kept) with no arrival marks, the handler and the pen.
///
/// # Safety
/// The default-SMBASE window and the pen page must be writable RAM that nothing else
/// uses, and the window must not be locked yet (both hosts call this at boot, right
/// before the 0x9C lock).
pub unsafe fn install(possible: impl IntoIterator<Item = u32>) {
    let c = context();
    let t = possible_table();
    // SAFETY: the caller guarantees the window is ours; the context and the table fit
    // their regions (asserted in layout.rs) and the handler blob fits HANDLER (checked
    // below).
    unsafe {
        write_bytes(c, 0, 1);
        write_volatile(addr_of_mut!((*c).gate), GATE_CLOSED);
        // The arrival mark the handler stores; non-zero so that 0 means "not arrived".
        write_volatile(addr_of_mut!((*c).round), 1);
        write_bytes(t, 0, 1);
        let ids = addr_of_mut!((*t).apic_ids).cast::<u32>();
        let mut n = 0;
        for id in possible.into_iter().take(MAX_SLOTS) {
            write_volatile(ids.add(n), id);
            n += 1;
        }
        write_volatile(addr_of_mut!((*t).count), n as u32);
        let h = handler_code();
        let len = h.len().min(HANDLER.size as usize);
        core::ptr::copy_nonoverlapping(h.as_ptr(), HANDLER.base as usize as *mut u8, len);
        install_pen();
    }
}

/// (Re-)install the pen code and clear its signal byte.
///
/// # Safety
/// The pen page must be the reserved page in [`PEN`].
pub unsafe fn install_pen() {
    let p = pen_code();
    let len = p.len().min(PEN_SIGNAL as usize);
    // SAFETY: the caller guarantees the pen page is ours; the copy stops before the
    // signal byte.
    unsafe {
        core::ptr::copy_nonoverlapping(p.as_ptr(), PEN.base as usize as *mut u8, len);
        write_volatile((PEN.base + PEN_SIGNAL) as usize as *mut u8, 0);
    }
}

/// The possible CPUs' APIC IDs by selector, as boot code installed them (empty when CPU
/// hotplug was not negotiated). Only valid after [`install`]; in SMM the table is locked
/// SMRAM that nothing writes any more.
pub fn possible_apic_ids() -> &'static [u32] {
    let t = possible_table();
    // SAFETY: the table lies in the window, written once at boot before the 0x9C lock and
    // never again (only the separate `arrived` array changes); the count is clamped to
    // the array's length.
    unsafe {
        let n = (read_volatile(addr_of!((*t).count)) as usize).min(MAX_SLOTS);
        core::slice::from_raw_parts(addr_of!((*t).apic_ids).cast::<u32>(), n)
    }
}

/// The arrival mark of the possible CPU at `selector`, if the table has an entry for it.
fn arrived_mark(selector: u32) -> Option<*mut u32> {
    let i = selector as usize;
    // SAFETY: only an address is computed, inside the table (i < MAX_SLOTS).
    (i < MAX_SLOTS).then(|| unsafe {
        addr_of_mut!((*possible_table()).arrived)
            .cast::<u32>()
            .add(i)
    })
}

/// The gate beat of the possible CPU at `selector`, if the table has an entry for it.
fn beat_counter(selector: u32) -> Option<*const u32> {
    let i = selector as usize;
    // SAFETY: only an address is computed, inside the table (i < MAX_SLOTS).
    (i < MAX_SLOTS).then(|| unsafe { addr_of!((*possible_table()).beat).cast::<u32>().add(i) })
}

/// The monarch's view of the default-SMBASE window and the pen page.
pub trait Window {
    /// Compare-and-swap on the 64-bit gate; `true` if it held `old` and now holds `new`.
    fn gate_cas(&self, old: u64, new: u64) -> bool;
    /// Set the SMBASE the next admitted CPU takes.
    fn set_new_smbase(&self, smbase: u32);
    /// Non-zero once the admitted CPU is about to RSM.
    fn about_to_leave(&self) -> u8;
    /// Clear `about_to_leave` before the next admission.
    fn clear_about_to_leave(&self);
    /// The admitted CPU's TSC when it took the gate (0 = not yet), for the hand-off trace.
    fn gate_taken_tsc(&self) -> u64 {
        0
    }
    /// Clear [`Self::gate_taken_tsc`] before the next admission.
    fn clear_gate_taken_tsc(&self) {}
    /// The arrival mark of the possible CPU at `selector` (0 = not arrived); selectors
    /// beyond the table have none.
    fn arrived(&self, selector: u32) -> u32;
    /// Forget the arrival mark of the possible CPU at `selector`.
    fn clear_arrived(&self, selector: u32);
    /// How often the CPU at `selector` knocked at the closed gate so far (it changes only
    /// while that CPU runs). By default 0: no CPU is seen running.
    fn beat(&self, _selector: u32) -> u32 {
        0
    }
    /// Re-install the pen code (the page is OS-writable) and clear its signal byte.
    fn reset_pen(&self);
    /// The pen's signal byte (OS-writable: a liveness hint only, R4).
    fn pen_signal(&self) -> u8;
}

/// The real default-SMBASE window and pen page. Only valid in SMM after the window was
/// installed and locked.
pub struct FixedWindow;

impl Window for FixedWindow {
    fn gate_cas(&self, old: u64, new: u64) -> bool {
        // SAFETY: the gate is an 8-byte aligned u64 in SMRAM, shared only with the
        // first-SMI handler's `lock cmpxchg8b`.
        let gate = unsafe { AtomicU64::from_ptr(addr_of_mut!((*context()).gate)) };
        gate.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
    fn set_new_smbase(&self, smbase: u32) {
        // SAFETY: context field in SMRAM; written only while the gate is closed (R8).
        unsafe { write_volatile(addr_of_mut!((*context()).new_smbase), smbase) }
    }
    fn about_to_leave(&self) -> u8 {
        // SAFETY: context field in SMRAM written by the admitted CPU.
        unsafe { read_volatile(addr_of!((*context()).about_to_leave)) }
    }
    fn gate_taken_tsc(&self) -> u64 {
        // SAFETY: aligned context field in SMRAM, written by the admitted CPU.
        unsafe { read_volatile(addr_of!((*context()).gate_taken_tsc)) }
    }
    fn clear_gate_taken_tsc(&self) {
        // SAFETY: aligned context field in SMRAM.
        unsafe { write_volatile(addr_of_mut!((*context()).gate_taken_tsc), 0) }
    }
    fn clear_about_to_leave(&self) {
        // SAFETY: context field in SMRAM.
        unsafe { write_volatile(addr_of_mut!((*context()).about_to_leave), 0) }
    }
    fn arrived(&self, selector: u32) -> u32 {
        // SAFETY: `arrived_mark` points into the window's arrival marks in SMRAM.
        arrived_mark(selector).map_or(0, |p| unsafe { read_volatile(p) })
    }
    fn beat(&self, selector: u32) -> u32 {
        // SAFETY: `beat_counter` points into the window's beat counters in SMRAM.
        beat_counter(selector).map_or(0, |p| unsafe { read_volatile(p) })
    }
    fn clear_arrived(&self, selector: u32) {
        if let Some(p) = arrived_mark(selector) {
            // SAFETY: as for `arrived`.
            unsafe { write_volatile(p, 0) }
        }
    }
    fn reset_pen(&self) {
        // SAFETY: the pen page is reserved for this in the memory map; SMM re-installs
        // it because the OS can write it (R4).
        unsafe { install_pen() }
    }
    fn pen_signal(&self) -> u8 {
        // SAFETY: reading one byte of the reserved pen page (OS-writable: a hint only).
        unsafe { read_volatile((PEN.base + PEN_SIGNAL) as usize as *const u8) }
    }
}

/// Whether the save state of the CPU at `smbase` holds the INIT reset state: real-mode
/// F000:FFF0 (`docs/qemu.md#t1`), what a CPU the OS sent INIT and then an SMI saves.
/// RSM into it would run the firmware's reset code at OS time. The host ROM's slot stub
/// checks the same in assembly before long mode; coreboot's stub has no such check, so
/// the coreboot host makes it in its entry hook, before coreboot's SMI lock.
///
/// # Safety
/// `smbase` must be the calling CPU's own SMBASE in SMRAM (its save state is there).
pub unsafe fn in_init_reset_state(smbase: u32) -> bool {
    let at = |off: u32| (smbase + off) as usize;
    // SAFETY: the caller guarantees these fields are this CPU's own save state.
    unsafe {
        read_volatile(at(ss::CS + ss::SEG_SELECTOR) as *const u16) == INIT_CS_SELECTOR
            && read_volatile(at(ss::RIP) as *const u64) == INIT_RIP
            && read_volatile(at(ss::CR0) as *const u32) & CR0_PE == 0
    }
}

/// Rewrite the save state of the CPU at `smbase` so that RSM lands in the pen, halted
/// until the OS starts the CPU with INIT-SIPI-SIPI: the return context of
/// `PEN_RETURN_CONTEXT` (`asm/pen_context.S`), field by field, every value a constant
/// (R16). 64-bit fields are written as two dwords, as the assembly does.
///
/// # Safety
/// As for [`in_init_reset_state`]; the CPU must leave SMM right after (RSM).
pub unsafe fn return_to_pen(smbase: u32) {
    let w16 = |off: u32, v: u16| {
        // SAFETY: a field of this CPU's own save state (caller contract).
        unsafe { write_volatile((smbase + off) as usize as *mut u16, v) }
    };
    let w32 = |off: u32, v: u32| {
        // SAFETY: as above.
        unsafe { write_volatile((smbase + off) as usize as *mut u32, v) }
    };
    let w64 = |off: u32, v: u64| {
        w32(off, v as u32);
        w32(off + 4, (v >> 32) as u32);
    };
    for seg in [ss::ES, ss::CS, ss::SS, ss::DS, ss::FS, ss::GS] {
        w16(seg + ss::SEG_SELECTOR, 0);
        w16(seg + ss::SEG_ATTRIBUTES, PEN_DATA16);
        w32(seg + ss::SEG_LIMIT, 0xFFFF);
        w64(seg + ss::SEG_BASE, 0);
    }
    w16(ss::CS + ss::SEG_SELECTOR, (PEN.base >> 4) as u16);
    w16(ss::CS + ss::SEG_ATTRIBUTES, PEN_CODE16);
    w64(ss::CS + ss::SEG_BASE, u64::from(PEN.base));
    w64(ss::RIP, 0);
    w64(ss::RFLAGS, 2);
    w32(ss::CR0, PEN_CR0);
    w64(ss::CR3, 0);
    w32(ss::CR4, 0);
    w64(ss::EFER, 0);
    w32(ss::IDTR_LIMIT, 0x3FF);
    w64(ss::IDTR_BASE, 0);
    w32(ss::DR7, 0x400);
}

/// Zero the save state of the slot at `smbase` (a forgotten slot keeps nothing of the
/// CPU it served).
///
/// # Safety
/// `smbase` must be the SMBASE of a laid-out slot in SMRAM whose CPU is gone or parked.
pub unsafe fn zero_save_state(smbase: u32) {
    let at = (smbase + crate::save_state::MAP_OFFSET) as usize as *mut u8;
    // SAFETY: the caller guarantees the slot's save-state map is ours to clear.
    unsafe { write_bytes(at, 0, crate::save_state::MAP_SIZE as usize) }
}
