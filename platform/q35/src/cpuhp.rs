//! QEMU's CPU hotplug register block at I/O 0x0CD8, in its modern (12-byte) form (QEMU
//! `hw/acpi/cpu.c`; see `docs/protocol.md#the-cpu-hotplug-register-block`).
//!
//! The block shows one possible CPU at a time: the *selector* (written at offset 0) is the
//! CPU's index in QEMU's list of possible CPUs, and the status, control, command and data
//! registers all refer to the selected CPU.
//!
//! Every value read here is untrusted at runtime: the OS can move the selector and the
//! command from CPUs outside SMM at any moment, so every loop is bounded by the number of
//! possible CPUs counted at boot.

use crate::io::PortIo;

/// I/O port of the block's first byte (QEMU `ICH9_CPU_HOTPLUG_IO_BASE`).
pub const BASE: u16 = 0x0CD8;
/// Offset of the selector (dword, write): selects the CPU every other register refers to.
pub const OFF_SELECTOR: u16 = 0x0;
/// Offset of "Command data 2" (dword, read; shares offset 0 with the selector): the high
/// 32 bits of the arch ID after command 3, 0 after any other command.
pub const OFF_DATA2: u16 = 0x0;
/// Offset of the status byte on read and the control byte on write (QEMU's "flags").
pub const OFF_STATUS: u16 = 0x4;
/// Offset of the command byte (write): which value "Command data" and "Command data 2"
/// return (`CMD_*`).
pub const OFF_COMMAND: u16 = 0x5;
/// Offset of "Command data" (dword, read): the selector after command 0, the low 32 bits
/// of the arch ID after command 3.
pub const OFF_DATA: u16 = 0x8;

/// Status bit 0: the selected CPU exists (QEMU "CPU device is enabled").
pub const STS_ENABLED: u8 = 1 << 0;
/// Status bit 1: insert event pending for the selected CPU (set by `device_add`).
pub const STS_INSERT: u8 = 1 << 1;
/// Status bit 2: remove event pending for the selected CPU (set by `device_del`).
pub const STS_REMOVE: u8 = 1 << 2;
/// Status bit 4: the OS marked the selected CPU for ejection by firmware (QEMU
/// "fw_remove").
pub const STS_FW_REMOVE: u8 = 1 << 4;

/// Control bit 1: clear the selected CPU's insert event.
pub const CTL_CLEAR_INSERT: u8 = 1 << 1;
/// Control bit 2: clear the selected CPU's remove event.
pub const CTL_CLEAR_REMOVE: u8 = 1 << 2;
/// Control bit 3: eject (unplug) the selected CPU now.
pub const CTL_EJECT: u8 = 1 << 3;
/// Control bit 4: mark the selected CPU for ejection by firmware (sets [`STS_FW_REMOVE`]).
pub const CTL_SET_FW_REMOVE: u8 = 1 << 4;

/// Command 0 (QEMU `CPHP_GET_NEXT_CPU_WITH_EVENT_CMD`): writing it moves the selector to
/// the next CPU with a pending event, from the current selector on and wrapping around; it
/// stays put when no CPU has one. "Command data" then reads the selector.
pub const CMD_GET_NEXT_EVENT: u8 = 0;
/// Command 3 (QEMU `CPHP_GET_CPU_ID_CMD`): "Command data" / "Command data 2" read the low /
/// high 32 bits of the selected CPU's arch (APIC) ID.
pub const CMD_GET_ARCH_ID: u8 = 3;

/// Possible CPUs whose APIC ID and presence the boot-time count records, by selector: as
/// many as the SMM handler lays out slots for. The count itself goes on to
/// [`MAX_COUNTED`].
pub const MAX_POSSIBLE: usize = 1024;

/// Most possible CPUs the boot-time count walks: QEMU 10.0's q35 limit (`-smp
/// maxcpus=4096` under TCG). Beyond it the count stops and says so
/// ([`CpuTopology::truncated`]); it never loops further.
pub const MAX_COUNTED: u32 = 4096;

