//! Host-only simulator of the QEMU q35 devices the firmware touches, for tests.
//!
//! [`Q35Sim`] implements [`q35::io::PortIo`], so the `q35` drivers (and anything built on
//! them) run unchanged against it. It models, with QEMU 7.2 semantics (see `docs/qemu.md`
//! and `docs/protocol.md`):
//!
//! * PCI config mechanism #1 at 0xCF8/0xCFC ([`pci`]) with the MCH at 0:0.0 ([`mch`]:
//!   SMRAMC, ESMRAMC, and 0x9C for the default-SMBASE window) and the ICH9 LPC at 0:31.0
//!   ([`lpc`]: PMBASE, ACPI_CNTL); every other function reads all-ones;
//! * the ICH9 PM I/O block at PMBASE once decoded ([`pm`]);
//! * APM_CNT / APM_STS at 0xB2 / 0xB3 with a log of APMC writes and the SMIs they would
//!   raise ([`apm`]);
//! * fw_cfg with DMA, the file directory and the SMI feature negotiation files
//!   ([`fw_cfg`], [`smi`]);
//! * the CPU hotplug block at 0x0CD8, legacy and modern ([`cpuhp`]), with test hooks to
//!   plug, request unplug and set events.
//!
//! The CPU hotplug hooks take a *selector*: the CPU's index in the list of possible CPUs,
//! as the register block numbers them (its [`CpuSlot`] entry).
//!
//! Ports nobody decodes read all-ones and ignore writes.
//!
//! ```
//! use q35::fw_cfg::{negotiate_smi_features, FwCfg, Negotiation};
//! let sim = q35_sim::Q35Sim::builder().smp(1, 4).build();
//! let cfg = FwCfg::detect(&sim).unwrap();
//! let n = negotiate_smi_features(&cfg, 0x7).unwrap();
//! assert_eq!(n, Negotiation::Granted { supported: 0x7, requested: 0x7 });
//! assert_eq!(sim.negotiated_smi_features(), Some(0x7));
//! ```
//!
//! The fw_cfg DMA engine treats guest-physical addresses as host pointers (firmware runs
//! identity mapped); see [`fw_cfg`] for what that requires of the driver under test.

use std::cell::RefCell;
use std::fmt;

pub mod apm;
pub mod cpuhp;
pub mod fw_cfg;
pub mod lpc;
pub mod mch;
pub mod pci;
pub mod pm;
pub mod smi;

pub use apm::{ApmWrite, SmiTarget};
pub use cpuhp::{CpuHpMode, CpuHpModel, CpuSlot};
pub use mch::SmbaseSmram;

use apm::Apm;
use cpuhp::CpuHotplug;
use fw_cfg::{FileSpec, FwCfg};
use lpc::Lpc;
use mch::Mch;
use pci::PciHost;
use pm::PmIo;

/// Keep the low `size` bytes of `value`.
pub(crate) fn truncate(value: u32, size: u8) -> u32 {
    match size {
        1 => value & 0xFF,
        2 => value & 0xFFFF,
        _ => value,
    }
}

/// Why a hotplug hook was refused; the messages are QEMU's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HotplugError {
    /// The selector is not a possible CPU.
    NoSuchSlot,
    /// The CPU at the selector already exists (QEMU: "CPU\[n\] with APIC ID m exists").
    AlreadyPresent,
    /// The CPU at the selector does not exist, so there is nothing to unplug.
    NotPresent,
    /// BROADCAST negotiated without CPU_HOTPLUG.
    HotplugNotEnabledByFirmware,
    /// BROADCAST negotiated without CPU_HOT_UNPLUG.
    HotUnplugNotEnabledByFirmware,
    /// Unplug requests need the modern interface.
    LegacyInterface,
    /// The CPU at selector 0 (the boot CPU) cannot be unplugged.
    BootCpu,
}

