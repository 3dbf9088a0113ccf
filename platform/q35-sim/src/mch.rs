//! The q35 host bridge / MCH (B0:D0:F0): SMRAMC (0x9D), ESMRAMC (0x9E) and 0x9C, which
//! locks the default-SMBASE window 0x30000-0x4FFFF (see
//! `docs/protocol.md#the-default-smbase-window`), with QEMU's `mch_update_smram` /
//! `mch_update_smbase_smram` semantics.
//!
//! Every other device-specific register (0x40-0xFF) behaves like plain writable storage,
//! which is QEMU's default for registers the MCH model does not special-case.

use crate::pci::ConfigSpace;

/// PCI vendor ID: Intel.
pub const VENDOR_ID: u16 = 0x8086;
/// PCI device ID of the q35 host bridge (82G33 DRAM controller).
pub const DEVICE_ID: u16 = 0x29C0;
/// Class 06/00: host bridge.
pub const CLASS: u16 = 0x0600;

/// Config offset of QEMU's `MCH_HOST_BRIDGE_F_SMBASE`, the default-SMBASE window control.
pub const REG_SMBASE_SMRAM: usize = 0x9C;
/// Config offset of SMRAMC.
pub const REG_SMRAMC: usize = 0x9D;
/// Config offset of ESMRAMC.
pub const REG_ESMRAMC: usize = 0x9E;

/// SMRAMC bit 6 (D_OPEN): SMRAM visible outside SMM.
pub const SMRAMC_D_OPEN: u8 = 1 << 6;
/// SMRAMC bit 5 (D_CLS): data accesses to compatible SMRAM go to the bus even in SMM.
pub const SMRAMC_D_CLS: u8 = 1 << 5;
/// SMRAMC bit 4 (D_LCK): lock the SMRAM registers until reset.
pub const SMRAMC_D_LCK: u8 = 1 << 4;
/// SMRAMC bit 3 (G_SMRAME): global SMRAM enable.
pub const SMRAMC_G_SMRAME: u8 = 1 << 3;
/// SMRAMC after reset: C_BASE_SEG (bits 2:0), hardwired to 0b010.
pub const SMRAMC_DEFAULT: u8 = 0b010;
/// SMRAMC bits the guest may write before D_LCK.
pub const SMRAMC_WMASK: u8 = SMRAMC_D_OPEN | SMRAMC_D_CLS | SMRAMC_D_LCK | SMRAMC_G_SMRAME;
/// After D_LCK only D_CLS stays writable.
pub const SMRAMC_WMASK_LOCKED: u8 = SMRAMC_D_CLS;

/// ESMRAMC bit 7 (H_SMRAME): high SMRAM enable.
pub const ESMRAMC_H_SMRAME: u8 = 1 << 7;
/// ESMRAMC after reset: SM_CACHE | SM_L1 | SM_L2, hardwired to 1.
pub const ESMRAMC_DEFAULT: u8 = 0x38;
/// ESMRAMC bits the guest may write before D_LCK: H_SMRAME | TSEG_SZ | T_EN.
pub const ESMRAMC_WMASK: u8 = 0x87;

/// 0x9C query value (QEMU `MCH_HOST_BRIDGE_F_SMBASE_QUERY`).
pub const SMBASE_QUERY: u8 = 0xFF;
/// 0x9C after a query: the window exists and is plain RAM (QEMU
/// `MCH_HOST_BRIDGE_F_SMBASE_IN_RAM`).
pub const SMBASE_IN_RAM: u8 = 0x01;
/// 0x9C lock value: the window is SMRAM until reset (QEMU `MCH_HOST_BRIDGE_F_SMBASE_LCK`).
pub const SMBASE_LCK: u8 = 0x02;

/// State of the default-SMBASE window (0x30000-0x4FFFF), as the MCH model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmbaseSmram {
    /// The machine type has no such window (`mch.smbase-smram=off`, pc-q35 <= 4.2).
    Absent,
    /// After reset: register reads 0x00, the window is plain RAM.
    Reset,
    /// Queried (reads 0x01): still plain RAM, only a lock write is accepted.
    Queried,
    /// Locked (reads 0x02) until platform reset: SMRAM, blackhole for everything else.
    Locked,
}

/// The host bridge's config space.
pub struct Mch {
    cfg: ConfigSpace,
    has_smbase_smram: bool,
}

