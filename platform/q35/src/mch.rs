//! q35 MCH SMRAM control: SMRAMC (0x9D), ESMRAMC (0x9E) and "SMRAM at default SMBASE"
//! (0x9C, spec section 5).

use crate::io::PortIo;
use crate::pci::{PciConfig, MCH};

pub const REG_SMBASE_SMRAM: u8 = 0x9C;
pub const REG_SMRAMC: u8 = 0x9D;
pub const REG_ESMRAMC: u8 = 0x9E;

pub const SMRAMC_D_OPEN: u8 = 1 << 6;
pub const SMRAMC_D_CLS: u8 = 1 << 5;
pub const SMRAMC_D_LCK: u8 = 1 << 4;
pub const SMRAMC_G_SMRAME: u8 = 1 << 3;
/// C_BASE_SEG: fixed 0b010 (compatible SMRAM at 0xA0000).
pub const SMRAMC_C_BASE_SEG: u8 = 0b010;

pub const ESMRAMC_H_SMRAME: u8 = 1 << 7;
pub const ESMRAMC_T_EN: u8 = 1 << 0;
/// TSEG size field (bits 2:1): 0 = 1 MiB, 1 = 2 MiB, 2 = 8 MiB.
pub const ESMRAMC_TSEG_1M: u8 = 0 << 1;

/// Write 0xFF to query "SMRAM at default SMBASE"; reads 0x01 when QEMU has it.
pub const SMBASE_SMRAM_QUERY: u8 = 0xFF;
pub const SMBASE_SMRAM_IN_RAM: u8 = 0x01;
pub const SMBASE_SMRAM_LOCK: u8 = 0x02;

pub const DEFAULT_SMBASE: u32 = 0x30000;
/// The lockable window at the default SMBASE: 0x30000-0x4FFFF.
pub const DEFAULT_SMRAM_BASE: u32 = 0x30000;
pub const DEFAULT_SMRAM_SIZE: u32 = 0x20000;

pub struct Mch<'a, P: PortIo> {
    pci: PciConfig<'a, P>,
}

impl<'a, P: PortIo> Mch<'a, P> {
    pub fn new(ports: &'a P) -> Self {
        Self {
            pci: PciConfig::new(ports),
        }
    }

    pub fn smramc(&self) -> u8 {
        self.pci.read8(MCH, REG_SMRAMC)
    }

    pub fn set_smramc(&self, v: u8) {
        self.pci.write8(MCH, REG_SMRAMC, v)
    }

    pub fn esmramc(&self) -> u8 {
        self.pci.read8(MCH, REG_ESMRAMC)
    }

    pub fn set_esmramc(&self, v: u8) {
        self.pci.write8(MCH, REG_ESMRAMC, v)
    }

    /// Query SMRAM at default SMBASE (spec 5.2 step 1). `true` when QEMU has it and it
    /// is not locked yet. The query does not change memory decode.
    pub fn query_default_smbase_smram(&self) -> bool {
        self.pci.write8(MCH, REG_SMBASE_SMRAM, SMBASE_SMRAM_QUERY);
        self.pci.read8(MCH, REG_SMBASE_SMRAM) == SMBASE_SMRAM_IN_RAM
    }

    /// Close and lock the 0x30000-0x4FFFF window; `true` when it reads back locked.
    pub fn lock_default_smbase_smram(&self) -> bool {
        self.pci.write8(MCH, REG_SMBASE_SMRAM, SMBASE_SMRAM_LOCK);
        self.default_smbase_smram_locked()
    }

    pub fn default_smbase_smram_locked(&self) -> bool {
        self.pci.read8(MCH, REG_SMBASE_SMRAM) == SMBASE_SMRAM_LOCK
    }

    pub fn raw_default_smbase_smram(&self) -> u8 {
        self.pci.read8(MCH, REG_SMBASE_SMRAM)
    }

    /// TSEG size as programmed in ESMRAMC, or `None` when TSEG is off or uses the
    /// extended size field.
    pub fn tseg_size(&self) -> Option<u32> {
        let e = self.esmramc();
        if e & ESMRAMC_T_EN == 0 {
            return None;
        }
        match (e >> 1) & 3 {
            0 => Some(1 << 20),
            1 => Some(2 << 20),
            2 => Some(8 << 20),
            _ => None,
        }
    }
}
