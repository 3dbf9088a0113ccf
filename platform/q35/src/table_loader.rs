//! QEMU's ACPI linker/loader script, the fw_cfg file `etc/table-loader`: which fw_cfg
//! files to place in guest RAM (ALLOCATE), which pointers between them to patch
//! (ADD_POINTER), which checksums to fix (ADD_CHECKSUM) and which guest addresses to
//! report back to QEMU (WRITE_POINTER). SeaBIOS and edk2 run the same script.
//!
//! The script comes from the host and is checked whole before anything is written:
//! [`plan`] parses every entry, checks names, widths and ranges against the fw_cfg
//! directory and lays the allocations out in one area; [`run`] then fills a caller-owned
//! area and patches it with bounds-checked slice accesses only, so a malformed script
//! ends in a [`LoaderError`], never in a write outside the area. WRITE_POINTERs, the only
//! effects outside the area, run last, after every memory step succeeded.
//!
//! Format: entries of [`ENTRY_LEN`] bytes, little-endian, a `u32` command first; file
//! names are [`FILE_NAME_LEN`]-byte fields that must hold a NUL.

use core::fmt;

use crate::fw_cfg::{FwCfg, FwCfgError, FwCfgFile, FILE_NAME_LEN};
use crate::io::PortIo;

/// The script's fw_cfg file.
pub const FILE_TABLE_LOADER: &str = "etc/table-loader";
/// The fw_cfg file QEMU puts the RSDP in.
pub const FILE_RSDP: &str = "etc/acpi/rsdp";
/// Bytes per script entry.
pub const ENTRY_LEN: usize = 128;
/// Most entries a script may have (QEMU's have a few dozen).
pub const MAX_ENTRIES: usize = 512;
/// Most files a script may allocate (QEMU allocates 2 to 5).
pub const MAX_ALLOCATIONS: usize = 16;
/// Largest alignment an ALLOCATE may ask for (edk2's limit: one page).
pub const MAX_ALIGN: u32 = 4096;

/// Command: place a fw_cfg file in RAM.
pub const CMD_ALLOCATE: u32 = 1;
/// Command: add a file's address to a pointer inside another (or the same) file.
pub const CMD_ADD_POINTER: u32 = 2;
/// Command: fix a checksum byte so that a range sums to zero.
pub const CMD_ADD_CHECKSUM: u32 = 3;
/// Command: write a file's address into a writable fw_cfg file.
pub const CMD_WRITE_POINTER: u32 = 4;
/// ALLOCATE zone: anywhere in RAM below 4 GiB.
pub const ZONE_HIGH: u8 = 1;
/// ALLOCATE zone: the legacy BIOS F segment (0xF0000-0xFFFFF).
pub const ZONE_FSEG: u8 = 2;

/// A file name from the script: 1 to 55 bytes, NUL-terminated in its field.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Name {
    bytes: [u8; FILE_NAME_LEN],
    len: u8,
}

impl Name {
    /// The name in the `FILE_NAME_LEN`-byte field `raw`.
    pub fn parse(raw: &[u8]) -> Result<Name, ErrorKind> {
        let field = raw.get(..FILE_NAME_LEN).ok_or(ErrorKind::Truncated)?;
        let len = field
            .iter()
            .position(|&c| c == 0)
            .ok_or(ErrorKind::UnterminatedName)?;
        if len == 0 {
            return Err(ErrorKind::EmptyName);
        }
        let mut bytes = [0u8; FILE_NAME_LEN];
        bytes[..len].copy_from_slice(&field[..len]);
        Ok(Name {
            bytes,
            len: len as u8,
        })
    }

    /// The name without its NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Whether the name is `s`.
    pub fn is(&self, s: &str) -> bool {
        self.as_bytes() == s.as_bytes()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => write!(f, "{:?}", s),
            Err(_) => write!(f, "{:x?}", self.as_bytes()),
        }
    }
}

