//! Serial console output for the payload (COM1, as the coreboot tables describe it).

use core::fmt::Write;
use q35::io::HwPorts;
use q35::serial::{Serial, COM1};

/// Serialises whole lines from several CPUs.
pub static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// COM1 as a [`core::fmt::Write`] sink.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        Serial::new(&HwPorts, COM1).write_bytes(s.as_bytes());
        Ok(())
    }
}

/// Print one line to the console, holding [`console::LOCK`](crate::console::LOCK) for it.
#[macro_export]
macro_rules! println {
    ($($t:tt)*) => {{
        let _g = $crate::console::LOCK.lock();
        let _ = core::fmt::Write::write_fmt(&mut $crate::console::Console, format_args!($($t)*));
        let _ = core::fmt::Write::write_str(&mut $crate::console::Console, "\n");
    }};
}
