//! QEMU's CPU hotplug register block at I/O 0x0CD8 (spec section 4).
//!
//! Every value read here is untrusted at runtime: the OS can move the selector and the
//! command from CPUs outside SMM at any moment, so every loop is bounded by the number of
//! possible CPUs counted at boot.

use crate::io::PortIo;

pub const BASE: u16 = 0x0CD8;
pub const OFF_SELECTOR: u16 = 0x0;
pub const OFF_DATA2: u16 = 0x0;
pub const OFF_STATUS: u16 = 0x4;
pub const OFF_COMMAND: u16 = 0x5;
pub const OFF_DATA: u16 = 0x8;

pub const STS_ENABLED: u8 = 1 << 0;
pub const STS_INSERT: u8 = 1 << 1;
pub const STS_REMOVE: u8 = 1 << 2;
pub const STS_FW_REMOVE: u8 = 1 << 4;

pub const CTL_CLEAR_INSERT: u8 = 1 << 1;
pub const CTL_CLEAR_REMOVE: u8 = 1 << 2;
pub const CTL_EJECT: u8 = 1 << 3;
pub const CTL_SET_FW_REMOVE: u8 = 1 << 4;

pub const CMD_GET_NEXT_EVENT: u8 = 0;
pub const CMD_GET_ARCH_ID: u8 = 3;

/// Most possible CPUs this project tracks (QEMU's AML handles 255 per batch).
pub const MAX_POSSIBLE: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuHpError {
    /// Offset 0 did not read 0 after the switch: legacy-only or absent (spec 4.2).
    NoModernInterface,
    /// The scan found no present CPU (the TCG legacy→modern switch bug, spec 4.2).
    NonePresent,
    /// More slots than this firmware can track.
    TooManyPossible,
}

/// Result of the boot-time count (spec 4.3).
#[derive(Clone, Copy)]
pub struct CpuTopology {
    pub present: u32,
    pub possible: u32,
    /// Arch (APIC) ID of every selector slot, `u32::MAX` where the high dword was not 0.
    pub apic_ids: [u32; MAX_POSSIBLE],
    /// Present bit per selector slot.
    pub present_mask: [bool; MAX_POSSIBLE],
}

impl CpuTopology {
    pub const EMPTY: CpuTopology = CpuTopology {
        present: 0,
        possible: 0,
        apic_ids: [u32::MAX; MAX_POSSIBLE],
        present_mask: [false; MAX_POSSIBLE],
    };

    pub fn apic_id(&self, selector: u32) -> Option<u32> {
        if selector >= self.possible {
            return None;
        }
        self.apic_ids.get(selector as usize).copied()
    }

    /// Whether `apic_id` belongs to any possible CPU.
    pub fn is_possible_apic_id(&self, apic_id: u32) -> bool {
        self.apic_ids
            .iter()
            .take(self.possible as usize)
            .any(|&a| a == apic_id)
    }

    /// The largest APIC ID of any possible CPU.
    pub fn max_apic_id(&self) -> u32 {
        self.apic_ids
            .iter()
            .take(self.possible as usize)
            .copied()
            .max()
            .unwrap_or(0)
    }
}

pub struct CpuHp<'a, P: PortIo> {
    ports: &'a P,
}

impl<'a, P: PortIo> CpuHp<'a, P> {
    pub fn new(ports: &'a P) -> Self {
        Self { ports }
    }

    pub fn select(&self, selector: u32) {
        self.ports.outl(BASE + OFF_SELECTOR, selector);
    }

    pub fn command(&self, cmd: u8) {
        self.ports.outb(BASE + OFF_COMMAND, cmd);
    }

    pub fn status(&self) -> u8 {
        self.ports.inb(BASE + OFF_STATUS)
    }

    pub fn control(&self, bits: u8) {
        self.ports.outb(BASE + OFF_STATUS, bits);
    }

    pub fn data(&self) -> u32 {
        self.ports.inl(BASE + OFF_DATA)
    }

    pub fn data2(&self) -> u32 {
        self.ports.inl(BASE + OFF_DATA2)
    }

    /// The selected slot's arch ID, or `None` if its high dword is not zero.
    ///
    /// Leaves command 0 behind, and writing command 0 re-runs the event scan: if the
    /// selected slot has no pending event the selector may move to the next slot that has
    /// one. Select the slot again before touching it after this call.
    pub fn arch_id(&self) -> Option<u32> {
        self.command(CMD_GET_ARCH_ID);
        let lo = self.data();
        let hi = self.data2();
        self.command(CMD_GET_NEXT_EVENT);
        if hi != 0 {
            None
        } else {
            Some(lo)
        }
    }

    /// Switch from the legacy bitmap to the modern interface and verify it (spec 4.2).
    pub fn switch_to_modern(&self) -> Result<(), CpuHpError> {
        self.select(0);
        self.select(0);
        self.command(CMD_GET_NEXT_EVENT);
        if self.ports.inl(BASE + OFF_SELECTOR) != 0 {
            return Err(CpuHpError::NoModernInterface);
        }
        Ok(())
    }

    /// Count present and possible CPUs and record each slot's APIC ID (spec 4.3).
    /// Requires [`Self::switch_to_modern`] first.
    pub fn count(&self) -> Result<CpuTopology, CpuHpError> {
        let mut topo = CpuTopology::EMPTY;
        self.count_into(&mut topo)?;
        Ok(topo)
    }

    /// [`Self::count`] into caller-provided storage (the topology is 1.3 KiB: callers
    /// with small stacks keep it in a static).
    pub fn count_into(&self, topo: &mut CpuTopology) -> Result<(), CpuHpError> {
        *topo = CpuTopology::EMPTY;
        self.select(0);
        self.command(CMD_GET_NEXT_EVENT);
        // Command 0 scans for the next slot with an event and may move the selector there;
        // select slot 0 again (the command stays 0, so Command data reads the selector).
        self.select(0);
        loop {
            let idx = topo.possible as usize;
            if idx >= MAX_POSSIBLE {
                return Err(CpuHpError::TooManyPossible);
            }
            let enabled = self.status() & STS_ENABLED != 0;
            if let Some(slot) = topo.present_mask.get_mut(idx) {
                *slot = enabled;
            }
            if enabled {
                topo.present += 1;
            }
            if let (Some(slot), Some(id)) = (topo.apic_ids.get_mut(idx), self.arch_id()) {
                *slot = id;
            }
            topo.possible += 1;
            // Selecting a slot that does not exist makes Command data read 0.
            self.select(topo.possible);
            if self.data() != topo.possible {
                break;
            }
        }
        self.select(0);
        self.command(CMD_GET_NEXT_EVENT);
        if topo.present == 0 {
            return Err(CpuHpError::NonePresent);
        }
        Ok(())
    }
}
