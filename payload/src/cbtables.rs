//! Reading the coreboot tables the firmware handed over.

/// Record tag of the memory map (`LB_TAG_MEMORY`).
pub const TAG_MEMORY: u32 = 0x0001;
/// Record tag of the serial port description (`LB_TAG_SERIAL`).
pub const TAG_SERIAL: u32 = 0x000F;
/// Record tag of a pointer to the real table (`LB_TAG_FORWARD`).
pub const TAG_FORWARD: u32 = 0x0011;
/// Record tag of the ACPI RSDP's address (`LB_TAG_ACPI_RSDP`).
pub const TAG_ACPI_RSDP: u32 = 0x0043;
/// Record tag of the CBMEM console's address (`LB_TAG_CBMEM_CONSOLE`).
pub const TAG_CBMEM_CONSOLE: u32 = 0x0017;

/// One memory-map entry.
#[derive(Clone, Copy, Debug)]
pub struct MemRange {
    /// Physical start address.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// Type: 1 = RAM, 2 = reserved, 3 = ACPI, 16 = coreboot table, others.
    pub kind: u32,
}

/// What the payload uses of the coreboot tables.
pub struct Tables {
    /// Address of the table header that was parsed (after any forward record).
    pub base: u64,
    /// The memory map; only the first `memory_len` entries are valid.
    pub memory: [MemRange; 32],
    /// Valid entries of `memory`.
    pub memory_len: usize,
    /// The serial port's I/O base, if the tables describe one.
    pub serial_port: Option<u32>,
    /// The ACPI RSDP's address, if the tables give one.
    pub rsdp: Option<u64>,
    /// The CBMEM console's address, if the tables give one.
    pub cbmem_console: Option<u64>,
}

impl Tables {
    /// Nothing known yet of the tables at `base`.
    fn empty(base: u64) -> Tables {
        Tables {
            base,
            memory: [MemRange {
                start: 0,
                size: 0,
                kind: 0,
            }; 32],
            memory_len: 0,
            serial_port: None,
            rsdp: None,
            cbmem_console: None,
        }
    }
}

/// Read a little-endian dword at `addr`.
fn rd32(addr: u64) -> u32 {
    // SAFETY: callers only read inside a table whose header was validated.
    unsafe { core::ptr::read_unaligned(addr as *const u32) }
}

/// The IP checksum coreboot uses over `len` bytes at `addr`.
fn checksum(addr: u64, len: u64) -> u32 {
    let mut sum: u32 = 0;
    for i in 0..len {
        // SAFETY: within the validated table.
        let b = u32::from(unsafe { core::ptr::read_volatile((addr + i) as *const u8) });
        sum += if i & 1 == 1 { b << 8 } else { b };
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    (!sum) & 0xFFFF
}

/// Parse the table at `ptr`, following one forward record.
pub fn parse(mut ptr: u64) -> Result<Tables, &'static str> {
    for _ in 0..2 {
        if ptr == 0 || ptr > 0xFFFF_0000 {
            return Err("no coreboot table pointer");
        }
        if rd32(ptr) != u32::from_le_bytes(*b"LBIO") {
            return Err("no LBIO signature");
        }
        let (hdr, tbytes, tsum, n) = (
            rd32(ptr + 4),
            rd32(ptr + 12),
            rd32(ptr + 16),
            rd32(ptr + 20),
        );
        if hdr != 24 || checksum(ptr, 24) != 0 && checksum(ptr, 24) != 0xFFFF {
            return Err("bad header checksum");
        }
        if checksum(ptr + 24, u64::from(tbytes)) != tsum {
            return Err("bad table checksum");
        }
        let mut t = Tables::empty(ptr);
        let mut rec = ptr + 24;
        let mut forward = None;
        for _ in 0..n.min(256) {
            let (tag, size) = (rd32(rec), rd32(rec + 4));
            if size < 8 {
                return Err("bad record size");
            }
            match tag {
                TAG_FORWARD => {
                    forward = Some(u64::from(rd32(rec + 8)) | u64::from(rd32(rec + 12)) << 32)
                }
                TAG_MEMORY => {
                    let count = ((size - 8) / 20).min(32) as usize;
                    for i in 0..count {
                        let e = rec + 8 + 20 * i as u64;
                        t.memory[i] = MemRange {
                            start: u64::from(rd32(e)) | u64::from(rd32(e + 4)) << 32,
                            size: u64::from(rd32(e + 8)) | u64::from(rd32(e + 12)) << 32,
                            kind: rd32(e + 16),
                        };
                    }
                    t.memory_len = count;
                }
                TAG_SERIAL => t.serial_port = Some(rd32(rec + 12)),
                TAG_ACPI_RSDP if size >= 16 => {
                    t.rsdp = Some(u64::from(rd32(rec + 8)) | u64::from(rd32(rec + 12)) << 32)
                }
                TAG_CBMEM_CONSOLE if size >= 16 => {
                    t.cbmem_console =
                        Some(u64::from(rd32(rec + 8)) | u64::from(rd32(rec + 12)) << 32)
                }
                _ => {}
            }
            rec += u64::from(size);
        }
        match forward {
            Some(f) => ptr = f,
            None => return Ok(t),
        }
    }
    Err("forward loop")
}

/// The same facts from libpayload's `lib_sysinfo` (libpayload parsed the tables at
/// start): the memory map, the serial port, the ACPI RSDP and the CBMEM console.
#[cfg(feature = "libpayload")]
pub fn from_libpayload() -> Result<Tables, &'static str> {
    use libpayload_sys as lp;
    // SAFETY: plain reads of lib_sysinfo through the shim; libpayload filled it before
    // `main`.
    let (header, n) = unsafe { (lp::lp_sysinfo_cb_header(), lp::lp_sysinfo_memranges()) };
    if header == 0 {
        return Err("libpayload found no coreboot tables");
    }
    let mut t = Tables::empty(header);
    for i in 0..n.clamp(0, 32) {
        let (mut start, mut size, mut kind) = (0u64, 0u64, 0u32);
        // SAFETY: the shim writes the three values for an index inside the map.
        if unsafe { lp::lp_sysinfo_memrange(i, &mut start, &mut size, &mut kind) } != 0 {
            break;
        }
        t.memory[t.memory_len] = MemRange { start, size, kind };
        t.memory_len += 1;
    }
    // SAFETY: plain reads of lib_sysinfo through the shim.
    let (port, rsdp, cons) = unsafe {
        (
            lp::lp_sysinfo_serial_ioport(),
            lp::lp_sysinfo_acpi_rsdp(),
            lp::lp_sysinfo_cbmem_console(),
        )
    };
    t.serial_port = (port != 0).then_some(port);
    t.rsdp = (rsdp != 0).then_some(rsdp);
    t.cbmem_console = (cons != 0).then_some(cons);
    Ok(t)
}
