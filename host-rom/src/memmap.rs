//! The memory map handed to the payload, built from QEMU's `etc/e820` and the ranges the
//! firmware keeps: the default-SMBASE window + pen, the firmware window, QEMU's ACPI
//! tables, the coreboot tables and TSEG. One map for every payload: the coreboot tables
//! carry it as is, a Linux kernel gets it as its e820 table ([`e820`]).

use heapless::Vec;

pub const RAM: u32 = 1;
pub const RESERVED: u32 = 2;
/// ACPI tables (coreboot's `LB_MEM_ACPI`, e820 type 3).
pub const ACPI: u32 = 3;
pub const TABLE: u32 = 16;

/// Low memory with the coreboot forward record at 0x500.
pub const LOW_TABLE_END: u64 = 0x1000;
/// Where the host ROM lives in RAM (page tables, code, stacks of parked APs).
pub const FIRMWARE_WINDOW: (u64, u64) = (0x10_0000, 0x80_0000);
/// Space for the coreboot tables below TSEG.
pub const TABLES_SIZE: u64 = 0x1_0000;
/// Most RAM QEMU's ACPI tables may take, right below the coreboot tables.
pub const ACPI_MAX: u64 = 0x40_0000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: u64,
    pub end: u64,
    pub kind: u32,
}

pub type Map = Vec<Range, 32>;

/// RAM ranges from QEMU's e820 file (type 1 entries).
pub fn ram_from_e820(raw: &[u8]) -> Vec<(u64, u64), 8> {
    let mut v = Vec::new();
    for e in raw.chunks_exact(20) {
        let addr = u64::from_le_bytes(e[0..8].try_into().unwrap_or([0; 8]));
        let len = u64::from_le_bytes(e[8..16].try_into().unwrap_or([0; 8]));
        let kind = u32::from_le_bytes(e[16..20].try_into().unwrap_or([0; 4]));
        if kind == RAM && len > 0 {
            let _ = v.push((addr, addr + len));
        }
    }
    v
}

/// Carve `reserved` (sorted, non-overlapping) out of `ram`, yielding one sorted map.
pub fn build(ram: &[(u64, u64)], reserved: &[Range]) -> Map {
    let mut out = Map::new();
    for &(rs, re) in ram {
        let mut cur = rs;
        for r in reserved.iter().filter(|r| r.end > rs && r.start < re) {
            if r.start > cur {
                let _ = out.push(Range {
                    start: cur,
                    end: r.start,
                    kind: RAM,
                });
            }
            let _ = out.push(Range {
                start: r.start.max(rs),
                end: r.end.min(re),
                kind: r.kind,
            });
            cur = cur.max(r.end);
        }
        if cur < re {
            let _ = out.push(Range {
                start: cur,
                end: re,
                kind: RAM,
            });
        }
    }
    out
}

/// Whether `[start, end)` lies entirely inside one RAM range of `map`.
pub fn is_usable(map: &Map, start: u64, end: u64) -> bool {
    map.iter()
        .any(|r| r.kind == RAM && r.start <= start && end <= r.end)
}

/// The map as an e820 table: coreboot's table ranges become reserved, the other kinds
/// keep their numbers (RAM 1, reserved 2, ACPI 3).
pub fn e820(map: &Map) -> Vec<linux_boot::E820Entry, 32> {
    map.iter()
        .map(|r| linux_boot::E820Entry {
            addr: r.start,
            size: r.end - r.start,
            kind: match r.kind {
                TABLE => linux_boot::E820_RESERVED,
                k => k,
            },
        })
        .collect()
}
