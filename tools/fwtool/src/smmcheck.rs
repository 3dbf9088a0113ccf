//! Mechanical checks on an SMM object (ELF relocatable, `ld -r` output, or a
//! linked executable) against the rules code inside coreboot's x86-64 SMM must
//! obey:
//!
//! * **Instructions**: SSE is off in SMM (CR4.OSFXSR clear) and the interrupted
//!   OS's x87/MMX/vector state must not be touched, so no instruction may use
//!   x87, MMX, 3DNow!, SSE*, AVX*, AVX-512, FMA, F16C, AES, PCLMULQDQ, SHA, ...
//!   (see [`FORBIDDEN_CPUID_PREFIXES`]) or name an ST/MM/XMM/YMM/ZMM/K/TMM
//!   register. Memory-ordering and cache hints that carry an SSE CPUID bit
//!   but touch no FP/vector state (`lfence`, `mfence`, `sfence`, `prefetch*`,
//!   `movnti`) are allowed. Every `SHF_EXECINSTR` section is decoded linearly
//!   in 64-bit mode; sections named `.text16*` / `.text32*` in 16/32-bit mode.
//! * **Symbols**: nothing from Rust's panic / formatting / unwinding machinery
//!   ([`FORBIDDEN_SYMBOL_PATTERNS`]) and no float libcalls ([`is_float_libcall`]),
//!   defined or undefined. Undefined symbols must be in [`ALLOWED_UNDEFINED`]
//!   or match an allowed prefix.
//! * **Relocations**: only the types coreboot's `rmodtool` accepts
//!   ([`ALLOWED_RELOCATIONS`]). Like rmodtool, only relocations applying to
//!   SHT_PROGBITS sections whose name does not contain `.debug` are checked
//!   (`ld --gc-sections -q` leaves R_X86_64_NONE in `.rela.debug_*`, and
//!   rmodtool skips those).
//! * **Stack**: the largest immediate stack-pointer adjustment (`sub rsp, imm`,
//!   `add rsp, -imm`, `lea rsp, [rsp-imm]`, and the inline stack-probe form
//!   `mov r11, rsp; sub r11, imm`) must not exceed the frame limit.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use iced_x86::{
    CpuidFeature, Decoder, DecoderOptions, Formatter, GasFormatter, Instruction, Mnemonic, OpKind,
    Register,
};
use object::elf;

use crate::elf::{reloc_type_name, ElfError, ElfFile, Section, SymSection};

/// Default `--max-frame` limit in bytes: half of coreboot's default 2 KiB per-CPU SMM
/// stack.
pub const DEFAULT_MAX_FRAME: u64 = 1024;

/// Undefined symbols that are always allowed (coreboot's SMM provides them).
pub const ALLOWED_UNDEFINED: &[&str] = &["memcpy", "memmove", "memset", "memcmp", "bcmp"];

/// Substrings that make a symbol forbidden, matched against both the raw and
/// the demangled name: panicking, formatting, unwinding and stack-probe code.
pub const FORBIDDEN_SYMBOL_PATTERNS: &[&str] = &[
    "core::panicking",
    "core::fmt",
    "core::result::unwrap_failed",
    "core::option::unwrap_failed",
    "core::option::expect_failed",
    "core::slice::index",
    "core::str::slice_error_fail",
    "panic_bounds_check",
    "rust_begin_unwind",
    "rust_eh_personality",
    "_Unwind_",
    "__rust_probestack",
];

/// libm functions whose presence means floating-point code.
pub const FLOAT_LIBM_NAMES: &[&str] = &[
    "fmod", "fmodf", "floor", "floorf", "ceil", "ceilf", "trunc", "truncf", "round", "roundf",
    "rint", "rintf", "sqrt", "sqrtf", "fma", "fmaf", "fmin", "fminf", "fmax", "fmaxf", "pow",
    "powf", "exp", "expf", "exp2", "exp2f", "log", "logf", "log2", "log2f", "log10", "log10f",
    "sin", "sinf", "cos", "cosf",
];

/// Suffixes of compiler-rt / libgcc soft-float helpers (`__addsf3`,
/// `__muldf3`, `__eqsf2`, `__extendsfdf2`, `__powidf2`, `__mulsc3`, ...).
pub const FLOAT_LIBCALL_SUFFIXES: &[&str] = &[
    "sf2", "df2", "tf2", "xf2", "hf2", "sf3", "df3", "tf3", "xf3", "hf3", "sc3", "dc3", "tc3",
    "xc3",
];

