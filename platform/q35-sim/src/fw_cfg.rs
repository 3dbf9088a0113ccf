//! QEMU fw_cfg on the x86 I/O ports: selector 0x510 (16-bit write), data 0x511 (8-bit
//! read), DMA address 0x514 (high) / 0x518 (low, triggers), big-endian (QEMU
//! `hw/nvram/fw_cfg.c`; see `docs/qemu.md`).
//!
//! Items: signature (0x00), ID (0x01), NB_CPUS (0x05), MAX_CPUS (0x0F), the file directory
//! (0x19) and files at 0x20 + their index in name order (QEMU sorts the directory by name
//! and assigns keys accordingly). Selecting an item resets the read offset; reading past
//! its end, or an item that does not exist, yields zeros.
//!
//! # DMA and host pointers
//!
//! Firmware runs identity mapped, so the addresses the q35 driver hands the DMA engine
//! (descriptor and buffer) are addresses of live host objects. The simulator dereferences
//! them as host pointers. This is only meaningful for a driver that, like `q35::fw_cfg`,
//! passes pointers to live, correctly sized buffers; address 0 is refused as a DMA error.

use std::collections::BTreeMap;

use crate::smi::{self, SmiNegotiation};

/// Selector port (16-bit write selects).
pub const PORT_SELECTOR: u16 = 0x510;
/// Data port (8-bit read).
pub const PORT_DATA: u16 = 0x511;
/// First DMA address port (high dword, big-endian).
pub const PORT_DMA: u16 = 0x514;
/// DMA address port for the low dword (big-endian); a write runs the transfer.
pub const PORT_DMA_LOW: u16 = 0x518;
/// Bytes of I/O space the DMA address ports take (0x514-0x51B).
pub const DMA_PORTS_LEN: u16 = 8;

/// Key `FW_CFG_SIGNATURE`: "QEMU".
pub const KEY_SIGNATURE: u16 = 0x0000;
/// Key `FW_CFG_ID`: feature bits ([`ID_TRADITIONAL`], [`ID_DMA`]), u32 little-endian.
pub const KEY_ID: u16 = 0x0001;
/// Key `FW_CFG_NB_CPUS`: CPUs present now, u16 little-endian.
pub const KEY_NB_CPUS: u16 = 0x0005;
/// Key `FW_CFG_MAX_CPUS`: largest possible APIC ID + 1 (QEMU's `apic_id_limit`), u16
/// little-endian.
pub const KEY_MAX_CPUS: u16 = 0x000F;
/// Key `FW_CFG_FILE_DIR`: the file directory.
pub const KEY_FILE_DIR: u16 = 0x0019;
/// Key of the first file (`FW_CFG_FILE_FIRST`); files follow in name order.
pub const KEY_FILE_FIRST: u16 = 0x0020;
/// How many files the device holds (QEMU's default `x-file-slots`).
pub const FILE_SLOTS: u16 = 0x20;

const ARCH_LOCAL: u16 = 0x8000;
const ENTRY_MASK: u16 = 0x3FFF;
const MAX_ENTRY: u16 = KEY_FILE_FIRST + FILE_SLOTS;

/// [`KEY_ID`] bit 0: the selector/data port interface exists.
pub const ID_TRADITIONAL: u32 = 1 << 0;
/// [`KEY_ID`] bit 1: the DMA interface exists.
pub const ID_DMA: u32 = 1 << 1;

/// DMA control bit 0: the transfer failed (the device's only answer besides 0 = done).
pub const DMA_CTL_ERROR: u32 = 0x01;
/// DMA control bit 1: read item bytes into guest memory.
pub const DMA_CTL_READ: u32 = 0x02;
/// DMA control bit 2: advance the item offset without copying.
pub const DMA_CTL_SKIP: u32 = 0x04;
/// DMA control bit 3: select the item in bits 31:16 first.
pub const DMA_CTL_SELECT: u32 = 0x08;
/// DMA control bit 4: write guest memory into the item (writable files only).
pub const DMA_CTL_WRITE: u32 = 0x10;

/// What the DMA address ports read back: "QEMU CFG".
pub const DMA_SIGNATURE: [u8; 8] = *b"QEMU CFG";

/// Size of a directory entry's NUL-padded name field (names are at most 55 bytes).
pub const FILE_NAME_LEN: usize = 56;
const DIR_ENTRY_LEN: usize = 64;

/// Callback QEMU runs when an item is selected (through 0x510 or a DMA SELECT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SelectHook {
    SmiFeaturesOk,
}

struct Entry {
    data: Vec<u8>,
    writable: bool,
    on_select: Option<SelectHook>,
}

