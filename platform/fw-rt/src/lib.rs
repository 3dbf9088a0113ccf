//! The C memory functions a freestanding image must provide itself: the linux-gnu
//! target's compiler_builtins has no `mem` feature. Written with string instructions so
//! the compiler cannot turn them back into calls to themselves, and without SSE so they
//! are fit for SMM. Only firmware images link this crate (coreboot brings its own).
#![no_std]

/// Copy `n` bytes from `src` to `dst` (C `memcpy`); returns `dst`.
///
/// # Safety
/// C `memcpy` contract: `n` bytes valid at both pointers, no overlap.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds memcpy's contract; `rep movsb` copies forwards (DF=0
    // per the SysV ABI).
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _,
            inout("rsi") src => _, options(nostack, preserves_flags));
    }
    dst
}

/// Copy `n` bytes from `src` to `dst`, correct when the ranges overlap (C `memmove`);
/// returns `dst`.
///
/// # Safety
/// C `memmove` contract: `n` bytes valid at both pointers; they may overlap.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: the caller guarantees `n` valid bytes at both pointers, and a forward copy
        // (memcpy's `rep movsb`) is correct when dst is below src or past its end.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: the caller guarantees `n` valid bytes at both pointers, and `n > 0` here (for
    // `n == 0` the check above took the memcpy path), so `add(n - 1)` stays in range. The
    // ranges overlap with dst above src: copy backwards from the last byte, then restore DF
    // as the ABI requires.
    unsafe {
        core::arch::asm!("std", "rep movsb", "cld", inout("rcx") n => _,
            inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
            options(nostack));
    }
    dst
}

/// Fill `n` bytes at `dst` with the low byte of `c` (C `memset`); returns `dst`.
///
/// # Safety
/// C `memset` contract: `n` bytes valid at `dst`.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller upholds memset's contract.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _,
            in("al") c as u8, options(nostack, preserves_flags));
    }
    dst
}

/// Compare `n` bytes (C `memcmp`): 0 when equal, else the difference of the first
/// differing bytes as unsigned values.
///
/// # Safety
/// C `memcmp` contract: `n` bytes valid at both pointers.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, within the caller's ranges; volatile keeps this from being
        // recognised as a memcmp idiom and compiled into a call to itself.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Compare `n` bytes for equality (C `bcmp`): 0 when equal, nonzero otherwise.
///
/// # Safety
/// As [`memcmp`]: `n` bytes valid at both pointers.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: bcmp's caller guarantees `n` valid bytes at both pointers, which is exactly
    // memcmp's contract.
    unsafe { memcmp(a, b, n) }
}