/// Relocation types coreboot's `rmodtool` accepts for x86-64.
pub const ALLOWED_RELOCATIONS: &[u32] = &[
    elf::R_X86_64_64,
    elf::R_X86_64_PC64,
    elf::R_X86_64_32,
    elf::R_X86_64_32S,
    elf::R_X86_64_PC32,
    elf::R_X86_64_PLT32,
];

/// CPUID feature names (iced-x86 `CpuidFeature` Debug names) whose
/// instructions use x87, MMX or SSE/AVX state. Matched as prefixes.
pub const FORBIDDEN_CPUID_PREFIXES: &[&str] = &[
    "FPU",         // x87 (FPU, FPU287, FPU387, ...)
    "CYRIX_FPU",   // Cyrix x87 extensions
    "MMX",         // MMX
    "CYRIX_EMMI",  // Cyrix extended MMX
    "D3NOW",       // 3DNow!, 3DNow! extensions
    "CYRIX_D3NOW", // Cyrix 3DNow!
    "SSE",         // SSE, SSE2, SSE3, SSE4_1, SSE4_2, SSE4A
    "SSSE3",       //
    "AVX",         // AVX, AVX2, AVX512*, AVX_VNNI, ...
    "FMA",         // FMA, FMA4
    "F16C",        //
    "XOP",         // AMD XOP
    "AES",         // AES-NI (XMM), AESKLE
    "KL",          // Key Locker (XMM)
    "WIDE_KL",     //
    "PCLMULQDQ",   //
    "VPCLMULQDQ",  //
    "VAES",        //
    "GFNI",        //
    "SHA",         // SHA, SHA512
    "SM3",         //
    "SM4",         //
    "KNC",         // Knights Corner vector instructions
    "AMX",         // AMX tiles
    "FXSR",        // fxsave/fxrstor
    "XSAVE",       // xsave*/xrstor*
];

/// Options for [`check_smm`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmmCheckOptions {
    /// Undefined symbols starting with one of these are allowed.
    pub allow_symbol_prefixes: Vec<String>,
    /// Largest allowed stack frame in bytes.
    pub max_frame: u64,
}

impl Default for SmmCheckOptions {
    fn default() -> Self {
        SmmCheckOptions {
            allow_symbol_prefixes: Vec::new(),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }
}

/// One decoded executable section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectionSummary {
    /// The section's name.
    pub name: String,
    /// Decoding mode: 16, 32 or 64.
    pub bitness: u32,
    /// The section's size in bytes.
    pub size: u64,
    /// Instructions decoded.
    pub instructions: usize,
    /// Byte positions that did not decode as an instruction.
    pub undecodable: usize,
}

/// A location in an executable section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLocation {
    /// The section's name.
    pub section: String,
    /// Offset from the start of the section.
    pub offset: u64,
    /// `sh_addr + offset` (equals `offset` in a relocatable object).
    pub address: u64,
    /// Demangled name of the function symbol containing the location.
    pub function: Option<String>,
}

impl fmt::Display for CodeLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}+{:#x}", self.section, self.offset)?;
        if self.address != self.offset {
            write!(f, " (address {:#x})", self.address)?;
        }
        if let Some(func) = &self.function {
            write!(f, " in {func}")?;
        }
        Ok(())
    }
}

/// An instruction that touches x87/MMX/SSE/AVX state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionFinding {
    /// Where the instruction is.
    pub location: CodeLocation,
    /// GNU assembler syntax.
    pub text: String,
    /// Why: the offending CPUID features and/or registers.
    pub reason: String,
}

/// A symbol matching a forbidden pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolFinding {
    /// Raw (mangled) name.
    pub name: String,
    /// Demangled name (the raw name when it is not a Rust symbol).
    pub demangled: String,
    /// Whether the object defines it (else it only references it).
    pub defined: bool,
    /// The pattern (or rule) it matched.
    pub pattern: String,
}

/// An undefined symbol referenced by the object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UndefinedSymbol {
    /// Raw (mangled) name.
    pub name: String,
    /// Demangled name (the raw name when it is not a Rust symbol).
    pub demangled: String,
    /// Weak reference (resolves to 0 when nothing defines it).
    pub weak: bool,
    /// In [`ALLOWED_UNDEFINED`] or matching an allowed prefix.
    pub allowed: bool,
}