/// One parsed script entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Place `file` in RAM at an `align`-aligned address in `zone`.
    Allocate {
        /// The fw_cfg file.
        file: Name,
        /// Alignment (a power of two).
        align: u32,
        /// [`ZONE_HIGH`] or [`ZONE_FSEG`].
        zone: u8,
    },
    /// Add the address of `src` to the `size`-byte little-endian value at `offset` in `dest`.
    AddPointer {
        /// The file holding the pointer.
        dest: Name,
        /// The file pointed to.
        src: Name,
        /// Offset of the pointer in `dest`.
        offset: u32,
        /// Width of the pointer in bytes.
        size: u8,
    },
    /// Subtract the byte sum of `start..start + length` from the byte at `offset`.
    AddChecksum {
        /// The file.
        file: Name,
        /// Offset of the checksum byte.
        offset: u32,
        /// First byte summed.
        start: u32,
        /// Bytes summed.
        length: u32,
    },
    /// Write the address of `src` plus `src_offset` into fw_cfg file `dest` at `dst_offset`.
    WritePointer {
        /// The fw_cfg file written (not an allocated one).
        dest: Name,
        /// The allocated file whose address is written.
        src: Name,
        /// Where in `dest`.
        dst_offset: u32,
        /// Added to `src`'s address.
        src_offset: u32,
        /// Width of the value in bytes.
        size: u8,
    },
    /// Command 0: QEMU pads its script with zeroed entries up to a page.
    Padding,
    /// A command this loader does not know; skipped, as SeaBIOS and edk2 do.
    Unknown(u32),
}

/// What is wrong with a script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The script is empty, not a multiple of [`ENTRY_LEN`] or longer than
    /// [`MAX_ENTRIES`] entries.
    ScriptLength(usize),
    /// An entry is shorter than [`ENTRY_LEN`].
    Truncated,
    /// A name field has no NUL.
    UnterminatedName,
    /// A name field is empty.
    EmptyName,
    /// The fw_cfg directory has no file of this name.
    UnknownFile(Name),
    /// The file is used before (or without) its ALLOCATE.
    NotAllocated(Name),
    /// A second ALLOCATE of the same file.
    AllocatedTwice(Name),
    /// More than [`MAX_ALLOCATIONS`] ALLOCATEs.
    TooManyAllocations,
    /// Alignment 0, not a power of two, or above [`MAX_ALIGN`].
    Alignment(u32),
    /// A zone other than [`ZONE_HIGH`] and [`ZONE_FSEG`].
    Zone(u8),
    /// An allocated file that is empty or larger than the whole area may be.
    FileSize {
        /// The file.
        name: Name,
        /// Its size in the fw_cfg directory.
        size: u32,
    },
    /// The allocations need more bytes than the caller allows (or than the area has).
    AreaTooSmall {
        /// Bytes the laid-out allocations need.
        needed: u64,
        /// Bytes allowed.
        available: u64,
    },
    /// The area's base is not 4 KiB aligned or the area ends above 4 GiB.
    AreaPlacement(u64),
    /// A pointer width other than 1, 2, 4 or 8.
    PointerWidth(u8),
    /// `offset..offset + len` does not lie inside the file.
    OutOfRange {
        /// The file.
        name: Name,
        /// First byte.
        offset: u64,
        /// Bytes.
        len: u64,
        /// The file's size.
        size: u32,
    },
    /// An ADD_POINTER whose initial value is not an offset inside the source file.
    PointerOutsideSource {
        /// The source file.
        name: Name,
        /// The value found in the destination.
        value: u64,
        /// The source file's size.
        size: u32,
    },
    /// The resulting address does not fit the pointer's width.
    PointerTooWide {
        /// The address.
        value: u64,
        /// The width in bytes.
        width: u8,
    },
    /// An fw_cfg read or write failed.
    FwCfg {
        /// The file.
        name: Name,
        /// The device's verdict.
        error: FwCfgError,
    },
}

