//! QEMU's CPU hotplug register block at I/O 0x0CD8 (see
//! `docs/protocol.md#the-cpu-hotplug-register-block`): the legacy 32-byte present bitmap
//! q35 starts with, the legacy→modern switch, and the modern 12-byte interface (QEMU
//! `hw/acpi/cpu_hotplug.c` and `hw/acpi/cpu.c`).
//!
//! The model keeps the *possible* CPUs in selector order (a CPU's selector is its index),
//! each with a static arch (APIC) ID; APIC IDs may have holes. This table is the machine's
//! truth about which CPUs exist; the modern event bits are the ones QEMU keeps in
//! `AcpiCpuStatus`.

/// I/O port of the block's first byte.
pub const BASE: u16 = 0x0CD8;
/// Length of the legacy block: a present bitmap with one bit per APIC ID 0-255.
pub const LEGACY_LEN: u16 = 32;
/// Length of the modern block (QEMU `ACPI_CPU_HOTPLUG_REG_LEN`).
pub const MODERN_LEN: u16 = 12;

/// Offset of the selector (write) in modern mode.
pub const OFF_SELECTOR: u16 = 0x0;
/// Offset of "Command data 2" (read) in modern mode: the arch ID's high dword after
/// command 3.
pub const OFF_DATA2: u16 = 0x0;
/// Offset of the flags byte in modern mode: status on read, control on write.
pub const OFF_FLAGS: u16 = 0x4;
/// Offset of the command byte (write) in modern mode.
pub const OFF_COMMAND: u16 = 0x5;
/// Offset of "Command data" in modern mode: read per command, written for the OST
/// commands.
pub const OFF_DATA: u16 = 0x8;

/// Status bit 0: the selected CPU exists.
pub const STS_ENABLED: u8 = 1 << 0;
/// Status bit 1 (also the control bit that clears it): insert event pending.
pub const STS_INSERT: u8 = 1 << 1;
/// Status bit 2 (also the control bit that clears it): remove event pending.
pub const STS_REMOVE: u8 = 1 << 2;
/// Status bit 4 (also the control bit that sets it): marked for ejection by firmware.
pub const STS_FW_REMOVE: u8 = 1 << 4;

/// Command 0: move the selector to the next CPU with an event; "Command data" reads the
/// selector.
pub const CMD_GET_NEXT_EVENT: u8 = 0;
/// Command 1: "Command data" writes store the selected CPU's `_OST` event code.
pub const CMD_OST_EVENT: u8 = 1;
/// Command 2: "Command data" writes store the selected CPU's `_OST` status code.
pub const CMD_OST_STATUS: u8 = 2;
/// Command 3: "Command data" / "Command data 2" read the low / high dword of the arch ID.
pub const CMD_GET_ARCH_ID: u8 = 3;
/// First command value QEMU ignores (the command stays unchanged).
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
    /// and the firmware then sees no present CPU (edk2 commit bf5678b580 works around
    /// it).
    LegacyByteOnly,
    /// No block at all: the ports read all-ones.
    Absent,
}

/// Which interface the block currently shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuHpMode {
    /// The 32-byte present bitmap (state after power-on).
    Legacy,
    /// The 12-byte selector interface (after the switch; kept until power-off).
    Modern,
}

/// One possible CPU, as the register block shows it at its selector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSlot {
    /// The CPU's arch (APIC) ID.
    pub arch_id: u64,
    /// The vCPU exists (status bit 0).
    pub present: bool,
    /// Insert event pending (status bit 1).
    pub inserting: bool,
    /// Remove event pending (status bit 2).
    pub removing: bool,
    /// Marked for ejection by firmware (status bit 4).
    pub fw_remove: bool,
    /// Last `_OST` event code the OS wrote (command 1).
    pub ost_event: u32,
    /// Last `_OST` status code the OS wrote (command 2).
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

/// The register block and the possible CPUs behind it.
pub struct CpuHotplug {
    model: CpuHpModel,
    mode: CpuHpMode,
    cpus: Vec<CpuSlot>,
    legacy_sts: [u8; LEGACY_LEN as usize],
    selector: u32,
    command: u8,
    /// QEMU's `first_cpu`: never ejected, never marked for firmware removal.
    first_cpu: Option<usize>,
}

