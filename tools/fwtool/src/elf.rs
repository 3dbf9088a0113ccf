//! Small layer over `object`'s low-level ELF reader: the pieces that both the
//! rmod converter and the SMM checker need (sections, symbols, relocations,
//! relocation type names). Only 64-bit little-endian x86-64 ELF is accepted.

use std::fmt;

use object::elf;
use object::read::elf::SymbolTable;
use object::read::elf::{FileHeader, Rel as _, Rela as _, SectionHeader, SectionTable, Sym as _};
use object::{LittleEndian, SectionIndex, SymbolIndex};

type Header = elf::FileHeader64<LittleEndian>;
const LE: LittleEndian = LittleEndian;

/// An ELF file that could not be read, or is not a 64-bit x86-64 ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfError(pub String);

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for ElfError {}

fn err<T>(msg: impl Into<String>) -> Result<T, ElfError> {
    Err(ElfError(msg.into()))
}

/// One section header, decoded.
#[derive(Debug, Clone)]
pub struct Section {
    /// Index in the section header table.
    pub index: usize,
    /// Name from the section name string table.
    pub name: String,
    /// `sh_type` (`SHT_*`).
    pub sh_type: u32,
    /// `sh_flags` (`SHF_*`).
    pub flags: u64,
    /// `sh_addr`: load address (0 in a relocatable object).
    pub addr: u64,
    /// `sh_size` in bytes.
    pub size: u64,
    /// `sh_link`: e.g. the symbol table of a relocation section.
    pub link: u32,
    /// `sh_info`: e.g. the section a relocation section applies to.
    pub info: u32,
}

impl Section {
    /// `SHF_ALLOC`: the section occupies memory at run time.
    pub fn is_alloc(&self) -> bool {
        self.flags & u64::from(elf::SHF_ALLOC) != 0
    }
    /// `SHF_EXECINSTR`: the section holds code.
    pub fn is_exec(&self) -> bool {
        self.flags & u64::from(elf::SHF_EXECINSTR) != 0
    }
    /// `SHF_TLS`: the section is a thread-local storage template.
    pub fn is_tls(&self) -> bool {
        self.flags & u64::from(elf::SHF_TLS) != 0
    }
    /// `SHT_NOBITS`: no file contents (e.g. `.bss`).
    pub fn is_nobits(&self) -> bool {
        self.sh_type == elf::SHT_NOBITS
    }
    /// `SHT_RELA` or `SHT_REL`: a relocation section.
    pub fn is_reloc(&self) -> bool {
        self.sh_type == elf::SHT_RELA || self.sh_type == elf::SHT_REL
    }
}

/// Where a symbol is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SymSection {
    /// `SHN_UNDEF`: defined elsewhere.
    Undefined,
    /// `SHN_ABS`: an absolute value, not relocated.
    Absolute,
    /// `SHN_COMMON`: a common block not yet allocated.
    Common,
    /// Defined in the section with this index.
    Section(usize),
    /// Another reserved index (processor/OS specific).
    Other(u16),
}

/// One symbol table entry, decoded.
#[derive(Debug, Clone)]
pub struct Symbol {
    /// Index in `.symtab`.
    pub index: usize,
    /// Raw (mangled) name.
    pub name: String,
    /// `st_value`: address, or section offset in a relocatable object.
    pub value: u64,
    /// `st_size` in bytes.
    pub size: u64,
    /// Binding (`STB_*`).
    pub bind: u8,
    /// Type (`STT_*`).
    pub st_type: u8,
    /// Where the symbol is defined.
    pub section: SymSection,
}

impl Symbol {
    /// `STB_WEAK` binding.
    pub fn is_weak(&self) -> bool {
        self.bind == elf::STB_WEAK
    }
    /// `STB_LOCAL` binding.
    pub fn is_local(&self) -> bool {
        self.bind == elf::STB_LOCAL
    }
    /// Not defined in this file ([`SymSection::Undefined`]).
    pub fn is_undefined(&self) -> bool {
        self.section == SymSection::Undefined
    }
    /// Section and file symbols carry no interesting name.
    pub fn is_section_or_file(&self) -> bool {
        self.st_type == elf::STT_SECTION || self.st_type == elf::STT_FILE
    }
}

