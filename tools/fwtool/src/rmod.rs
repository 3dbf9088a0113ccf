//! Relocatable module ("rmod") blobs: conversion from an ELF executable linked
//! at address 0 with `ld --emit-relocs` (`-q`), and reading them back.
//!
//! Format (all little-endian):
//!
//! | offset | field                                                       |
//! |--------|-------------------------------------------------------------|
//! | 0      | magic `b"HRMD"`                                             |
//! | 4      | u32 version = 1                                             |
//! | 8      | u32 image_size: memory size incl. .bss, rounded up to 16    |
//! | 12     | u32 file_size: bytes of initialized image after the header  |
//! | 16     | u32 entry: image offset of the entry symbol                 |
//! | 20     | u32 params: image offset of the parameter block symbol      |
//! | 24     | u32 reloc_count                                             |
//! | 28     | u32 reserved = 0                                            |
//! | 32     | file_size bytes of image (address 0 ..= file_size)          |
//! | ...    | reloc_count u32 image offsets of u64 words                  |
//!
//! To load at `base`: copy the image to `base`, zero `base + file_size ..
//! base + image_size`, then add `base` to the u64 at `base + offset` for each
//! relocation offset.

use std::fmt;

use object::elf;

use crate::elf::{reloc_type_name, ElfError, ElfFile, SymSection};

/// Magic at offset 0 of every rmod.
pub const RMOD_MAGIC: [u8; 4] = *b"HRMD";
/// The format version this tool writes and reads.
pub const RMOD_VERSION: u32 = 1;
/// Bytes of header before the image.
pub const RMOD_HEADER_SIZE: usize = 32;
/// Highest address (exclusive) an rmod's sections may occupy.
pub const RMOD_MAX_ADDR: u64 = 16 << 20;
/// `image_size` is rounded up to this.
pub const RMOD_IMAGE_ALIGN: u64 = 16;

/// A relocatable module, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rmod {
    /// Memory footprint (initialized image + zero-filled .bss), multiple of 16.
    pub image_size: u32,
    /// Image offset of the entry symbol.
    pub entry: u32,
    /// Image offset of the parameter block symbol.
    pub params: u32,
    /// The initialized image, starting at address 0 (`file_size` bytes).
    pub image: Vec<u8>,
    /// Image offsets of u64 words the loader adds the load base to (sorted).
    pub relocs: Vec<u32>,
}

/// Why an ELF file could not be converted, or a blob is not a valid rmod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RmodError {
    /// The input is not a readable x86-64 ELF file.
    Elf(ElfError),
    /// The input is not an ET_EXEC file.
    NotExecutable {
        /// The file's `e_type`.
        e_type: u16,
    },
    /// No SHF_ALLOC section has a non-zero size: there is nothing to load.
    NoAllocSections,
    /// A loaded section is thread-local (SHF_TLS), which an rmod cannot express.
    TlsSection {
        /// The section's name.
        section: String,
    },
    /// A section ends beyond [`RMOD_MAX_ADDR`].
    SectionOutOfRange {
        /// The section's name.
        section: String,
        /// Its `sh_addr`.
        addr: u64,
        /// Its `sh_size`.
        size: u64,
    },
    /// SHF_ALLOC relocation sections (.rela.dyn, .rela.iplt): not a static link.
    DynamicRelocations {
        /// The relocation section's name.
        section: String,
    },
    /// A relocation of a type other than R_X86_64_64 (fixed up by the loader) and the
    /// position-independent R_X86_64_PC32 / PLT32 / PC64 / NONE.
    UnsupportedRelocation {
        /// The type's name, e.g. `R_X86_64_GOTPCREL`.
        type_name: String,
        /// The type's number.
        r_type: u32,
        /// The section being relocated.
        section: String,
        /// Offset of the relocated field.
        offset: u64,
        /// The symbol the relocation refers to.
        symbol: String,
    },
    /// An R_X86_64_64 relocation whose u64 word is not inside the initialized image.
    RelocationOutsideImage {
        /// The section being relocated.
        section: String,
        /// Offset of the relocated word.
        offset: u64,
    },
    /// A relocation against a symbol in a reserved section index (e.g. SHN_COMMON).
    UnsupportedSymbol {
        /// The symbol's name.
        name: String,
        /// The section being relocated.
        section: String,
        /// Offset of the relocated field.
        offset: u64,
    },
    /// A non-weak undefined symbol: the module must be fully linked.
    UndefinedSymbol {
        /// The symbol's name.
        name: String,
        /// The relocated section and offset that refer to it, when a relocation does.
        location: Option<(String, u64)>,
    },
    /// The entry or params symbol named on the command line does not exist.
    MissingSymbol {
        /// `"entry"` or `"params"`.
        role: &'static str,
        /// The symbol name looked for.
        name: String,
    },
    /// The entry or params symbol exists but cannot be used (undefined, absolute, or
    /// outside the image).
    BadSymbol {
        /// `"entry"` or `"params"`.
        role: &'static str,
        /// The symbol's name.
        name: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A blob that does not parse as an rmod.
    Malformed(String),
}