/// A script error and the 0-based index of the entry it was found at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderError {
    /// The entry (`None` for errors about the whole script or area).
    pub entry: Option<usize>,
    /// What is wrong.
    pub kind: ErrorKind,
}

fn at(entry: usize) -> impl Fn(ErrorKind) -> LoaderError {
    move |kind| LoaderError {
        entry: Some(entry),
        kind,
    }
}

fn whole(kind: ErrorKind) -> LoaderError {
    LoaderError { entry: None, kind }
}

fn le(raw: &[u8], off: usize, n: usize) -> Result<u64, ErrorKind> {
    let b = raw.get(off..off + n).ok_or(ErrorKind::Truncated)?;
    Ok(b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// Parse one [`ENTRY_LEN`]-byte entry.
pub fn parse_entry(raw: &[u8]) -> Result<Command, ErrorKind> {
    if raw.len() < ENTRY_LEN {
        return Err(ErrorKind::Truncated);
    }
    let name = |off: usize| Name::parse(&raw[off..]);
    let u32_at = |off: usize| le(raw, off, 4).map(|v| v as u32);
    let u8_at = |off: usize| le(raw, off, 1).map(|v| v as u8);
    Ok(match u32_at(0)? {
        CMD_ALLOCATE => Command::Allocate {
            file: name(4)?,
            align: u32_at(60)?,
            zone: u8_at(64)?,
        },
        CMD_ADD_POINTER => Command::AddPointer {
            dest: name(4)?,
            src: name(60)?,
            offset: u32_at(116)?,
            size: u8_at(120)?,
        },
        CMD_ADD_CHECKSUM => Command::AddChecksum {
            file: name(4)?,
            offset: u32_at(60)?,
            start: u32_at(64)?,
            length: u32_at(68)?,
        },
        CMD_WRITE_POINTER => Command::WritePointer {
            dest: name(4)?,
            src: name(60)?,
            dst_offset: u32_at(116)?,
            src_offset: u32_at(120)?,
            size: u8_at(124)?,
        },
        0 => Command::Padding,
        other => Command::Unknown(other),
    })
}

/// One file placed in the area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The file's name.
    pub name: Name,
    /// Its fw_cfg key and size.
    pub file: FwCfgFile,
    /// Offset from the area's base (a multiple of `align`).
    pub offset: u64,
    /// Alignment asked for.
    pub align: u32,
    /// Zone asked for. Both zones go into the one area: the OS learns the RSDP's
    /// address from the firmware, it does not scan the F segment for it.
    pub zone: u8,
}

/// A checked script: the allocations laid out in one area of [`Plan::size`] bytes.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    allocs: [Option<Allocation>; MAX_ALLOCATIONS],
    count: usize,
    /// Bytes the area needs, from its (4 KiB aligned) base.
    pub size: u64,
    /// Entries in the script.
    pub entries: usize,
    /// Padding entries (command 0).
    pub padding: usize,
    /// Entries with unknown commands (skipped).
    pub unknown: usize,
    /// WRITE_POINTER entries.
    pub write_pointers: usize,
}

impl Plan {
    /// The allocations in script order.
    pub fn allocations(&self) -> impl Iterator<Item = &Allocation> {
        self.allocs[..self.count].iter().flatten()
    }

    fn find(&self, name: &Name) -> Option<&Allocation> {
        self.allocations().find(|a| a.name == *name)
    }

    fn allocated(&self, name: &Name) -> Result<&Allocation, ErrorKind> {
        self.find(name).ok_or(ErrorKind::NotAllocated(*name))
    }
}

fn check_width(size: u8) -> Result<(), ErrorKind> {
    match size {
        1 | 2 | 4 | 8 => Ok(()),
        w => Err(ErrorKind::PointerWidth(w)),
    }
}

