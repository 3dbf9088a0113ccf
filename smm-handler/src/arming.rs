//! Boot-time arming, shared by the host ROM and coreboot's ramstage: which SMI features
//! to ask QEMU for, installing and locking the default-SMBASE window, and checking the
//! locks from outside SMM before anything untrusted runs. Errors are typed; the coreboot
//! glue turns them into integers at its C boundary only ([`ArmError::code`]).
//!
//! See `docs/protocol.md#smi-feature-negotiation` and
//! `docs/protocol.md#the-default-smbase-window` (R1, R2, R3).

use core::ptr::read_volatile;

use crate::first_smi;
use crate::layout::window;
use q35::fw_cfg::{
    self, FwCfg, SMI_FEATURE_BROADCAST, SMI_FEATURE_CPU_HOTPLUG, SMI_FEATURE_CPU_HOT_UNPLUG,
};
use q35::io::PortIo;
use q35::mch::{self, Mch};

/// Why CPU hotplug is not offered to QEMU (only broadcast SMIs are negotiated then, and
/// QEMU refuses CPU `device_add` with its own message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// MCH 0x9C does not offer the default-SMBASE window (machine type before 5.0).
    NoDefaultSmbaseWindow,
    /// More possible CPUs than the host lays out SMM slots for.
    TooManyPossible {
        /// Possible CPUs counted at boot.
        possible: u32,
        /// Slots the host can lay out.
        slots: u32,
    },
    /// A possible CPU's APIC ID is beyond what the host can route to a slot (coreboot's
    /// stub table holds 16-bit APIC IDs; no host takes the x2APIC broadcast ID).
    ApicIdTooLarge {
        /// The largest possible APIC ID.
        max: u32,
        /// The largest APIC ID the host routes.
        limit: u32,
    },
}

impl Refusal {
    /// The log message as an SMM-style template with its arguments (`crate::log`).
    pub fn template(&self) -> (&'static str, [u64; 2]) {
        match *self {
            Refusal::NoDefaultSmbaseWindow => (
                "no SMRAM at default SMBASE (MCH 0x9C, machine type < 5.0): CPU hotplug not offered",
                [0, 0],
            ),
            Refusal::TooManyPossible { possible, slots } => (
                "{} possible CPUs exceed {} SMM slots: CPU hotplug not offered",
                [possible.into(), slots.into()],
            ),
            Refusal::ApicIdTooLarge { max, limit } => (
                "APIC IDs up to {:#x} exceed the {:#x} this firmware routes: CPU hotplug not offered",
                [max.into(), limit.into()],
            ),
        }
    }
}

/// The SMI features to request, and why CPU hotplug is left out if it is.
pub struct Policy {
    /// Feature bits to request: broadcast always, CPU hotplug and hot-unplug when every
    /// precondition holds (R1).
    pub wanted: u64,
    /// Every precondition that failed.
    pub refusals: heapless::Vec<Refusal, 3>,
}

/// Decide the SMI features from what boot found: whether the default-SMBASE window
/// exists, the possible CPUs, how many slots the host can lay out, the largest possible
/// APIC ID and the largest the host routes ([`crate::host::APIC_ID_LIMIT`] or less).
pub fn feature_policy(
    window: bool,
    possible: u32,
    slot_limit: u32,
    max_apic_id: u32,
    apic_id_limit: u32,
) -> Policy {
    let mut refusals = heapless::Vec::new();
    if !window {
        let _ = refusals.push(Refusal::NoDefaultSmbaseWindow);
    }
    if possible > slot_limit {
        let _ = refusals.push(Refusal::TooManyPossible {
            possible,
            slots: slot_limit,
        });
    }
    let limit = apic_id_limit.min(crate::host::APIC_ID_LIMIT);
    if max_apic_id > limit {
        let _ = refusals.push(Refusal::ApicIdTooLarge {
            max: max_apic_id,
            limit,
        });
    }
    let hotplug = if refusals.is_empty() {
        SMI_FEATURE_CPU_HOTPLUG | SMI_FEATURE_CPU_HOT_UNPLUG
    } else {
        0
    };
    Policy {
        wanted: SMI_FEATURE_BROADCAST | hotplug,
        refusals,
    }
}

