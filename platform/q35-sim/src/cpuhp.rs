//! QEMU's CPU hotplug register block at I/O 0x0CD8 (spec section 4): the legacy 32-byte
//! present bitmap q35 starts with, the legacy→modern switch, and the modern 12-byte
//! interface (QEMU `hw/acpi/cpu_hotplug.c` and `hw/acpi/cpu.c`).
//!
//! Slots are the *possible* CPUs in selector order, each with a static arch (APIC) ID;
//! APIC IDs may have holes. The slot table here is the machine's truth about which CPUs
//! exist; the modern event bits are the ones QEMU keeps in `AcpiCpuStatus`.

pub const BASE: u16 = 0x0CD8;
pub const LEGACY_LEN: u16 = 32;
pub const MODERN_LEN: u16 = 12;

pub const OFF_SELECTOR: u16 = 0x0;
pub const OFF_DATA2: u16 = 0x0;
pub const OFF_FLAGS: u16 = 0x4;
pub const OFF_COMMAND: u16 = 0x5;
pub const OFF_DATA: u16 = 0x8;

pub const STS_ENABLED: u8 = 1 << 0;
pub const STS_INSERT: u8 = 1 << 1;
pub const STS_REMOVE: u8 = 1 << 2;
pub const STS_FW_REMOVE: u8 = 1 << 4;

pub const CMD_GET_NEXT_EVENT: u8 = 0;
pub const CMD_OST_EVENT: u8 = 1;
pub const CMD_OST_STATUS: u8 = 2;
pub const CMD_GET_ARCH_ID: u8 = 3;
pub const CMD_MAX: u8 = 4;

/// Which QEMU's register block the machine has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CpuHpModel {
    /// QEMU >= 2.7 with working dword access (8.0+, or Debian's fixed 7.2): legacy at
    /// reset, a write of 0 to offset 0 switches to modern mode for good.
    #[default]
    Switchable,
    /// Only the legacy bitmap (QEMU < 2.7): writes are ignored, the switch never happens.
    LegacyOnly,
    /// Upstream QEMU 5.1.0-7.2.0 under TCG: the legacy block accepts byte accesses only.
    /// Wider writes are dropped and wider reads return 0, so a dword switch silently fails
    /// and the firmware then sees "Present = 0" (spec 4.2, edk2 bf5678b580).
    LegacyByteOnly,
    /// No block at all: the ports read all-ones.
    Absent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuHpMode {
    Legacy,
    Modern,
}

/// One possible CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlot {
    pub arch_id: u64,
    /// A vCPU exists in this slot (status bit 0).
    pub present: bool,
    pub inserting: bool,
    pub removing: bool,
    pub fw_remove: bool,
    pub ost_event: u32,
    pub ost_status: u32,
}

impl CpuSlot {
    fn has_event(&self) -> bool {
        self.inserting || self.removing || self.fw_remove
    }

    /// The modern status byte.
    pub fn status(&self) -> u8 {
        let mut s = 0;
        if self.present {
            s |= STS_ENABLED;
        }
        if self.inserting {
            s |= STS_INSERT;
        }
        if self.removing {
            s |= STS_REMOVE;
        }
        if self.fw_remove {
            s |= STS_FW_REMOVE;
        }
        s
    }
}

pub struct CpuHotplug {
    model: CpuHpModel,
    mode: CpuHpMode,
    slots: Vec<CpuSlot>,
    legacy_sts: [u8; LEGACY_LEN as usize],
    selector: u32,
    command: u8,
    /// QEMU's `first_cpu`: never ejected, never marked for firmware removal.
    first_cpu: Option<usize>,
}