/// `offset..offset + len` inside a file of `size` bytes.
fn check_range(name: &Name, offset: u64, len: u64, size: u32) -> Result<(), ErrorKind> {
    match offset.checked_add(len) {
        Some(end) if end <= u64::from(size) => Ok(()),
        _ => Err(ErrorKind::OutOfRange {
            name: *name,
            offset,
            len,
            size,
        }),
    }
}

fn entries(script: &[u8]) -> Result<core::slice::ChunksExact<'_, u8>, LoaderError> {
    let n = script.len() / ENTRY_LEN;
    if script.is_empty() || !script.len().is_multiple_of(ENTRY_LEN) || n > MAX_ENTRIES {
        return Err(whole(ErrorKind::ScriptLength(script.len())));
    }
    Ok(script.chunks_exact(ENTRY_LEN))
}

/// Check the whole script against the fw_cfg directory and lay its allocations out,
/// each at its alignment, one after the other from offset 0; the area may hold at most
/// `max_size` bytes. Nothing is written.
pub fn plan<P: PortIo>(
    cfg: &FwCfg<'_, P>,
    script: &[u8],
    max_size: u64,
) -> Result<Plan, LoaderError> {
    let mut p = Plan {
        allocs: [None; MAX_ALLOCATIONS],
        count: 0,
        size: 0,
        entries: 0,
        padding: 0,
        unknown: 0,
        write_pointers: 0,
    };
    for (i, raw) in entries(script)?.enumerate() {
        let err = at(i);
        p.entries += 1;
        match parse_entry(raw).map_err(&err)? {
            Command::Allocate { file, align, zone } => {
                if p.find(&file).is_some() {
                    return Err(err(ErrorKind::AllocatedTwice(file)));
                }
                if align == 0 || !align.is_power_of_two() || align > MAX_ALIGN {
                    return Err(err(ErrorKind::Alignment(align)));
                }
                if zone != ZONE_HIGH && zone != ZONE_FSEG {
                    return Err(err(ErrorKind::Zone(zone)));
                }
                let f = cfg
                    .find_file_bytes(file.as_bytes())
                    .ok_or(err(ErrorKind::UnknownFile(file)))?;
                if f.size == 0 || u64::from(f.size) > max_size {
                    return Err(err(ErrorKind::FileSize {
                        name: file,
                        size: f.size,
                    }));
                }
                let offset = p.size.next_multiple_of(u64::from(align));
                let end = offset + u64::from(f.size);
                if end > max_size {
                    return Err(err(ErrorKind::AreaTooSmall {
                        needed: end,
                        available: max_size,
                    }));
                }
                let slot = p
                    .allocs
                    .get_mut(p.count)
                    .ok_or(err(ErrorKind::TooManyAllocations))?;
                *slot = Some(Allocation {
                    name: file,
                    file: f,
                    offset,
                    align,
                    zone,
                });
                p.count += 1;
                p.size = end;
            }
            Command::AddPointer {
                dest,
                src,
                offset,
                size,
            } => {
                check_width(size).map_err(&err)?;
                let d = p.allocated(&dest).map_err(&err)?;
                p.allocated(&src).map_err(&err)?;
                check_range(&dest, offset.into(), size.into(), d.file.size).map_err(&err)?;
            }
            Command::AddChecksum {
                file,
                offset,
                start,
                length,
            } => {
                let f = p.allocated(&file).map_err(&err)?;
                check_range(&file, offset.into(), 1, f.file.size).map_err(&err)?;
                check_range(&file, start.into(), length.into(), f.file.size).map_err(&err)?;
            }
            Command::WritePointer {
                dest,
                src,
                dst_offset,
                src_offset,
                size,
            } => {
                check_width(size).map_err(&err)?;
                let s = p.allocated(&src).map_err(&err)?;
                check_range(&src, src_offset.into(), 1, s.file.size).map_err(&err)?;
                let d = cfg
                    .find_file_bytes(dest.as_bytes())
                    .ok_or(err(ErrorKind::UnknownFile(dest)))?;
                check_range(&dest, dst_offset.into(), size.into(), d.size).map_err(&err)?;
                p.write_pointers += 1;
            }
            Command::Padding => p.padding += 1,
            Command::Unknown(_) => p.unknown += 1,
        }
    }
    p.size = p.size.next_multiple_of(4096);
    Ok(p)
}

