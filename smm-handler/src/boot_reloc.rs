//! The host ROM's boot relocation stub and its boot mailbox: how the present CPUs get
//! their slots at boot, one at a time, before the default-SMBASE window is locked
//! (`docs/protocol.md#relocation-step-by-step`). coreboot relocates with its own stub.

use core::mem::offset_of;
use core::ptr::addr_of;

use crate::layout::window::BOOT_MAILBOX;
use crate::layout::{BootMailbox, DEFAULT_SMBASE, XAPIC_IDS};
use crate::save_state as ss;

const fn mb(off: usize) -> u32 {
    BOOT_MAILBOX.base + off as u32
}

core::arch::global_asm!(
    concat!(
        include_str!("../asm/cpuid_apic_id.S"),
        include_str!("../asm/boot_reloc.S")
    ),
    entries = const XAPIC_IDS,
    mb_new_smbase = const mb(offset_of!(BootMailbox, new_smbase)),
    mb_done = const mb(offset_of!(BootMailbox, done)),
    mb_unknown_apic = const mb(offset_of!(BootMailbox, unknown_apic)),
    mb_unknown = const mb(offset_of!(BootMailbox, unknown)),
    ss_revision = const DEFAULT_SMBASE + ss::REVISION,
    ss_smbase = const DEFAULT_SMBASE + ss::SMBASE,
    ss_legacy_smbase = const DEFAULT_SMBASE + ss::LEGACY_SMBASE,
    options(att_syntax)
);

extern "C" {
    static boot_reloc_stub_start: u8;
    static boot_reloc_stub_end: u8;
}

/// The assembled boot relocation stub, to be copied to the default-SMBASE entry point.
pub fn stub_code() -> &'static [u8] {
    crate::first_smi::blob(
        addr_of!(boot_reloc_stub_start),
        addr_of!(boot_reloc_stub_end),
    )
}

/// The boot mailbox in the (still unlocked) default-SMBASE window.
pub fn mailbox() -> *mut BootMailbox {
    BOOT_MAILBOX.base as usize as *mut BootMailbox
}