impl CpuHotplug {
    /// `arch_ids[i]` is the APIC ID of the CPU at selector `i`; `present[i]` whether that
    /// vCPU exists at power-on. The first present CPU is the boot CPU.
    pub fn new(model: CpuHpModel, arch_ids: &[u64], present: &[bool]) -> Self {
        let cpus: Vec<CpuSlot> = arch_ids
            .iter()
            .enumerate()
            .map(|(i, &arch_id)| CpuSlot {
                arch_id,
                present: present.get(i).copied().unwrap_or(false),
                ..CpuSlot::default()
            })
            .collect();
        let first_cpu = cpus.iter().position(|s| s.present);
        let mut hp = Self {
            model,
            mode: CpuHpMode::Legacy,
            cpus,
            legacy_sts: [0; LEGACY_LEN as usize],
            selector: 0,
            command: 0,
            first_cpu,
        };
        for i in 0..hp.cpus.len() {
            if hp.cpus[i].present {
                hp.set_legacy_present_bit(i);
            }
        }
        hp
    }

    /// Legacy bitmap, indexed by APIC ID (IDs >= 256 have no bit).
    fn set_legacy_present_bit(&mut self, selector: usize) {
        let id = self.cpus[selector].arch_id;
        if let Some(byte) = usize::try_from(id / 8)
            .ok()
            .and_then(|i| self.legacy_sts.get_mut(i))
        {
            *byte |= 1 << (id % 8);
        }
    }

    /// Which register block the machine has.
    pub fn model(&self) -> CpuHpModel {
        self.model
    }

    /// Which interface the block shows now.
    pub fn mode(&self) -> CpuHpMode {
        self.mode
    }

    /// Every possible CPU, in selector order.
    pub fn slots(&self) -> &[CpuSlot] {
        &self.cpus
    }

    /// The possible CPU at selector `i`.
    pub fn slot(&self, i: usize) -> Option<&CpuSlot> {
        self.cpus.get(i)
    }

    /// The possible CPU at selector `i`, mutably (test hooks).
    pub fn slot_mut(&mut self, i: usize) -> Option<&mut CpuSlot> {
        self.cpus.get_mut(i)
    }

    /// The modern selector register.
    pub fn selector(&self) -> u32 {
        self.selector
    }

    /// The modern command register.
    pub fn command(&self) -> u8 {
        self.command
    }

    /// Selector of QEMU's `first_cpu` (the boot CPU), if any CPU was present at power-on.
    pub fn first_cpu(&self) -> Option<usize> {
        self.first_cpu
    }

    /// Number of CPUs that exist now.
    pub fn present_count(&self) -> usize {
        self.cpus.iter().filter(|s| s.present).count()
    }

    /// The legacy present bitmap, one bit per APIC ID.
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
        for s in &mut self.cpus {
            s.inserting = false;
            s.removing = false;
            s.fw_remove = false;
            s.ost_event = 0;
            s.ost_status = 0;
        }
        self.selector = 0;
        self.command = 0;
    }

    /// Read of `size` bytes at `port` (which [`Self::decodes`]).
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        let off = port - BASE;
        match self.mode {
            CpuHpMode::Legacy => self.legacy_read(off, size),
            CpuHpMode::Modern => crate::truncate(self.modern_read(off), size),
        }
    }

    /// Write of `size` bytes at `port` (which [`Self::decodes`]); `true` when the write
    /// ejected a CPU.
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
            .and_then(|i| self.cpus.get(i))
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
        if off != OFF_SELECTOR && sel >= self.cpus.len() {
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
                CMD_OST_EVENT => self.cpus[sel].ost_event = data,
                CMD_OST_STATUS => self.cpus[sel].ost_status = data,
                _ => {}
            },
            _ => {}
        }
        false
    }

    /// The control priority chain: clear insert, else clear remove, else eject, else set
    /// fw_remove. Eject and fw_remove are refused for an absent CPU and for `first_cpu`.
    fn write_flags(&mut self, sel: usize, data: u32) -> bool {
        let protected = !self.cpus[sel].present || self.first_cpu == Some(sel);
        let cdev = &mut self.cpus[sel];
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

    /// Command 0: from the selector (inclusive), wrapping, to the first CPU with an event;
    /// the selector stays put when there is none.
    fn scan_for_event(&mut self, start: usize) {
        let n = self.cpus.len();
        if let Some(i) = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.cpus[i].has_event())
        {
            self.selector = i as u32;
        }
    }

    /// The vCPU at `selector` appears (QEMU `acpi_cpu_plug_cb` /
    /// `legacy_acpi_cpu_plug_cb`). The caller has checked that `selector` is a possible
    /// CPU that is absent.
    pub fn plug(&mut self, selector: usize) {
        self.cpus[selector].present = true;
        match self.mode {
            CpuHpMode::Legacy => self.set_legacy_present_bit(selector),
            CpuHpMode::Modern => self.cpus[selector].inserting = true,
        }
    }
}