/// The `width`-byte value `v`, if it fits.
fn fits(v: u64, width: u8) -> Result<u64, ErrorKind> {
    if width < 8 && v >> (u32::from(width) * 8) != 0 {
        return Err(ErrorKind::PointerTooWide { value: v, width });
    }
    Ok(v)
}

/// The bytes of `a` inside the area.
fn file_bytes<'a>(area: &'a mut [u8], a: &Allocation) -> Result<&'a mut [u8], ErrorKind> {
    let start = usize::try_from(a.offset).map_err(|_| ErrorKind::Truncated)?;
    area.get_mut(start..start + a.file.size as usize)
        .ok_or(ErrorKind::AreaTooSmall {
            needed: a.offset + u64::from(a.file.size),
            available: 0,
        })
}

/// Run a [`plan`]ned script: load each allocated file into `area` (whose first byte is at
/// physical address `base`, 4 KiB aligned), patch pointers and checksums in script order,
/// then report the WRITE_POINTER addresses to QEMU. Every access is checked again here;
/// on an error the area holds partly patched tables and must not be handed to an OS.
pub fn run<P: PortIo>(
    cfg: &FwCfg<'_, P>,
    script: &[u8],
    plan: &Plan,
    area: &mut [u8],
    base: u64,
) -> Result<(), LoaderError> {
    let end = base.checked_add(plan.size);
    if !base.is_multiple_of(4096) || end.is_none_or(|e| e > 0x1_0000_0000) {
        return Err(whole(ErrorKind::AreaPlacement(base)));
    }
    if (area.len() as u64) < plan.size {
        return Err(whole(ErrorKind::AreaTooSmall {
            needed: plan.size,
            available: area.len() as u64,
        }));
    }
    area.get_mut(..plan.size as usize)
        .map(|a| a.fill(0))
        .ok_or(whole(ErrorKind::Truncated))?;
    for (i, raw) in entries(script)?.enumerate() {
        let err = at(i);
        match parse_entry(raw).map_err(&err)? {
            Command::Allocate { file, .. } => {
                let a = plan.allocated(&file).map_err(&err)?;
                let dst = file_bytes(area, a).map_err(&err)?;
                cfg.read_file(a.file, dst)
                    .map_err(|error| err(ErrorKind::FwCfg { name: file, error }))?;
            }
            Command::AddPointer {
                dest,
                src,
                offset,
                size,
            } => {
                check_width(size).map_err(&err)?;
                let s = *plan.allocated(&src).map_err(&err)?;
                let d = plan.allocated(&dest).map_err(&err)?;
                let bytes = file_bytes(area, d).map_err(&err)?;
                let (off, w) = (offset as usize, usize::from(size));
                let field = bytes
                    .get_mut(off..off + w)
                    .ok_or(err(ErrorKind::OutOfRange {
                        name: dest,
                        offset: offset.into(),
                        len: size.into(),
                        size: d.file.size,
                    }))?;
                let value = le(field, 0, w).map_err(&err)?;
                // QEMU's pointers are offsets into the source file; anything else would
                // point outside the tables.
                if value >= u64::from(s.file.size) {
                    return Err(err(ErrorKind::PointerOutsideSource {
                        name: src,
                        value,
                        size: s.file.size,
                    }));
                }
                let addr = fits(base + s.offset + value, size).map_err(&err)?;
                field.copy_from_slice(&addr.to_le_bytes()[..w]);
            }
            Command::AddChecksum {
                file,
                offset,
                start,
                length,
            } => {
                let f = plan.allocated(&file).map_err(&err)?;
                let size = f.file.size;
                let bytes = file_bytes(area, f).map_err(&err)?;
                let range = |o: u64, l: u64| ErrorKind::OutOfRange {
                    name: file,
                    offset: o,
                    len: l,
                    size,
                };
                let (s, l) = (start as usize, length as usize);
                let sum = bytes
                    .get(s..s.saturating_add(l))
                    .ok_or(err(range(start.into(), length.into())))?
                    .iter()
                    .fold(0u8, |acc, &b| acc.wrapping_add(b));
                let c = bytes
                    .get_mut(offset as usize)
                    .ok_or(err(range(offset.into(), 1)))?;
                *c = c.wrapping_sub(sum);
            }
            Command::WritePointer { .. } | Command::Padding | Command::Unknown(_) => {}
        }
    }
    // Only now, with the area complete, tell QEMU where things are.
    for (i, raw) in entries(script)?.enumerate() {
        let err = at(i);
        if let Command::WritePointer {
            dest,
            src,
            dst_offset,
            src_offset,
            size,
        } = parse_entry(raw).map_err(&err)?
        {
            check_width(size).map_err(&err)?;
            let s = plan.allocated(&src).map_err(&err)?;
            check_range(&src, src_offset.into(), 1, s.file.size).map_err(&err)?;
            let value = fits(base + s.offset + u64::from(src_offset), size).map_err(&err)?;
            let d = cfg
                .find_file_bytes(dest.as_bytes())
                .ok_or(err(ErrorKind::UnknownFile(dest)))?;
            cfg.write_file_at(d, dst_offset, &value.to_le_bytes()[..usize::from(size)])
                .map_err(|error| err(ErrorKind::FwCfg { name: dest, error }))?;
        }
    }
    Ok(())
}

