//! PCI configuration space through the legacy 0xCF8/0xCFC mechanism.

use crate::io::PortIo;

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;

/// Bus/device/function of a PCI function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bdf {
    /// Bus number.
    pub bus: u8,
    /// Device number (0-31).
    pub dev: u8,
    /// Function number (0-7).
    pub func: u8,
}

/// The q35 host bridge / memory controller hub (B0:D0:F0).
pub const MCH: Bdf = Bdf {
    bus: 0,
    dev: 0,
    func: 0,
};
/// The ICH9 LPC bridge (B0:D31:F0): PMBASE, ACPI decode, CPU hotplug.
pub const LPC: Bdf = Bdf {
    bus: 0,
    dev: 31,
    func: 0,
};

impl Bdf {
    /// The 0xCF8 value for dword-aligned `offset`: bit 31 enable, 23:16 bus,
    /// 15:11 device, 10:8 function, 7:2 register.
    pub fn address(self, offset: u8) -> u32 {
        0x8000_0000
            | (u32::from(self.bus) << 16)
            | (u32::from(self.dev & 0x1F) << 11)
            | (u32::from(self.func & 0x7) << 8)
            | u32::from(offset & 0xFC)
    }
}

/// Config-space access on one set of ports. Callers must not interleave accesses
/// from several CPUs (the address/data pair is shared state).
pub struct PciConfig<'a, P: PortIo> {
    ports: &'a P,
}

impl<'a, P: PortIo> PciConfig<'a, P> {
    /// Config access on `ports`; touches no register.
    pub fn new(ports: &'a P) -> Self {
        Self { ports }
    }

    /// Read the dword at `offset` (rounded down to a multiple of 4).
    pub fn read32(&self, bdf: Bdf, offset: u8) -> u32 {
        self.ports.outl(CONFIG_ADDRESS, bdf.address(offset));
        self.ports.inl(CONFIG_DATA)
    }

    /// Read the word at `offset` (rounded down to a multiple of 2).
    pub fn read16(&self, bdf: Bdf, offset: u8) -> u16 {
        self.ports.outl(CONFIG_ADDRESS, bdf.address(offset));
        self.ports.inw(CONFIG_DATA + u16::from(offset & 2))
    }

    /// Read the byte at `offset`.
    pub fn read8(&self, bdf: Bdf, offset: u8) -> u8 {
        self.ports.outl(CONFIG_ADDRESS, bdf.address(offset));
        self.ports.inb(CONFIG_DATA + u16::from(offset & 3))
    }

    /// Write the dword at `offset` (rounded down to a multiple of 4).
    pub fn write32(&self, bdf: Bdf, offset: u8, value: u32) {
        self.ports.outl(CONFIG_ADDRESS, bdf.address(offset));
        self.ports.outl(CONFIG_DATA, value);
    }

    /// Write the word at `offset` (rounded down to a multiple of 2).
    pub fn write16(&self, bdf: Bdf, offset: u8, value: u16) {
        self.ports.outl(CONFIG_ADDRESS, bdf.address(offset));
        self.ports.outw(CONFIG_DATA + u16::from(offset & 2), value);
    }

    /// Write the byte at `offset`.
    pub fn write8(&self, bdf: Bdf, offset: u8, value: u8) {
        self.ports.outl(CONFIG_ADDRESS, bdf.address(offset));
        self.ports.outb(CONFIG_DATA + u16::from(offset & 3), value);
    }

    /// Vendor and device ID, or `None` if no function answers.
    pub fn ids(&self, bdf: Bdf) -> Option<(u16, u16)> {
        let id = self.read32(bdf, 0);
        if id == 0xFFFF_FFFF {
            None
        } else {
            Some((id as u16, (id >> 16) as u16))
        }
    }
}
