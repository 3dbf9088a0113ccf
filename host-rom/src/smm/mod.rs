//! SMM setup the way coreboot's SMM stage does it, one file per job:
//! [`rmod`] parses the relocatable SMM module, [`tseg`] lays out TSEG for every possible
//! CPU, [`relocate`] moves each present CPU into its slot and checks it, [`lock`] installs
//! the first-SMI handler and takes the locks. Every step is checked; the caller stops the
//! boot on any error.

pub mod lock;
pub mod relocate;
pub mod rmod;
pub mod tseg;

use q35::lapic;
use smm_handler::arming::ArmError;

/// A failed SMM setup step; its fields are printed (through `Debug`) in the FATAL line.
#[allow(dead_code)]
#[derive(Debug)]
pub enum SmmError {
    /// The SMM module file is malformed (what is wrong).
    BadModule(&'static str),
    /// The module image (bytes) does not fit its TSEG region.
    ModuleTooLarge(u32),
    /// More slots asked for than the handler tracks.
    TooManySlots(u32),
    /// A present CPU's APIC ID has no boot mailbox entry.
    ApicIdTooLarge(u32),
    /// An IPI could not be sent.
    Ipi(lapic::IpiError),
    /// A CPU never confirmed its boot relocation.
    RelocationTimeout {
        /// The CPU.
        apic: u32,
    },
    /// A CPU with no boot mailbox entry entered the boot relocation stub.
    UnknownCpuInRelocation,
    /// A CPU did not answer the diagnostic query after relocation.
    QueryFailed {
        /// The CPU.
        apic: u32,
    },
    /// A CPU's SMIs are served by another slot than the layout gave it.
    WrongSlot {
        /// The CPU.
        apic: u32,
        /// The slot that answered.
        slot: u32,
        /// That slot's SMBASE.
        smbase: u32,
    },
    /// ESMRAMC does not read back TSEG enabled with this size (bytes).
    TsegNotEnabled(u32),
    /// The boot-phase flag in TSEG could not be cleared (TSEG did not open, or the write
    /// did not stick): SMM would keep answering the diagnostic query.
    BootPhaseNotEnded,
    /// Installing or checking the locks failed.
    Arm(ArmError),
}