/// "RSD PTR " as the little-endian u64 the RSDP starts with.
const RSDP_SIGNATURE: u64 = u64::from_le_bytes(*b"RSD PTR ");

/// Why the loaded tables have no usable RSDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RsdpError {
    /// No allocation of [`FILE_RSDP`].
    NotAllocated,
    /// The file is shorter than an ACPI 1.0 RSDP (20 bytes).
    TooShort(u32),
    /// No "RSD PTR " signature.
    Signature,
    /// The first 20 bytes do not sum to zero.
    Checksum,
    /// ACPI 2.0+: the length field is out of range or the whole structure does not sum
    /// to zero.
    ExtendedChecksum,
}

fn sums_to_zero(b: &[u8]) -> bool {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x)) == 0
}

/// The physical address of the RSDP after a successful [`run`]: the allocation of
/// [`FILE_RSDP`], with its signature and checksums checked.
pub fn rsdp(plan: &Plan, area: &[u8], base: u64) -> Result<u64, RsdpError> {
    let a = plan
        .allocations()
        .find(|a| a.name.is(FILE_RSDP))
        .ok_or(RsdpError::NotAllocated)?;
    let start = a.offset as usize;
    let b = area
        .get(start..start + a.file.size as usize)
        .ok_or(RsdpError::TooShort(0))?;
    let v1 = b.get(..20).ok_or(RsdpError::TooShort(a.file.size))?;
    if le(v1, 0, 8) != Ok(RSDP_SIGNATURE) {
        return Err(RsdpError::Signature);
    }
    if !sums_to_zero(v1) {
        return Err(RsdpError::Checksum);
    }
    if le(v1, 15, 1) != Ok(0) {
        let len = le(b, 20, 4).map_err(|_| RsdpError::ExtendedChecksum)? as usize;
        match b.get(..len) {
            Some(all) if len >= 36 && sums_to_zero(all) => {}
            _ => return Err(RsdpError::ExtendedChecksum),
        }
    }
    Ok(base + a.offset)
}
