//! q35 MCH SMRAM control: SMRAMC (0x9D), ESMRAMC (0x9E) and QEMU's register 0x9C, which
//! locks the default-SMBASE window 0x30000-0x4FFFF as SMRAM (see
//! `docs/protocol.md#the-default-smbase-window`).

use crate::io::PortIo;
use crate::pci::{PciConfig, MCH};

/// MCH config register 0x9C (QEMU `MCH_HOST_BRIDGE_F_SMBASE`): controls the default-SMBASE
/// window on machine types >= 5.0 (QEMU `mch.smbase-smram`).
pub const REG_SMBASE_SMRAM: u8 = 0x9C;
/// MCH config register SMRAMC (0x9D): compatible SMRAM (0xA0000) control and D_LCK.
pub const REG_SMRAMC: u8 = 0x9D;
/// MCH config register ESMRAMC (0x9E): extended SMRAM (TSEG) control.
pub const REG_ESMRAMC: u8 = 0x9E;

/// SMRAMC bit 6 (D_OPEN): SMRAM is visible outside SMM. Cleared by D_LCK.
pub const SMRAMC_D_OPEN: u8 = 1 << 6;
/// SMRAMC bit 5 (D_CLS): data accesses to compatible SMRAM go to the bus even in SMM.
pub const SMRAMC_D_CLS: u8 = 1 << 5;
/// SMRAMC bit 4 (D_LCK): lock SMRAMC and ESMRAMC (all but D_CLS) until platform reset.
pub const SMRAMC_D_LCK: u8 = 1 << 4;
/// SMRAMC bit 3 (G_SMRAME): global SMRAM enable.
pub const SMRAMC_G_SMRAME: u8 = 1 << 3;
/// SMRAMC bits 2:0 (C_BASE_SEG): fixed 0b010 (compatible SMRAM at 0xA0000).
pub const SMRAMC_C_BASE_SEG: u8 = 0b010;

/// ESMRAMC bit 7 (H_SMRAME): high SMRAM enable (compatible SMRAM also at 0xFEDA0000).
pub const ESMRAMC_H_SMRAME: u8 = 1 << 7;
/// ESMRAMC bit 0 (T_EN): TSEG enable.
pub const ESMRAMC_T_EN: u8 = 1 << 0;
/// ESMRAMC bits 2:1 (TSEG_SZ) value 0: a 1 MiB TSEG (1 = 2 MiB, 2 = 8 MiB, 3 = QEMU's
/// extended size).
pub const ESMRAMC_TSEG_1M: u8 = 0 << 1;

/// ESMRAMC's TSEG_SZ bits for field value `field` (0 = 1 MiB, 1 = 2 MiB, 2 = 8 MiB).
pub const fn esmramc_tseg_size(field: u8) -> u8 {
    (field & 3) << 1
}

/// 0x9C value to write to query the default-SMBASE window (QEMU
/// `MCH_HOST_BRIDGE_F_SMBASE_QUERY`).
pub const SMBASE_SMRAM_QUERY: u8 = 0xFF;
/// 0x9C value after a query when QEMU has the default-SMBASE window and it is not locked
/// yet (QEMU `MCH_HOST_BRIDGE_F_SMBASE_IN_RAM`): still plain RAM.
pub const SMBASE_SMRAM_IN_RAM: u8 = 0x01;
/// 0x9C value to write, and read back, for a locked default-SMBASE window (QEMU
/// `MCH_HOST_BRIDGE_F_SMBASE_LCK`): SMRAM, unreadable outside SMM, until platform reset.
pub const SMBASE_SMRAM_LOCK: u8 = 0x02;

/// The MCH's SMRAM registers on one set of ports.
pub struct Mch<'a, P: PortIo> {
    pci: PciConfig<'a, P>,
}

impl<'a, P: PortIo> Mch<'a, P> {
    /// A driver on `ports`; touches no register.
    pub fn new(ports: &'a P) -> Self {
        Self {
            pci: PciConfig::new(ports),
        }
    }

    /// Read SMRAMC.
    pub fn smramc(&self) -> u8 {
        self.pci.read8(MCH, REG_SMRAMC)
    }

    /// Write SMRAMC (ignored for every bit but D_CLS once D_LCK is set).
    pub fn set_smramc(&self, v: u8) {
        self.pci.write8(MCH, REG_SMRAMC, v)
    }

    /// Read ESMRAMC.
    pub fn esmramc(&self) -> u8 {
        self.pci.read8(MCH, REG_ESMRAMC)
    }

    /// Write ESMRAMC (ignored once SMRAMC.D_LCK is set).
    pub fn set_esmramc(&self, v: u8) {
        self.pci.write8(MCH, REG_ESMRAMC, v)
    }

    /// Query the default-SMBASE window: write [`SMBASE_SMRAM_QUERY`] to 0x9C and check
    /// that it reads [`SMBASE_SMRAM_IN_RAM`]. `true` when QEMU has the window and it is
    /// not locked yet. The query does not change memory decode.
    pub fn query_default_smbase_smram(&self) -> bool {
        self.pci.write8(MCH, REG_SMBASE_SMRAM, SMBASE_SMRAM_QUERY);
        self.pci.read8(MCH, REG_SMBASE_SMRAM) == SMBASE_SMRAM_IN_RAM
    }

    /// Lock the default-SMBASE window (0x30000-0x4FFFF becomes SMRAM until platform
    /// reset); `true` when 0x9C reads back [`SMBASE_SMRAM_LOCK`]. QEMU discards the lock
    /// unless a query came first, and on machine types without the window 0x9C is plain
    /// storage that reads back 0x02 too: check [`Self::query_default_smbase_smram`] first.
    pub fn lock_default_smbase_smram(&self) -> bool {
        self.pci.write8(MCH, REG_SMBASE_SMRAM, SMBASE_SMRAM_LOCK);
        self.default_smbase_smram_locked()
    }

    /// Whether 0x9C reads [`SMBASE_SMRAM_LOCK`]: the default-SMBASE window is locked.
    pub fn default_smbase_smram_locked(&self) -> bool {
        self.pci.read8(MCH, REG_SMBASE_SMRAM) == SMBASE_SMRAM_LOCK
    }

    /// The raw value of 0x9C (0x00 after reset, `SMBASE_SMRAM_*` after a query or lock;
    /// what was written on machine types without the window).
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
