//! ROM image assembly and the ROM file directory.
//!
//! Layout of a ROM of `size` bytes (a multiple of 64 KiB):
//!
//! * offset 0: directory header, 16 bytes: magic `b"HRFS"`, u32 version = 1,
//!   u32 count, u32 reserved = 0 (little-endian);
//! * `count` directory entries of 32 bytes: name `[u8; 24]` NUL-padded (at most
//!   23 bytes of name), u32 offset from ROM start, u32 size;
//! * the file contents, in the order given, each starting 16-byte aligned;
//! * the boot block, right-aligned so that it ends at the last byte of the ROM
//!   (it holds the x86 reset vector at ROM end - 16).
//!
//! Every byte not written by the above is 0xFF (erased flash).

use std::fmt;

/// Magic at ROM offset 0.
pub const ROM_DIR_MAGIC: [u8; 4] = *b"HRFS";
/// The directory format version this tool writes and reads.
pub const ROM_DIR_VERSION: u32 = 1;
/// Bytes of directory header (magic, version, count, reserved).
pub const ROM_DIR_HEADER_SIZE: usize = 16;
/// Bytes per directory entry (name, offset, size).
pub const ROM_DIR_ENTRY_SIZE: usize = 32;
/// Bytes of the NUL-padded name field of an entry.
pub const ROM_NAME_FIELD: usize = 24;
/// Longest file name (the name field keeps a terminating NUL).
pub const ROM_MAX_NAME_LEN: usize = ROM_NAME_FIELD - 1;
/// Every file's contents start at a multiple of this many bytes.
pub const ROM_FILE_ALIGN: usize = 16;
/// The ROM size must be a multiple of this.
pub const ROM_SIZE_ALIGN: u64 = 64 * 1024;
/// Offsets are u32 and the ROM sits below 4 GiB.
pub const ROM_MAX_SIZE: u64 = 1 << 32;
/// Value of every byte nothing was written to (erased flash).
pub const ROM_FILL: u8 = 0xFF;

/// A file to put into the ROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RomFile {
    /// Directory name (1 to [`ROM_MAX_NAME_LEN`] bytes, no NUL).
    pub name: String,
    /// Contents.
    pub data: Vec<u8>,
}

impl RomFile {
    /// A file called `name` holding `data`.
    pub fn new(name: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        RomFile {
            name: name.into(),
            data: data.into(),
        }
    }
}

/// A directory entry as stored in a ROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RomEntry {
    /// The file's name.
    pub name: String,
    /// Offset of its contents from the start of the ROM.
    pub offset: u32,
    /// Size of its contents in bytes.
    pub size: u32,
}

/// Why a ROM could not be built, or its directory does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RomError {
    /// The ROM size is 0 or not a multiple of [`ROM_SIZE_ALIGN`].
    SizeNotMultiple {
        /// The requested size in bytes.
        size: u64,
    },
    /// The ROM size exceeds [`ROM_MAX_SIZE`].
    SizeTooLarge {
        /// The requested size in bytes.
        size: u64,
    },
    /// The boot block is empty.
    EmptyBoot,
    /// A file name is empty.
    EmptyName,
    /// A file name is longer than [`ROM_MAX_NAME_LEN`] bytes.
    NameTooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A file name contains a NUL byte.
    NameHasNul {
        /// The name.
        name: String,
    },
    /// Two files have the same name.
    DuplicateName {
        /// The name.
        name: String,
    },
    /// Directory + files + boot block need `needed` bytes but the ROM has `size`.
    DoesNotFit {
        /// The ROM size in bytes.
        size: u64,
        /// Bytes needed in all.
        needed: u64,
        /// Bytes of directory.
        directory: u64,
        /// Bytes of file contents, with alignment padding.
        files: u64,
        /// Bytes of boot block.
        boot: u64,
    },
    /// A ROM image whose directory does not parse.
    BadDirectory(String),
}

impl fmt::Display for RomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RomError::SizeNotMultiple { size } => write!(
                f,
                "ROM size {size:#x} ({size} bytes) is not a non-zero multiple of 64 KiB (0x10000)"
            ),
            RomError::SizeTooLarge { size } => {
                write!(f, "ROM size {size:#x} is larger than 4 GiB")
            }
            RomError::EmptyBoot => write!(f, "boot block is empty"),
            RomError::EmptyName => write!(f, "ROM file name is empty"),
            RomError::NameTooLong { name, len } => write!(
                f,
                "ROM file name {name:?} is {len} bytes, at most {ROM_MAX_NAME_LEN} are allowed"
            ),
            RomError::NameHasNul { name } => {
                write!(f, "ROM file name {name:?} contains a NUL byte")
            }
            RomError::DuplicateName { name } => write!(f, "duplicate ROM file name {name:?}"),
            RomError::DoesNotFit {
                size,
                needed,
                directory,
                files,
                boot,
            } => write!(
                f,
                "ROM contents do not fit: directory {directory} + files {files} (with 16-byte \
                 alignment) + boot block {boot} = {needed} bytes, but the ROM is {size} bytes: \
                 over by {} byte{}",
                needed - size,
                if needed - size == 1 { "" } else { "s" }
            ),
            RomError::BadDirectory(msg) => write!(f, "bad ROM directory: {msg}"),
        }
    }
}

