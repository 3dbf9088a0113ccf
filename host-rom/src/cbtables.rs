//! coreboot tables (`LBIO`): memory map, serial console, the ACPI RSDP's address, and a
//! forward record at 0x500, in the layout libpayload and coreboot-aware payloads parse.

use crate::memmap::Map;

const TAG_MEMORY: u32 = 0x0001;
const TAG_SERIAL: u32 = 0x000F;
const TAG_FORWARD: u32 = 0x0011;
const TAG_ACPI_RSDP: u32 = 0x0043;
const HEADER_BYTES: usize = 24;
const FORWARD_ADDR: u64 = 0x500;

/// coreboot's 16-bit one's-complement checksum.
pub fn ip_checksum(data: &[u8]) -> u32 {
    let mut sum: u32 = 0;
    for (i, &b) in data.iter().enumerate() {
        let v = if i & 1 == 1 {
            u32::from(b) << 8
        } else {
            u32::from(b)
        };
        sum += v;
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    (!sum) & 0xFFFF
}

struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
    entries: u32,
}

impl Writer<'_> {
    fn u32(&mut self, v: u32) {
        if let Some(s) = self.buf.get_mut(self.len..self.len + 4) {
            s.copy_from_slice(&v.to_le_bytes());
        }
        self.len += 4;
    }
    fn u64(&mut self, v: u64) {
        self.u32(v as u32);
        self.u32((v >> 32) as u32);
    }
}

fn finish_header(buf: &mut [u8], table_len: usize, entries: u32) {
    let table_sum = ip_checksum(&buf[HEADER_BYTES..HEADER_BYTES + table_len]);
    buf[0..4].copy_from_slice(b"LBIO");
    buf[4..8].copy_from_slice(&(HEADER_BYTES as u32).to_le_bytes());
    buf[8..12].copy_from_slice(&0u32.to_le_bytes());
    buf[12..16].copy_from_slice(&(table_len as u32).to_le_bytes());
    buf[16..20].copy_from_slice(&table_sum.to_le_bytes());
    buf[20..24].copy_from_slice(&entries.to_le_bytes());
    let hdr_sum = ip_checksum(&buf[0..HEADER_BYTES]);
    buf[8..12].copy_from_slice(&hdr_sum.to_le_bytes());
}

/// Write the tables at `base` (reserved as TABLE in `map`) and the forward record at
/// 0x500; with `rsdp`, an `LB_TAG_ACPI_RSDP` record as coreboot writes on qemu-q35.
/// Returns the address the payload gets.
///
/// # Safety
/// `base..base + size` and 0x500..0x530 must be firmware-owned RAM.
pub unsafe fn write(base: u64, size: usize, map: &Map, rsdp: Option<u64>) -> u64 {
    // SAFETY: the caller owns the range.
    let buf = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, size) };
    buf.fill(0);
    let mut w = Writer {
        buf: &mut buf[HEADER_BYTES..],
        len: 0,
        entries: 0,
    };

    w.u32(TAG_MEMORY);
    w.u32(8 + 20 * map.len() as u32);
    for r in map {
        w.u64(r.start);
        w.u64(r.end - r.start);
        w.u32(r.kind);
    }
    w.entries += 1;

    w.u32(TAG_SERIAL);
    w.u32(32);
    w.u32(1); // I/O port
    w.u32(u32::from(q35::serial::COM1));
    w.u32(115_200);
    w.u32(1); // register width
    w.u32(1_843_200); // input clock
    w.u32(0);
    w.entries += 1;

    if let Some(rsdp) = rsdp {
        w.u32(TAG_ACPI_RSDP);
        w.u32(16);
        w.u64(rsdp);
        w.entries += 1;
    }

    let (len, entries) = (w.len, w.entries);
    finish_header(buf, len, entries);

    // SAFETY: the caller owns the low-memory forward area.
    let fwd =
        unsafe { core::slice::from_raw_parts_mut(FORWARD_ADDR as *mut u8, HEADER_BYTES + 16) };
    fwd.fill(0);
    let mut w = Writer {
        buf: &mut fwd[HEADER_BYTES..],
        len: 0,
        entries: 0,
    };
    w.u32(TAG_FORWARD);
    w.u32(16);
    w.u64(base);
    finish_header(fwd, 16, 1);
    base
}