impl fmt::Display for RmodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RmodError::Elf(e) => write!(f, "{e}"),
            RmodError::NotExecutable { e_type } => write!(
                f,
                "ELF type is {e_type}, expected an executable (ET_EXEC = 2): link the module \
                 at address 0 with `ld -q` (--emit-relocs) first"
            ),
            RmodError::NoAllocSections => write!(f, "ELF file has no allocatable sections"),
            RmodError::TlsSection { section } => {
                write!(f, "section {section} is thread-local (SHF_TLS): not supported in an rmod")
            }
            RmodError::SectionOutOfRange { section, addr, size } => write!(
                f,
                "section {section} at {addr:#x} size {size:#x} ends beyond the 16 MiB rmod \
                 limit (is the module linked at address 0?)"
            ),
            RmodError::DynamicRelocations { section } => write!(
                f,
                "dynamic relocation section {section} present: link statically at 0 with -q, \
                 without -pie/-shared and without IFUNCs"
            ),
            RmodError::UnsupportedRelocation {
                type_name,
                section,
                offset,
                symbol,
                ..
            } => write!(
                f,
                "unsupported relocation {type_name} in section {section} at offset {offset:#x} \
                 (symbol {symbol}); only R_X86_64_64 (fixed up) and R_X86_64_PC32/PLT32/PC64 \
                 (position-independent) are allowed"
            ),
            RmodError::RelocationOutsideImage { section, offset } => write!(
                f,
                "R_X86_64_64 relocation in section {section} at {offset:#x} is outside the \
                 initialized image"
            ),
            RmodError::UnsupportedSymbol {
                name,
                section,
                offset,
            } => write!(
                f,
                "relocation in section {section} at {offset:#x} refers to symbol {name} in a \
                 reserved section index"
            ),
            RmodError::UndefinedSymbol { name, location } => match location {
                Some((section, offset)) => write!(
                    f,
                    "undefined symbol {name} referenced from section {section} at offset {offset:#x}"
                ),
                None => write!(f, "undefined symbol {name}"),
            },
            RmodError::MissingSymbol { role, name } => {
                write!(f, "{role} symbol {name} not found in the ELF symbol table")
            }
            RmodError::BadSymbol { role, name, reason } => {
                write!(f, "{role} symbol {name}: {reason}")
            }
            RmodError::Malformed(msg) => write!(f, "malformed rmod: {msg}"),
        }
    }
}

impl std::error::Error for RmodError {}

