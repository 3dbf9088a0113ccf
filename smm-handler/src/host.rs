//! The seam between the handler and its host (the host ROM or coreboot): plain data the
//! handler reads, fixed at boot and kept in SMRAM ([`HostData`]), and the few effects it
//! needs ([`Host`]). Everything else — the relocation protocol, the slot table, the
//! SMI entry steps — is the same code on both hosts.

use core::sync::atomic::{AtomicU16, Ordering};

use crate::first_smi::Window;
use crate::log::Level;
use crate::slots::Slots;
use q35::io::PortIo;

/// A routing-table entry that routes nothing (coreboot's `apic_id_to_cpu` convention).
pub const NO_ROUTE: u16 = 0xFFFF;
/// The largest APIC ID a 16-bit routing table holds (coreboot's stub).
pub const ROUTED_APIC_ID_MAX: u32 = NO_ROUTE as u32 - 1;
/// The largest APIC ID the handler acts on: every 32-bit x2APIC ID but the broadcast one
/// (all-ones, which is also [`crate::slots::NO_APIC`]).
pub const APIC_ID_LIMIT: u32 = u32::MAX - 1;

/// What the handler reads from its host, all in SMRAM.
#[derive(Clone, Copy)]
pub struct HostData<'a> {
    /// SMBASE of each laid-out slot (one slot per possible CPU), slot 0 first.
    pub slot_smbase: &'a [u32],
    /// APIC ID of each possible CPU by selector, recorded at boot: the only IDs hotplug
    /// accepts (R6), and the bound of every register-block scan (R5).
    pub possible_apic_ids: &'a [u32],
    /// Slot states and the APIC ID each slot serves.
    pub slots: &'a Slots,
    /// The host's APIC-ID routing table, one entry per slot (coreboot's
    /// `apic_id_to_cpu`), or `None` where each slot's entry stub knows its own slot.
    pub routes: Option<&'a [AtomicU16]>,
}

impl HostData<'_> {
    /// Slots laid out.
    pub fn slot_count(&self) -> usize {
        self.slot_smbase.len()
    }

    /// SMBASE of `slot`, if it is laid out.
    pub fn slot_smbase(&self, slot: usize) -> Option<u32> {
        self.slot_smbase.get(slot).copied()
    }

    /// Whether `apic` is one of the possible CPUs recorded at boot.
    pub fn is_possible(&self, apic: u32) -> bool {
        self.possible_apic_ids.contains(&apic)
    }

    /// The selector (possible-CPU index) of `apic` in the boot table.
    pub fn selector_of(&self, apic: u32) -> Option<u32> {
        self.possible_apic_ids
            .iter()
            .position(|&a| a == apic)
            .map(|p| p as u32)
    }

    /// Possible CPUs recorded at boot.
    pub fn possible_count(&self) -> u32 {
        self.possible_apic_ids.len() as u32
    }

    /// Route SMIs of `apic` to `slot` in the host's entry stub (`None`: route nothing).
    /// Publishing happens before the CPU can take an SMI at the slot (R15).
    pub fn set_route(&self, slot: usize, apic: Option<u32>) {
        if let Some(r) = self.routes.and_then(|t| t.get(slot)) {
            let v = apic.and_then(|a| u16::try_from(a).ok()).unwrap_or(NO_ROUTE);
            r.store(v, Ordering::SeqCst);
        }
    }
}

/// What the handler does to the world through its host.
pub trait Host {
    /// I/O ports (the real ones in SMM, the simulator's in host tests).
    type Ports: PortIo;
    /// The I/O ports.
    fn ports(&self) -> &Self::Ports;
    /// The data in [`HostData`].
    fn data(&self) -> HostData<'_>;
    /// Monotonic microseconds (the TSC calibrated at boot; never the OS-movable PM timer).
    fn now_us(&self) -> u64;
    /// Write one log line (see [`crate::log`]); dropped above the host's level.
    fn log(&self, level: Level, template: &str, args: &[u64]);
    /// Send an IPI (`icr_low` as in `q35::lapic`) to `apic`; `false` if it could not be sent.
    fn send_ipi(&self, apic: u32, icr_low: u32) -> bool;
    /// The default-SMBASE window and the pen page.
    fn window(&self) -> &dyn Window;
    /// The APIC ID of the CPU running the handler (CPUID's initial APIC ID, which the OS
    /// cannot change): a CPU never ejects itself.
    fn current_apic(&self) -> u32;
    /// Zero the save state of the slot at `smbase` (a forgotten slot keeps nothing of the
    /// ejected CPU).
    fn zero_save_state(&self, smbase: u32);
    /// The CPU of `slot` is gone for good (ejected, or replaced by a new CPU with its APIC
    /// ID): the host releases what it still holds for it (the host ROM: a pool stack a
    /// CPU parked or reset inside SMM still owns). By default nothing.
    fn slot_forgotten(&self, _slot: usize) {}
    /// Called on every poll of the monarch's waits: lets the host record progress for its
    /// SMI lock, and says whether this CPU still is the monarch (`false` when another CPU
    /// took over after this one stalled: the service then stops at once and leaves every
    /// record to the new monarch's recovery). By default this CPU always is.
    fn still_monarch(&self) -> bool {
        true
    }
    /// Called by the monarch right before a call that may block it for up to `us` without
    /// polling (the eject: QEMU joins the ejected vCPU's thread inside the port write):
    /// the host's SMI lock must not take it for gone meanwhile. By default nothing.
    fn expect_stall(&self, _us: u64) {}
}