impl std::error::Error for RomError {}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn check_name(name: &str) -> Result<(), RomError> {
    if name.is_empty() {
        return Err(RomError::EmptyName);
    }
    if name.len() > ROM_MAX_NAME_LEN {
        return Err(RomError::NameTooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    if name.as_bytes().contains(&0) {
        return Err(RomError::NameHasNul {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// Compute where each file goes in a ROM of `size` bytes with a boot block of
/// `boot_len` bytes, checking sizes and names. Returns the directory entries.
pub fn layout(boot_len: u64, size: u64, files: &[RomFile]) -> Result<Vec<RomEntry>, RomError> {
    if size == 0 || !size.is_multiple_of(ROM_SIZE_ALIGN) {
        return Err(RomError::SizeNotMultiple { size });
    }
    if size > ROM_MAX_SIZE {
        return Err(RomError::SizeTooLarge { size });
    }
    if boot_len == 0 {
        return Err(RomError::EmptyBoot);
    }
    for (i, f) in files.iter().enumerate() {
        check_name(&f.name)?;
        if files[..i].iter().any(|g| g.name == f.name) {
            return Err(RomError::DuplicateName {
                name: f.name.clone(),
            });
        }
    }
    let directory = (ROM_DIR_HEADER_SIZE + ROM_DIR_ENTRY_SIZE * files.len()) as u64;
    let mut pos = directory;
    let mut entries = Vec::with_capacity(files.len());
    for f in files {
        pos = align_up(pos, ROM_FILE_ALIGN as u64);
        entries.push((f.name.clone(), pos, f.data.len() as u64));
        pos += f.data.len() as u64;
    }
    let needed = pos + boot_len;
    if needed > size {
        return Err(RomError::DoesNotFit {
            size,
            needed,
            directory,
            files: pos - directory,
            boot: boot_len,
        });
    }
    Ok(entries
        .into_iter()
        .map(|(name, offset, len)| RomEntry {
            name,
            offset: offset as u32,
            size: len as u32,
        })
        .collect())
}

/// Build a ROM image of exactly `size` bytes.
pub fn build_rom(boot: &[u8], size: u64, files: &[RomFile]) -> Result<Vec<u8>, RomError> {
    let entries = layout(boot.len() as u64, size, files)?;
    let mut rom = vec![ROM_FILL; size as usize];

    rom[0..4].copy_from_slice(&ROM_DIR_MAGIC);
    rom[4..8].copy_from_slice(&ROM_DIR_VERSION.to_le_bytes());
    rom[8..12].copy_from_slice(&(entries.len() as u32).to_le_bytes());
    rom[12..16].copy_from_slice(&0u32.to_le_bytes());
    for (i, (e, f)) in entries.iter().zip(files).enumerate() {
        let at = ROM_DIR_HEADER_SIZE + i * ROM_DIR_ENTRY_SIZE;
        let mut name = [0u8; ROM_NAME_FIELD];
        name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        rom[at..at + ROM_NAME_FIELD].copy_from_slice(&name);
        rom[at + 24..at + 28].copy_from_slice(&e.offset.to_le_bytes());
        rom[at + 28..at + 32].copy_from_slice(&e.size.to_le_bytes());
        let off = e.offset as usize;
        rom[off..off + f.data.len()].copy_from_slice(&f.data);
    }
    let boot_at = rom.len() - boot.len();
    rom[boot_at..].copy_from_slice(boot);
    Ok(rom)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Read the file directory of a ROM image.
pub fn read_directory(rom: &[u8]) -> Result<Vec<RomEntry>, RomError> {
    let bad = |m: String| Err(RomError::BadDirectory(m));
    if rom.len() < ROM_DIR_HEADER_SIZE {
        return bad("image shorter than the directory header".into());
    }
    if rom[0..4] != ROM_DIR_MAGIC {
        return bad("bad magic (expected HRFS)".into());
    }
    let version = u32_at(rom, 4);
    if version != ROM_DIR_VERSION {
        return bad(format!("version {version}, expected {ROM_DIR_VERSION}"));
    }
    let count = u32_at(rom, 8) as usize;
    let dir_end = count
        .checked_mul(ROM_DIR_ENTRY_SIZE)
        .and_then(|n| n.checked_add(ROM_DIR_HEADER_SIZE));
    if dir_end.is_none_or(|end| end > rom.len()) {
        return bad(format!("{count} entries do not fit in the image"));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let at = ROM_DIR_HEADER_SIZE + i * ROM_DIR_ENTRY_SIZE;
        let field = &rom[at..at + ROM_NAME_FIELD];
        let len = field.iter().position(|&c| c == 0).unwrap_or(ROM_NAME_FIELD);
        if len > ROM_MAX_NAME_LEN {
            return bad(format!("entry {i}: name is not NUL-terminated"));
        }
        let name = String::from_utf8_lossy(&field[..len]).into_owned();
        let offset = u32_at(rom, at + 24);
        let size = u32_at(rom, at + 28);
        if u64::from(offset) + u64::from(size) > rom.len() as u64 {
            return bad(format!("entry {name:?} extends past the end of the image"));
        }
        out.push(RomEntry { name, offset, size });
    }
    Ok(out)
}

/// Find a file's contents in a ROM image by name.
pub fn find_file<'a>(rom: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, RomError> {
    Ok(read_directory(rom)?
        .into_iter()
        .find(|e| e.name == name)
        .map(|e| &rom[e.offset as usize..e.offset as usize + e.size as usize]))
}
