//! The CPU-hotplug SMM handler for QEMU q35, shared by the built-in host ROM and coreboot.
//!
//! A hot-added CPU enters SMM at the default SMBASE the moment the OS raises the hotplug
//! SMI (APMC 4). The handler relocates each such CPU, one at a time, into an SMM slot of
//! its own through a gated first-SMI handler in locked SMRAM, then leaves it halted in the
//! post-SMM pen for the OS to start. `docs/protocol.md` explains the protocol;
//! `docs/glossary.md` fixes the names used here.
//!
//! Map of the crate:
//! - [`layout`], [`save_state`]: where everything lives, named once.
//! - [`first_smi`], [`boot_reloc`]: the 16-bit code that runs at the default SMBASE
//!   (`asm/`), and the monarch's view of the window.
//! - [`hotplug`]: APMC 4 — scan, arrival barrier, serialized relocation, recovery;
//!   [`eject`]: hot-remove (plan, park, eject by selector, forget the slot).
//! - [`host`]: the seam to the two hosts; [`entry`]: the SMI entry steps both share.
//! - [`slots`], [`boot_info`]: the SMRAM data; [`arming`]: boot-time negotiation policy
//!   and locking, shared by both hosts' boot code.
//! - [`log`], [`diag`]: logging without `core::fmt`, the read-only diagnostic query.
//!
//! SMM code: nothing here panics, formats or uses floats; the object check in `tests/`
//! (`fwtool check-smm`) proves it on the built objects. Data the OS can write is never
//! trusted.
#![no_std]

pub mod arming;
pub mod boot_info;
pub mod boot_reloc;
pub mod diag;
pub mod eject;
pub mod entry;
pub mod first_smi;
pub mod host;
pub mod hotplug;
pub mod layout;
pub mod log;
pub mod save_state;
pub mod slots;
