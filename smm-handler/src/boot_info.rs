//! The boot info: what boot code records for SMM before SMRAM is locked, the same on both
//! hosts. SMM only reads it. The host ROM keeps it in its SMM module's parameter block
//! ([`SmmParams`], in TSEG); coreboot's ramstage writes it to
//! [`crate::layout::window::BOOT_INFO`] in the default-SMBASE window, which becomes SMRAM
//! at the 0x9C lock.

use core::sync::atomic::AtomicU32;

use crate::layout::tseg::MAX_STACKS;
use crate::slots::{Slots, MAX_SLOTS};

/// [`BootInfo::magic`] of a block boot code finished writing ("HPBI").
pub const BOOT_INFO_MAGIC: u32 = 0x4942_5048;

/// What SMM needs to know from boot.
#[repr(C)]
pub struct BootInfo {
    /// [`BOOT_INFO_MAGIC`] once the block is complete (written last).
    pub magic: u32,
    /// Reserved (the possible CPUs are in the window's [`crate::layout::PossibleCpus`]).
    pub _reserved0: u32,
    /// TSC ticks per microsecond, calibrated at boot against the PM timer. SMM trusts
    /// only the TSC: the PM timer's PMBASE is OS-writable (`docs/qemu.md#q-pm-timer`).
    pub tsc_per_us: u64,
    /// SMM log level (`crate::log::Level as u32`); lines above it are dropped.
    pub log_level: u32,
    /// Reserved.
    pub _reserved: u32,
    /// Address of the host's APIC-ID routing table (coreboot's `apic_id_to_cpu`, one
    /// u16 per slot), or 0 where each slot's entry stub knows its own slot (host ROM).
    pub route_table: u64,
}

impl BootInfo {
    /// An unfilled block.
    pub const fn empty() -> Self {
        Self {
            magic: 0,
            _reserved0: 0,
            tsc_per_us: 0,
            log_level: crate::log::Level::Info as u32,
            _reserved: 0,
            route_table: 0,
        }
    }

    /// Whether boot code finished the block.
    pub fn is_valid(&self) -> bool {
        self.magic == BOOT_INFO_MAGIC
    }
}

/// [`SmmParams::magic`] ("SMMP").
pub const PARAMS_MAGIC: u32 = 0x534D_4D50;

/// The host ROM's SMM module parameter block (its counterpart of coreboot's
/// `smm_runtime`), filled by the boot code before SMRAM is closed. After that only the
/// slot table in it changes, and only from SMM (and [`SmmParams::boot_phase`], cleared
/// once by the boot code before the locks).
#[repr(C)]
pub struct SmmParams {
    /// [`PARAMS_MAGIC`] once filled.
    pub magic: u32,
    /// Slots laid out (one per possible CPU).
    pub slot_count: u32,
    /// TSEG base (the pool stacks are at [`crate::layout::tseg::pool_stack`]).
    pub tseg_base: u32,
    /// Non-zero during the boot phase: set when the boot code fills the block, cleared by
    /// it right before the locks (with TSEG briefly disabled, the only way to write TSEG
    /// from outside SMM). While it is set, SMM answers the diagnostic query, which the
    /// boot code uses to check every CPU's slot (`crate::diag`); afterwards only builds
    /// with the `diag-query` feature do.
    pub boot_phase: u32,
    /// The boot info.
    pub boot: BootInfo,
    /// SMBASE of each slot ([`crate::layout::tseg::slot_smbase`]).
    pub slot_smbase: [u32; MAX_SLOTS],
    /// Slot states and the APIC ID each slot serves (seeded with the boot CPUs).
    pub slots: Slots,
    /// Stacks in the pool ([`crate::layout::tseg::Tseg::stack_count`]).
    pub stack_count: u32,
    /// The owner of each pool stack: slot + 1 of the CPU running on it, 0 = free. Claimed
    /// and released by the SMM entry code with compare-and-swap; a CPU that finds a stack
    /// still owned by its own slot (its earlier run was cut short) takes it back.
    pub stack_owner: [AtomicU32; MAX_STACKS as usize],
    /// SMI entries that found no free stack at first and waited for one (counted by the
    /// entry code, reported and cleared by the monarch).
    pub stack_waits: AtomicU32,
    /// SMI entries that waited for a stack in vain and left SMM without the handler.
    pub stack_gave_up: AtomicU32,
}

impl SmmParams {
    /// An unfilled block.
    pub const fn empty() -> Self {
        Self {
            magic: 0,
            slot_count: 0,
            tseg_base: 0,
            boot_phase: 0,
            boot: BootInfo::empty(),
            slot_smbase: [0; MAX_SLOTS],
            slots: Slots::new(),
            stack_count: 0,
            stack_owner: [const { AtomicU32::new(0) }; MAX_STACKS as usize],
            stack_waits: AtomicU32::new(0),
            stack_gave_up: AtomicU32::new(0),
        }
    }

    /// The laid-out slots' SMBASEs.
    pub fn slot_smbases(&self) -> &[u32] {
        let n = (self.slot_count as usize).min(MAX_SLOTS);
        self.slot_smbase.get(..n).unwrap_or(&[])
    }
}