impl Mch {
    /// The host bridge in its reset state; `has_smbase_smram` is QEMU's
    /// `mch.smbase-smram` (machine type >= 5.0).
    pub fn new(has_smbase_smram: bool) -> Self {
        let mut m = Self {
            cfg: ConfigSpace::new(VENDOR_ID, DEVICE_ID, 0, CLASS, 0),
            has_smbase_smram,
        };
        m.reset();
        m
    }

    /// Platform reset (QEMU `mch_reset`).
    pub fn reset(&mut self) {
        self.cfg.set_byte(REG_SMRAMC, SMRAMC_DEFAULT);
        self.cfg.set_wmask(REG_SMRAMC, SMRAMC_WMASK);
        self.cfg.set_byte(REG_ESMRAMC, ESMRAMC_DEFAULT);
        self.cfg.set_wmask(REG_ESMRAMC, ESMRAMC_WMASK);
        self.cfg.set_byte(REG_SMBASE_SMRAM, 0);
        self.cfg.set_wmask(REG_SMBASE_SMRAM, 0xFF);
    }

    /// Config read of `len` bytes at `reg`.
    pub fn read(&self, reg: usize, len: usize) -> u32 {
        self.cfg.read(reg, len)
    }

    /// QEMU `mch_write_config`: default masked write, then the side effects of every
    /// register the access overlaps.
    pub fn write(&mut self, reg: usize, value: u32, len: usize) {
        self.cfg.write(reg, value, len);
        let overlaps = |start: usize, size: usize| reg < start + size && start < reg + len;
        if overlaps(REG_SMRAMC, 2) {
            self.update_smram();
        }
        if overlaps(REG_SMBASE_SMRAM, 1) {
            self.update_smbase_smram();
        }
    }

    /// D_LCK: clears D_OPEN and freezes SMRAMC (except D_CLS) and ESMRAMC until reset.
    fn update_smram(&mut self) {
        let smramc = self.cfg.byte(REG_SMRAMC);
        if smramc & SMRAMC_D_LCK != 0 {
            self.cfg.set_byte(REG_SMRAMC, smramc & !SMRAMC_D_OPEN);
            self.cfg.set_wmask(REG_SMRAMC, SMRAMC_WMASK_LOCKED);
            self.cfg.set_wmask(REG_ESMRAMC, 0);
        }
    }

    /// The 0x9C state machine (QEMU `mch_update_smbase_smram`): a query answers
    /// [`SMBASE_IN_RAM`] and leaves only the lock bit writable; the lock bit then sticks
    /// until reset; any other write before a query reads back 0. The write itself already
    /// went through the write mask.
    fn update_smbase_smram(&mut self) {
        if !self.has_smbase_smram {
            // The register is plain storage: it reads back what was written.
            return;
        }
        let reg = self.cfg.byte(REG_SMBASE_SMRAM);
        if reg == SMBASE_QUERY {
            self.cfg.set_wmask(REG_SMBASE_SMRAM, SMBASE_LCK);
            self.cfg.set_byte(REG_SMBASE_SMRAM, SMBASE_IN_RAM);
            return;
        }
        if self.cfg.wmask(REG_SMBASE_SMRAM) == 0xFF {
            // Reset state: anything but the query is discarded.
            self.cfg.set_byte(REG_SMBASE_SMRAM, 0);
        }
        if self.cfg.byte(REG_SMBASE_SMRAM) & SMBASE_LCK != 0 {
            let wmask = self.cfg.wmask(REG_SMBASE_SMRAM);
            self.cfg.set_wmask(REG_SMBASE_SMRAM, wmask & !SMBASE_LCK);
            self.cfg.set_byte(REG_SMBASE_SMRAM, SMBASE_LCK);
        }
    }

    /// State of the default-SMBASE window.
    pub fn smbase_smram(&self) -> SmbaseSmram {
        if !self.has_smbase_smram {
            return SmbaseSmram::Absent;
        }
        match self.cfg.byte(REG_SMBASE_SMRAM) {
            SMBASE_LCK => SmbaseSmram::Locked,
            SMBASE_IN_RAM => SmbaseSmram::Queried,
            _ => SmbaseSmram::Reset,
        }
    }

    /// Current SMRAMC.
    pub fn smramc(&self) -> u8 {
        self.cfg.byte(REG_SMRAMC)
    }

    /// Current ESMRAMC.
    pub fn esmramc(&self) -> u8 {
        self.cfg.byte(REG_ESMRAMC)
    }
}
