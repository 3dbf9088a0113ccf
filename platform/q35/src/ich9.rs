//! ICH9 LPC power management: PMBASE, ACPI decode, SMI_EN, GPE0 and the PM timer.

use crate::io::PortIo;
use crate::pci::{PciConfig, LPC};

pub const REG_PMBASE: u8 = 0x40;
pub const REG_ACPI_CNTL: u8 = 0x44;
pub const ACPI_CNTL_EN: u8 = 1 << 7;

/// The PMBASE coreboot and SeaBIOS use.
pub const PMBASE: u16 = 0x600;

pub const PM1_CNT: u16 = 0x04;
pub const PM_TMR: u16 = 0x08;
pub const GPE0_STS: u16 = 0x20;
pub const GPE0_EN: u16 = 0x28;
pub const SMI_EN: u16 = 0x30;
pub const SMI_STS: u16 = 0x34;

pub const SMI_EN_GBL_SMI: u32 = 1 << 0;
pub const SMI_EN_APMC: u32 = 1 << 5;

/// GPE0 bit 2: CPU hotplug event (`\_GPE._E02`).
pub const GPE0_CPU_HOTPLUG: u8 = 1 << 2;

pub const APM_CNT: u16 = 0xB2;
pub const APM_STS: u16 = 0xB3;

/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u32 = 3_579_545;

/// Program PMBASE and enable ACPI I/O decode.
pub fn enable_pmbase<P: PortIo>(ports: &P, base: u16) {
    let pci = PciConfig::new(ports);
    pci.write32(LPC, REG_PMBASE, u32::from(base) | 1);
    let c = pci.read8(LPC, REG_ACPI_CNTL);
    pci.write8(LPC, REG_ACPI_CNTL, c | ACPI_CNTL_EN);
}

/// The PMBASE currently programmed (bits 15:7), if ACPI decode is on.
pub fn pmbase<P: PortIo>(ports: &P) -> Option<u16> {
    let pci = PciConfig::new(ports);
    if pci.read8(LPC, REG_ACPI_CNTL) & ACPI_CNTL_EN == 0 {
        return None;
    }
    Some((pci.read32(LPC, REG_PMBASE) & 0xFF80) as u16)
}

pub fn smi_en<P: PortIo>(ports: &P, pmbase: u16) -> u32 {
    ports.inl(pmbase + SMI_EN)
}

pub fn set_smi_en<P: PortIo>(ports: &P, pmbase: u16, v: u32) {
    ports.outl(pmbase + SMI_EN, v)
}

/// 24-bit PM timer value.
pub fn pm_timer<P: PortIo>(ports: &P, pmbase: u16) -> u32 {
    ports.inl(pmbase + PM_TMR) & 0x00FF_FFFF
}
