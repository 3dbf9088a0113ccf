//! The parameter block a host fills into the SMM module before SMRAM is closed
//! (the host ROM's counterpart of coreboot's `smm_runtime`), and the SMRAM layout.

use crate::slots::Slots;

/// Most SMM slots (possible CPUs) a host lays out.
pub const MAX_SLOTS: usize = 64;
pub const PARAMS_MAGIC: u32 = 0x534D_4D50; // "SMMP"
pub const PARAMS_VERSION: u32 = 2;
/// Bytes of the per-slot SMM stack; its lowest 8 bytes hold a canary.
pub const SLOT_STACK_SIZE: u32 = 0x800;
pub const STACK_CANARY: u64 = 0x5AFE_57AC_C0DE_CAFE;
/// Save-state map size at the top of each slot's 64 KiB SMBASE window.
pub const SAVE_STATE_SIZE: u32 = 0x200;
/// Slot spacing: entry stubs (<= 0x200 bytes at SMBASE+0x8000) and save states
/// (SMBASE+0xFE00) interleave without overlap, as in coreboot's `smm_create_map`.
pub const SLOT_STRIDE: u32 = 0x400;

#[repr(C)]
pub struct SmmParams {
    pub magic: u32,
    pub version: u32,
    pub tseg_base: u32,
    pub tseg_size: u32,
    /// Slots laid out (one per possible CPU).
    pub num_slots: u32,
    pub stack_size: u32,
    /// Slot i's stack is `[stack_base + i * stack_size, + stack_size)`.
    pub stack_base: u32,
    pub pmbase: u32,
    /// SMI features granted by QEMU.
    pub features: u32,
    /// Post-SMM pen page (real mode, below 1 MiB).
    pub pen_base: u32,
    pub boot_apic_id: u32,
    /// SMM log level (crate::log::Level as u32); lines above it are dropped.
    pub log_level: u32,
    /// TSC ticks per microsecond, calibrated at boot against the PM timer (SMM does not
    /// trust the PM timer itself: its PMBASE is OS-writable, ERRATA E10).
    pub tsc_per_us: u64,
    /// Possible CPUs counted at boot and their APIC IDs (the only IDs hotplug accepts).
    pub num_possible: u32,
    pub _reserved: u32,
    pub possible_apic_id: [u32; MAX_SLOTS],
    pub slot_smbase: [u32; MAX_SLOTS],
    /// Slot states and the APIC ID each slot serves (seeded with the boot CPUs).
    pub slots: Slots,
}

impl SmmParams {
    pub const fn empty() -> Self {
        Self {
            magic: 0,
            version: 0,
            tseg_base: 0,
            tseg_size: 0,
            num_slots: 0,
            stack_size: 0,
            stack_base: 0,
            pmbase: 0,
            features: 0,
            pen_base: 0,
            boot_apic_id: 0,
            log_level: 3,
            tsc_per_us: 0,
            num_possible: 0,
            _reserved: 0,
            possible_apic_id: [u32::MAX; MAX_SLOTS],
            slot_smbase: [0; MAX_SLOTS],
            slots: Slots::new(),
        }
    }
}

/// SMBASE of slot `i` counted down from `top_smbase` (slot 0's SMBASE).
pub const fn slot_smbase(top_smbase: u32, i: u32) -> u32 {
    top_smbase - i * SLOT_STRIDE
}