/// One relocation entry (from a SHT_RELA or SHT_REL section).
#[derive(Debug, Clone)]
pub struct Reloc {
    /// Index of the SHT_RELA/SHT_REL section holding the entry.
    pub reloc_section: usize,
    /// Index of the section the relocation applies to (`sh_info`); 0 for none.
    pub target_section: usize,
    /// `r_offset`: where in the target section (or at which address) to apply it.
    pub offset: u64,
    /// Relocation type (`R_X86_64_*`).
    pub r_type: u32,
    /// Symbol index (0 = no symbol).
    pub sym: usize,
    /// `r_addend` (0 for SHT_REL entries).
    pub addend: i64,
}

/// A parsed 64-bit little-endian x86-64 ELF file.
#[derive(Debug, Clone)]
pub struct ElfFile<'a> {
    /// The whole file.
    pub data: &'a [u8],
    /// `e_type` (`ET_REL`, `ET_EXEC`, ...).
    pub e_type: u16,
    /// Every section header, in index order.
    pub sections: Vec<Section>,
    /// Symbols from `.symtab` (index 0 is the null symbol). Empty if there is none.
    pub symbols: Vec<Symbol>,
    /// Every entry of every SHT_RELA / SHT_REL section.
    pub relocs: Vec<Reloc>,
    table: SectionTable<'a, Header>,
}

