//! Logging from SMM without `core::fmt`: a message is a short list of parts (text,
//! decimal, hex) that the host writes to its console.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
}

impl Level {
    pub fn tag(self) -> &'static [u8] {
        match self {
            Level::Error => b"[SMM ERROR] ",
            Level::Warn => b"[SMM WARN ] ",
            Level::Info => b"[SMM INFO ] ",
            Level::Debug => b"[SMM DEBUG] ",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part<'a> {
    Str(&'a [u8]),
    Dec(u64),
    Hex(u64),
}

/// Where SMM log lines go. Implementations must not block on anything the OS controls.
pub trait Console {
    fn write(&self, bytes: &[u8]);

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

    fn parts(&self, parts: &[Part<'_>]) {
        for p in parts {
            match *p {
                Part::Str(s) => self.write(s),
                Part::Dec(v) => self.write_dec(v),
                Part::Hex(v) => self.write_hex(v),
            }
        }
    }

    fn line(&self, level: Level, parts: &[Part<'_>]) {
        self.write(level.tag());
        self.parts(parts);
        self.write(b"\n");
    }
}