/// What both hosts log when the negotiation left CPU hotplug out.
pub const HOTPLUG_NOT_NEGOTIATED: &str =
    "CPU hotplug with SMM not negotiated: QEMU will refuse device_add of CPUs";

/// SMM slots to lay out: one per possible CPU where CPUs can be plugged (`hotplug`
/// negotiated), else one per present CPU, so that boot work and SMRAM follow what can
/// run, not QEMU's limit; never more than the handler tracks.
pub fn slots_to_lay_out(hotplug: bool, present: u32, possible: u32) -> u32 {
    if hotplug { possible } else { present }.min(crate::slots::MAX_SLOTS as u32)
}

/// A boot-time arming step that failed; the boot must stop (fail closed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArmError {
    /// MCH 0x9C did not read back locked after the lock write; the value read.
    WindowNotLocked(u8),
    /// The window still reads as RAM from outside SMM after the lock; the dword read.
    WindowStillVisible(u32),
    /// SMRAMC without D_LCK, or with D_OPEN, after locking; the value read.
    SmramNotLocked(u8),
    /// TSEG reads as RAM from outside SMM after the lock; the dword read.
    TsegVisible(u32),
    /// An attempt to open SMRAM (D_OPEN without D_LCK, as an OS would write) changed
    /// SMRAMC; the value read after it.
    SmramOpenable(u8),
    /// An attempt to turn TSEG off (ESMRAMC 0) changed ESMRAMC; the value read after it.
    TsegDisableable(u8),
    /// QEMU's view of the SMI features (`etc/smi/requested-features`, `features-ok`)
    /// is not what this firmware negotiated; the features QEMU reports (`u64::MAX` when
    /// it reports none or not OK).
    FeaturesChanged(u64),
}

impl ArmError {
    /// The negative integer the coreboot glue passes to `die()`.
    pub fn code(&self) -> i32 {
        match self {
            ArmError::WindowNotLocked(_) => -4,
            ArmError::WindowStillVisible(_) => -6,
            ArmError::SmramNotLocked(_) => -7,
            ArmError::TsegVisible(_) => -8,
            ArmError::SmramOpenable(_) => -9,
            ArmError::TsegDisableable(_) => -10,
            ArmError::FeaturesChanged(_) => -11,
        }
    }

    /// The log message as an SMM-style template with its argument (`crate::log`).
    pub fn template(&self) -> (&'static str, [u64; 1]) {
        match *self {
            ArmError::WindowNotLocked(v) => (
                "MCH 0x9C {:#x}: default-SMBASE window not locked",
                [v.into()],
            ),
            ArmError::WindowStillVisible(v) => (
                "default-SMBASE window reads {:#x} from outside SMM, not all-ones",
                [v.into()],
            ),
            ArmError::SmramNotLocked(v) => ("SMRAMC {:#x}: not closed and locked", [v.into()]),
            ArmError::TsegVisible(v) => (
                "TSEG reads {:#x} from outside SMM, not all-ones",
                [v.into()],
            ),
            ArmError::SmramOpenable(v) => (
                "SMRAMC {:#x} after an attempt to open SMRAM: it opened",
                [v.into()],
            ),
            ArmError::TsegDisableable(v) => (
                "ESMRAMC {:#x} after an attempt to turn TSEG off: it changed",
                [v.into()],
            ),
            ArmError::FeaturesChanged(v) => (
                "QEMU reports SMI features {:#x}, not what was negotiated",
                [v],
            ),
        }
    }
}