impl<'a> ElfFile<'a> {
    /// Parse `data` as a 64-bit little-endian x86-64 ELF file: section headers,
    /// `.symtab` and every relocation section.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 16 || &data[..4] != b"\x7fELF" {
            return err("not an ELF file (bad magic)");
        }
        if data[4] != elf::ELFCLASS64 {
            return err("not a 64-bit ELF file (only ELFCLASS64 x86-64 is supported)");
        }
        if data[5] != elf::ELFDATA2LSB {
            return err("not a little-endian ELF file");
        }
        let header = Header::parse(data).map_err(|e| ElfError(format!("bad ELF header: {e}")))?;
        let machine = header.e_machine(LE);
        if machine != elf::EM_X86_64 {
            return err(format!(
                "ELF machine is {machine}, expected x86-64 (EM_X86_64 = 62)"
            ));
        }
        let table: SectionTable<'a, Header> = header
            .sections(LE, data)
            .map_err(|e| ElfError(format!("bad section headers: {e}")))?;

        let mut sections = Vec::with_capacity(table.len());
        for (idx, sh) in table.enumerate() {
            let name = table
                .section_name(LE, sh)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_else(|_| format!("<section {}>", idx.0));
            sections.push(Section {
                index: idx.0,
                name,
                sh_type: sh.sh_type(LE),
                flags: sh.sh_flags(LE),
                addr: sh.sh_addr(LE),
                size: sh.sh_size(LE),
                link: sh.sh_link(LE),
                info: sh.sh_info(LE),
            });
        }

        let symtab: SymbolTable<'a, Header> = table
            .symbols(LE, data, elf::SHT_SYMTAB)
            .map_err(|e| ElfError(format!("bad symbol table: {e}")))?;
        let symtab_index = symtab.section().0;
        let mut symbols = Vec::with_capacity(symtab.len());
        for (idx, sym) in symtab.enumerate() {
            let name = symtab
                .symbol_name(LE, sym)
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .map_err(|e| ElfError(format!("bad name of symbol {}: {e}", idx.0)))?;
            let section = match sym.st_shndx(LE) {
                elf::SHN_UNDEF => SymSection::Undefined,
                elf::SHN_ABS => SymSection::Absolute,
                elf::SHN_COMMON => SymSection::Common,
                elf::SHN_XINDEX => match symtab.symbol_section(LE, sym, SymbolIndex(idx.0)) {
                    Ok(Some(SectionIndex(i))) => SymSection::Section(i),
                    _ => return err(format!("symbol {name}: bad extended section index")),
                },
                n if n < elf::SHN_LORESERVE => SymSection::Section(usize::from(n)),
                n => SymSection::Other(n),
            };
            symbols.push(Symbol {
                index: idx.0,
                name,
                value: sym.st_value(LE),
                size: sym.st_size(LE),
                bind: sym.st_bind(),
                st_type: sym.st_type(),
                section,
            });
        }

        let mut relocs = Vec::new();
        for (idx, sh) in table.enumerate() {
            let target = sh.sh_info(LE) as usize;
            let link = sh.sh_link(LE) as usize;
            let sec_name = &sections[idx.0].name;
            let uses_symtab = |relocs_have_syms: bool| -> Result<(), ElfError> {
                if relocs_have_syms && link != symtab_index {
                    return err(format!(
                        "relocation section {sec_name} links to section {link}, not to .symtab"
                    ));
                }
                Ok(())
            };
            if let Some((rela, _)) = sh
                .rela(LE, data)
                .map_err(|e| ElfError(format!("bad relocation section {sec_name}: {e}")))?
            {
                uses_symtab(rela.iter().any(|r| r.r_sym(LE, false) != 0))?;
                for r in rela {
                    relocs.push(Reloc {
                        reloc_section: idx.0,
                        target_section: target,
                        offset: r.r_offset(LE),
                        r_type: r.r_type(LE, false),
                        sym: r.r_sym(LE, false) as usize,
                        addend: r.r_addend(LE),
                    });
                }
            } else if let Some((rel, _)) = sh
                .rel(LE, data)
                .map_err(|e| ElfError(format!("bad relocation section {sec_name}: {e}")))?
            {
                uses_symtab(rel.iter().any(|r| r.r_sym(LE) != 0))?;
                for r in rel {
                    relocs.push(Reloc {
                        reloc_section: idx.0,
                        target_section: target,
                        offset: r.r_offset(LE),
                        r_type: r.r_type(LE),
                        sym: r.r_sym(LE) as usize,
                        addend: 0,
                    });
                }
            }
        }

        Ok(ElfFile {
            data,
            e_type: header.e_type(LE),
            sections,
            symbols,
            relocs,
            table,
        })
    }

    /// File contents of a section (empty for SHT_NOBITS).
    pub fn section_data(&self, index: usize) -> Result<&'a [u8], ElfError> {
        let sh = self
            .table
            .section(SectionIndex(index))
            .map_err(|e| ElfError(format!("bad section index {index}: {e}")))?;
        sh.data(LE, self.data).map_err(|e| {
            ElfError(format!(
                "section {} has bad file offset/size: {e}",
                self.section_name(index)
            ))
        })
    }

    /// Name of section `index`, or `<bad section index>`.
    pub fn section_name(&self, index: usize) -> &str {
        self.sections
            .get(index)
            .map(|s| s.name.as_str())
            .unwrap_or("<bad section index>")
    }

    /// Symbol `index` of `.symtab`.
    pub fn symbol(&self, index: usize) -> Option<&Symbol> {
        self.symbols.get(index)
    }

    /// The symbol called `name` (exact raw name), preferring a definition over an
    /// undefined reference.
    pub fn find_symbol(&self, name: &str) -> Option<&Symbol> {
        // Prefer a defined symbol over an undefined reference of the same name.
        self.symbols
            .iter()
            .filter(|s| s.index != 0 && s.name == name)
            .min_by_key(|s| s.is_undefined())
    }

    /// Human-readable name of the symbol a relocation refers to.
    pub fn reloc_symbol_name(&self, r: &Reloc) -> String {
        if r.sym == 0 {
            return "<none>".to_string();
        }
        match self.symbol(r.sym) {
            Some(s) if s.st_type == elf::STT_SECTION => match s.section {
                SymSection::Section(i) => self.section_name(i).to_string(),
                _ => format!("<section symbol {}>", r.sym),
            },
            Some(s) if !s.name.is_empty() => s.name.clone(),
            Some(_) => format!("<unnamed symbol {}>", r.sym),
            None => format!("<bad symbol index {}>", r.sym),
        }
    }

    /// `e_type` is `ET_EXEC`.
    pub fn is_executable(&self) -> bool {
        self.e_type == elf::ET_EXEC
    }
}

