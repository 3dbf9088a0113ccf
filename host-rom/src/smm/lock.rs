//! Probing for SMM, enabling TSEG, ending the boot phase, and the final locks: the
//! first-SMI handler installed and the default-SMBASE window locked
//! (`smm_handler::arming`), SMRAM closed and locked (D_LCK), all checked from outside SMM.

use core::ptr::{read_volatile, write_volatile};

use q35::io::HwPorts;
use q35::mch::{self, Mch};
use smm_handler::arming;
use smm_handler::layout::tseg::Tseg;

use super::SmmError;

/// Enable TSEG (H_SMRAME, T_EN, `t`'s size) and compatible SMRAM, still unlocked.
pub fn enable_tseg(t: Tseg) -> Result<(), SmmError> {
    let m = Mch::new(&HwPorts);
    m.set_esmramc(
        mch::ESMRAMC_H_SMRAME | mch::esmramc_tseg_size(t.size_field()) | mch::ESMRAMC_T_EN,
    );
    m.set_smramc(mch::SMRAMC_G_SMRAME | mch::SMRAMC_C_BASE_SEG);
    if m.tseg_size() != Some(t.size) {
        return Err(SmmError::TsegNotEnabled(t.size));
    }
    Ok(())
}

/// Whether the machine has SMM, probed from outside SMM and undone: with TSEG enabled and
/// SMRAM closed (not locked), a machine with SMM reads all-ones at `tseg_base`; one
/// without (QEMU 10.0.2 `smm=off`) reads the RAM there. Measured: Debian's QEMU 7.2 with
/// `smm=off` still has SMM.
///
/// # Safety
/// `tseg_base..+1 MiB` must be RAM that nothing uses yet, with TSEG not enabled.
pub unsafe fn machine_has_smm(tseg_base: u32) -> bool {
    const PATTERN: u32 = 0x5350_524F; // "ORPS": anything but all-ones
    let p = tseg_base as usize as *mut u32;
    let m = Mch::new(&HwPorts);
    let (smramc, esmramc) = (m.smramc(), m.esmramc());
    // SAFETY: the first dword of the future TSEG, unused RAM (caller contract).
    unsafe { write_volatile(p, PATTERN) };
    m.set_esmramc(mch::ESMRAMC_H_SMRAME | mch::ESMRAMC_TSEG_1M | mch::ESMRAMC_T_EN);
    m.set_smramc(mch::SMRAMC_G_SMRAME | mch::SMRAMC_C_BASE_SEG);
    // SAFETY: as above; with SMM this read is routed to the MCH's blackhole.
    let seen = unsafe { read_volatile(p) };
    m.set_smramc(smramc);
    m.set_esmramc(esmramc);
    seen == u32::MAX
}

/// End the boot phase: clear [`smm_handler::boot_info::SmmParams::boot_phase`] at
/// `flag` in TSEG, after which SMM answers the diagnostic query only if its module was
/// built with the `diag-query` feature. TSEG is disabled for the write (the only way to
/// write it from outside SMM before the locks) and enabled again.
///
/// # Safety
/// `flag` must be the boot-phase field of the SMM module's parameter block in TSEG, with
/// TSEG enabled and not locked, and no CPU in SMM.
pub unsafe fn end_boot_phase(t: Tseg, flag: *mut u32) -> Result<(), SmmError> {
    let m = Mch::new(&HwPorts);
    let esmramc = m.esmramc();
    m.set_esmramc(esmramc & !mch::ESMRAMC_T_EN);
    let open = m.tseg_size().is_none();
    // SAFETY: the field lies in TSEG RAM (caller contract); with T_EN clear it is plain RAM.
    let cleared = open
        && unsafe {
            write_volatile(flag, 0);
            read_volatile(flag) == 0
        };
    m.set_esmramc(esmramc);
    if m.tseg_size() != Some(t.size) {
        return Err(SmmError::TsegNotEnabled(t.size));
    }
    if !cleared {
        return Err(SmmError::BootPhaseNotEnded);
    }
    Ok(())
}

/// Install the first-SMI handler with the `possible` CPUs' APIC IDs and lock the
/// default-SMBASE window (when `window`), then close and lock SMRAM (D_LCK), and check
/// all of it from outside SMM.
pub fn install_and_lock(
    window: bool,
    tseg_base: u32,
    possible: impl IntoIterator<Item = u32>,
) -> Result<(), SmmError> {
    if window {
        // SAFETY: the window and the pen page are still unlocked firmware RAM, and every
        // AP has left the boot code that ran there (they are parked in the ROM's RAM).
        unsafe { arming::install_and_lock_window(&HwPorts, possible) }.map_err(SmmError::Arm)?;
    }
    let m = Mch::new(&HwPorts);
    m.set_smramc(mch::SMRAMC_G_SMRAME | mch::SMRAMC_C_BASE_SEG | mch::SMRAMC_D_LCK);
    arming::check_locked(&HwPorts, Some(tseg_base), window).map_err(SmmError::Arm)
}
