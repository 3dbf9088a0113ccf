//! QEMU fw_cfg: detection, the file directory, DMA reads and writes, and the SMI
//! feature negotiation (QEMU `docs/specs/fw_cfg.rst`; the negotiation is described in
//! `docs/protocol.md#smi-feature-negotiation`).
//!
//! Addresses handed to DMA are taken as physical addresses: firmware runs identity
//! mapped, and the simulator interprets them as host pointers.

use crate::io::PortIo;

/// Selector port (16-bit write): selects an item by key and rewinds its data offset.
pub const PORT_SELECTOR: u16 = 0x510;
/// Data port (8-bit read): the next byte of the selected item.
pub const PORT_DATA: u16 = 0x511;
/// DMA address port, high dword (big-endian; written first).
pub const PORT_DMA_HIGH: u16 = 0x514;
/// DMA address port, low dword (big-endian); writing it runs the transfer.
pub const PORT_DMA_LOW: u16 = 0x518;

/// Key `FW_CFG_SIGNATURE`: reads "QEMU".
pub const KEY_SIGNATURE: u16 = 0x0000;
/// Key `FW_CFG_ID`: feature bitmap (u32, little-endian); see [`ID_DMA`].
pub const KEY_ID: u16 = 0x0001;
/// Key `FW_CFG_NB_CPUS`: CPUs present now (u16, little-endian); grows with hot-adds.
pub const KEY_NB_CPUS: u16 = 0x0005;
/// Key `FW_CFG_MAX_CPUS` (u16, little-endian): on x86 QEMU's `apic_id_limit`, the largest
/// possible APIC ID + 1 (not the number of possible CPUs when APIC IDs have holes).
pub const KEY_MAX_CPUS: u16 = 0x000F;
/// Key `FW_CFG_FILE_DIR`: the file directory (big-endian count, then 64-byte entries).
pub const KEY_FILE_DIR: u16 = 0x0019;

/// Key `FW_CFG_KERNEL_SIZE` (u32, little-endian): bytes of `-kernel`'s protected-mode
/// part ([`KEY_KERNEL_DATA`]); 0 or absent without `-kernel`.
pub const KEY_KERNEL_SIZE: u16 = 0x0008;
/// Key `FW_CFG_INITRD_SIZE` (u32, little-endian): bytes of `-initrd` ([`KEY_INITRD_DATA`]).
pub const KEY_INITRD_SIZE: u16 = 0x000b;
/// Key `FW_CFG_KERNEL_DATA`: the kernel image after its setup sectors.
pub const KEY_KERNEL_DATA: u16 = 0x0011;
/// Key `FW_CFG_INITRD_DATA`: the initrd.
pub const KEY_INITRD_DATA: u16 = 0x0012;
/// Key `FW_CFG_CMDLINE_SIZE` (u32, little-endian): bytes of `-append` with its NUL.
pub const KEY_CMDLINE_SIZE: u16 = 0x0014;
/// Key `FW_CFG_CMDLINE_DATA`: the NUL-terminated `-append` string.
pub const KEY_CMDLINE_DATA: u16 = 0x0015;
/// Key `FW_CFG_SETUP_SIZE` (u32, little-endian): bytes of the setup sectors.
pub const KEY_SETUP_SIZE: u16 = 0x0017;
/// Key `FW_CFG_SETUP_DATA`: the image's setup sectors, header fields patched by QEMU.
pub const KEY_SETUP_DATA: u16 = 0x0018;

/// [`KEY_ID`] bit 1: the DMA interface exists.
pub const ID_DMA: u32 = 1 << 1;

/// DMA control bit 1: read `length` bytes of the item into `address`.
pub const DMA_CTL_READ: u32 = 0x02;
/// DMA control bit 2: advance the item's data offset by `length` bytes without copying.
pub const DMA_CTL_SKIP: u32 = 0x04;
/// DMA control bit 3: select the item whose key is in bits 31:16 first.
pub const DMA_CTL_SELECT: u32 = 0x08;
/// DMA control bit 4: write `length` bytes from `address` into the item.
pub const DMA_CTL_WRITE: u32 = 0x10;