/// A relocation of a type coreboot's rmodtool rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelocationFinding {
    /// The SHT_RELA/SHT_REL section holding the entry.
    pub reloc_section: String,
    /// The section being relocated.
    pub section: String,
    /// Offset of the relocated field in that section.
    pub offset: u64,
    /// Relocation type number.
    pub r_type: u32,
    /// Relocation type name, e.g. `R_X86_64_GOTPCREL`.
    pub type_name: String,
    /// Demangled name of the symbol it refers to.
    pub symbol: String,
}

/// A stack-pointer adjustment by an immediate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFrame {
    /// Bytes the function has allocated by immediate adjustments at this point.
    pub size: u64,
    /// Where the adjusting instruction is.
    pub location: CodeLocation,
    /// The instruction, GNU assembler syntax.
    pub text: String,
}

/// Everything [`check_smm`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmmReport {
    /// "relocatable (ET_REL)", "executable (ET_EXEC)", ...
    pub file_kind: String,
    /// Every executable section decoded.
    pub sections: Vec<SectionSummary>,
    /// Instructions that touch x87/MMX/SSE/AVX state.
    pub forbidden_instructions: Vec<InstructionFinding>,
    /// Bytes in executable sections that did not decode (warnings, not failures).
    pub undecodable: Vec<CodeLocation>,
    /// Symbols matching a forbidden pattern or a float libcall.
    pub forbidden_symbols: Vec<SymbolFinding>,
    /// All undefined symbols (each with `allowed` set).
    pub undefined_symbols: Vec<UndefinedSymbol>,
    /// Relocations checked: those applying to SHT_PROGBITS sections whose
    /// name does not contain `.debug` (the ones rmodtool validates).
    pub relocation_count: usize,
    /// Relocation type name → count, over the checked relocations.
    pub relocation_types: BTreeMap<String, usize>,
    /// Relocations rmodtool ignores (debug sections, `.eh_frame` with its
    /// SHT_X86_64_UNWIND type, NOBITS, no target), so not checked.
    pub ignored_relocations: usize,
    /// Checked relocations of a type rmodtool rejects.
    pub bad_relocations: Vec<RelocationFinding>,
    /// The largest stack frame found, if any.
    pub max_frame: Option<StackFrame>,
    /// Every frame larger than `max_frame_limit`.
    pub oversized_frames: Vec<StackFrame>,
    /// The frame limit checked against, in bytes.
    pub max_frame_limit: u64,
}

impl SmmReport {
    /// Undefined symbols that are neither built-in allowed nor prefix-allowed.
    pub fn disallowed_undefined(&self) -> impl Iterator<Item = &UndefinedSymbol> {
        self.undefined_symbols.iter().filter(|u| !u.allowed)
    }

    /// Total number of instructions decoded.
    pub fn instruction_count(&self) -> usize {
        self.sections.iter().map(|s| s.instructions).sum()
    }

    /// One line per failed check item; empty when everything passed.
    pub fn failures(&self) -> Vec<String> {
        let mut out = Vec::new();
        for i in &self.forbidden_instructions {
            out.push(format!(
                "forbidden instruction at {}: {} [{}]",
                i.location, i.text, i.reason
            ));
        }
        for s in &self.forbidden_symbols {
            out.push(format!(
                "forbidden {} symbol {} ({}) matches {:?}",
                if s.defined { "defined" } else { "undefined" },
                s.demangled,
                s.name,
                s.pattern
            ));
        }
        for u in self.disallowed_undefined() {
            out.push(format!(
                "undefined symbol {} ({}) is not allowed",
                u.demangled, u.name
            ));
        }
        for r in &self.bad_relocations {
            out.push(format!(
                "relocation {} at {}+{:#x} (symbol {}, in {}) is not accepted by rmodtool",
                r.type_name, r.section, r.offset, r.symbol, r.reloc_section
            ));
        }
        for f in &self.oversized_frames {
            out.push(format!(
                "stack frame of {} bytes at {} ({}) exceeds the limit of {} bytes",
                f.size, f.location, f.text, self.max_frame_limit
            ));
        }
        out
    }

    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.forbidden_instructions.is_empty()
            && self.forbidden_symbols.is_empty()
            && self.disallowed_undefined().next().is_none()
            && self.bad_relocations.is_empty()
            && self.oversized_frames.is_empty()
    }
}