impl fmt::Display for HotplugError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NoSuchSlot => "no such CPU slot",
            Self::AlreadyPresent => "CPU with this APIC ID exists",
            Self::NotPresent => "no CPU in this slot",
            Self::HotplugNotEnabledByFirmware => "cpu hotplug with SMI wasn't enabled by firmware",
            Self::HotUnplugNotEnabledByFirmware => {
                "cpu hot-unplug with SMI wasn't enabled by firmware"
            }
            Self::LegacyInterface => "acpi: device unplug request for not supported device type",
            Self::BootCpu => "Boot CPU is unpluggable",
        })
    }
}

impl std::error::Error for HotplugError {}

/// Event bits of one possible CPU, for [`Q35Sim::set_cpu_events`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuEvents {
    /// Insert event pending (status bit 1).
    pub insert: bool,
    /// Remove event pending (status bit 2).
    pub remove: bool,
    /// Marked for ejection by firmware (status bit 4).
    pub fw_remove: bool,
}

/// Machine configuration. The default is `pc-q35-7.2,smm=on -smp 1` on the Debian QEMU
/// 7.2 this project targets: SMI features 0x7, fw_cfg DMA, the default-SMBASE window
/// (0x9C), a switchable CPU hotplug block.
#[derive(Clone, Debug)]
pub struct SimBuilder {
    arch_ids: Vec<u64>,
    present: Vec<bool>,
    cpuhp: CpuHpModel,
    fw_cfg: bool,
    dma: bool,
    smi_supported: u64,
    smbase_smram: bool,
    files: Vec<FileSpec>,
    max_cpus: Option<u16>,
}

impl Default for SimBuilder {
    fn default() -> Self {
        Self {
            arch_ids: vec![0],
            present: vec![true],
            cpuhp: CpuHpModel::Switchable,
            fw_cfg: true,
            dma: true,
            smi_supported: smi::BROADCAST | smi::CPU_HOTPLUG | smi::CPU_HOT_UNPLUG,
            smbase_smram: true,
            files: Vec::new(),
            max_cpus: None,
        }
    }
}

impl SimBuilder {
    /// `-smp cpus,maxcpus=maxcpus` with dense APIC IDs 0..maxcpus and CPUs 0..cpus present.
    pub fn smp(mut self, cpus: usize, maxcpus: usize) -> Self {
        self.arch_ids = (0..maxcpus as u64).collect();
        self.present = (0..maxcpus).map(|i| i < cpus).collect();
        self
    }

    /// Possible CPUs with explicit arch (APIC) IDs in selector order, e.g. `[0, 1, 2, 4,
    /// 5, 6]` for a topology with holes; `present_selectors` lists the CPUs present at
    /// power-on.
    pub fn cpus(mut self, arch_ids: &[u64], present_selectors: &[usize]) -> Self {
        self.arch_ids = arch_ids.to_vec();
        self.present = (0..arch_ids.len())
            .map(|i| present_selectors.contains(&i))
            .collect();
        self
    }

    /// Override FW_CFG_MAX_CPUS (default: largest APIC ID + 1, QEMU's `apic_id_limit`).
    pub fn max_cpus_key(mut self, value: u16) -> Self {
        self.max_cpus = Some(value);
        self
    }

    /// Which CPU hotplug register block the machine has (default
    /// [`CpuHpModel::Switchable`]).
    pub fn cpu_hotplug(mut self, model: CpuHpModel) -> Self {
        self.cpuhp = model;
        self
    }

    /// The supported SMI feature mask (pc-q35-7.2: 0x7, pc-q35-5.1: 0x1). 0 leaves the
    /// three SMI files out, as QEMU does.
    pub fn smi_supported(mut self, mask: u64) -> Self {
        self.smi_supported = mask;
        self
    }

    /// QEMU before 2.9: no SMI negotiation files.
    pub fn without_smi_files(self) -> Self {
        self.smi_supported(0)
    }

    /// fw_cfg without the DMA interface (ID bit 1 clear, no ports at 0x514).
    pub fn without_fw_cfg_dma(mut self) -> Self {
        self.dma = false;
        self
    }

    /// No fw_cfg device at all.
    pub fn without_fw_cfg(mut self) -> Self {
        self.fw_cfg = false;
        self
    }

