//! The ICH9 LPC bridge (B0:D31:F0) config space: PMBASE (0x40), ACPI_CNTL (0x44) and
//! RCBA (0xF0) with QEMU's write masks and reset values. The PM I/O block it decodes
//! lives in [`crate::pm`].

use crate::pci::ConfigSpace;

/// PCI vendor ID: Intel.
pub const VENDOR_ID: u16 = 0x8086;
/// PCI device ID of the ICH9 LPC bridge (82801IB).
pub const DEVICE_ID: u16 = 0x2918;
/// ICH9 A2 stepping, as QEMU reports it.
pub const REVISION: u8 = 0x02;
/// Class 06/01: ISA bridge.
pub const CLASS: u16 = 0x0601;
/// The LPC function is multi-function (SATA and SMBus sit at 31.2 / 31.3 on real q35).
pub const HEADER_TYPE: u8 = 0x80;

/// Config offset of PMBASE (dword).
pub const REG_PMBASE: usize = 0x40;
/// Config offset of ACPI_CNTL (byte).
pub const REG_ACPI_CNTL: usize = 0x44;
/// Config offset of RCBA, the root complex base address (dword).
pub const REG_RCBA: usize = 0xF0;

/// PMBASE bits 15:7 are the base; bit 0 (resource type indicator) is hardwired to 1.
pub const PMBASE_MASK: u32 = 0xFF80;
/// PMBASE after reset: base 0, only the hardwired bit 0.
pub const PMBASE_DEFAULT: u32 = 0x1;
/// ACPI_CNTL bit 7 (ACPI_EN): decode the PM I/O block at PMBASE.
pub const ACPI_CNTL_ACPI_EN: u8 = 1 << 7;
/// ACPI_EN plus the SCI IRQ select field (bits 2:0).
pub const ACPI_CNTL_WMASK: u8 = 0x87;
/// RCBA bits the guest may write: the base (bits 31:14) and the enable bit 0.
pub const RCBA_WMASK: u32 = 0xFFFF_C001;

/// The LPC bridge's config space.
pub struct Lpc {
    cfg: ConfigSpace,
}

impl Lpc {
    /// The bridge in its reset state.
    pub fn new() -> Self {
        let mut cfg = ConfigSpace::new(VENDOR_ID, DEVICE_ID, REVISION, CLASS, HEADER_TYPE);
        cfg.set_wmask_long(REG_PMBASE, PMBASE_MASK);
        cfg.set_wmask(REG_ACPI_CNTL, ACPI_CNTL_WMASK);
        cfg.set_wmask_long(REG_RCBA, RCBA_WMASK);
        let mut lpc = Self { cfg };
        lpc.reset();
        lpc
    }

    /// Platform reset (QEMU `ich9_lpc_reset`).
    pub fn reset(&mut self) {
        self.cfg.set_long(REG_PMBASE, PMBASE_DEFAULT);
        self.cfg.set_byte(REG_ACPI_CNTL, 0);
        self.cfg.set_long(REG_RCBA, 0);
    }

    /// Config read of `len` bytes at `reg`.
    pub fn read(&self, reg: usize, len: usize) -> u32 {
        self.cfg.read(reg, len)
    }

    /// Config write of `len` bytes at `reg`, through the write mask.
    pub fn write(&mut self, reg: usize, value: u32, len: usize) {
        self.cfg.write(reg, value, len);
    }

    /// Where the PM I/O block is decoded: only with ACPI_EN set and a non-zero base
    /// (QEMU `ich9_lpc_pmbase_sci_update` + `ich9_pm_iospace_update`).
    pub fn pm_io_base(&self) -> Option<u16> {
        if self.cfg.byte(REG_ACPI_CNTL) & ACPI_CNTL_ACPI_EN == 0 {
            return None;
        }
        let base = (self.cfg.read(REG_PMBASE, 4) & PMBASE_MASK) as u16;
        (base != 0).then_some(base)
    }
}

impl Default for Lpc {
    fn default() -> Self {
        Self::new()
    }
}