/// A file in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// The file name, e.g. `etc/smi/features-ok`.
    pub name: String,
    /// The key that selects it.
    pub key: u16,
    /// Its size in bytes.
    pub size: u32,
}

/// A file to put into fw_cfg at construction.
#[derive(Clone, Debug)]
pub struct FileSpec {
    /// The file name (1-55 bytes).
    pub name: String,
    /// The initial contents.
    pub data: Vec<u8>,
    /// Whether a DMA write may change the contents.
    pub writable: bool,
}

/// The fw_cfg device: fixed items, files, the selection and the DMA engine.
pub struct FwCfg {
    dma_enabled: bool,
    entries: BTreeMap<u16, Entry>,
    dir: Vec<DirEntry>,
    /// Selected entry index (`arch << 15 | key & 0x3FFF`), `None` = invalid selection.
    cur: Option<u16>,
    offset: usize,
    dma_addr: u64,
    smi: Option<SmiNegotiation>,
}

fn entry_index(key: u16) -> u16 {
    (key & ARCH_LOCAL) | (key & ENTRY_MASK)
}

impl FwCfg {
    /// A device with the fixed items, `user_files` and, unless `smi_supported` is 0 (as
    /// QEMU does for machines without the feature), the three SMI negotiation files.
    ///
    /// # Panics
    /// If there are more files than [`FILE_SLOTS`] or a name does not fit 55 bytes + NUL.
    pub fn new(
        dma: bool,
        nb_cpus: u16,
        max_cpus: u16,
        smi_supported: u64,
        user_files: &[FileSpec],
    ) -> Self {
        let mut files: Vec<FileSpec> = user_files.to_vec();
        let smi = (smi_supported != 0).then(|| {
            files.push(FileSpec {
                name: smi::FILE_SUPPORTED.into(),
                data: smi_supported.to_le_bytes().to_vec(),
                writable: false,
            });
            files.push(FileSpec {
                name: smi::FILE_REQUESTED.into(),
                data: vec![0; 8],
                writable: true,
            });
            files.push(FileSpec {
                name: smi::FILE_FEATURES_OK.into(),
                data: vec![0; 1],
                writable: false,
            });
            SmiNegotiation::new(smi_supported)
        });
        files.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        assert!(
            files.len() <= usize::from(FILE_SLOTS),
            "fw_cfg: no more file slots"
        );

        let mut entries = BTreeMap::new();
        let id = ID_TRADITIONAL | if dma { ID_DMA } else { 0 };
        let fixed: [(u16, Vec<u8>); 4] = [
            (KEY_SIGNATURE, b"QEMU".to_vec()),
            (KEY_ID, id.to_le_bytes().to_vec()),
            (KEY_NB_CPUS, nb_cpus.to_le_bytes().to_vec()),
            (KEY_MAX_CPUS, max_cpus.to_le_bytes().to_vec()),
        ];
        for (key, data) in fixed {
            entries.insert(
                key,
                Entry {
                    data,
                    writable: false,
                    on_select: None,
                },
            );
        }

        let mut dir = Vec::new();
        let mut dir_blob = (files.len() as u32).to_be_bytes().to_vec();
        for (i, f) in files.into_iter().enumerate() {
            assert!(
                !f.name.is_empty() && f.name.len() < FILE_NAME_LEN,
                "fw_cfg: bad file name {:?}",
                f.name
            );
            let key = KEY_FILE_FIRST + i as u16;
            let size = f.data.len() as u32;
            let mut raw = [0u8; DIR_ENTRY_LEN];
            raw[0..4].copy_from_slice(&size.to_be_bytes());
            raw[4..6].copy_from_slice(&key.to_be_bytes());
            raw[8..8 + f.name.len()].copy_from_slice(f.name.as_bytes());
            dir_blob.extend_from_slice(&raw);
            let on_select = (f.name == smi::FILE_FEATURES_OK).then_some(SelectHook::SmiFeaturesOk);
            entries.insert(
                key,
                Entry {
                    data: f.data,
                    writable: f.writable,
                    on_select,
                },
            );
            dir.push(DirEntry {
                name: f.name,
                key,
                size,
            });
        }
        entries.insert(
            KEY_FILE_DIR,
            Entry {
                data: dir_blob,
                writable: false,
                on_select: None,
            },
        );

        let mut cfg = Self {
            dma_enabled: dma,
            entries,
            dir,
            cur: None,
            offset: 0,
            dma_addr: 0,
            smi,
        };
        cfg.select(KEY_SIGNATURE);
        cfg
    }