    /// Machine type <= 4.2 (`mch.smbase-smram=off`): no default-SMBASE window, 0x9C is
    /// plain storage.
    pub fn without_smbase_smram(mut self) -> Self {
        self.smbase_smram = false;
        self
    }

    /// A read-only fw_cfg file.
    pub fn file(mut self, name: &str, data: &[u8]) -> Self {
        self.files.push(FileSpec {
            name: name.into(),
            data: data.to_vec(),
            writable: false,
        });
        self
    }

    /// A fw_cfg file the guest may write through DMA.
    pub fn writable_file(mut self, name: &str, data: &[u8]) -> Self {
        self.files.push(FileSpec {
            name: name.into(),
            data: data.to_vec(),
            writable: true,
        });
        self
    }

    /// The machine, powered on: every device in its reset state.
    pub fn build(self) -> Q35Sim {
        let cpuhp = CpuHotplug::new(self.cpuhp, &self.arch_ids, &self.present);
        let nb_cpus = cpuhp.present_count() as u16;
        let max_cpus = self.max_cpus.unwrap_or_else(|| {
            self.arch_ids
                .iter()
                .max()
                .map_or(0, |&m| m.saturating_add(1).min(u64::from(u16::MAX)) as u16)
        });
        let fw_cfg = self
            .fw_cfg
            .then(|| FwCfg::new(self.dma, nb_cpus, max_cpus, self.smi_supported, &self.files));
        Q35Sim {
            m: RefCell::new(Machine {
                pci: PciHost::default(),
                mch: Mch::new(self.smbase_smram),
                lpc: Lpc::new(),
                pm: PmIo::new(),
                apm: Apm::new(),
                fw_cfg,
                cpuhp,
            }),
        }
    }
}

struct Machine {
    pci: PciHost,
    mch: Mch,
    lpc: Lpc,
    pm: PmIo,
    apm: Apm,
    fw_cfg: Option<FwCfg>,
    cpuhp: CpuHotplug,
}

impl Machine {
    fn negotiated(&self) -> u64 {
        self.fw_cfg
            .as_ref()
            .and_then(|f| f.smi())
            .map_or(0, |s| s.negotiated())
    }

    fn sync_nb_cpus(&mut self) {
        let n = self.cpuhp.present_count() as u16;
        if let Some(f) = self.fw_cfg.as_mut() {
            f.modify_u16(fw_cfg::KEY_NB_CPUS, n);
        }
    }

    fn pci_read(&self, port: u16, size: u8) -> u32 {
        let Some(t) = self.pci.target(port) else {
            return truncate(u32::MAX, size);
        };
        let len = usize::from(size);
        match (t.bus, t.dev, t.func) {
            (0, 0, 0) => self.mch.read(t.reg, len),
            (0, 31, 0) => self.lpc.read(t.reg, len),
            _ => truncate(u32::MAX, size),
        }
    }

    fn pci_write(&mut self, port: u16, value: u32, size: u8) {
        let Some(t) = self.pci.target(port) else {
            return;
        };
        let len = usize::from(size);
        match (t.bus, t.dev, t.func) {
            (0, 0, 0) => self.mch.write(t.reg, value, len),
            (0, 31, 0) => self.lpc.write(t.reg, value, len),
            _ => {}
        }
    }

    fn pm_offset(&self, port: u16) -> Option<u16> {
        let base = self.lpc.pm_io_base()?;
        (base..base.saturating_add(pm::LEN))
            .contains(&port)
            .then(|| port - base)
    }

    /// QEMU `ich9_apm_ctrl_changed`.
    fn apm_cnt_write(&mut self, value: u8) {
        let smi = match value {
            apm::APMC_ACPI_ENABLE | apm::APMC_ACPI_DISABLE => {
                self.pm.set_sci_en(value == apm::APMC_ACPI_ENABLE);
                SmiTarget::None
            }
            _ if self.pm.smi_en() & pm::SMI_EN_APMC_EN == 0 => SmiTarget::None,
            _ if self.negotiated() & smi::BROADCAST != 0 => SmiTarget::Broadcast,
            _ => SmiTarget::Current,
        };
        self.apm.write_cnt(value, smi);
    }

