//! Enabling TSEG, and the final locks: the first-SMI handler installed and the
//! default-SMBASE window locked (`smm_handler::arming`), SMRAM closed and locked (D_LCK),
//! all checked from outside SMM.

use q35::io::HwPorts;
use q35::mch::{self, Mch};
use smm_handler::arming;
use smm_handler::layout::tseg;

use super::SmmError;

/// Enable TSEG (H_SMRAME, T_EN, 1 MiB) and compatible SMRAM, still unlocked.
pub fn enable_tseg() -> Result<(), SmmError> {
    let m = Mch::new(&HwPorts);
    m.set_esmramc(mch::ESMRAMC_H_SMRAME | mch::ESMRAMC_TSEG_1M | mch::ESMRAMC_T_EN);
    m.set_smramc(mch::SMRAMC_G_SMRAME | mch::SMRAMC_C_BASE_SEG);
    if m.tseg_size() != Some(tseg::SIZE) {
        return Err(SmmError::TsegNotEnabled);
    }
    Ok(())
}

/// Install the first-SMI handler and lock the default-SMBASE window (when `window`),
/// then close and lock SMRAM (D_LCK), and check all of it from outside SMM.
pub fn install_and_lock(window: bool, tseg_base: u32) -> Result<(), SmmError> {
    if window {
        // SAFETY: the window and the pen page are still unlocked firmware RAM, and every
        // AP has left the boot code that ran there (they are parked in the ROM's RAM).
        unsafe { arming::install_and_lock_window(&HwPorts) }.map_err(SmmError::Arm)?;
    }
    let m = Mch::new(&HwPorts);
    m.set_smramc(mch::SMRAMC_G_SMRAME | mch::SMRAMC_C_BASE_SEG | mch::SMRAMC_D_LCK);
    arming::check_locked(&HwPorts, Some(tseg_base), window).map_err(SmmError::Arm)
}
