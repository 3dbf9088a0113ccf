//! Console output for the payload: COM1 (as the coreboot tables describe it), or
//! libpayload's console when the payload runs on libpayload.

use core::fmt::Write;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
#[cfg(not(feature = "libpayload"))]
use q35::io::HwPorts;
#[cfg(not(feature = "libpayload"))]
use q35::serial::{Serial, COM1};

/// Serialises whole lines from several CPUs.
pub static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// COM1 as a [`core::fmt::Write`] sink.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Write raw bytes to the console: COM1 directly, or libpayload's console drivers when
/// the payload runs on libpayload.
pub fn write_bytes(b: &[u8]) {
    #[cfg(feature = "libpayload")]
    for &c in b {
        // SAFETY: libpayload's console is initialised before `main`; putchar takes any
        // byte.
        unsafe { libpayload_sys::putchar(u32::from(c)) };
    }
    #[cfg(not(feature = "libpayload"))]
    Serial::new(&HwPorts, COM1).write_bytes(b);
}

/// Print one line to the console, holding [`console::LOCK`](crate::console::LOCK) for it;
/// SMM log lines that reached the CBMEM console before it go out first ([`SmmLog`]).
#[macro_export]
macro_rules! println {
    ($($t:tt)*) => {{
        let _g = $crate::console::LOCK.lock();
        $crate::console::SMM_LOG.copy_out();
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Console, format_args!($($t)*));
        let _ = core::fmt::Write::write_str(&mut $crate::console::Console, "\n");
    }};
}

/// The SMM handler's log lines in the CBMEM console (coreboot with
/// `CPU_HOTPLUG_RUST_LOG_CBMEM`: coreboot's SMM has no serial console), copied to the
/// serial port in order with the payload's own lines: [`println!`] copies what SMM wrote
/// since the last copy before its line, so an SMM line written before the payload
/// continued comes out before the payload's next line, as on the host ROM, whose SMM
/// writes to the serial port itself. Only whole lines are copied.
pub struct SmmLog {
    /// Address of the CBMEM console header (0 = none).
    base: AtomicU64,
    /// Ring position up to which lines were copied.
    seen: AtomicU32,
}

/// The CBMEM console's cursor bits (the rest are flags).
const CURSOR_MASK: u32 = (1 << 28) - 1;

/// The payload's one [`SmmLog`].
pub static SMM_LOG: SmmLog = SmmLog {
    base: AtomicU64::new(0),
    seen: AtomicU32::new(0),
};

impl SmmLog {
    /// Start copying from the CBMEM console at `base`: what it holds now is the boot log,
    /// not SMM's.
    pub fn start(&self, base: u64) {
        let _g = LOCK.lock();
        self.seen.store(ring_cursor(base), Ordering::SeqCst);
        self.base.store(base, Ordering::SeqCst);
    }

    /// Copy the whole lines written since the last copy. Call with [`LOCK`] held.
    pub fn copy_out(&self) {
        let base = self.base.load(Ordering::SeqCst);
        if base == 0 {
            return;
        }
        let size = rd32(base);
        let (mut pos, end) = (self.seen.load(Ordering::SeqCst), ring_cursor(base));
        if size == 0 || pos >= size || end >= size {
            return;
        }
        // The last newline before `end`: everything up to it goes out.
        let mut last = None;
        let mut p = pos;
        for _ in 0..size {
            if p == end {
                break;
            }
            if body_byte(base, p) == b'\n' {
                last = Some(p);
            }
            p = (p + 1) % size;
        }
        let Some(last) = last else { return };
        for _ in 0..size {
            write_bytes(&[body_byte(base, pos)]);
            let done = pos == last;
            pos = (pos + 1) % size;
            if done {
                break;
            }
        }
        self.seen.store(pos, Ordering::SeqCst);
    }
}

/// Copy SMM's new log lines now (from a wait loop, so that tests waiting for one see it).
pub fn copy_smm_log() {
    let _g = LOCK.lock();
    SMM_LOG.copy_out();
}

fn rd32(addr: u64) -> u32 {
    // SAFETY: `addr` is inside the CBMEM console the coreboot tables point to, RAM the
    // firmware handed to the payload.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn ring_cursor(base: u64) -> u32 {
    rd32(base + 4) & CURSOR_MASK
}

fn body_byte(base: u64, pos: u32) -> u8 {
    // SAFETY: as in `rd32`; `pos` is below the ring's size.
    unsafe { core::ptr::read_volatile((base + 8 + u64::from(pos)) as *const u8) }
}
