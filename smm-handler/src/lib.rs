//! The CPU-hotplug SMM handler for QEMU q35, shared by the built-in host ROM and coreboot.
//!
//! SMM code: nothing here panics, formats or uses floats; the object check in
//! `tests/` (fwtool check-smm) proves it on the built objects. Data written by the OS is
//! never trusted.
#![no_std]

pub mod diag;
pub mod first_smi;
pub mod params;

use q35::io::PortIo;
use q35::serial::Serial;

/// APMC command QEMU's AML writes to port 0xB2 after a CPU hot-add (`\_SB.PCI0.SMI0`).
pub const APMC_CPU_HOTPLUG: u8 = 0x04;

/// Service an APMC 4 SMI on the CPU that holds the host's SMI lock.
///
/// This build lays out SMRAM for every possible CPU and keeps the first-SMI handler's
/// gate closed: a hot-added CPU that takes the broadcast SMI waits at the gate in locked
/// SMRAM (safe, never running OS code in SMM). Relocating it is the CPU hot-add work.
pub fn cpu_hotplug_smi<P: PortIo>(console: &Serial<'_, P>) {
    console.write_bytes(
        b"[SMM WARN] APMC 4: CPU hot-add relocation is not in this build; new CPUs stay gated\n",
    );
}
