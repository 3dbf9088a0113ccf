//! QEMU q35 hardware access shared by the host ROM, the SMM handler and the payload.
//!
//! Every device driver here is generic over [`io::PortIo`], so host tests can run the same
//! code against the `q35-sim` device simulator. Nothing in this crate panics, formats or
//! logs: it is linked into SMM code, where `core::fmt` and panics are forbidden.
#![no_std]

pub mod cpuhp;
pub mod fw_cfg;
pub mod ich9;
pub mod io;
pub mod lapic;
pub mod mch;
pub mod pci;
pub mod pmtimer;
pub mod serial;
pub mod table_loader;

pub use io::PortIo;