impl CpuHotplug {
    /// `arch_ids[i]` is the APIC ID of selector slot `i`; `present[i]` whether a vCPU
    /// exists there at power-on. The first present slot is the boot CPU.
    pub fn new(model: CpuHpModel, arch_ids: &[u64], present: &[bool]) -> Self {
        let slots: Vec<CpuSlot> = arch_ids
            .iter()
            .enumerate()
            .map(|(i, &arch_id)| CpuSlot {
                arch_id,
                present: present.get(i).copied().unwrap_or(false),
                ..CpuSlot::default()
            })
            .collect();
        let first_cpu = slots.iter().position(|s| s.present);
        let mut hp = Self {
            model,
            mode: CpuHpMode::Legacy,
            slots,
            legacy_sts: [0; LEGACY_LEN as usize],
            selector: 0,
            command: 0,
            first_cpu,
        };
        for i in 0..hp.slots.len() {
            if hp.slots[i].present {
                hp.set_legacy_present_bit(i);
            }
        }
        hp
    }

    /// Legacy bitmap, indexed by APIC ID (IDs >= 256 have no bit).
    fn set_legacy_present_bit(&mut self, slot: usize) {
        let id = self.slots[slot].arch_id;
        if let Some(byte) = usize::try_from(id / 8)
            .ok()
            .and_then(|i| self.legacy_sts.get_mut(i))
        {
            *byte |= 1 << (id % 8);
        }
    }

    pub fn model(&self) -> CpuHpModel {
        self.model
    }

    pub fn mode(&self) -> CpuHpMode {
        self.mode
    }

    pub fn slots(&self) -> &[CpuSlot] {
        &self.slots
    }

    pub fn slot(&self, i: usize) -> Option<&CpuSlot> {
        self.slots.get(i)
    }

    pub fn slot_mut(&mut self, i: usize) -> Option<&mut CpuSlot> {
        self.slots.get_mut(i)
    }

    pub fn selector(&self) -> u32 {
        self.selector
    }

    pub fn command(&self) -> u8 {
        self.command
    }

    pub fn first_cpu(&self) -> Option<usize> {
        self.first_cpu
    }

    pub fn present_count(&self) -> usize {
        self.slots.iter().filter(|s| s.present).count()
    }

    pub fn legacy_bitmap(&self) -> &[u8; LEGACY_LEN as usize] {
        &self.legacy_sts
    }

    /// Whether `port` belongs to the block in its current mode.
    pub fn decodes(&self, port: u16) -> bool {
        let len = match (self.model, self.mode) {
            (CpuHpModel::Absent, _) => return false,
            (_, CpuHpMode::Legacy) => LEGACY_LEN,
            (_, CpuHpMode::Modern) => MODERN_LEN,
        };
        (BASE..BASE + len).contains(&port)
    }