/// SMI feature bit 0 (`ICH9_LPC_SMI_F_BROADCAST_BIT`): an APMC write raises the SMI on
/// every CPU instead of only the writer.
pub const SMI_FEATURE_BROADCAST: u64 = 1 << 0;
/// SMI feature bit 1 (`ICH9_LPC_SMI_F_CPU_HOTPLUG_BIT`): QEMU allows CPU hot-add with SMM;
/// needs [`SMI_FEATURE_BROADCAST`].
pub const SMI_FEATURE_CPU_HOTPLUG: u64 = 1 << 1;
/// SMI feature bit 2 (`ICH9_LPC_SMI_F_CPU_HOT_UNPLUG_BIT`): QEMU allows CPU hot-unplug
/// with SMM; needs [`SMI_FEATURE_CPU_HOTPLUG`].
pub const SMI_FEATURE_CPU_HOT_UNPLUG: u64 = 1 << 2;

/// fw_cfg file with the SMI features QEMU supports (u64, little-endian, read-only).
pub const FILE_SMI_SUPPORTED: &str = "etc/smi/supported-features";
/// fw_cfg file the firmware writes the SMI features it requests to (u64, little-endian).
pub const FILE_SMI_REQUESTED: &str = "etc/smi/requested-features";
/// fw_cfg file whose selection validates the request: reads 1 when QEMU accepted it and
/// locked it until the next platform reset, else 0.
pub const FILE_SMI_FEATURES_OK: &str = "etc/smi/features-ok";

/// Size of the name field of a directory entry: names are NUL padded, so at most 55
/// bytes long.
pub const FILE_NAME_LEN: usize = 56;

/// One entry of the fw_cfg file directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwCfgFile {
    /// The selector key QEMU assigned to the file on this command line.
    pub key: u16,
    /// The file's size in bytes.
    pub size: u32,
}

/// Why an fw_cfg access failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FwCfgError {
    /// The signature key did not read "QEMU".
    NotPresent,
    /// DMA is required (data-port writes are ignored since QEMU 2.4) but not offered.
    NoDma,
    /// QEMU set the ERROR bit of a DMA descriptor (e.g. length mismatch, read-only file).
    DmaError,
    /// A read or write did not fit the file.
    BadLength,
}

/// DMA descriptor; every field is big-endian in memory.
#[repr(C, align(16))]
struct DmaAccess {
    control: u32,
    length: u32,
    address: u64,
}

/// The fw_cfg device on one set of ports. Callers must not interleave accesses from
/// several CPUs (the selection and data offset are shared state).
pub struct FwCfg<'a, P: PortIo> {
    ports: &'a P,
    dma: bool,
}

impl<'a, P: PortIo> FwCfg<'a, P> {
    /// Detect fw_cfg ("QEMU" signature) and whether it offers DMA.
    pub fn detect(ports: &'a P) -> Result<Self, FwCfgError> {
        let mut cfg = Self { ports, dma: false };
        let mut sig = [0u8; 4];
        cfg.read_key(KEY_SIGNATURE, &mut sig);
        if &sig != b"QEMU" {
            return Err(FwCfgError::NotPresent);
        }
        cfg.dma = cfg.read_key_u32(KEY_ID) & ID_DMA != 0;
        Ok(cfg)
    }

    /// Whether [`KEY_ID`] advertised the DMA interface.
    pub fn has_dma(&self) -> bool {
        self.dma
    }

    /// Select `key`; the data offset restarts at 0.
    pub fn select(&self, key: u16) {
        self.ports.outw(PORT_SELECTOR, key);
    }

