//! The CPU-hotplug SMM handler for QEMU q35, shared by the built-in host ROM and coreboot.
//!
//! SMM code: nothing here panics, formats or uses floats; the object check in
//! `tests/` (fwtool check-smm) proves it on the built objects. Data written by the OS is
//! never trusted.
#![no_std]

pub mod diag;
pub mod first_smi;
pub mod hotplug;
pub mod log;
pub mod params;
pub mod slots;

/// APMC command QEMU's AML writes to port 0xB2 after a CPU hot-add (`\_SB.PCI0.SMI0`).
pub const APMC_CPU_HOTPLUG: u8 = 0x04;