impl From<ElfError> for RmodError {
    fn from(e: ElfError) -> Self {
        RmodError::Elf(e)
    }
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// Convert an x86-64 ELF executable linked at address 0 with `--emit-relocs`
/// into an rmod. `entry` and `params` are symbol names (exact, as in `.symtab`).
pub fn elf_to_rmod(elf_data: &[u8], entry: &str, params: &str) -> Result<Rmod, RmodError> {
    let file = ElfFile::parse(elf_data)?;
    if !file.is_executable() {
        return Err(RmodError::NotExecutable {
            e_type: file.e_type,
        });
    }

    // Layout of the allocatable sections.
    let mut mem_end = 0u64;
    let mut file_end = 0u64;
    let mut any_alloc = false;
    for s in file.sections.iter().filter(|s| s.is_alloc()) {
        if s.is_reloc() {
            return Err(RmodError::DynamicRelocations {
                section: s.name.clone(),
            });
        }
        if s.is_tls() {
            return Err(RmodError::TlsSection {
                section: s.name.clone(),
            });
        }
        if s.size == 0 {
            continue;
        }
        any_alloc = true;
        let end = s.addr.checked_add(s.size);
        let end = match end {
            Some(end) if end <= RMOD_MAX_ADDR => end,
            _ => {
                return Err(RmodError::SectionOutOfRange {
                    section: s.name.clone(),
                    addr: s.addr,
                    size: s.size,
                })
            }
        };
        mem_end = mem_end.max(end);
        if !s.is_nobits() {
            file_end = file_end.max(end);
        }
    }
    if !any_alloc {
        return Err(RmodError::NoAllocSections);
    }
    let image_size = align_up(mem_end, RMOD_IMAGE_ALIGN);

    let mut image = vec![0u8; file_end as usize];
    for s in file.sections.iter().filter(|s| s.is_alloc()) {
        if s.size == 0 || s.is_nobits() {
            continue;
        }
        let data = file.section_data(s.index)?;
        if data.len() as u64 != s.size {
            return Err(RmodError::Elf(ElfError(format!(
                "section {} data is truncated",
                s.name
            ))));
        }
        let start = s.addr as usize;
        image[start..start + data.len()].copy_from_slice(data);
    }

    // Relocations.
    let mut relocs = Vec::new();
    for r in &file.relocs {
        let target = match file.sections.get(r.target_section) {
            Some(t) if r.target_section != 0 && t.is_alloc() => t,
            _ => continue, // debug info and other non-loaded sections
        };
        let section = target.name.clone();
        let sym = if r.sym == 0 {
            None
        } else {
            Some(file.symbol(r.sym).ok_or_else(|| {
                RmodError::Elf(ElfError(format!(
                    "relocation in {section} at {:#x} refers to bad symbol index {}",
                    r.offset, r.sym
                )))
            })?)
        };
        if let Some(sym) = sym {
            if sym.is_undefined() && !sym.is_weak() {
                return Err(RmodError::UndefinedSymbol {
                    name: sym.name.clone(),
                    location: Some((section, r.offset)),
                });
            }
        }
        match r.r_type {
            elf::R_X86_64_NONE | elf::R_X86_64_PC32 | elf::R_X86_64_PLT32 | elf::R_X86_64_PC64 => {}
            elf::R_X86_64_64 => {
                let needs_fixup = match sym.map(|s| s.section) {
                    None => false, // no symbol: absolute addend
                    Some(SymSection::Absolute) => false,
                    Some(SymSection::Undefined) => false, // weak undefined: zero
                    Some(SymSection::Section(_)) => true,
                    Some(SymSection::Common) | Some(SymSection::Other(_)) => {
                        return Err(RmodError::UnsupportedSymbol {
                            name: file.reloc_symbol_name(r),
                            section,
                            offset: r.offset,
                        })
                    }
                };
                if needs_fixup {
                    if r.offset.checked_add(8).is_none_or(|end| end > file_end) {
                        return Err(RmodError::RelocationOutsideImage {
                            section,
                            offset: r.offset,
                        });
                    }
                    relocs.push(r.offset as u32);
                }
            }
            other => {
                return Err(RmodError::UnsupportedRelocation {
                    type_name: reloc_type_name(other),
                    r_type: other,
                    section,
                    offset: r.offset,
                    symbol: file.reloc_symbol_name(r),
                })
            }
        }
    }
    relocs.sort_unstable();

    if let Some(s) = file
        .symbols
        .iter()
        .find(|s| s.index != 0 && s.is_undefined() && !s.is_weak() && !s.name.is_empty())
    {
        return Err(RmodError::UndefinedSymbol {
            name: s.name.clone(),
            location: None,
        });
    }

    let lookup = |role: &'static str, name: &str| -> Result<u32, RmodError> {
        let sym = file
            .find_symbol(name)
            .ok_or_else(|| RmodError::MissingSymbol {
                role,
                name: name.to_string(),
            })?;
        let bad = |reason: &str| RmodError::BadSymbol {
            role,
            name: name.to_string(),
            reason: reason.to_string(),
        };
        match sym.section {
            SymSection::Section(_) => {}
            SymSection::Undefined => return Err(bad("is undefined")),
            _ => return Err(bad("is not defined in a section (absolute or common)")),
        }
        if sym.value >= image_size {
            return Err(bad(&format!(
                "address {:#x} is outside the image (size {image_size:#x})",
                sym.value
            )));
        }
        Ok(sym.value as u32)
    };
    let entry = lookup("entry", entry)?;
    let params = lookup("params", params)?;

