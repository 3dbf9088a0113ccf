//! 16550 UART at COM1, polled.

use crate::io::PortIo;

/// I/O base of COM1, the UART QEMU's `-serial` option connects first.
pub const COM1: u16 = 0x3F8;

/// A 16550 UART at one I/O base.
pub struct Serial<'a, P: PortIo> {
    ports: &'a P,
    base: u16,
}

impl<'a, P: PortIo> Serial<'a, P> {
    /// The UART at `base`; touches no register (call [`Self::init`] once per boot).
    pub const fn new(ports: &'a P, base: u16) -> Self {
        Self { ports, base }
    }

    /// Program 115200 baud 8N1 (divisor 1), FIFOs on and cleared, interrupts off, DTR
    /// and RTS set.
    pub fn init(&self) {
        let b = self.base;
        self.ports.outb(b + 1, 0x00);
        self.ports.outb(b + 3, 0x80);
        self.ports.outb(b, 0x01);
        self.ports.outb(b + 1, 0x00);
        self.ports.outb(b + 3, 0x03);
        self.ports.outb(b + 2, 0xC7);
        self.ports.outb(b + 4, 0x03);
    }

    /// Send one byte, waiting (bounded) for the transmit holding register to be empty
    /// (LSR bit 5).
    pub fn write_byte(&self, c: u8) {
        // Bounded wait for the transmit holding register; QEMU's is always ready.
        for _ in 0..100_000 {
            if self.ports.inb(self.base + 5) & 0x20 != 0 {
                break;
            }
            core::hint::spin_loop();
        }
        self.ports.outb(self.base, c);
    }

    /// Send `s`, turning every `\n` into `\r\n`.
    pub fn write_bytes(&self, s: &[u8]) {
        for &c in s {
            if c == b'\n' {
                self.write_byte(b'\r');
            }
            self.write_byte(c);
        }
    }
}