fn pass_fail(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "FAIL"
    }
}

impl fmt::Display for SmmReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "file: ELF {}", self.file_kind)?;

        writeln!(
            f,
            "[instructions] {} (no x87/MMX/SSE/AVX)",
            pass_fail(self.forbidden_instructions.is_empty())
        )?;
        if self.sections.is_empty() {
            writeln!(f, "  no executable sections")?;
        }
        for s in &self.sections {
            write!(
                f,
                "  {:<32} {}-bit {:>8} bytes {:>7} instructions",
                s.name, s.bitness, s.size, s.instructions
            )?;
            if s.undecodable > 0 {
                write!(f, " ({} undecodable bytes)", s.undecodable)?;
            }
            writeln!(f)?;
        }
        for i in &self.forbidden_instructions {
            writeln!(f, "  FAIL {}: {}  [{}]", i.location, i.text, i.reason)?;
        }
        for (n, u) in self.undecodable.iter().enumerate() {
            if n == 10 {
                writeln!(
                    f,
                    "  warning: ... {} more undecodable bytes",
                    self.undecodable.len() - 10
                )?;
                break;
            }
            writeln!(f, "  warning: undecodable byte at {u}")?;
        }

        let undef_ok = self.disallowed_undefined().next().is_none();
        writeln!(
            f,
            "[symbols] {} (no panic/fmt/unwind/float symbols; undefined symbols allowed)",
            pass_fail(self.forbidden_symbols.is_empty() && undef_ok)
        )?;
        for s in &self.forbidden_symbols {
            writeln!(
                f,
                "  FAIL {} symbol {} ({}) matches {:?}",
                if s.defined { "defined" } else { "undefined" },
                s.demangled,
                s.name,
                s.pattern
            )?;
        }
        if self.undefined_symbols.is_empty() {
            writeln!(f, "  no undefined symbols")?;
        }
        for u in &self.undefined_symbols {
            writeln!(
                f,
                "  {} undefined {}{}{}",
                if u.allowed { "ok  " } else { "FAIL" },
                u.demangled,
                if u.demangled != u.name {
                    format!(" ({})", u.name)
                } else {
                    String::new()
                },
                if u.weak { " [weak]" } else { "" }
            )?;
        }

        writeln!(
            f,
            "[relocations] {} ({} relocations checked, {} in debug/non-PROGBITS sections \
             ignored as rmodtool does; rmodtool types only)",
            pass_fail(self.bad_relocations.is_empty()),
            self.relocation_count,
            self.ignored_relocations
        )?;
        for (t, n) in &self.relocation_types {
            writeln!(f, "  {t:<24} {n}")?;
        }
        for r in &self.bad_relocations {
            writeln!(
                f,
                "  FAIL {} at {}+{:#x} (symbol {}, in {})",
                r.type_name, r.section, r.offset, r.symbol, r.reloc_section
            )?;
        }

        writeln!(
            f,
            "[stack] {} (largest frame <= {} bytes)",
            pass_fail(self.oversized_frames.is_empty()),
            self.max_frame_limit
        )?;
        match &self.max_frame {
            Some(m) => writeln!(
                f,
                "  largest frame: {} bytes at {} ({})",
                m.size, m.location, m.text
            )?,
            None => writeln!(f, "  no immediate stack-pointer adjustment found")?,
        }
        for o in &self.oversized_frames {
            writeln!(f, "  FAIL {} bytes at {} ({})", o.size, o.location, o.text)?;
        }

        let n = self.failures().len();
        if n == 0 {
            write!(f, "result: PASS")
        } else {
            write!(
                f,
                "result: FAIL ({n} problem{})",
                if n == 1 { "" } else { "s" }
            )
        }
    }
}

/// Error reading the object to check.
#[derive(Debug)]
pub enum SmmCheckError {
    /// The file could not be read.
    Io(std::io::Error),
    /// The file is not a readable x86-64 ELF file.
    Elf(ElfError),
}

impl fmt::Display for SmmCheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SmmCheckError::Io(e) => write!(f, "{e}"),
            SmmCheckError::Elf(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SmmCheckError {}

/// Demangle a Rust symbol (legacy or v0) without the hash suffix; other
/// names are returned unchanged.
pub fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_string(),
    }
}