    fn read(&mut self, port: u16, size: u8) -> u32 {
        match port {
            0xCF8..=0xCFB => return self.pci.read_address(port, size),
            0xCFC..=0xCFF => return self.pci_read(port, size),
            apm::APM_CNT | apm::APM_STS => {
                // Byte-wise device: a word read at 0xB2 covers both registers.
                return (0..u16::from(size)).rev().fold(0u32, |acc, i| {
                    let p = port + i;
                    let b = if p <= apm::APM_STS {
                        self.apm.read_byte(p)
                    } else {
                        0xFF
                    };
                    (acc << 8) | u32::from(b)
                });
            }
            _ => {}
        }
        if let Some(f) = self.fw_cfg.as_mut() {
            match port {
                fw_cfg::PORT_SELECTOR | fw_cfg::PORT_DATA => return f.read_port(size),
                p if f.has_dma()
                    && (fw_cfg::PORT_DMA..fw_cfg::PORT_DMA + fw_cfg::DMA_PORTS_LEN)
                        .contains(&p) =>
                {
                    return f.read_dma_port(p, size)
                }
                _ => {}
            }
        }
        if self.cpuhp.decodes(port) {
            return self.cpuhp.read(port, size);
        }
        if let Some(off) = self.pm_offset(port) {
            return self.pm.read(off, size);
        }
        truncate(u32::MAX, size)
    }

    fn write(&mut self, port: u16, value: u32, size: u8) {
        let value = truncate(value, size);
        match port {
            0xCF8..=0xCFB => return self.pci.write_address(port, value, size),
            0xCFC..=0xCFF => return self.pci_write(port, value, size),
            apm::APM_CNT | apm::APM_STS => {
                for i in 0..u16::from(size) {
                    let b = (value >> (8 * i)) as u8;
                    match port + i {
                        apm::APM_CNT => self.apm_cnt_write(b),
                        apm::APM_STS => self.apm.write_sts(b),
                        _ => {}
                    }
                }
                return;
            }
            _ => {}
        }
        if let Some(f) = self.fw_cfg.as_mut() {
            match port {
                fw_cfg::PORT_SELECTOR | fw_cfg::PORT_DATA => {
                    return f.write_port(port, value, size)
                }
                p if f.has_dma()
                    && (fw_cfg::PORT_DMA..fw_cfg::PORT_DMA + fw_cfg::DMA_PORTS_LEN)
                        .contains(&p) =>
                {
                    return f.write_dma_port(p, value, size)
                }
                _ => {}
            }
        }
        if self.cpuhp.decodes(port) {
            if self.cpuhp.write(port, value, size) {
                self.sync_nb_cpus();
            }
            return;
        }
        if let Some(off) = self.pm_offset(port) {
            self.pm.write(off, value, size);
        }
    }
}

/// The simulated q35 machine. Devices sit behind a `RefCell` because [`q35::io::PortIo`]
/// takes `&self`; the simulator is single-threaded (`!Sync`).
pub struct Q35Sim {
    m: RefCell<Machine>,
}

impl Default for Q35Sim {
    fn default() -> Self {
        Self::new()
    }
}

impl Q35Sim {
    /// `pc-q35-7.2,smm=on -smp 1` (see [`SimBuilder`]).
    pub fn new() -> Self {
        SimBuilder::default().build()
    }

    /// A [`SimBuilder`] with the defaults of [`Q35Sim::new`].
    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// Platform reset: MCH SMRAM registers and 0x9C, LPC config, PM registers and SMI
    /// negotiation go back to their reset state. The CPU hotplug block keeps its mode,
    /// selector and events, and hot-added CPUs stay (as on QEMU).
    pub fn reset(&self) {
        let mut m = self.m.borrow_mut();
        m.mch.reset();
        m.lpc.reset();
        m.pm.reset();
        if let Some(f) = m.fw_cfg.as_mut() {
            f.reset();
        }
    }

    // ---- MCH ----------------------------------------------------------------------

