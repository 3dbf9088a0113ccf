//! Port I/O behind a trait, so drivers can run against real ports or the simulator.

/// Byte/word/dword port access. Implementations must be callable from any CPU.
pub trait PortIo {
    /// Read a byte from `port` (`in al, dx`).
    fn inb(&self, port: u16) -> u8;
    /// Read a word from `port` (`in ax, dx`).
    fn inw(&self, port: u16) -> u16;
    /// Read a dword from `port` (`in eax, dx`).
    fn inl(&self, port: u16) -> u32;
    /// Write a byte to `port` (`out dx, al`).
    fn outb(&self, port: u16, value: u8);
    /// Write a word to `port` (`out dx, ax`).
    fn outw(&self, port: u16, value: u16);
    /// Write a dword to `port` (`out dx, eax`).
    fn outl(&self, port: u16, value: u32);
}

/// The machine's real I/O ports.
#[derive(Clone, Copy, Default)]
pub struct HwPorts;

impl PortIo for HwPorts {
    fn inb(&self, port: u16) -> u8 {
        // SAFETY: firmware owns the q35 ports it touches; reads have no memory effects.
        unsafe { x86_64::instructions::port::PortReadOnly::<u8>::new(port).read() }
    }
    fn inw(&self, port: u16) -> u16 {
        // SAFETY: as for `inb`.
        unsafe { x86_64::instructions::port::PortReadOnly::<u16>::new(port).read() }
    }
    fn inl(&self, port: u16) -> u32 {
        // SAFETY: as for `inb`.
        unsafe { x86_64::instructions::port::PortReadOnly::<u32>::new(port).read() }
    }
    fn outb(&self, port: u16, value: u8) {
        // SAFETY: port writes go to q35 devices; callers are firmware code that owns them.
        // The only memory effect is fw_cfg DMA, whose descriptor callers keep alive.
        unsafe { x86_64::instructions::port::PortWriteOnly::<u8>::new(port).write(value) }
    }
    fn outw(&self, port: u16, value: u16) {
        // SAFETY: as for `outb`.
        unsafe { x86_64::instructions::port::PortWriteOnly::<u16>::new(port).write(value) }
    }
    fn outl(&self, port: u16, value: u32) {
        // SAFETY: as for `outb`.
        unsafe { x86_64::instructions::port::PortWriteOnly::<u32>::new(port).write(value) }
    }
}