/// True for soft-float / libm helpers: [`FLOAT_LIBM_NAMES`] exactly, or a
/// `__`-prefixed name ending in one of [`FLOAT_LIBCALL_SUFFIXES`], or
/// starting with `__fix`/`__float` (float↔integer conversions).
pub fn is_float_libcall(name: &str) -> bool {
    if FLOAT_LIBM_NAMES.contains(&name) {
        return true;
    }
    match name.strip_prefix("__") {
        Some(rest) => {
            FLOAT_LIBCALL_SUFFIXES.iter().any(|s| rest.ends_with(s))
                || rest.starts_with("fix")
                || rest.starts_with("float")
                || rest.starts_with("gnu_f2h")
                || rest.starts_with("gnu_h2f")
        }
        None => false,
    }
}

/// The forbidden pattern a symbol matches, if any.
pub fn forbidden_symbol_pattern(name: &str, demangled: &str) -> Option<String> {
    for p in FORBIDDEN_SYMBOL_PATTERNS {
        if demangled.contains(p) || name.contains(p) {
            return Some((*p).to_string());
        }
    }
    if is_float_libcall(name) {
        return Some("float libcall".to_string());
    }
    None
}

/// Whether a CPUID feature means x87/MMX/SSE/AVX state.
pub fn is_forbidden_feature(feature: CpuidFeature) -> bool {
    let name = format!("{feature:?}");
    FORBIDDEN_CPUID_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn is_fp_or_vector_register(r: Register) -> bool {
    r.is_st() || r.is_mm() || r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_k() || r.is_tmm()
}

/// Instructions with an SSE CPUID bit that touch no FP/vector state and work
/// with CR4.OSFXSR clear.
fn is_harmless_sse_era(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Lfence
            | Mnemonic::Mfence
            | Mnemonic::Sfence
            | Mnemonic::Prefetchnta
            | Mnemonic::Prefetcht0
            | Mnemonic::Prefetcht1
            | Mnemonic::Prefetcht2
            | Mnemonic::Movnti
    )
}

/// Why an instruction is forbidden, or `None` if it is fine.
pub fn forbidden_reason(instr: &Instruction) -> Option<String> {
    let mut reasons: Vec<String> = Vec::new();
    let harmless = is_harmless_sse_era(instr.mnemonic());
    if !harmless {
        for f in instr.cpuid_features() {
            if is_forbidden_feature(*f) {
                reasons.push(format!("{f:?}"));
            }
        }
    }
    for i in 0..instr.op_count() {
        if instr.op_kind(i) == OpKind::Register {
            let r = instr.op_register(i);
            if is_fp_or_vector_register(r) {
                let name = format!("{r:?}").to_lowercase();
                if !reasons.contains(&name) {
                    reasons.push(name);
                }
            }
        }
    }
    if reasons.is_empty() {
        None
    } else {
        Some(reasons.join(", "))
    }
}

fn stack_pointer(bitness: u32) -> Register {
    match bitness {
        16 => Register::SP,
        32 => Register::ESP,
        _ => Register::RSP,
    }
}