/// Install the first-SMI handler, its context, the possible CPUs' APIC IDs by selector
/// (`possible`: none when CPU hotplug was not negotiated, so that SMM acts on no other
/// APIC ID, R6) and the pen, lock the default-SMBASE window (MCH 0x9C), and check from
/// outside SMM that it now reads all-ones (R2, R3).
///
/// # Safety
/// The window and the pen page must be unlocked firmware RAM that nothing else uses any
/// more (every AP has left the boot code that ran there).
pub unsafe fn install_and_lock_window<P: PortIo>(
    ports: &P,
    possible: impl IntoIterator<Item = u32>,
) -> Result<(), ArmError> {
    // SAFETY: the caller guarantees the window and the pen page are ours.
    unsafe { first_smi::install(possible) };
    let m = Mch::new(ports);
    if !m.lock_default_smbase_smram() {
        return Err(ArmError::WindowNotLocked(m.raw_default_smbase_smram()));
    }
    // SAFETY: reading an ordinary physical address; locked, it reads all-ones.
    let v = unsafe { read_volatile(window::WINDOW.base as usize as *const u32) };
    if v != u32::MAX {
        return Err(ArmError::WindowStillVisible(v));
    }
    Ok(())
}

/// The fail-closed gate before the OS runs, from outside SMM. It tests rather than reads
/// back, because a machine without SMM (QEMU `smm=off`) keeps the registers and their
/// lock bits: SMRAMC must say closed and locked (D_LCK set, D_OPEN clear) and ignore an
/// attempt to open it (D_OPEN without D_LCK), ESMRAMC must ignore an attempt to turn TSEG
/// off, TSEG at `tseg_base` (when given) must read all-ones, and when `window_expected`
/// the default-SMBASE window must be locked (MCH 0x9C) and read all-ones too. A register
/// that did change is written back before the error returns.
pub fn check_locked<P: PortIo>(
    ports: &P,
    tseg_base: Option<u32>,
    window_expected: bool,
) -> Result<(), ArmError> {
    let m = Mch::new(ports);
    let s = m.smramc();
    if s & mch::SMRAMC_D_LCK == 0 || s & mch::SMRAMC_D_OPEN != 0 {
        return Err(ArmError::SmramNotLocked(s));
    }
    m.set_smramc((s | mch::SMRAMC_D_OPEN) & !mch::SMRAMC_D_LCK);
    let after = m.smramc();
    if after != s {
        m.set_smramc(s);
        return Err(ArmError::SmramOpenable(after));
    }
    let e = m.esmramc();
    m.set_esmramc(0);
    let after = m.esmramc();
    if after != e {
        m.set_esmramc(e);
        return Err(ArmError::TsegDisableable(after));
    }
    if let Some(base) = tseg_base {
        // SAFETY: reading TSEG from outside SMM; the MCH must return all-ones.
        let v = unsafe { read_volatile(base as usize as *const u32) };
        if v != u32::MAX {
            return Err(ArmError::TsegVisible(v));
        }
    }
    if window_expected {
        if !m.default_smbase_smram_locked() {
            return Err(ArmError::WindowNotLocked(m.raw_default_smbase_smram()));
        }
        // SAFETY: reading an ordinary physical address; locked, it reads all-ones.
        let v = unsafe { read_volatile(window::WINDOW.base as usize as *const u32) };
        if v != u32::MAX {
            return Err(ArmError::WindowStillVisible(v));
        }
    }
    Ok(())
}

/// The gate's check of the SMI features: QEMU must report exactly `negotiated` as
/// requested and accepted (features-ok 1), so no later write changed them behind the
/// firmware's back (R1).
pub fn check_features<P: PortIo>(cfg: &FwCfg<'_, P>, negotiated: u64) -> Result<(), ArmError> {
    match fw_cfg::read_smi_features(cfg) {
        Some((_, requested, 1)) if requested == negotiated => Ok(()),
        Some((_, requested, 1)) => Err(ArmError::FeaturesChanged(requested)),
        _ => Err(ArmError::FeaturesChanged(u64::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hotplug_is_offered_only_when_every_precondition_holds() {
        let p = feature_policy(true, 8, 64, 7, u32::MAX);
        assert_eq!(p.wanted, 7);
        assert!(p.refusals.is_empty());
        let p = feature_policy(false, 80, 64, 0x1_0000, 0xFFFE);
        assert_eq!(p.wanted, SMI_FEATURE_BROADCAST);
        assert_eq!(p.refusals.len(), 3);
        assert_eq!(
            p.refusals[1],
            Refusal::TooManyPossible {
                possible: 80,
                slots: 64
            }
        );
    }
}
