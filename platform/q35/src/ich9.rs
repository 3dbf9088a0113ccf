//! ICH9 LPC power management: PMBASE, ACPI decode, SMI_EN, GPE0 and the PM timer.

use crate::io::PortIo;
use crate::pci::{PciConfig, LPC};

/// LPC config register PMBASE (dword at 0x40): the ACPI PM I/O base in bits 15:7.
pub const REG_PMBASE: u8 = 0x40;
/// LPC config register ACPI_CNTL (byte at 0x44).
pub const REG_ACPI_CNTL: u8 = 0x44;
/// ACPI_CNTL bit 7 (ACPI_EN): decode the PM I/O block at PMBASE.
pub const ACPI_CNTL_EN: u8 = 1 << 7;

/// The PMBASE coreboot and SeaBIOS use.
pub const PMBASE: u16 = 0x600;

/// PM I/O offset of PM_TMR (dword, read-only): the 24-bit ACPI PM timer.
pub const PM_TMR: u16 = 0x08;
/// PM I/O offset of GPE0_STS (write 1 to clear); see [`GPE0_CPU_HOTPLUG`].
pub const GPE0_STS: u16 = 0x20;
/// PM I/O offset of SMI_EN (dword): which events raise an SMI.
pub const SMI_EN: u16 = 0x30;

/// SMI_EN bit 0 (GBL_SMI_EN): global SMI enable; no SMI is raised while it is clear.
pub const SMI_EN_GBL_SMI: u32 = 1 << 0;
/// SMI_EN bit 5 (APMC_EN): a write to [`APM_CNT`] raises an SMI.
pub const SMI_EN_APMC: u32 = 1 << 5;

/// GPE0_STS / GPE0_EN bit 2: CPU hotplug event (QEMU's `\_GPE._E02`).
pub const GPE0_CPU_HOTPLUG: u8 = 1 << 2;

/// I/O port APM_CNT (0xB2): writing it raises an SMI when [`SMI_EN_APMC`] is set.
pub const APM_CNT: u16 = 0xB2;
/// I/O port APM_STS (0xB3): a scratch byte for passing data to the SMI handler.
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

/// Read SMI_EN of the PM block at `pmbase`.
pub fn smi_en<P: PortIo>(ports: &P, pmbase: u16) -> u32 {
    ports.inl(pmbase + SMI_EN)
}

/// Write SMI_EN of the PM block at `pmbase`.
pub fn set_smi_en<P: PortIo>(ports: &P, pmbase: u16, v: u32) {
    ports.outl(pmbase + SMI_EN, v)
}

/// 24-bit PM timer value.
pub fn pm_timer<P: PortIo>(ports: &P, pmbase: u16) -> u32 {
    ports.inl(pmbase + PM_TMR) & 0x00FF_FFFF
}