/// Why the boot-time switch or count of the register block failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuHpError {
    /// Offset 0 did not read 0 after the switch: the machine has only the legacy bitmap
    /// (QEMU < 2.7: the present bits of APIC IDs 0-31 read back) or no block at all (the
    /// ports read all-ones).
    NoModernInterface,
    /// The scan found no present CPU. Upstream QEMU 5.1-7.2 under TCG accepts only byte
    /// accesses to the legacy block, so the dword write that switches to the modern
    /// interface is dropped, wider reads return 0, and the status reads come from the
    /// legacy bitmap.
    NonePresent,
}

/// Result of the boot-time count: every possible CPU in selector order, the first
/// [`MAX_POSSIBLE`] of them with their APIC ID and presence.
#[derive(Clone, Copy)]
pub struct CpuTopology {
    /// Number of CPUs whose status read [`STS_ENABLED`], at any counted selector.
    pub present: u32,
    /// Number of possible CPUs (valid selectors are `0..possible`), at most
    /// [`MAX_COUNTED`].
    pub possible: u32,
    /// Arch (APIC) ID per selector, `u32::MAX` where the high dword was not 0; only for
    /// the first [`MAX_POSSIBLE`] selectors ([`Self::recorded`]).
    pub apic_ids: [u32; MAX_POSSIBLE],
    /// [`STS_ENABLED`] per selector, for the same selectors as `apic_ids`.
    pub present_mask: [bool; MAX_POSSIBLE],
    /// The largest APIC ID of any counted CPU, recorded or not (`u32::MAX` when an arch
    /// ID did not fit 32 bits).
    pub max_apic: u32,
    /// Present CPUs at selectors past the recorded ones (`apic_ids` does not have them).
    pub present_unrecorded: u32,
    /// The count stopped at [`MAX_COUNTED`] while the next selector still existed.
    pub truncated: bool,
}

impl CpuTopology {
    /// No CPUs: the state before a count.
    pub const EMPTY: CpuTopology = CpuTopology {
        present: 0,
        possible: 0,
        apic_ids: [u32::MAX; MAX_POSSIBLE],
        present_mask: [false; MAX_POSSIBLE],
        max_apic: 0,
        present_unrecorded: 0,
        truncated: false,
    };

    /// How many selectors have their APIC ID and presence recorded: `possible`, at most
    /// [`MAX_POSSIBLE`].
    pub fn recorded(&self) -> u32 {
        self.possible.min(MAX_POSSIBLE as u32)
    }

    /// The APIC ID of the CPU at `selector`, or `None` when `selector` is not a possible
    /// CPU or past the recorded ones. `Some(u32::MAX)` means its arch ID did not fit 32
    /// bits.
    pub fn apic_id(&self, selector: u32) -> Option<u32> {
        if selector >= self.possible {
            return None;
        }
        self.apic_ids.get(selector as usize).copied()
    }

    /// Whether `apic_id` belongs to any recorded possible CPU.
    pub fn is_possible_apic_id(&self, apic_id: u32) -> bool {
        self.apic_ids
            .iter()
            .take(self.possible as usize)
            .any(|&a| a == apic_id)
    }

    /// The largest APIC ID of any possible CPU, recorded or not.
    pub fn max_apic_id(&self) -> u32 {
        self.max_apic
    }
}

/// Driver for the modern register block on one set of ports. Callers must not interleave
/// accesses from several CPUs (the selector and command are shared state).
pub struct CpuHp<'a, P: PortIo> {
    ports: &'a P,
}

impl<'a, P: PortIo> CpuHp<'a, P> {
    /// A driver on `ports`; touches no register.
    pub fn new(ports: &'a P) -> Self {
        Self { ports }
    }

    /// Write the selector: every other register now refers to CPU `selector`.
    pub fn select(&self, selector: u32) {
        self.ports.outl(BASE + OFF_SELECTOR, selector);
    }

