//! The boot-info block: what ramstage learned at boot and SMM needs later, kept at a
//! fixed address inside the default-SMBASE window (after the first-SMI handler's
//! context), which becomes SMRAM when MCH 0x9C is locked. Written only before the lock.

use smm_handler::first_smi::{CONTEXT_BASE, CONTEXT_SIZE};
use smm_handler::params::MAX_SLOTS;

pub const BOOTINFO_BASE: u32 = CONTEXT_BASE + 0x1000;
pub const BOOTINFO_MAGIC: u32 = 0x4348_4249; // "IBHC"
const _: () = assert!(CONTEXT_BASE + CONTEXT_SIZE <= BOOTINFO_BASE);

#[repr(C)]
pub struct BootInfo {
    pub magic: u32,
    pub possible_count: u32,
    pub tsc_per_us: u64,
    /// Address of coreboot's live `apic_id_to_cpu[]` (the SMM stub's parameters).
    pub apic_id_to_cpu: u64,
    pub pen_base: u32,
    pub features: u32,
    pub possible_apic_ids: [u32; MAX_SLOTS],
}

const _: () = assert!(BOOTINFO_BASE + core::mem::size_of::<BootInfo>() as u32 <= 0x38000);

impl BootInfo {
    /// The block in the (locked) window, if ramstage wrote a valid one.
    pub fn locked() -> Option<&'static BootInfo> {
        // SAFETY: BOOTINFO_BASE is inside 0x30000-0x37FFF, SMRAM after the 0x9C lock and
        // written by ramstage before it; SMM only reads it.
        let b = unsafe { &*(BOOTINFO_BASE as usize as *const BootInfo) };
        (b.magic == BOOTINFO_MAGIC && b.possible_count as usize <= MAX_SLOTS).then_some(b)
    }

    pub fn is_possible_apic(&self, apic: u32) -> bool {
        self.possible_apic_ids
            .iter()
            .take(self.possible_count as usize)
            .any(|&a| a == apic)
    }
}
