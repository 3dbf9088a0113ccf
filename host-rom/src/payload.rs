//! ELF payload loading and the hand-off exactly as coreboot does it on x86: 32-bit
//! protected mode, paging off, flat segments, the coreboot table pointer at [esp+4].

use crate::memmap::{self, Map};

/// Why a payload does not load; printed (through `Debug`) in the FATAL line.
#[allow(dead_code)]
#[derive(Debug)]
pub enum PayloadError {
    /// No ELF magic.
    NotElf,
    /// ELF class neither 32- nor 64-bit.
    UnsupportedClass(u8),
    /// Not little-endian i386 or x86_64.
    NotX86,
    /// No PT_LOAD segment with memory.
    NoLoadSegments,
    /// A header or segment reaches past the end of the file.
    Truncated,
    /// A segment outside the RAM the memory map gives the payload (or above 4 GiB).
    SegmentNotInRam {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// A segment would overwrite the ELF file it is loaded from.
    SegmentOverlapsImage {
        /// First byte.
        start: u64,
        /// One past the last byte.
        end: u64,
    },
    /// The entry point lies in no segment.
    EntryOutsideSegments(u64),
    /// More than 16 PT_LOAD segments.
    TooManySegments,
}

#[derive(Clone, Copy)]
struct Segment {
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn le(b: &[u8], off: usize, n: usize) -> Result<u64, PayloadError> {
    let s = b.get(off..off + n).ok_or(PayloadError::Truncated)?;
    Ok(s.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// The ELF header fields the loader uses.
struct Header {
    is64: bool,
    entry: u64,
    phoff: u64,
    phentsize: u64,
    phnum: u64,
}

fn header(elf: &[u8]) -> Result<Header, PayloadError> {
    if elf.get(0..4) != Some(b"\x7fELF") {
        return Err(PayloadError::NotElf);
    }
    let class = *elf.get(4).ok_or(PayloadError::Truncated)?;
    let is64 = match class {
        1 => false,
        2 => true,
        c => return Err(PayloadError::UnsupportedClass(c)),
    };
    let machine = le(elf, 18, 2)?;
    if elf.get(5) != Some(&1) || !(machine == 3 || machine == 62) {
        return Err(PayloadError::NotX86);
    }
    Ok(if is64 {
        Header {
            is64,
            entry: le(elf, 24, 8)?,
            phoff: le(elf, 32, 8)?,
            phentsize: le(elf, 54, 2)?,
            phnum: le(elf, 56, 2)?,
        }
    } else {
        Header {
            is64,
            entry: le(elf, 24, 4)?,
            phoff: le(elf, 28, 4)?,
            phentsize: le(elf, 42, 2)?,
            phnum: le(elf, 44, 2)?,
        }
    })
}

/// Program header `ph` if it is a PT_LOAD segment.
fn segment(elf: &[u8], ph: usize, is64: bool) -> Result<Option<Segment>, PayloadError> {
    if le(elf, ph, 4)? != 1 {
        return Ok(None); // not PT_LOAD
    }
    Ok(Some(if is64 {
        Segment {
            offset: le(elf, ph + 8, 8)?,
            paddr: le(elf, ph + 24, 8)?,
            filesz: le(elf, ph + 32, 8)?,
            memsz: le(elf, ph + 40, 8)?,
        }
    } else {
        Segment {
            offset: le(elf, ph + 4, 4)?,
            paddr: le(elf, ph + 12, 4)?,
            filesz: le(elf, ph + 16, 4)?,
            memsz: le(elf, ph + 20, 4)?,
        }
    }))
}

/// A segment must land in payload RAM below 4 GiB, away from the ELF image, with its
/// file bytes inside the file.
fn check(s: &Segment, elf: &[u8], map: &Map, image: (u64, u64)) -> Result<(), PayloadError> {
    let (start, end) = (
        s.paddr,
        s.paddr
            .checked_add(s.memsz)
            .ok_or(PayloadError::Truncated)?,
    );
    if s.filesz > s.memsz || end > 0x1_0000_0000 || !memmap::is_usable(map, start, end) {
        return Err(PayloadError::SegmentNotInRam { start, end });
    }
    if start < image.1 && image.0 < end {
        return Err(PayloadError::SegmentOverlapsImage { start, end });
    }
    if s.offset
        .checked_add(s.filesz)
        .is_none_or(|e| e > elf.len() as u64)
    {
        return Err(PayloadError::Truncated);
    }
    Ok(())
}

/// Validate `elf` and copy its PT_LOAD segments into RAM. `image` is where the ELF itself
/// sits (flash or a staging buffer): segments must not overlap it. Returns the entry.
pub fn load(elf: &[u8], map: &Map, image: (u64, u64)) -> Result<u32, PayloadError> {
    let h = header(elf)?;
    let mut segs: heapless::Vec<Segment, 16> = heapless::Vec::new();
    for i in 0..h.phnum {
        let ph = (h.phoff + i * h.phentsize) as usize;
        let Some(s) = segment(elf, ph, h.is64)? else {
            continue;
        };
        if s.memsz == 0 {
            continue;
        }
        check(&s, elf, map, image)?;
        segs.push(s).map_err(|_| PayloadError::TooManySegments)?;
    }
    if segs.is_empty() {
        return Err(PayloadError::NoLoadSegments);
    }
    let entry = h.entry;
    if !segs
        .iter()
        .any(|s| s.paddr <= entry && entry < s.paddr + s.memsz)
    {
        return Err(PayloadError::EntryOutsideSegments(entry));
    }
    for s in &segs {
        let src = &elf[s.offset as usize..(s.offset + s.filesz) as usize];
        // SAFETY: the destination range was checked to be RAM the memory map gives to the
        // payload, below 4 GiB (identity mapped), and not overlapping the ELF image.
        unsafe {
            core::ptr::copy(src.as_ptr(), s.paddr as *mut u8, src.len());
            core::ptr::write_bytes(
                (s.paddr + s.filesz) as *mut u8,
                0,
                (s.memsz - s.filesz) as usize,
            );
        }
    }
    Ok(entry as u32)
}

core::arch::global_asm!(
    concat!(
        include_str!("../../platform/asm/gdt.S"),
        include_str!("../../platform/asm/long_mode.S"),
        include_str!("../asm/handoff.S")
    ),
    options(att_syntax)
);

extern "sysv64" {
    fn payload_handoff(entry: u32, table: u32, stack: u32) -> !;
}

/// Enter the payload. Never returns.
pub fn enter(entry: u32, table: u64, stack_top: u32) -> ! {
    // SAFETY: the entry was validated by `load`, the table is below 4 GiB, the stack
    // is in the firmware's reserved window, and the code runs from identity-mapped RAM.
    unsafe { payload_handoff(entry, table as u32, stack_top) }
}
