//! The SMM slot table: bookkeeping per slot (FREE, ACTIVE, RELOCATING, QUARANTINED) and
//! the APIC ID it serves. It lives in SMRAM; single aligned stores keep it
//! crash-consistent (R15): a mapping is published before its CPU can take an SMI at the
//! new SMBASE, and revoked on failure.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Most SMM slots (possible CPUs) a host lays out: 1024, four times the 255 CPUs QEMU 7.2
/// runs under TCG; QEMU 10.0 accepts `-smp maxcpus=1024` (and more) under TCG. A guest
/// with more possible CPUs boots with broadcast SMIs only.
pub const MAX_SLOTS: usize = 1024;

/// No CPU uses the slot.
pub const FREE: u32 = 0;
/// The slot serves its APIC ID's SMIs.
pub const ACTIVE: u32 = 1;
/// The slot's CPU is being relocated: at its new SMBASE it must return at once (R12).
pub const RELOCATING: u32 = 2;
/// Something went wrong mid-relocation or mid-eject: never reuse (R7).
pub const QUARANTINED: u32 = 3;
/// The OS asked to eject the slot's CPU: at its next SMI entry it parks inside SMM and
/// never takes the SMI lock (R14).
pub const REMOVING: u32 = 4;
/// The slot's CPU is parked inside SMM, waiting to be ejected.
pub const PARKED: u32 = 5;
/// QEMU reports the slot's CPU absent (ejected). The slot stays reserved for its APIC ID
/// until a CPU with that APIC ID arrives at the default SMBASE — proof that the old one
/// no longer exists, which a status read racing the OS's selector writes is not (R5) —
/// or until the CPU shows it is alive after all by taking an SMI at the slot.
pub const GONE: u32 = 6;
/// The APIC ID of a slot that serves no CPU.
pub const NO_APIC: u32 = u32::MAX;

/// How far the relocation in flight got, recorded in SMRAM by the monarch before each
/// step so that recovery after a lost monarch trusts only what this relocation wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Phase {
    /// Nothing in flight.
    Idle = 0,
    /// The window's flags were cleared and the slot published RELOCATING; the gate was
    /// never opened.
    Published = 1,
    /// The gate is about to be opened or was opened for the slot's CPU.
    GateOpen = 2,
    /// The admitted CPU said it is leaving: its new SMBASE is in its save state.
    Left = 3,
}

impl Phase {
    fn from_u32(v: u32) -> Option<Phase> {
        Some(match v {
            0 => Phase::Idle,
            1 => Phase::Published,
            2 => Phase::GateOpen,
            3 => Phase::Left,
            _ => return None,
        })
    }
}

/// The slot table, in SMRAM.
#[repr(C)]
pub struct Slots {
    /// State of each slot ([`FREE`], [`ACTIVE`], [`RELOCATING`], [`QUARANTINED`]).
    pub state: [AtomicU32; MAX_SLOTS],
    /// The APIC ID each slot serves ([`NO_APIC`] when free).
    pub apic: [AtomicU32; MAX_SLOTS],
    /// Non-zero once a CPU was left inside the first-SMI handler's critical section (or
    /// the gate was found open): the shared context and save area may still be in use,
    /// so hot-add stays off until reset (fail closed).
    pub stopped: AtomicU32,
    /// Reserved.
    pub _reserved: AtomicU32,
    /// The relocation in flight: `phase << 32 | slot` ([`Phase`]).
    pub relocation: AtomicU64,
}

impl Slots {
    /// Every slot free.
    pub const fn new() -> Self {
        Self {
            state: [const { AtomicU32::new(FREE) }; MAX_SLOTS],
            apic: [const { AtomicU32::new(NO_APIC) }; MAX_SLOTS],
            stopped: AtomicU32::new(0),
            _reserved: AtomicU32::new(0),
            relocation: AtomicU64::new(0),
        }
    }

    /// State of `slot` (QUARANTINED beyond the table, so nothing uses it).
    pub fn state(&self, slot: usize) -> u32 {
        self.state
            .get(slot)
            .map_or(QUARANTINED, |s| s.load(Ordering::SeqCst))
    }

    /// The APIC ID `slot` serves.
    pub fn apic(&self, slot: usize) -> u32 {
        self.apic
            .get(slot)
            .map_or(NO_APIC, |s| s.load(Ordering::SeqCst))
    }

    /// Publish `state` and `apic` for `slot` (no effect beyond the table).
    pub fn set(&self, slot: usize, state: u32, apic: u32) {
        if let (Some(s), Some(a)) = (self.state.get(slot), self.apic.get(slot)) {
            // APIC first: a reader that sees the new state also sees its APIC ID.
            a.store(apic, Ordering::SeqCst);
            s.store(state, Ordering::SeqCst);
        }
    }

    /// The slot that serves (or is being given to, or quarantined with) `apic`.
    pub fn slot_of(&self, apic: u32, count: usize) -> Option<usize> {
        (0..count.min(MAX_SLOTS)).find(|&i| self.state(i) != FREE && self.apic(i) == apic)
    }

    /// Compare-and-set the state of `slot`; `true` if it was `from`.
    pub fn transition(&self, slot: usize, from: u32, to: u32) -> bool {
        self.state.get(slot).is_some_and(|s| {
            s.compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        })
    }

    /// Whether `slot`'s CPU is to be ejected (REMOVING or PARKED).
    pub fn is_removing(&self, slot: usize) -> bool {
        matches!(self.state(slot), REMOVING | PARKED)
    }

    /// Stop CPU hot-add until reset.
    pub fn stop(&self) {
        self.stopped.store(1, Ordering::SeqCst);
    }

    /// Whether CPU hot-add was stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst) != 0
    }

    /// Record that the relocation into `slot` reached `phase`.
    pub fn set_phase(&self, slot: usize, phase: Phase) {
        let v = ((phase as u64) << 32) | (slot as u64 & 0xFFFF_FFFF);
        self.relocation.store(v, Ordering::SeqCst);
    }

    /// The phase recorded for `slot`, or `None` when the record names another slot or
    /// holds garbage (recovery then trusts nothing but the gate).
    pub fn phase_of(&self, slot: usize) -> Option<Phase> {
        let v = self.relocation.load(Ordering::SeqCst);
        if (v & 0xFFFF_FFFF) as usize != slot {
            return None;
        }
        Phase::from_u32((v >> 32) as u32)
    }

    /// The lowest free slot among the first `count`.
    pub fn first_free(&self, count: usize) -> Option<usize> {
        (0..count.min(MAX_SLOTS)).find(|&i| self.state(i) == FREE)
    }
}

impl Default for Slots {
    fn default() -> Self {
        Self::new()
    }
}