    /// QEMU `acpi_switch_to_modern_cphp` + `cpu_hotplug_hw_init`: fresh modern state built
    /// from the CPUs that exist now (no events, selector 0, command 0).
    fn switch_to_modern(&mut self) {
        self.mode = CpuHpMode::Modern;
        for s in &mut self.slots {
            s.inserting = false;
            s.removing = false;
            s.fw_remove = false;
            s.ost_event = 0;
            s.ost_status = 0;
        }
        self.selector = 0;
        self.command = 0;
    }

    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        let off = port - BASE;
        match self.mode {
            CpuHpMode::Legacy => self.legacy_read(off, size),
            CpuHpMode::Modern => crate::truncate(self.modern_read(off), size),
        }
    }

    /// Returns `true` when the write ejected a CPU.
    pub fn write(&mut self, port: u16, value: u32, size: u8) -> bool {
        let off = port - BASE;
        match self.mode {
            CpuHpMode::Legacy => {
                self.legacy_write(off, value, size);
                false
            }
            CpuHpMode::Modern => self.modern_write(off, crate::truncate(value, size)),
        }
    }

    fn legacy_read(&self, off: u16, size: u8) -> u32 {
        if self.model == CpuHpModel::LegacyByteOnly && size != 1 {
            // Rejected as too wide: QEMU's unassigned read returns 0.
            return 0;
        }
        // Byte-wise (`impl.max_access_size = 1`): bitmap bytes, all-ones past the block.
        (0..u16::from(size)).rev().fold(0u32, |acc, i| {
            let b = self
                .legacy_sts
                .get(usize::from(off + i))
                .copied()
                .unwrap_or(0xFF);
            (acc << 8) | u32::from(b)
        })
    }

    fn legacy_write(&mut self, off: u16, value: u32, size: u8) {
        match self.model {
            CpuHpModel::Switchable => {
                // Split into byte writes; the one to offset 0 with value 0 switches.
                if off == 0 && value & 0xFF == 0 {
                    self.switch_to_modern();
                }
            }
            CpuHpModel::LegacyByteOnly => {
                if size == 1 && off == 0 && value & 0xFF == 0 {
                    self.switch_to_modern();
                }
            }
            CpuHpModel::LegacyOnly | CpuHpModel::Absent => {}
        }
    }

    fn selected(&self) -> Option<&CpuSlot> {
        usize::try_from(self.selector)
            .ok()
            .and_then(|i| self.slots.get(i))
    }

    /// QEMU `cpu_hotplug_rd`: an invalid selector makes every register read 0.
    fn modern_read(&self, off: u16) -> u32 {
        let Some(cdev) = self.selected() else {
            return 0;
        };
        match off {
            OFF_FLAGS => u32::from(cdev.status()),
            OFF_DATA => match self.command {
                CMD_GET_NEXT_EVENT => self.selector,
                CMD_GET_ARCH_ID => cdev.arch_id as u32,
                _ => 0,
            },
            OFF_DATA2 => match self.command {
                CMD_GET_ARCH_ID => (cdev.arch_id >> 32) as u32,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// QEMU `cpu_hotplug_wr`. With an invalid selector only the selector is writable.
    fn modern_write(&mut self, off: u16, data: u32) -> bool {
        let sel = usize::try_from(self.selector).unwrap_or(usize::MAX);
        if off != OFF_SELECTOR && sel >= self.slots.len() {
            return false;
        }
        match off {
            OFF_SELECTOR => self.selector = data,
            OFF_FLAGS => return self.write_flags(sel, data),
            // Values >= CMD_MAX leave the command unchanged.
            OFF_COMMAND if data < u32::from(CMD_MAX) => {
                self.command = data as u8;
                if self.command == CMD_GET_NEXT_EVENT {
                    self.scan_for_event(sel);
                }
            }
            OFF_DATA => match self.command {
                CMD_OST_EVENT => self.slots[sel].ost_event = data,
                CMD_OST_STATUS => self.slots[sel].ost_status = data,
                _ => {}
            },
            _ => {}
        }
        false
    }

    /// The control priority chain: clear insert, else clear remove, else eject, else set
    /// fw_remove. Eject and fw_remove are refused for an empty slot and for `first_cpu`.
    fn write_flags(&mut self, sel: usize, data: u32) -> bool {
        let protected = !self.slots[sel].present || self.first_cpu == Some(sel);
        let cdev = &mut self.slots[sel];
        if data & u32::from(STS_INSERT) != 0 {
            cdev.inserting = false;
        } else if data & u32::from(STS_REMOVE) != 0 {
            cdev.removing = false;
        } else if data & 0x08 != 0 {
            if !protected {
                // Unplug handler + unparent: the vCPU is gone, other event bits stay.
                cdev.present = false;
                cdev.fw_remove = false;
                return true;
            }
        } else if data & u32::from(STS_FW_REMOVE) != 0 && !protected {
            cdev.fw_remove = true;
        }
        false
    }

    /// Command 0: from the selector (inclusive), wrapping, to the first slot with an event;
    /// the selector stays put when there is none.
    fn scan_for_event(&mut self, start: usize) {
        let n = self.slots.len();
        if let Some(i) = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.slots[i].has_event())
        {
            self.selector = i as u32;
        }
    }

    /// A vCPU appears in `slot` (QEMU `acpi_cpu_plug_cb` / `legacy_acpi_cpu_plug_cb`).
    /// The caller has checked that the slot exists and is empty.
    pub fn plug(&mut self, slot: usize) {
        self.slots[slot].present = true;
        match self.mode {
            CpuHpMode::Legacy => self.set_legacy_present_bit(slot),
            CpuHpMode::Modern => self.slots[slot].inserting = true,
        }
    }
}