fn is_immediate(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// Signed immediate of operand 1, sign-extended from the operand size.
fn signed_imm(instr: &Instruction) -> Option<i64> {
    if instr.op_count() != 2 || !is_immediate(instr.op_kind(1)) {
        return None;
    }
    let v = instr.immediate(1);
    let bits = instr.op_register(0).size() * 8;
    Some(if (8..64).contains(&bits) {
        let shift = 64 - bits as u32;
        ((v << shift) as i64) >> shift
    } else {
        v as i64
    })
}

/// Tracks immediate stack-pointer adjustments within one function.
///
/// `depth` is the number of bytes allocated by immediate adjustments since the
/// function started: `sub rsp, imm` / `add rsp, -imm` / `lea rsp, [rsp-imm]`
/// add to it, `add rsp, imm` / `lea rsp, [rsp+imm]` take away. LLVM's inline
/// stack probes are understood: unrolled probes are consecutive `sub rsp`
/// (summed), and the probe loop `mov r11, rsp; sub r11, N; 1: sub rsp, 4096;
/// mov [rsp], 0; cmp rsp, r11; jne 1b` counts as N.
struct FrameScan {
    sp: Register,
    depth: u64,
    /// Register holding a copy of the stack pointer (previous instruction only).
    sp_copy: Option<Register>,
    /// Depth the stack-probe loop will reach.
    probe_target: Option<u64>,
}

const PROBE_PAGE: u64 = 4096;

impl FrameScan {
    fn new(sp: Register) -> Self {
        FrameScan {
            sp,
            depth: 0,
            sp_copy: None,
            probe_target: None,
        }
    }

    fn reset(&mut self) {
        *self = FrameScan::new(self.sp);
    }

    fn allocate(&mut self, n: u64) -> Option<u64> {
        match self.probe_target.take() {
            Some(t) if n == PROBE_PAGE => self.depth = self.depth.max(t),
            _ => self.depth = self.depth.saturating_add(n),
        }
        Some(self.depth)
    }

    fn release(&mut self, n: u64) -> Option<u64> {
        self.depth = self.depth.saturating_sub(n);
        None
    }

    /// Returns the function's frame depth after this instruction if the
    /// instruction allocates stack.
    fn step(&mut self, instr: &Instruction) -> Option<u64> {
        let sp = self.sp;
        let copy = self.sp_copy.take();
        let op0_reg = if instr.op_count() >= 1 && instr.op_kind(0) == OpKind::Register {
            Some(instr.op_register(0))
        } else {
            None
        };
        match instr.mnemonic() {
            Mnemonic::Sub if op0_reg == Some(sp) => match signed_imm(instr)? {
                v if v > 0 => self.allocate(v as u64),
                v => self.release(v.unsigned_abs()),
            },
            Mnemonic::Add if op0_reg == Some(sp) => match signed_imm(instr)? {
                v if v < 0 => self.allocate(v.unsigned_abs()),
                v => self.release(v as u64),
            },
            Mnemonic::Sub if op0_reg.is_some() && op0_reg == copy => {
                let v = signed_imm(instr).filter(|&v| v > 0)?;
                let target = self.depth.saturating_add(v as u64);
                self.probe_target = Some(target);
                Some(target)
            }
            Mnemonic::Lea
                if op0_reg == Some(sp)
                    && instr.op_kind(1) == OpKind::Memory
                    && instr.memory_base() == sp
                    && instr.memory_index() == Register::None =>
            {
                match instr.memory_displacement64() as i64 {
                    d if d < 0 => self.allocate(d.unsigned_abs()),
                    d => self.release(d as u64),
                }
            }
            Mnemonic::Mov
                if instr.op_count() == 2
                    && instr.op_kind(1) == OpKind::Register
                    && instr.op_register(1) == sp =>
            {
                self.sp_copy = op0_reg;
                None
            }
            _ => None,
        }
    }
}

struct FunctionMap {
    /// (section index, start address, demangled name), sorted.
    syms: Vec<(usize, u64, String)>,
}

impl FunctionMap {
    fn new(file: &ElfFile<'_>) -> Self {
        let mut syms: Vec<(usize, u64, String)> = file
            .symbols
            .iter()
            .filter(|s| {
                (s.st_type == elf::STT_FUNC || s.st_type == elf::STT_NOTYPE)
                    && !s.name.is_empty()
                    && !s.name.starts_with(".L")
            })
            .filter_map(|s| match s.section {
                SymSection::Section(i) => Some((i, s.value, demangle(&s.name))),
                _ => None,
            })
            .collect();
        syms.sort();
        FunctionMap { syms }
    }

    /// Start address and name of the function containing `address`.
    fn lookup(&self, section: usize, address: u64) -> Option<(u64, &str)> {
        let end = self
            .syms
            .partition_point(|(s, a, _)| (*s, *a) <= (section, address));
        let (s, start, name) = self.syms[..end].last()?;
        (*s == section).then_some((*start, name.as_str()))
    }
}

fn bitness_for(section: &Section) -> u32 {
    if section.name.starts_with(".text16") {
        16
    } else if section.name.starts_with(".text32") {
        32
    } else {
        64
    }
}

/// Check the SMM object in `data` (ELF64 x86-64 bytes).
pub fn check_smm(data: &[u8], opts: &SmmCheckOptions) -> Result<SmmReport, ElfError> {
    let file = ElfFile::parse(data)?;
    let file_kind = match file.e_type {
        elf::ET_REL => "relocatable (ET_REL)".to_string(),
        elf::ET_EXEC => "executable (ET_EXEC)".to_string(),
        elf::ET_DYN => "shared object / PIE (ET_DYN)".to_string(),
        t => format!("type {t}"),
    };
    let mut report = SmmReport {
        file_kind,
        sections: Vec::new(),
        forbidden_instructions: Vec::new(),
        undecodable: Vec::new(),
        forbidden_symbols: Vec::new(),
        undefined_symbols: Vec::new(),
        relocation_count: 0,
        relocation_types: BTreeMap::new(),
        ignored_relocations: 0,
        bad_relocations: Vec::new(),
        max_frame: None,
        oversized_frames: Vec::new(),
        max_frame_limit: opts.max_frame,
    };

    // (a) instructions and (d) stack frames.
    let functions = FunctionMap::new(&file);
    let mut formatter = GasFormatter::new();
    let mut format = |instr: &Instruction| {
        let mut s = String::new();
        formatter.format(instr, &mut s);
        s
    };
    // The largest frame of the function being scanned.
    let mut function_frame: Option<StackFrame> = None;
    let flush_frame = |report: &mut SmmReport, frame: Option<StackFrame>| {
        if let Some(frame) = frame {
            if frame.size > opts.max_frame {
                report.oversized_frames.push(frame.clone());
            }
            if report
                .max_frame
                .as_ref()
                .is_none_or(|m| frame.size > m.size)
            {
                report.max_frame = Some(frame);
            }
        }
    };
    for section in file.sections.iter().filter(|s| s.is_exec()) {
        let bitness = bitness_for(section);
        let mut summary = SectionSummary {
            name: section.name.clone(),
            bitness,
            size: section.size,
            instructions: 0,
            undecodable: 0,
        };
        if section.is_nobits() || section.size == 0 {
            report.sections.push(summary);
            continue;
        }
        let bytes = file.section_data(section.index)?;
        let mut decoder = Decoder::with_ip(bitness, bytes, section.addr, DecoderOptions::NONE);
        let mut scan = FrameScan::new(stack_pointer(bitness));
        let mut current_function: Option<u64> = None;
        let mut instr = Instruction::default();
        let location = |address: u64| CodeLocation {
            section: section.name.clone(),
            offset: address - section.addr,
            address,
            function: functions
                .lookup(section.index, address)
                .map(|(_, name)| name.to_string()),
        };
        while decoder.can_decode() {
            decoder.decode_out(&mut instr);
            let function = functions
                .lookup(section.index, instr.ip())
                .map(|(start, _)| start);
            if function != current_function {
                current_function = function;
                scan.reset();
                flush_frame(&mut report, function_frame.take());
            }
            if instr.is_invalid() {
                summary.undecodable += 1;
                report.undecodable.push(location(instr.ip()));
                continue;
            }
            summary.instructions += 1;
            if let Some(reason) = forbidden_reason(&instr) {
                report.forbidden_instructions.push(InstructionFinding {
                    location: location(instr.ip()),
                    text: format(&instr),
                    reason,
                });
            }
            if let Some(size) = scan.step(&instr) {
                if function_frame.as_ref().is_none_or(|f| size > f.size) {
                    function_frame = Some(StackFrame {
                        size,
                        location: location(instr.ip()),
                        text: format(&instr),
                    });
                }
            }
        }
        flush_frame(&mut report, function_frame.take());
        report.sections.push(summary);
    }

    // (b) symbols.
    for sym in file.symbols.iter().skip(1) {
        if sym.name.is_empty() || sym.is_section_or_file() {
            continue;
        }
        let demangled = demangle(&sym.name);
        if let Some(pattern) = forbidden_symbol_pattern(&sym.name, &demangled) {
            report.forbidden_symbols.push(SymbolFinding {
                name: sym.name.clone(),
                demangled: demangled.clone(),
                defined: !sym.is_undefined(),
                pattern,
            });
        }
        if sym.is_undefined() {
            let allowed = ALLOWED_UNDEFINED.contains(&sym.name.as_str())
                || opts
                    .allow_symbol_prefixes
                    .iter()
                    .any(|p| sym.name.starts_with(p.as_str()) || demangled.starts_with(p.as_str()));
            report.undefined_symbols.push(UndefinedSymbol {
                name: sym.name.clone(),
                demangled,
                weak: sym.is_weak(),
                allowed,
            });
        }
    }

    // (c) relocations, with rmodtool's filter: only relocations applying to
    // SHT_PROGBITS sections whose name does not contain ".debug".
    for r in &file.relocs {
        let checked = r.target_section != 0
            && file
                .sections
                .get(r.target_section)
                .is_some_and(|t| t.sh_type == elf::SHT_PROGBITS && !t.name.contains(".debug"));
        if !checked {
            report.ignored_relocations += 1;
            continue;
        }
        report.relocation_count += 1;
        let type_name = reloc_type_name(r.r_type);
        *report
            .relocation_types
            .entry(type_name.clone())
            .or_default() += 1;
        if !ALLOWED_RELOCATIONS.contains(&r.r_type) {
            report.bad_relocations.push(RelocationFinding {
                reloc_section: file.section_name(r.reloc_section).to_string(),
                section: file.section_name(r.target_section).to_string(),
                offset: r.offset,
                r_type: r.r_type,
                type_name,
                symbol: demangle(&file.reloc_symbol_name(r)),
            });
        }
    }

    Ok(report)
}

/// Read `path` and run [`check_smm`] on it.
pub fn check_smm_file(path: &Path, opts: &SmmCheckOptions) -> Result<SmmReport, SmmCheckError> {
    let data = std::fs::read(path).map_err(SmmCheckError::Io)?;
    check_smm(&data, opts).map_err(SmmCheckError::Elf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Instruction {
        let mut d = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
        let i = d.decode();
        assert!(!i.is_invalid());
        i
    }

    #[test]
    fn feature_names_match_iced() {
        assert_eq!(format!("{:?}", CpuidFeature::SSE2), "SSE2");
        assert_eq!(format!("{:?}", CpuidFeature::FPU387), "FPU387");
        assert!(is_forbidden_feature(CpuidFeature::AVX512F));
        assert!(is_forbidden_feature(CpuidFeature::D3NOW));
        assert!(is_forbidden_feature(CpuidFeature::SSE4_1));
        assert!(!is_forbidden_feature(CpuidFeature::INTEL386));
        assert!(!is_forbidden_feature(CpuidFeature::SMAP));
        assert!(!is_forbidden_feature(CpuidFeature::SERIALIZE));
        assert!(!is_forbidden_feature(CpuidFeature::CMOV));
    }

    #[test]
    fn instruction_classification() {
        // movaps xmm0, [rax]
        assert!(forbidden_reason(&decode(&[0x0f, 0x28, 0x00])).is_some());
        // fld qword [rdi]
        assert!(forbidden_reason(&decode(&[0xdd, 0x07])).is_some());
        // emms
        assert!(forbidden_reason(&decode(&[0x0f, 0x77])).is_some());
        // mfence, lfence, pause, cmovz rax, rbx, add rax, rbx
        for b in [
            &[0x0f, 0xae, 0xf0][..],
            &[0x0f, 0xae, 0xe8],
            &[0xf3, 0x90],
            &[0x48, 0x0f, 0x44, 0xc3],
            &[0x48, 0x01, 0xd8],
        ] {
            assert_eq!(forbidden_reason(&decode(b)), None, "{b:x?}");
        }
    }

    #[test]
    fn float_libcalls() {
        for n in [
            "__addsf3",
            "__muldf3",
            "__eqsf2",
            "__extendsfdf2",
            "__fixdfdi",
            "__floatundisf",
            "__powidf2",
            "fmod",
            "floorf",
        ] {
            assert!(is_float_libcall(n), "{n}");
        }
        for n in ["memcpy", "__udivti3", "__ashldi3", "floor_div", "format"] {
            assert!(!is_float_libcall(n), "{n}");
        }
    }

    #[test]
    fn symbol_patterns() {
        let v0 = "_RNvNtCsgEmfK2I1SDS_4core9panicking18panic_bounds_check";
        assert_eq!(
            forbidden_symbol_pattern(v0, &demangle(v0)).as_deref(),
            Some("core::panicking")
        );
        let legacy = "_ZN4core6option13unwrap_failed17h0123456789abcdefE";
        assert_eq!(demangle(legacy), "core::option::unwrap_failed");
        assert!(forbidden_symbol_pattern(legacy, &demangle(legacy)).is_some());
        assert_eq!(forbidden_symbol_pattern("smi_handler", "smi_handler"), None);
    }
}
