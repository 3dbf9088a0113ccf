//! PCI configuration mechanism #1 (0xCF8 address, 0xCFC-0xCFF data) and a config space
//! with QEMU's per-byte write mask.
//!
//! Semantics follow QEMU's `pci_host.c`: only a dword write to 0xCF8 latches the address;
//! data accesses go to `(address & 0xFC) | (port & 3)` of the addressed function when bit 31
//! is set; with bit 31 clear, or for a function nobody implements, reads return all-ones and
//! writes are dropped.

/// I/O port of CONFIG_ADDRESS, the address latch.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// I/O port of CONFIG_DATA (0xCFC-0xCFF), the data window.
pub const CONFIG_DATA: u16 = 0xCFC;
/// Bytes of conventional config space per function.
pub const CONFIG_SPACE_SIZE: usize = 256;

/// End of the standard type-0 header; QEMU makes everything above it writable by default.
const HEADER_SIZE: usize = 0x40;

const REG_VENDOR_ID: usize = 0x00;
const REG_DEVICE_ID: usize = 0x02;
const REG_COMMAND: usize = 0x04;
const REG_REVISION: usize = 0x08;
const REG_CLASS: usize = 0x0A;
const REG_CACHE_LINE: usize = 0x0C;
const REG_HEADER_TYPE: usize = 0x0E;
const REG_SUBSYS_VENDOR: usize = 0x2C;
const REG_SUBSYS_ID: usize = 0x2E;
const REG_INTERRUPT_LINE: usize = 0x3C;

/// COMMAND bits QEMU lets the guest write: IO, MEMORY, MASTER, SERR, INTX_DISABLE.
const COMMAND_WMASK: u16 = 0x0001 | 0x0002 | 0x0004 | 0x0100 | 0x0400;

/// A 256-byte configuration space. Writes go through the write mask like QEMU's
/// `pci_default_write_config`: `config = (config & !wmask) | (value & wmask)` per byte.
#[derive(Clone)]
pub struct ConfigSpace {
    config: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
}

impl ConfigSpace {
    /// A function with the given IDs, QEMU's default subsystem IDs (0x1AF4:0x1100) and
    /// QEMU's default write mask (`pci_init_wmask`: COMMAND, cache line size, interrupt
    /// line, and every device-specific byte 0x40-0xFF).
    pub fn new(vendor: u16, device: u16, revision: u8, class: u16, header_type: u8) -> Self {
        let mut s = Self {
            config: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
        };
        s.set_word(REG_VENDOR_ID, vendor);
        s.set_word(REG_DEVICE_ID, device);
        s.set_byte(REG_REVISION, revision);
        s.set_word(REG_CLASS, class);
        s.set_byte(REG_HEADER_TYPE, header_type);
        s.set_word(REG_SUBSYS_VENDOR, 0x1AF4);
        s.set_word(REG_SUBSYS_ID, 0x1100);
        s.set_wmask_word(REG_COMMAND, COMMAND_WMASK);
        s.wmask[REG_CACHE_LINE] = 0xFF;
        s.wmask[REG_INTERRUPT_LINE] = 0xFF;
        s.wmask[HEADER_SIZE..].fill(0xFF);
        s
    }

    /// Little-endian read of `len` (1, 2 or 4) bytes, clamped to the end of the space.
    pub fn read(&self, offset: usize, len: usize) -> u32 {
        let end = (offset + len).min(CONFIG_SPACE_SIZE);
        self.config[offset.min(CONFIG_SPACE_SIZE)..end]
            .iter()
            .rev()
            .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
    }

    /// Masked write of `len` bytes, clamped to the end of the space.
    pub fn write(&mut self, offset: usize, value: u32, len: usize) {
        let end = (offset + len).min(CONFIG_SPACE_SIZE);
        for (i, addr) in (offset..end).enumerate() {
            let byte = (value >> (8 * i)) as u8;
            let mask = self.wmask[addr];
            self.config[addr] = (self.config[addr] & !mask) | (byte & mask);
        }
    }

    /// The byte at `offset`.
    pub fn byte(&self, offset: usize) -> u8 {
        self.config[offset]
    }

    /// Raw store that bypasses the write mask (device-internal updates).
    pub fn set_byte(&mut self, offset: usize, value: u8) {
        self.config[offset] = value;
    }

    /// Raw little-endian store of a word, bypassing the write mask.
    pub fn set_word(&mut self, offset: usize, value: u16) {
        self.config[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }

    /// Raw little-endian store of a dword, bypassing the write mask.
    pub fn set_long(&mut self, offset: usize, value: u32) {
        self.config[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    }

    /// The write mask of the byte at `offset` (1 bits are guest-writable).
    pub fn wmask(&self, offset: usize) -> u8 {
        self.wmask[offset]
    }

    /// Set the write mask of the byte at `offset`.
    pub fn set_wmask(&mut self, offset: usize, mask: u8) {
        self.wmask[offset] = mask;
    }

    /// Set the write masks of the word at `offset` (little-endian).
    pub fn set_wmask_word(&mut self, offset: usize, mask: u16) {
        self.wmask[offset..offset + 2].copy_from_slice(&mask.to_le_bytes());
    }

    /// Set the write masks of the dword at `offset` (little-endian).
    pub fn set_wmask_long(&mut self, offset: usize, mask: u32) {
        self.wmask[offset..offset + 4].copy_from_slice(&mask.to_le_bytes());
    }
}

/// Bus/device/function plus register offset of one data-port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigTarget {
    /// Bus number (CONFIG_ADDRESS bits 23:16).
    pub bus: u8,
    /// Device number (bits 15:11).
    pub dev: u8,
    /// Function number (bits 10:8).
    pub func: u8,
    /// Register offset: bits 7:2 of the latch plus the data port's byte lane.
    pub reg: usize,
}

/// The 0xCF8 address latch.
#[derive(Clone, Default)]
pub struct PciHost {
    address: u32,
}

impl PciHost {
    /// The latched CONFIG_ADDRESS value.
    pub fn address(&self) -> u32 {
        self.address
    }

    /// Read of 0xCF8-0xCFB: the latch, shifted to the byte lane of `port`.
    pub fn read_address(&self, port: u16, size: u8) -> u32 {
        let shift = 8 * u32::from(port - CONFIG_ADDRESS);
        crate::truncate(self.address >> shift, size)
    }

    /// Only a dword write to 0xCF8 latches an address (QEMU `pci_host_config_write`).
    pub fn write_address(&mut self, port: u16, value: u32, size: u8) {
        if port == CONFIG_ADDRESS && size == 4 {
            self.address = value;
        }
    }

    /// The function and register a data-port access at `port` reaches, or `None` when
    /// the enable bit (31) is clear.
    pub fn target(&self, port: u16) -> Option<ConfigTarget> {
        if self.address & 0x8000_0000 == 0 {
            return None;
        }
        let a = self.address | u32::from(port & 3);
        Some(ConfigTarget {
            bus: (a >> 16) as u8,
            dev: ((a >> 11) & 0x1F) as u8,
            func: ((a >> 8) & 0x7) as u8,
            reg: (a & 0xFF) as usize,
        })
    }
}