    /// State of the default-SMBASE window (MCH 0x9C).
    pub fn smbase_smram(&self) -> SmbaseSmram {
        self.m.borrow().mch.smbase_smram()
    }

    /// Current MCH SMRAMC (0x9D).
    pub fn smramc(&self) -> u8 {
        self.m.borrow().mch.smramc()
    }

    /// Current MCH ESMRAMC (0x9E).
    pub fn esmramc(&self) -> u8 {
        self.m.borrow().mch.esmramc()
    }

    // ---- LPC / PM / APM -------------------------------------------------------------

    /// Where the PM block is decoded, if ACPI decode is on.
    pub fn pm_io_base(&self) -> Option<u16> {
        self.m.borrow().lpc.pm_io_base()
    }

    /// Current PM1_CNT (bit 0 is SCI_EN).
    pub fn pm1_cnt(&self) -> u32 {
        self.m.borrow().pm.pm1_cnt()
    }

    /// Current SMI_EN (bit 0 GBL_SMI_EN, bit 5 APMC_EN).
    pub fn smi_en(&self) -> u32 {
        self.m.borrow().pm.smi_en()
    }

    /// First byte of GPE0_STS (bit 2 = CPU hotplug).
    pub fn gpe0_sts(&self) -> u8 {
        self.m.borrow().pm.gpe0_sts()
    }

    /// Move the PM timer forward by `ticks` (3.579545 MHz ticks, wrapping at 24 bits).
    pub fn advance_pm_timer(&self, ticks: u32) {
        self.m.borrow_mut().pm.advance_timer(ticks);
    }

    /// Ticks the PM timer advances on every read of PM_TMR (default 1).
    pub fn set_pm_timer_step(&self, ticks: u32) {
        self.m.borrow_mut().pm.set_timer_step(ticks);
    }

    /// Every write to APM_CNT so far, with the SMI it raised.
    pub fn apm_writes(&self) -> Vec<ApmWrite> {
        self.m.borrow().apm.log().to_vec()
    }

    /// Number of APMC writes that raised an SMI (on one or all CPUs).
    pub fn smi_count(&self) -> usize {
        self.m
            .borrow()
            .apm
            .log()
            .iter()
            .filter(|w| w.smi != SmiTarget::None)
            .count()
    }

    /// Forget the APM_CNT writes logged so far.
    pub fn clear_apm_log(&self) {
        self.m.borrow_mut().apm.clear_log();
    }

    // ---- fw_cfg / SMI negotiation ------------------------------------------------------

    /// The negotiated SMI features once features-ok read 1, else `None`.
    pub fn negotiated_smi_features(&self) -> Option<u64> {
        let m = self.m.borrow();
        let smi = m.fw_cfg.as_ref()?.smi()?;
        smi.is_locked().then(|| smi.negotiated())
    }

    /// Current bytes of a fw_cfg file.
    pub fn fw_cfg_file(&self, name: &str) -> Option<Vec<u8>> {
        let m = self.m.borrow();
        m.fw_cfg.as_ref()?.file(name).map(<[u8]>::to_vec)
    }

    /// The selector key QEMU assigned to a file.
    pub fn fw_cfg_file_key(&self, name: &str) -> Option<u16> {
        self.m.borrow().fw_cfg.as_ref()?.file_key(name)
    }

    /// Current bytes of a fw_cfg item by key.
    pub fn fw_cfg_item(&self, key: u16) -> Option<Vec<u8>> {
        let m = self.m.borrow();
        m.fw_cfg.as_ref()?.item(key).map(<[u8]>::to_vec)
    }

    // ---- CPU hotplug -------------------------------------------------------------------

    /// Whether the CPU hotplug block is still the legacy bitmap or switched to modern.
    pub fn cpuhp_mode(&self) -> CpuHpMode {
        self.m.borrow().cpuhp.mode()
    }

    /// All possible CPUs in selector order.
    pub fn cpu_slots(&self) -> Vec<CpuSlot> {
        self.m.borrow().cpuhp.slots().to_vec()
    }

