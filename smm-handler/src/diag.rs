//! Read-only diagnostic query: a CPU asks SMM which slot served its SMI.
//!
//! The caller writes [`APMC_DIAG_QUERY`] to port 0xB2 with `RAX = MAGIC << 32 | cmd`.
//! With broadcast SMIs every CPU enters SMM, so each CPU answers only in its *own* save
//! state, and only if that save state carries the magic: there is no "which CPU called"
//! guess, which broadcast SMIs make unreliable (`docs/qemu.md#q-apmc-caller`). The answer reveals the caller's own slot index, SMBASE and
//! entry count, nothing the caller could use to change SMM; it writes nothing but the
//! caller's own saved RAX/RSI/RDI. It does disclose the TSEG layout, so production
//! builds answer it only while the host allows it: the host ROM during its boot phase (the
//! boot code checks every CPU's slot with it before the locks), coreboot only with
//! `CONFIG_CPU_HOTPLUG_RUST_DIAG_QUERY`. Test and checker builds enable the cargo feature
//! `diag-query`, which answers it always ([`ALWAYS_ANSWERED`]).

use crate::save_state;

/// Whether this build answers the query on every SMI (cargo feature `diag-query`: test and
/// checker images), whatever the host allows.
pub const ALWAYS_ANSWERED: bool = cfg!(feature = "diag-query");

/// Whether SMM answers the query now: always with the `diag-query` feature, else only when
/// the host allows it (`host_allows`).
pub const fn answered(host_allows: bool) -> bool {
    ALWAYS_ANSWERED || host_allows
}

/// APMC command of the diagnostic query.
pub const APMC_DIAG_QUERY: u8 = 0x5A;
/// Magic in the high half of RAX of a request and of an answer ("SMMQ").
pub const MAGIC: u32 = 0x534D_4D51;
/// Saved RAX after SMM answered: magic in the high half, this in the low byte.
pub const ANSWERED: u8 = 0xA5;

/// RAX of a request.
pub const fn request_rax() -> u64 {
    ((MAGIC as u64) << 32) | APMC_DIAG_QUERY as u64
}

/// Whether a saved RAX is a diagnostic request.
pub const fn is_request(saved_rax: u64) -> bool {
    saved_rax == request_rax()
}

/// `(RAX, RSI, RDI)` SMM writes back for `slot`, `smbase` and `count`.
pub const fn answer(slot: u32, smbase: u32, count: u64) -> (u64, u64, u64) {
    (
        ((MAGIC as u64) << 32) | ANSWERED as u64,
        ((smbase as u64) << 32) | slot as u64,
        count,
    )
}

/// Caller side: `(slot | smbase << 32, count)` if SMM answered.
pub fn parse_answer(rax: u64, rsi: u64, rdi: u64) -> Option<(u64, u64)> {
    if rax == ((MAGIC as u64) << 32) | ANSWERED as u64 {
        Some((rsi, rdi))
    } else {
        None
    }
}

/// Caller side: ask SMM which slot serves this CPU's SMIs. Returns
/// `(slot | smbase << 32, entry count)`, or `None` if SMM did not answer (APMC SMIs off,
/// or no handler that knows the query).
pub fn query() -> Option<(u64, u64)> {
    let (rax, rsi, rdi): (u64, u64, u64);
    // SAFETY: writing the APMC port raises an SMI; SMM answers only by rewriting this
    // CPU's saved RAX/RSI/RDI, all declared as outputs. `pause` ends the TCG translation
    // block so the SMI is taken before the registers are read.
    unsafe {
        core::arch::asm!(
            "out dx, al",
            "pause",
            "pause",
            inout("rax") request_rax() => rax,
            inout("rsi") 0u64 => rsi,
            inout("rdi") 0u64 => rdi,
            in("dx") q35::ich9::APM_CNT,
            options(nostack)
        );
    }
    parse_answer(rax, rsi, rdi)
}

/// SMM side: if this CPU's saved RAX holds a request, answer it in the same save state
/// with `slot`, `smbase` and `count`. Call only when port 0xB2 reads
/// [`APMC_DIAG_QUERY`].
///
/// # Safety
/// `smbase` must be the SMBASE of the calling CPU's own slot, so that the save-state map
/// above it is this CPU's live save state in SMRAM.
pub unsafe fn answer_in_save_state(slot: u32, smbase: u32, count: u64) {
    let ss = |off: u32| (smbase as usize + off as usize) as *mut u64;
    // SAFETY: the caller guarantees these are this CPU's own saved registers.
    unsafe {
        if is_request(core::ptr::read_volatile(ss(save_state::RAX))) {
            let (rax, rsi, rdi) = answer(slot, smbase, count);
            core::ptr::write_volatile(ss(save_state::RSI), rsi);
            core::ptr::write_volatile(ss(save_state::RDI), rdi);
            core::ptr::write_volatile(ss(save_state::RAX), rax);
        }
    }
}