    /// Write the command byte (`CMD_*`). Command 0 also moves the selector to the next CPU
    /// with an event (see [`CMD_GET_NEXT_EVENT`]).
    pub fn command(&self, cmd: u8) {
        self.ports.outb(BASE + OFF_COMMAND, cmd);
    }

    /// Read the selected CPU's status byte (`STS_*`).
    pub fn status(&self) -> u8 {
        self.ports.inb(BASE + OFF_STATUS)
    }

    /// Write the selected CPU's control byte (`CTL_*`).
    pub fn control(&self, bits: u8) {
        self.ports.outb(BASE + OFF_STATUS, bits);
    }

    /// Read "Command data": the selector after command 0, the arch ID's low dword after
    /// command 3.
    pub fn data(&self) -> u32 {
        self.ports.inl(BASE + OFF_DATA)
    }

    /// Read "Command data 2": the arch ID's high dword after command 3, else 0.
    pub fn data2(&self) -> u32 {
        self.ports.inl(BASE + OFF_DATA2)
    }

    /// The selected CPU's arch ID, or `None` if its high dword is not zero.
    ///
    /// Leaves command 0 behind, and writing command 0 re-runs the event scan: if the
    /// selected CPU has no pending event the selector may move to the next CPU that has
    /// one. Write the selector again before touching the CPU after this call.
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

    /// Switch from the legacy bitmap to the modern interface and verify it: writing 0 to
    /// offset 0 of the legacy block switches QEMU (>= 2.7) for good, after which offset 0
    /// reads "Command data 2", which is 0 after command 0.
    pub fn switch_to_modern(&self) -> Result<(), CpuHpError> {
        self.select(0);
        self.select(0);
        self.command(CMD_GET_NEXT_EVENT);
        if self.ports.inl(BASE + OFF_SELECTOR) != 0 {
            return Err(CpuHpError::NoModernInterface);
        }
        Ok(())
    }

    /// Count present and possible CPUs and record the APIC ID of each of the first
    /// [`MAX_POSSIBLE`], walking the selector up from 0 until "Command data" no longer
    /// reads back the selector (QEMU reads 0 for a selector past the last possible CPU),
    /// at most [`MAX_COUNTED`] selectors. Requires [`Self::switch_to_modern`] first.
    pub fn count(&self) -> Result<CpuTopology, CpuHpError> {
        let mut topo = CpuTopology::EMPTY;
        self.count_into(&mut topo)?;
        Ok(topo)
    }

    /// [`Self::count`] into caller-provided storage (the topology is 5 KiB: callers
    /// with small stacks keep it in a static).
    pub fn count_into(&self, topo: &mut CpuTopology) -> Result<(), CpuHpError> {
        *topo = CpuTopology::EMPTY;
        self.select(0);
        self.command(CMD_GET_NEXT_EVENT);
        // Command 0 scans for the next CPU with an event and may move the selector there;
        // select CPU 0 again (the command stays 0, so Command data reads the selector).
        self.select(0);
        // Bounded: one step per selector, at most MAX_COUNTED steps.
        for _ in 0..MAX_COUNTED {
            let idx = topo.possible as usize;
            let enabled = self.status() & STS_ENABLED != 0;
            let id = self.arch_id().unwrap_or(u32::MAX);
            match (topo.present_mask.get_mut(idx), topo.apic_ids.get_mut(idx)) {
                (Some(present), Some(entry)) => {
                    *present = enabled;
                    *entry = id;
                }
                _ => topo.present_unrecorded += u32::from(enabled),
            }
            if enabled {
                topo.present += 1;
            }
            topo.max_apic = topo.max_apic.max(id);
            topo.possible += 1;
            // Selecting a CPU that does not exist makes Command data read 0.
            self.select(topo.possible);
            if self.data() != topo.possible {
                break;
            }
            topo.truncated = topo.possible == MAX_COUNTED;
        }
        self.select(0);
        self.command(CMD_GET_NEXT_EVENT);
        if topo.present == 0 {
            return Err(CpuHpError::NonePresent);
        }
        Ok(())
    }
}