    /// The possible CPU at `selector`, or `None` past the last one.
    pub fn cpu_slot(&self, selector: usize) -> Option<CpuSlot> {
        self.m.borrow().cpuhp.slot(selector).copied()
    }

    /// Number of CPUs that exist now.
    pub fn present_cpus(&self) -> usize {
        self.m.borrow().cpuhp.present_count()
    }

    /// The modern interface's selector register.
    pub fn cpuhp_selector(&self) -> u32 {
        self.m.borrow().cpuhp.selector()
    }

    /// The modern interface's command register.
    pub fn cpuhp_command(&self) -> u8 {
        self.m.borrow().cpuhp.command()
    }

    /// `device_add` of the CPU at `selector`: refused like QEMU's pre-plug check, else the
    /// vCPU appears, gets an insert event (modern mode) or its present bit (legacy mode),
    /// GPE0 bit 2 is raised and FW_CFG_NB_CPUS grows.
    pub fn plug_cpu(&self, selector: usize) -> Result<(), HotplugError> {
        let mut m = self.m.borrow_mut();
        let s = m.cpuhp.slot(selector).ok_or(HotplugError::NoSuchSlot)?;
        if s.present {
            return Err(HotplugError::AlreadyPresent);
        }
        let neg = m.negotiated();
        if neg & smi::BROADCAST != 0 && neg & smi::CPU_HOTPLUG == 0 {
            return Err(HotplugError::HotplugNotEnabledByFirmware);
        }
        m.cpuhp.plug(selector);
        m.pm.raise_gpe0(pm::GPE0_CPU_HOTPLUG);
        m.sync_nb_cpus();
        Ok(())
    }

    /// `device_del` of the CPU at `selector`: refused like QEMU, else the remove event is
    /// set and GPE0 bit 2 raised. The CPU goes away only when ejected through the block.
    pub fn request_cpu_unplug(&self, selector: usize) -> Result<(), HotplugError> {
        let mut m = self.m.borrow_mut();
        let s = m.cpuhp.slot(selector).ok_or(HotplugError::NoSuchSlot)?;
        if !s.present {
            return Err(HotplugError::NotPresent);
        }
        if selector == 0 {
            return Err(HotplugError::BootCpu);
        }
        if m.cpuhp.mode() == CpuHpMode::Legacy {
            return Err(HotplugError::LegacyInterface);
        }
        let neg = m.negotiated();
        if neg & smi::BROADCAST != 0 && neg & smi::CPU_HOT_UNPLUG == 0 {
            return Err(HotplugError::HotUnplugNotEnabledByFirmware);
        }
        if let Some(s) = m.cpuhp.slot_mut(selector) {
            s.removing = true;
        }
        m.pm.raise_gpe0(pm::GPE0_CPU_HOTPLUG);
        Ok(())
    }

    /// Set the event bits of the CPU at `selector` directly (e.g. stale events surviving a
    /// reset).
    pub fn set_cpu_events(&self, selector: usize, ev: CpuEvents) -> Result<(), HotplugError> {
        let mut m = self.m.borrow_mut();
        let s = m.cpuhp.slot_mut(selector).ok_or(HotplugError::NoSuchSlot)?;
        s.inserting = ev.insert;
        s.removing = ev.remove;
        s.fw_remove = ev.fw_remove;
        Ok(())
    }
}

impl q35::io::PortIo for Q35Sim {
    fn inb(&self, port: u16) -> u8 {
        self.m.borrow_mut().read(port, 1) as u8
    }
    fn inw(&self, port: u16) -> u16 {
        self.m.borrow_mut().read(port, 2) as u16
    }
    fn inl(&self, port: u16) -> u32 {
        self.m.borrow_mut().read(port, 4)
    }
    fn outb(&self, port: u16, value: u8) {
        self.m.borrow_mut().write(port, u32::from(value), 1)
    }
    fn outw(&self, port: u16, value: u16) {
        self.m.borrow_mut().write(port, u32::from(value), 2)
    }
    fn outl(&self, port: u16, value: u32) {
        self.m.borrow_mut().write(port, value, 4)
    }
}