    /// Platform reset: negotiation opens again with requested-features and features-ok
    /// cleared (QEMU `ich9_lpc_reset`), and the signature is selected (`fw_cfg_reset`).
    pub fn reset(&mut self) {
        if let Some(smi) = self.smi.as_mut() {
            smi.reset();
        }
        for name in [smi::FILE_REQUESTED, smi::FILE_FEATURES_OK] {
            if let Some(key) = self.file_key(name) {
                if let Some(e) = self.entries.get_mut(&key) {
                    e.data.fill(0);
                }
            }
        }
        self.dma_addr = 0;
        self.select(KEY_SIGNATURE);
    }

    /// Whether the DMA interface exists.
    pub fn has_dma(&self) -> bool {
        self.dma_enabled
    }

    /// QEMU `fw_cfg_select`: reset the offset, validate the key, run the select callback.
    pub fn select(&mut self, key: u16) {
        self.offset = 0;
        if key & ENTRY_MASK >= MAX_ENTRY {
            self.cur = None;
            return;
        }
        let idx = entry_index(key);
        self.cur = Some(idx);
        let hook = self.entries.get(&idx).and_then(|e| e.on_select);
        if let Some(SelectHook::SmiFeaturesOk) = hook {
            self.smi_features_ok_selected(idx);
        }
    }

    fn smi_features_ok_selected(&mut self, ok_key: u16) {
        let requested = self
            .file_key(smi::FILE_REQUESTED)
            .and_then(|k| self.entries.get(&k))
            .and_then(|e| e.data.get(..8))
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .unwrap_or(0);
        let Some(smi) = self.smi.as_mut() else {
            return;
        };
        let verdict = smi.features_ok_selected(requested);
        if let Some(e) = self.entries.get_mut(&ok_key) {
            if let Some(b) = e.data.first_mut() {
                *b = verdict;
            }
        }
    }

    fn current(&self) -> Option<&Entry> {
        self.cur.and_then(|k| self.entries.get(&k))
    }

    /// One byte through the data port: the next item byte, 0 past the end.
    pub fn read_data_byte(&mut self) -> u8 {
        let offset = self.offset;
        match self.current().and_then(|e| e.data.get(offset)).copied() {
            Some(b) => {
                self.offset += 1;
                b
            }
            None => 0,
        }
    }

    /// Read of the selector/data pair (0x510-0x511): only byte reads are valid, and both
    /// ports return data bytes (QEMU's combined region).
    pub fn read_port(&mut self, size: u8) -> u32 {
        if size == 1 {
            u32::from(self.read_data_byte())
        } else {
            crate::truncate(u32::MAX, size)
        }
    }

    /// Write to 0x510-0x511: a 16-bit write selects; data-port writes are ignored
    /// (removed in QEMU 2.4).
    pub fn write_port(&mut self, port: u16, value: u32, size: u8) {
        if port == PORT_SELECTOR && size == 2 {
            self.select(value as u16);
        }
    }

    /// Read of the DMA address ports: the signature "QEMU CFG", in memory byte order.
    pub fn read_dma_port(&self, port: u16, size: u8) -> u32 {
        if !self.dma_enabled {
            return crate::truncate(u32::MAX, size);
        }
        let start = usize::from(port - PORT_DMA);
        (0..usize::from(size)).rev().fold(0u32, |acc, i| {
            let b = DMA_SIGNATURE.get(start + i).copied().unwrap_or(0xFF);
            (acc << 8) | u32::from(b)
        })
    }

    /// Write to the DMA address ports (big-endian device): a dword to 0x514 sets the high
    /// half (and clears the low one), a dword to 0x518 ORs in the low half and runs the
    /// transfer synchronously. Other sizes are ignored.
    pub fn write_dma_port(&mut self, port: u16, value: u32, size: u8) {
        if !self.dma_enabled || size != 4 {
            return;
        }
        let value = u64::from(value.swap_bytes());
        match port {
            PORT_DMA => self.dma_addr = value << 32,
            PORT_DMA_LOW => {
                self.dma_addr |= value;
                self.dma_transfer();
            }
            _ => {}
        }
    }