/// Name of an x86-64 relocation type, e.g. `R_X86_64_GOTPCREL`.
pub fn reloc_type_name(r_type: u32) -> String {
    let name = match r_type {
        elf::R_X86_64_NONE => "R_X86_64_NONE",
        elf::R_X86_64_64 => "R_X86_64_64",
        elf::R_X86_64_PC32 => "R_X86_64_PC32",
        elf::R_X86_64_GOT32 => "R_X86_64_GOT32",
        elf::R_X86_64_PLT32 => "R_X86_64_PLT32",
        elf::R_X86_64_COPY => "R_X86_64_COPY",
        elf::R_X86_64_GLOB_DAT => "R_X86_64_GLOB_DAT",
        elf::R_X86_64_JUMP_SLOT => "R_X86_64_JUMP_SLOT",
        elf::R_X86_64_RELATIVE => "R_X86_64_RELATIVE",
        elf::R_X86_64_GOTPCREL => "R_X86_64_GOTPCREL",
        elf::R_X86_64_32 => "R_X86_64_32",
        elf::R_X86_64_32S => "R_X86_64_32S",
        elf::R_X86_64_16 => "R_X86_64_16",
        elf::R_X86_64_PC16 => "R_X86_64_PC16",
        elf::R_X86_64_8 => "R_X86_64_8",
        elf::R_X86_64_PC8 => "R_X86_64_PC8",
        elf::R_X86_64_DTPMOD64 => "R_X86_64_DTPMOD64",
        elf::R_X86_64_DTPOFF64 => "R_X86_64_DTPOFF64",
        elf::R_X86_64_TPOFF64 => "R_X86_64_TPOFF64",
        elf::R_X86_64_TLSGD => "R_X86_64_TLSGD",
        elf::R_X86_64_TLSLD => "R_X86_64_TLSLD",
        elf::R_X86_64_DTPOFF32 => "R_X86_64_DTPOFF32",
        elf::R_X86_64_GOTTPOFF => "R_X86_64_GOTTPOFF",
        elf::R_X86_64_TPOFF32 => "R_X86_64_TPOFF32",
        elf::R_X86_64_PC64 => "R_X86_64_PC64",
        elf::R_X86_64_GOTOFF64 => "R_X86_64_GOTOFF64",
        elf::R_X86_64_GOTPC32 => "R_X86_64_GOTPC32",
        elf::R_X86_64_GOT64 => "R_X86_64_GOT64",
        elf::R_X86_64_GOTPCREL64 => "R_X86_64_GOTPCREL64",
        elf::R_X86_64_GOTPC64 => "R_X86_64_GOTPC64",
        elf::R_X86_64_GOTPLT64 => "R_X86_64_GOTPLT64",
        elf::R_X86_64_PLTOFF64 => "R_X86_64_PLTOFF64",
        elf::R_X86_64_SIZE32 => "R_X86_64_SIZE32",
        elf::R_X86_64_SIZE64 => "R_X86_64_SIZE64",
        elf::R_X86_64_GOTPC32_TLSDESC => "R_X86_64_GOTPC32_TLSDESC",
        elf::R_X86_64_TLSDESC_CALL => "R_X86_64_TLSDESC_CALL",
        elf::R_X86_64_TLSDESC => "R_X86_64_TLSDESC",
        elf::R_X86_64_IRELATIVE => "R_X86_64_IRELATIVE",
        elf::R_X86_64_RELATIVE64 => "R_X86_64_RELATIVE64",
        elf::R_X86_64_GOTPCRELX => "R_X86_64_GOTPCRELX",
        elf::R_X86_64_REX_GOTPCRELX => "R_X86_64_REX_GOTPCRELX",
        _ => return format!("R_X86_64 type {r_type}"),
    };
    name.to_string()
}