    /// Read the next bytes of the selected item through the data port.
    pub fn read_data(&self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            *b = self.ports.inb(PORT_DATA);
        }
    }

    /// Select `key` and read its first `buf.len()` bytes through the data port.
    pub fn read_key(&self, key: u16, buf: &mut [u8]) {
        self.select(key);
        self.read_data(buf);
    }

    /// Select `key` and read its first 4 bytes as a little-endian u32.
    pub fn read_key_u32(&self, key: u16) -> u32 {
        let mut b = [0u8; 4];
        self.read_key(key, &mut b);
        u32::from_le_bytes(b)
    }

    /// Select `key` and read its first 2 bytes as a little-endian u16.
    pub fn read_key_u16(&self, key: u16) -> u16 {
        let mut b = [0u8; 2];
        self.read_key(key, &mut b);
        u16::from_le_bytes(b)
    }

    /// Look a file up by name in the directory ([`KEY_FILE_DIR`]). Keys are not stable
    /// across command lines, so files are always found by name.
    pub fn find_file(&self, name: &str) -> Option<FwCfgFile> {
        self.find_file_bytes(name.as_bytes())
    }

    /// [`Self::find_file`] for a name given as bytes (e.g. taken from a QEMU script).
    pub fn find_file_bytes(&self, want: &[u8]) -> Option<FwCfgFile> {
        if want.is_empty() || want.len() >= FILE_NAME_LEN {
            return None;
        }
        self.select(KEY_FILE_DIR);
        let mut count = [0u8; 4];
        self.read_data(&mut count);
        let count = u32::from_be_bytes(count);
        // QEMU's directory is bounded by its key space (0x4000 files at most).
        for _ in 0..count.min(0x4000) {
            let mut entry = [0u8; 64];
            self.read_data(&mut entry);
            let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let key = u16::from_be_bytes([entry[4], entry[5]]);
            let entry_name = &entry[8..8 + FILE_NAME_LEN];
            let len = entry_name
                .iter()
                .position(|&c| c == 0)
                .unwrap_or(FILE_NAME_LEN);
            if &entry_name[..len] == want {
                return Some(FwCfgFile { key, size });
            }
        }
        None
    }

    /// Run one DMA transfer and report QEMU's verdict. The transfer is synchronous:
    /// it completes inside the write to the low address port.
    fn dma(&self, control: u32, buf_addr: u64, len: u32) -> Result<(), FwCfgError> {
        if !self.dma {
            return Err(FwCfgError::NoDma);
        }
        let mut desc = DmaAccess {
            control: control.to_be(),
            length: len.to_be(),
            address: buf_addr.to_be(),
        };
        let desc_addr = &mut desc as *mut DmaAccess as u64;
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        self.ports
            .outl(PORT_DMA_HIGH, ((desc_addr >> 32) as u32).to_be());
        self.ports.outl(PORT_DMA_LOW, (desc_addr as u32).to_be());
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        // SAFETY: `desc` is a live local; QEMU wrote it behind the compiler's back, so read
        // it volatile.
        let ctl = u32::from_be(unsafe { core::ptr::read_volatile(&desc.control) });
        // QEMU clears the control word when the transfer succeeded and leaves the ERROR
        // bit (bit 0) set when it failed.
        if ctl != 0 {
            return Err(FwCfgError::DmaError);
        }
        Ok(())
    }

    /// Read a whole file (or its first `buf.len()` bytes) through DMA when available,
    /// else through the data port.
    pub fn read_file(&self, file: FwCfgFile, buf: &mut [u8]) -> Result<(), FwCfgError> {
        if buf.len() as u64 > u64::from(file.size) {
            return Err(FwCfgError::BadLength);
        }
        if self.dma {
            let control = (u32::from(file.key) << 16) | DMA_CTL_SELECT | DMA_CTL_READ;
            self.dma(control, buf.as_mut_ptr() as u64, buf.len() as u32)
        } else {
            self.read_key(file.key, buf);
            Ok(())
        }
    }

    /// Write `data` to a file. Only DMA can write, and QEMU requires the write to fit
    /// the file exactly from offset 0.
    pub fn write_file(&self, file: FwCfgFile, data: &[u8]) -> Result<(), FwCfgError> {
        if data.len() as u64 != u64::from(file.size) {
            return Err(FwCfgError::BadLength);
        }
        let control = (u32::from(file.key) << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE;
        self.dma(control, data.as_ptr() as u64, data.len() as u32)
    }

    /// Write `data` into a file at `offset` (select, skip `offset` bytes, write). QEMU
    /// refuses a write that runs past the end of the file or into a read-only file.
    pub fn write_file_at(
        &self,
        file: FwCfgFile,
        offset: u32,
        data: &[u8],
    ) -> Result<(), FwCfgError> {
        let end = u64::from(offset) + data.len() as u64;
        if data.is_empty() || end > u64::from(file.size) {
            return Err(FwCfgError::BadLength);
        }
        let select = (u32::from(file.key) << 16) | DMA_CTL_SELECT;
        self.dma(select | DMA_CTL_SKIP, 0, offset)?;
        self.dma(DMA_CTL_WRITE, data.as_ptr() as u64, data.len() as u32)
    }

    /// Find `name` and read it as a little-endian u64 (files of exactly 8 bytes).
    pub fn read_file_u64(&self, name: &str) -> Option<u64> {
        let f = self.find_file(name)?;
        if f.size != 8 {
            return None;
        }
        let mut b = [0u8; 8];
        self.read_file(f, &mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// Outcome of SMI feature negotiation that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiation {
    /// QEMU predates negotiation (< 2.9): the files do not exist.
    Unsupported,
    /// features-ok read 1: `requested` is now locked in until the next platform reset.
    Granted {
        /// What `etc/smi/supported-features` offered.
        supported: u64,
        /// What was requested and granted (`supported & wanted`).
        requested: u64,
    },
}

/// Why SMI feature negotiation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NegotiationError {
    /// The three files exist but not with sizes 8/8/1.
    BadFileSizes,
    /// The DMA write of requested-features failed.
    Write(FwCfgError),
    /// Reading supported-features failed.
    Read(FwCfgError),
    /// QEMU answered features-ok = 0 for this request (negotiation stays open).
    Refused {
        /// What `etc/smi/supported-features` offered.
        supported: u64,
        /// What was requested (`supported & wanted`) and refused.
        requested: u64,
    },
}

/// Negotiate `supported & wanted`: read supported-features, write the request to
/// requested-features, then select features-ok, which makes QEMU validate and lock it
/// (see `docs/protocol.md#smi-feature-negotiation`). Negotiation must finish before the
/// first selection of any ACPI fw_cfg blob and before untrusted code runs.
pub fn negotiate_smi_features<P: PortIo>(
    cfg: &FwCfg<'_, P>,
    wanted: u64,
) -> Result<Negotiation, NegotiationError> {
    let (Some(sup), Some(req), Some(ok)) = (
        cfg.find_file(FILE_SMI_SUPPORTED),
        cfg.find_file(FILE_SMI_REQUESTED),
        cfg.find_file(FILE_SMI_FEATURES_OK),
    ) else {
        return Ok(Negotiation::Unsupported);
    };
    if sup.size != 8 || req.size != 8 || ok.size != 1 {
        return Err(NegotiationError::BadFileSizes);
    }
    let mut b = [0u8; 8];
    cfg.read_file(sup, &mut b).map_err(NegotiationError::Read)?;
    let supported = u64::from_le_bytes(b);
    let requested = supported & wanted;
    cfg.write_file(req, &requested.to_le_bytes())
        .map_err(NegotiationError::Write)?;
    // Selecting features-ok makes QEMU validate the request; read the verdict through
    // the data port so the selection itself is the plain one QEMU documents.
    let mut verdict = [0u8; 1];
    cfg.read_key(ok.key, &mut verdict);
    if verdict[0] != 1 {
        return Err(NegotiationError::Refused {
            supported,
            requested,
        });
    }
    Ok(Negotiation::Granted {
        supported,
        requested,
    })
}

/// Read back what negotiation left behind: (supported, requested, features-ok).
pub fn read_smi_features<P: PortIo>(cfg: &FwCfg<'_, P>) -> Option<(u64, u64, u8)> {
    let supported = cfg.read_file_u64(FILE_SMI_SUPPORTED)?;
    let requested = cfg.read_file_u64(FILE_SMI_REQUESTED)?;
    let ok = cfg.find_file(FILE_SMI_FEATURES_OK)?;
    let mut b = [0u8; 1];
    cfg.read_file(ok, &mut b).ok()?;
    Some((supported, requested, b[0]))
}