    /// QEMU `fw_cfg_dma_transfer`.
    fn dma_transfer(&mut self) {
        let desc_addr = self.dma_addr;
        // QEMU resets the address before every transfer, so the high half may be skipped
        // next time for descriptors below 4 GiB.
        self.dma_addr = 0;

        let mut raw = [0u8; 16];
        if !guest_read(desc_addr, &mut raw) {
            // Not even the descriptor is readable: QEMU tries to flag an error in it,
            // which cannot work either. Nothing to do.
            return;
        }
        let mut control = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let mut length = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        let mut address = u64::from_be_bytes([
            raw[8], raw[9], raw[10], raw[11], raw[12], raw[13], raw[14], raw[15],
        ]);

        if control & DMA_CTL_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let (read, write) = if control & DMA_CTL_READ != 0 {
            (true, false)
        } else if control & DMA_CTL_WRITE != 0 {
            (false, true)
        } else if control & DMA_CTL_SKIP != 0 {
            (false, false)
        } else {
            length = 0;
            (false, false)
        };

        control = 0;
        while length > 0 && control & DMA_CTL_ERROR == 0 {
            let offset = self.offset;
            let cur = self.cur;
            let entry = cur.and_then(|k| self.entries.get_mut(&k));
            let len;
            match entry {
                Some(e) if offset < e.data.len() => {
                    let remaining = e.data.len() - offset;
                    len = (length as usize).min(remaining);
                    let window = &mut e.data[offset..offset + len];
                    if read && !guest_write(address, window) {
                        control |= DMA_CTL_ERROR;
                    }
                    // A write must fit the rest of the item and the item must be writable.
                    if write
                        && (!e.writable || len != length as usize || !guest_read(address, window))
                    {
                        control |= DMA_CTL_ERROR;
                    }
                    self.offset += len;
                }
                _ => {
                    // Invalid selection, no data or past the end: reads fill zeros, writes
                    // fail, skips just advance.
                    len = length as usize;
                    if read && !guest_fill_zero(address, len) {
                        control |= DMA_CTL_ERROR;
                    }
                    if write {
                        control |= DMA_CTL_ERROR;
                    }
                }
            }
            address = address.wrapping_add(len as u64);
            length -= len as u32;
        }

        guest_write(desc_addr, &control.to_be_bytes());
    }

    /// Replace a 16-bit item (QEMU `fw_cfg_modify_i16`), e.g. NB_CPUS after a plug.
    pub fn modify_u16(&mut self, key: u16, value: u16) {
        if let Some(e) = self.entries.get_mut(&entry_index(key)) {
            e.data = value.to_le_bytes().to_vec();
        }
    }

    /// Current bytes of the item selected by `key`.
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.entries
            .get(&entry_index(key))
            .map(|e| e.data.as_slice())
    }

    /// The file directory, in key order.
    pub fn directory(&self) -> &[DirEntry] {
        &self.dir
    }

    /// The key of the file called `name`.
    pub fn file_key(&self, name: &str) -> Option<u16> {
        self.dir.iter().find(|d| d.name == name).map(|d| d.key)
    }

    /// Current bytes of the file called `name`.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.file_key(name).and_then(|k| self.item(k))
    }

    /// The SMI negotiation state, when the SMI files exist.
    pub fn smi(&self) -> Option<&SmiNegotiation> {
        self.smi.as_ref()
    }
}

/// Whether `[addr, addr + len)` can be a host object at all. Catches a zero or wrapping
/// address before it turns into a pointer; anything else is trusted (see the module doc).
fn plausible(addr: u64, len: usize) -> bool {
    addr != 0
        && usize::try_from(addr)
            .ok()
            .and_then(|a| a.checked_add(len))
            .is_some()
}

/// Copy guest memory at `addr` into `out`.
fn guest_read(addr: u64, out: &mut [u8]) -> bool {
    if out.is_empty() {
        return true;
    }
    if !plausible(addr, out.len()) {
        return false;
    }
    let src = std::ptr::with_exposed_provenance::<u8>(addr as usize);
    // SAFETY: guest-physical addresses are host addresses (identity-mapped firmware, see
    // the module doc). The driver handing out `addr` keeps `out.len()` bytes there alive and
    // readable for the duration of the port write that runs this transfer, and that memory
    // is a different object from the simulator's own `out` buffer, so the ranges do not
    // overlap. `u8` has no alignment requirement.
    unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
    true
}

/// Copy `data` into guest memory at `addr`.
fn guest_write(addr: u64, data: &[u8]) -> bool {
    if data.is_empty() {
        return true;
    }
    if !plausible(addr, data.len()) {
        return false;
    }
    let dst = std::ptr::with_exposed_provenance_mut::<u8>(addr as usize);
    // SAFETY: as in `guest_read`: `addr` is the host address of a live, writable buffer (or
    // descriptor) of at least `data.len()` bytes that the driver exposed for this transfer;
    // it is not borrowed elsewhere while the port write runs and does not overlap the
    // simulator's own `data`.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
    true
}

/// Zero `len` bytes of guest memory at `addr`.
fn guest_fill_zero(addr: u64, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    if !plausible(addr, len) {
        return false;
    }
    let dst = std::ptr::with_exposed_provenance_mut::<u8>(addr as usize);
    // SAFETY: as in `guest_write`: `addr` is a live, writable buffer of `len` bytes that the
    // driver handed to this transfer.
    unsafe { std::ptr::write_bytes(dst, 0, len) };
    true
}
