//! Logging from SMM without `core::fmt`: a message is one template string in which `{}`
//! stands for the next argument in decimal and `{:#x}` for the next in hex, so every
//! message is one greppable line in the source. [`smm_log!`](crate::smm_log) checks the
//! argument count at compile time.

/// Severity of a log line; a host drops lines above its configured level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    /// Something failed; the message says the consequence.
    Error = 1,
    /// Something unexpected that the handler survived.
    Warn = 2,
    /// One line per milestone (a CPU relocated).
    Info = 3,
    /// Detail for debugging.
    Debug = 4,
}

impl Level {
    /// The prefix of an SMM log line at this level.
    pub fn tag(self) -> &'static [u8] {
        match self {
            Level::Error => b"[SMM ERROR] ",
            Level::Warn => b"[SMM WARN ] ",
            Level::Info => b"[SMM INFO ] ",
            Level::Debug => b"[SMM DEBUG] ",
        }
    }
}

/// An integer that can stand for a placeholder.
pub trait Arg {
    /// The value as printed.
    fn arg(self) -> u64;
}

macro_rules! impl_arg {
    ($($t:ty),*) => { $(impl Arg for $t { fn arg(self) -> u64 { self as u64 } })* };
}
impl_arg!(u8, u16, u32, u64, usize);

/// Number of `{}` and `{:#x}` placeholders in `template`.
pub const fn placeholders(template: &str) -> usize {
    let b = template.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i + 1 < b.len() {
        if b[i] == b'{' && (b[i + 1] == b'}' || b[i + 1] == b':') {
            n += 1;
        }
        i += 1;
    }
    n
}

/// Log one line through a host: `smm_log!(host, Info, "relocated APIC ID {} to slot {}", apic, n)`.
/// The host is anything with a `log(level, template, args)` method
/// ([`crate::host::Host::log`]).
#[macro_export]
macro_rules! smm_log {
    ($host:expr, $level:ident, $template:literal $(, $arg:expr)* $(,)?) => {{
        const _: () = assert!(
            $crate::log::placeholders($template) == <[&str]>::len(&[$(stringify!($arg)),*]),
            "placeholder count differs from argument count"
        );
        $host.log(
            $crate::log::Level::$level,
            $template,
            &[$($crate::log::Arg::arg($arg)),*],
        )
    }};
}

/// Where SMM log lines go. Implementations must not block on anything the OS controls.
pub trait Console {
    /// Write raw bytes.
    fn write(&self, bytes: &[u8]);

    /// Write `v` in decimal.
    fn write_dec(&self, mut v: u64) {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            if let Some(b) = buf.get_mut(i) {
                *b = b'0' + (v % 10) as u8;
            }
            v /= 10;
            if v == 0 || i == 0 {
                break;
            }
        }
        self.write(buf.get(i..).unwrap_or(&[]));
    }

    /// Write `v` in hex with a `0x` prefix and no leading zeros.
    fn write_hex(&self, v: u64) {
        let mut buf = [0u8; 18];
        buf[0] = b'0';
        buf[1] = b'x';
        let mut n = 2;
        let mut started = false;
        for shift in (0..16).rev() {
            let nib = ((v >> (shift * 4)) & 0xF) as u8;
            if nib != 0 || started || shift == 0 {
                started = true;
                if let Some(b) = buf.get_mut(n) {
                    *b = if nib < 10 {
                        b'0' + nib
                    } else {
                        b'a' + nib - 10
                    };
                }
                n += 1;
            }
        }
        self.write(buf.get(..n).unwrap_or(&[]));
    }

    /// Write `template` with its placeholders replaced by `args` (a missing argument
    /// prints `?`). Bounded by the template's length.
    fn template(&self, template: &str, args: &[u64]) {
        let mut args = args.iter();
        let mut rest = template.as_bytes();
        while let Some(p) = rest.iter().position(|&c| c == b'{') {
            self.write(rest.get(..p).unwrap_or(&[]));
            let tail = rest.get(p..).unwrap_or(&[]);
            let (hex, len) = if tail.starts_with(b"{:#x}") {
                (true, 5)
            } else if tail.starts_with(b"{}") {
                (false, 2)
            } else {
                self.write(b"{");
                rest = tail.get(1..).unwrap_or(&[]);
                continue;
            };
            match (args.next(), hex) {
                (Some(&v), true) => self.write_hex(v),
                (Some(&v), false) => self.write_dec(v),
                (None, _) => self.write(b"?"),
            }
            rest = tail.get(len..).unwrap_or(&[]);
        }
        self.write(rest);
    }

    /// Write one tagged line.
    fn line(&self, level: Level, template: &str, args: &[u64]) {
        self.write(level.tag());
        self.template(template, args);
        self.write(b"\n");
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::cell::RefCell;
    use std::string::String;
    use std::vec::Vec;

    struct Buf(RefCell<Vec<u8>>);
    impl Console for Buf {
        fn write(&self, b: &[u8]) {
            self.0.borrow_mut().extend_from_slice(b);
        }
    }

    fn render(t: &str, args: &[u64]) -> String {
        let b = Buf(RefCell::new(Vec::new()));
        b.template(t, args);
        String::from_utf8(b.0.into_inner()).unwrap()
    }

    #[test]
    fn placeholders_become_decimal_and_hex() {
        assert_eq!(
            render("APIC ID {} to SMBASE {:#x} in {} us", &[3, 0xffe1db0, 0]),
            "APIC ID 3 to SMBASE 0xffe1db0 in 0 us"
        );
    }

    #[test]
    fn a_missing_argument_prints_a_question_mark_and_a_lone_brace_stays() {
        assert_eq!(render("{} {} {x", &[7]), "7 ? {x");
    }

    #[test]
    fn placeholders_are_counted_at_compile_time() {
        const N: usize = placeholders("a {} b {:#x} c");
        assert_eq!(N, 2);
    }
}