    Ok(Rmod {
        image_size: image_size as u32,
        entry,
        params,
        image,
        relocs,
    })
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

impl Rmod {
    /// Bytes of initialized image (the header's `file_size`).
    pub fn file_size(&self) -> u32 {
        self.image.len() as u32
    }

    /// Serialize to the on-disk format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(RMOD_HEADER_SIZE + self.image.len() + 4 * self.relocs.len());
        out.extend_from_slice(&RMOD_MAGIC);
        for v in [
            RMOD_VERSION,
            self.image_size,
            self.file_size(),
            self.entry,
            self.params,
            self.relocs.len() as u32,
            0,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.image);
        for r in &self.relocs {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out
    }

    /// Parse and validate an rmod blob.
    pub fn parse(b: &[u8]) -> Result<Rmod, RmodError> {
        let bad = |m: String| Err(RmodError::Malformed(m));
        if b.len() < RMOD_HEADER_SIZE {
            return bad(format!("{} bytes is shorter than the header", b.len()));
        }
        if b[0..4] != RMOD_MAGIC {
            return bad("bad magic (expected HRMD)".into());
        }
        let version = u32_at(b, 4);
        if version != RMOD_VERSION {
            return bad(format!("version {version}, expected {RMOD_VERSION}"));
        }
        let image_size = u32_at(b, 8);
        let file_size = u32_at(b, 12) as usize;
        let entry = u32_at(b, 16);
        let params = u32_at(b, 20);
        let count = u32_at(b, 24) as usize;
        let expected = RMOD_HEADER_SIZE as u64 + file_size as u64 + 4 * count as u64;
        if b.len() as u64 != expected {
            return bad(format!(
                "length {} does not match header (expected {expected})",
                b.len()
            ));
        }
        if file_size as u64 > u64::from(image_size) {
            return bad(format!(
                "file_size {file_size:#x} > image_size {image_size:#x}"
            ));
        }
        if entry >= image_size || params >= image_size {
            return bad("entry or params outside the image".into());
        }
        let image = b[RMOD_HEADER_SIZE..RMOD_HEADER_SIZE + file_size].to_vec();
        let relocs: Vec<u32> = (0..count)
            .map(|i| u32_at(b, RMOD_HEADER_SIZE + file_size + 4 * i))
            .collect();
        if let Some(r) = relocs.iter().find(|&&r| r as usize + 8 > file_size) {
            return bad(format!("relocation offset {r:#x} outside the image"));
        }
        Ok(Rmod {
            image_size,
            entry,
            params,
            image,
            relocs,
        })
    }

    /// The memory image as a loader at `base` would leave it: `image_size`
    /// bytes, .bss zeroed, every relocated u64 increased by `base`.
    pub fn load(&self, base: u64) -> Vec<u8> {
        let mut mem = self.image.clone();
        mem.resize(self.image_size as usize, 0);
        for &r in &self.relocs {
            let r = r as usize;
            let mut w = [0u8; 8];
            w.copy_from_slice(&mem[r..r + 8]);
            let v = u64::from_le_bytes(w).wrapping_add(base);
            mem[r..r + 8].copy_from_slice(&v.to_le_bytes());
        }
        mem
    }
}

impl fmt::Display for Rmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "image_size  {:#x}", self.image_size)?;
        writeln!(f, "file_size   {:#x}", self.file_size())?;
        writeln!(f, "entry       {:#x}", self.entry)?;
        writeln!(f, "params      {:#x}", self.params)?;
        write!(f, "relocations {}", self.relocs.len())
    }
}
