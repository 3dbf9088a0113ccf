//! FFI to coreboot's libpayload (`payloads/libpayload` in a coreboot tree): the console,
//! the timer, the coreboot table pointer and `halt`, for a payload that runs on
//! libpayload instead of its own start code, the fields of `lib_sysinfo` it reads
//! (through the small C shim in `shim/`, so that no Rust code depends on the layout of
//! `struct sysinfo_t`), plus the one C function Rust's code generation needs that
//! libpayload's libc lacks (`bcmp`). Declarations only, written from
//! `include/libpayload.h` and `include/delay.h`; `tests/tests/libpayload_abi.rs` checks
//! them against the headers of the install in `LIBPAYLOAD_DIR`. The image is linked with
//! libpayload's `lpgcc` (`scripts/payload-on-libpayload`).
#![no_std]

use core::ffi::{c_char, c_int, c_uint, c_void};

extern "C" {
    /// Initialise the console drivers libpayload was configured with.
    pub fn console_init();
    /// Write one character to every console output driver.
    pub fn putchar(c: c_uint) -> c_int;
    /// Write a NUL-terminated string and a newline.
    pub fn puts(s: *const c_char) -> c_int;
    /// Busy-wait `ns` nanoseconds (`udelay` and `mdelay` are inline wrappers of it).
    pub fn ndelay(ns: u64);
    /// Microseconds since `base` on libpayload's timer.
    pub fn timer_us(base: u64) -> u64;
    /// The timer's rate in Hz (on x86 the TSC's: libpayload's timer is RDTSC).
    pub fn timer_hz() -> u64;
    /// Stop this CPU for good.
    pub fn halt() -> !;
    /// `memcmp` of libpayload's libc.
    pub fn memcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int;
    /// x86: the coreboot table header coreboot passed to the payload, recorded by the
    /// start code (`arch/x86/coreboot.c`; the header's `get_cb_header_ptr()` is defined
    /// on arm64 only).
    pub static cb_header_ptr: *mut c_void;
}

// `shim/sysinfo.c`, compiled against the install's headers by
// `scripts/payload-on-libpayload`: the fields of `lib_sysinfo` the payload reads.
extern "C" {
    /// Entries of libpayload's memory map (`lib_sysinfo.n_memranges`).
    pub fn lp_sysinfo_memranges() -> c_int;
    /// Memory-map entry `i`: 0 and the entry, or -1 beyond the map.
    pub fn lp_sysinfo_memrange(i: c_int, base: *mut u64, size: *mut u64, kind: *mut u32) -> c_int;
    /// The serial console's I/O port from the coreboot tables (0 = none).
    pub fn lp_sysinfo_serial_ioport() -> u32;
    /// The ACPI RSDP's physical address from the coreboot tables (0 = none).
    pub fn lp_sysinfo_acpi_rsdp() -> u64;
    /// The CBMEM console's physical address (0 = none).
    pub fn lp_sysinfo_cbmem_console() -> u64;
    /// The coreboot table header libpayload parsed.
    pub fn lp_sysinfo_cb_header() -> u64;
}

/// `bcmp`, which Rust's code generation calls for slice and string compares and which
/// libpayload's libc lacks: zero when the `n` bytes are equal.
///
/// # Safety
/// C `bcmp` contract: `n` readable bytes at both pointers.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const c_void, b: *const c_void, n: usize) -> c_int {
    // SAFETY: the caller's contract is memcmp's.
    unsafe { memcmp(a, b, n) }
}
