//! check-smm on small objects built with the system toolchain.

mod common;

use common::{assemble, compile_c, fwtool, link, TempDir};
use fwtool::smmcheck::{check_smm, check_smm_file, SmmCheckOptions, SmmReport};

fn check(path: &std::path::Path) -> SmmReport {
    check_smm_file(path, &SmmCheckOptions::default()).expect("check_smm_file")
}

fn check_asm(name: &str, source: &str) -> SmmReport {
    let dir = TempDir::new(name);
    let obj = assemble(&dir, name, source, &[]);
    check(&obj)
}

/// A function wrapper for assembly bodies.
fn func(body: &str) -> String {
    format!("\t.text\n\t.globl f\n\t.type f,@function\nf:\n{body}\n\tret\n\t.size f, .-f\n")
}

/// Only the instruction check fails.
fn only_instructions_fail(r: &SmmReport) {
    assert!(!r.passed(), "{r}");
    assert!(r.forbidden_symbols.is_empty(), "{r}");
    assert!(r.disallowed_undefined().next().is_none(), "{r}");
    assert!(r.bad_relocations.is_empty(), "{r}");
    assert!(r.oversized_frames.is_empty(), "{r}");
}

const CLEAN_C: &str = r#"
#include <stddef.h>
void *memcpy(void *d, const void *s, size_t n);
struct state { unsigned long counter; unsigned char buf[64]; };
static struct state st;
struct state *const state_ptr = &st;
static void (*const handler_ptr)(unsigned long) = 0;
unsigned long smi_handler(unsigned long cmd, const unsigned char *src) {
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    memcpy(st.buf, src, cmd & 63);
    st.counter += cmd * 3 + (unsigned long)handler_ptr;
    unsigned char local[128];
    for (int i = 0; i < 128; i++) local[i] = (unsigned char)(cmd >> (i & 7));
    __asm__ volatile("pause" ::: "memory");
    return st.counter + local[cmd & 127];
}
void smi_copy(void *d, const void *s, size_t n) { memcpy(d, s, n); }
"#;

#[test]
fn clean_c_object_passes() {
    let dir = TempDir::new("clean");
    let obj = compile_c(
        &dir,
        "clean",
        CLEAN_C,
        &[
            "-O2",
            "-fno-pic",
            "-mcmodel=large",
            "-mgeneral-regs-only",
            "-mno-red-zone",
            "-fno-stack-protector",
            "-fno-asynchronous-unwind-tables",
        ],
    );
    let r = check(&obj);
    assert!(r.passed(), "clean object failed:\n{r}\n{:?}", r.failures());
    assert!(r.failures().is_empty());
    assert!(r.instruction_count() > 5, "{r}");
    assert!(r
        .sections
        .iter()
        .any(|s| s.name == ".text" && s.bitness == 64));
    assert!(r
        .undefined_symbols
        .iter()
        .any(|u| u.name == "memcpy" && u.allowed));
    assert!(r.relocation_types.contains_key("R_X86_64_64"), "{r}");
    assert_eq!(r.max_frame.as_ref().map(|f| f.size), Some(128), "{r}");
    let text = r.to_string();
    assert!(text.contains("result: PASS"), "{text}");
}

#[test]
fn clean_asm_with_fences_passes() {
    // Fences, pause, movnti and prefetch carry SSE CPUID bits but touch no
    // FP/vector state: allowed.
    let r = check_asm(
        "fences",
        &func("\tmfence\n\tlfence\n\tsfence\n\tpause\n\tmovnti %rax, (%rdi)\n\tprefetchnta (%rdi)\n\tsub $64, %rsp\n\tadd $64, %rsp"),
    );
    assert!(r.passed(), "{r}");
    assert_eq!(r.max_frame.as_ref().map(|f| f.size), Some(64));
    assert_eq!(r.instruction_count(), 9);
}

#[test]
fn sse_movaps_is_rejected() {
    let r = check_asm("sse", &func("\tmovaps %xmm0, (%rdi)"));
    only_instructions_fail(&r);
    assert_eq!(r.forbidden_instructions.len(), 1, "{r}");
    let i = &r.forbidden_instructions[0];
    assert!(i.text.contains("movaps"), "{}", i.text);
    assert!(i.reason.contains("SSE"), "{}", i.reason);
    assert_eq!(i.location.section, ".text");
    assert_eq!(i.location.offset, 0);
    assert_eq!(i.location.function.as_deref(), Some("f"));
}

#[test]
fn x87_fld_is_rejected() {
    let r = check_asm("x87", &func("\tnop\n\tfldl (%rdi)"));
    only_instructions_fail(&r);
    assert_eq!(r.forbidden_instructions.len(), 1, "{r}");
    let i = &r.forbidden_instructions[0];
    assert!(i.text.starts_with("fld"), "{}", i.text);
    assert!(i.reason.contains("FPU"), "{}", i.reason);
    assert_eq!(i.location.offset, 1);
}

#[test]
fn other_vector_state_is_rejected() {
    for (name, ins) in [
        ("mmx", "\tmovq %mm0, %rax"),
        ("emms", "\temms"),
        ("avx", "\tvaddps %ymm1, %ymm2, %ymm3"),
        ("avx512", "\tvpaddd %zmm1, %zmm2, %zmm3"),
        ("fxsave", "\tfxsave (%rdi)"),
        ("ldmxcsr", "\tldmxcsr (%rdi)"),
        ("aes", "\taesenc %xmm1, %xmm2"),
        ("cvt", "\tcvtsi2sd %rax, %xmm0"),
    ] {
        let r = check_asm(name, &func(ins));
        assert_eq!(r.forbidden_instructions.len(), 1, "{name}: {r}");
    }
}

#[test]
fn text16_and_text32_use_their_mode() {
    // The instruction counts depend on the decode mode: `b8 imm` takes a
    // 2-byte immediate in 16-bit mode (3 instructions, 2 in 64-bit mode), and
    // 0x40 is `inc eax` in 32-bit mode but a REX prefix in 64-bit mode.
    let src = "\
\t.section .text16,\"ax\"
\t.code16
\tsub $16, %sp
\tmovw $0x1234, %ax
\tret
\t.section .text32,\"ax\"
\t.code32
\tsub $16, %esp
\tmovl $0x12345678, %eax
\tfld %st(1)
\tinc %eax
\tret
\t.text
\t.code64
\tmovabs $0x1122334455667788, %rax
\tret
";
    let r = check_asm("modes", src);
    let sec = |n: &str| r.sections.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(sec(".text16").bitness, 16);
    assert_eq!(sec(".text16").instructions, 3, "{r}");
    assert_eq!(sec(".text32").bitness, 32);
    assert_eq!(sec(".text32").instructions, 5, "{r}");
    assert_eq!(sec(".text").bitness, 64);
    assert_eq!(sec(".text").instructions, 2, "{r}");
    assert!(r.undecodable.is_empty(), "{r}");
    assert_eq!(r.forbidden_instructions.len(), 1, "{r}");
    assert_eq!(r.forbidden_instructions[0].location.section, ".text32");
    assert_eq!(r.max_frame.as_ref().unwrap().size, 16);
}

#[test]
fn gotpcrel_relocation_is_rejected() {
    let dir = TempDir::new("got");
    let src = func("\tmovq foo@GOTPCREL(%rip), %rax\n\tcall bar@PLT");
    let opts = SmmCheckOptions {
        allow_symbol_prefixes: vec!["foo".into(), "bar".into()],
        ..Default::default()
    };
    for (name, flags, ty) in [
        (
            "plain",
            &["-mrelax-relocations=no"][..],
            "R_X86_64_GOTPCREL",
        ),
        (
            "relax",
            &["-mrelax-relocations=yes"][..],
            "R_X86_64_REX_GOTPCRELX",
        ),
    ] {
        let obj = assemble(&dir, name, &src, flags);
        let r = check_smm_file(&obj, &opts).unwrap();
        assert!(!r.passed(), "{r}");
        assert!(r.forbidden_instructions.is_empty(), "{r}");
        assert!(r.forbidden_symbols.is_empty(), "{r}");
        assert_eq!(r.bad_relocations.len(), 1, "{r}");
        let b = &r.bad_relocations[0];
        assert_eq!(b.type_name, ty);
        assert_eq!(b.section, ".text");
        assert_eq!(b.reloc_section, ".rela.text");
        assert_eq!(b.offset, 3);
        assert_eq!(b.symbol, "foo");
        assert_eq!(r.relocation_count, 2);
        assert_eq!(r.relocation_types.get("R_X86_64_PLT32"), Some(&1));
    }
}

#[test]
fn allowed_relocation_types_pass() {
    let src = "\
\t.text
\t.globl f
f:\tmovabs $target, %rax
\tmovl $target, %eax
\tmovq $target, %rax
\tlea target(%rip), %rax
\tcall target
\tret
\t.section .text.other,\"ax\"
\t.globl target
target:\tret
\t.data
\t.quad target
\t.quad target - .
";
    let r = check_asm("relocs", src);
    assert!(r.passed(), "{r}");
    for t in [
        "R_X86_64_64",
        "R_X86_64_32",
        "R_X86_64_32S",
        "R_X86_64_PC32",
        "R_X86_64_PLT32",
        "R_X86_64_PC64",
    ] {
        assert!(r.relocation_types.contains_key(t), "{t} missing: {r}");
    }
}

#[test]
fn relocations_are_checked_where_rmodtool_checks_them() {
    // rmodtool validates relocations for SHT_PROGBITS sections that are not
    // debug sections; the same GOTPCREL is fatal in .data, ignored in
    // .debug_info and in .eh_frame-like non-PROGBITS sections.
    let opts = SmmCheckOptions {
        // `as` adds an undefined _GLOBAL_OFFSET_TABLE_ for @GOTPCREL.
        allow_symbol_prefixes: vec!["ext".into(), "_GLOBAL_OFFSET_TABLE_".into()],
        ..Default::default()
    };
    let dir = TempDir::new("relscope");
    let debug = assemble(
        &dir,
        "debug",
        "\t.section .debug_info,\"\",@progbits\n\t.long ext@GOTPCREL\n\t.section .unw,\"a\",@unwind\n\t.long ext@GOTPCREL\n",
        &[],
    );
    let r = check_smm_file(&debug, &opts).unwrap();
    assert!(r.passed(), "{r}");
    assert_eq!(r.ignored_relocations, 2, "{r}");
    assert_eq!(r.relocation_count, 0, "{r}");

    let data = assemble(&dir, "data", "\t.data\n\t.long ext@GOTPCREL\n", &[]);
    let r = check_smm_file(&data, &opts).unwrap();
    assert!(!r.passed(), "{r}");
    assert_eq!(r.bad_relocations[0].section, ".data");
    assert_eq!(r.bad_relocations[0].type_name, "R_X86_64_GOTPCREL");
}

#[test]
fn panicking_symbol_is_rejected() {
    let r = check_asm(
        "panic",
        &func("\tcall _ZN4core9panicking5panic17h0123456789abcdefE"),
    );
    assert!(!r.passed());
    assert!(r.forbidden_instructions.is_empty(), "{r}");
    assert!(r.bad_relocations.is_empty(), "{r}");
    assert_eq!(r.forbidden_symbols.len(), 1, "{r}");
    let s = &r.forbidden_symbols[0];
    assert_eq!(s.name, "_ZN4core9panicking5panic17h0123456789abcdefE");
    assert_eq!(s.demangled, "core::panicking::panic");
    assert_eq!(s.pattern, "core::panicking");
    assert!(!s.defined);
    // It is also an undefined symbol that is not allowed.
    assert_eq!(r.disallowed_undefined().count(), 1);
}

#[test]
fn forbidden_symbols_in_all_manglings_and_definitions() {
    // v0 mangling (rustc's default now), a defined local fmt function, and
    // runtime/float names.
    let src = "\
\t.text
\t.globl f
f:\tcall _RNvNtCsgEmfK2I1SDS_4core9panicking18panic_bounds_check
\tcall __adddf3
\tcall fmod
\tcall _Unwind_Resume
\tcall rust_eh_personality
\tret
_ZN4core3fmt5write17h0011223344556677E:
\tret
";
    let r = check_asm("syms", src);
    let patterns: Vec<&str> = r
        .forbidden_symbols
        .iter()
        .map(|s| s.pattern.as_str())
        .collect();
    assert_eq!(r.forbidden_symbols.len(), 6, "{r}");
    for p in [
        "core::panicking",
        "core::fmt",
        "float libcall",
        "_Unwind_",
        "rust_eh_personality",
    ] {
        assert!(patterns.contains(&p), "{p} not reported: {r}");
    }
    let fmt = r
        .forbidden_symbols
        .iter()
        .find(|s| s.pattern == "core::fmt")
        .unwrap();
    assert!(fmt.defined);
    assert_eq!(fmt.demangled, "core::fmt::write");
}

#[test]
fn undefined_symbols_need_allowing() {
    let src = func("\tcall memset\n\tcall printk\n\tcall smm_get_cpu");
    let dir = TempDir::new("undef");
    let obj = assemble(&dir, "undef", &src, &[]);
    let r = check(&obj);
    assert!(!r.passed());
    let bad: Vec<&str> = r.disallowed_undefined().map(|u| u.name.as_str()).collect();
    assert_eq!(bad, ["printk", "smm_get_cpu"], "{r}");

    let opts = SmmCheckOptions {
        allow_symbol_prefixes: vec!["printk".into(), "smm_".into()],
        ..Default::default()
    };
    let r = check_smm_file(&obj, &opts).unwrap();
    assert!(r.passed(), "{r}");
    assert_eq!(r.undefined_symbols.len(), 3);
}

#[test]
fn big_stack_frame_is_rejected() {
    let r = check_asm("frame", &func("\tsub $4096, %rsp\n\tadd $4096, %rsp"));
    assert!(!r.passed());
    assert!(r.forbidden_instructions.is_empty(), "{r}");
    assert!(r.forbidden_symbols.is_empty(), "{r}");
    let m = r.max_frame.as_ref().unwrap();
    assert_eq!(m.size, 4096);
    assert!(m.text.contains("sub"), "{}", m.text);
    assert_eq!(r.oversized_frames.len(), 1);

    // The limit is an option.
    let dir = TempDir::new("frame2");
    let obj = assemble(
        &dir,
        "frame",
        &func("\tsub $4096, %rsp\n\tadd $4096, %rsp"),
        &[],
    );
    let opts = SmmCheckOptions {
        max_frame: 4096,
        ..Default::default()
    };
    assert!(check_smm_file(&obj, &opts).unwrap().passed());
}

#[test]
fn stack_probe_patterns_are_summed() {
    // LLVM's unrolled probe (8000 bytes) and probe loop (100000 bytes).
    let src = "\
\t.text
\t.globl unrolled, looped, small
\t.type unrolled,@function
unrolled:
\tpush %rbx
\tsub $0x1000, %rsp
\tmovq $0, (%rsp)
\tsub $0xf40, %rsp
\tadd $0x1f40, %rsp
\tpop %rbx
\tret
\t.type looped,@function
looped:
\tmov %rsp, %r11
\tsub $0x18000, %r11
1:\tsub $0x1000, %rsp
\tmovq $0, (%rsp)
\tcmp %r11, %rsp
\tjne 1b
\tsub $0x6a0, %rsp
\tadd $0x186a0, %rsp
\tret
\t.type small,@function
small:
\tadd $-128, %rsp
\tsub $-128, %rsp
\tret
";
    let r = check_asm("probe", src);
    let sizes: Vec<(u64, Option<&str>)> = r
        .oversized_frames
        .iter()
        .map(|f| (f.size, f.location.function.as_deref()))
        .collect();
    assert_eq!(
        sizes,
        [(8000, Some("unrolled")), (100000, Some("looped"))],
        "{r}"
    );
    assert_eq!(r.max_frame.as_ref().unwrap().size, 100000);
}

#[test]
fn linked_executable_is_checked() {
    let dir = TempDir::new("linked");
    let obj = assemble(
        &dir,
        "exe",
        "\t.text\n\t.globl _start\n_start:\n\tmovaps %xmm1, %xmm2\n\tmovq ptr(%rip), %rax\n\tret\n\t.data\nptr:\t.quad _start\n",
        &[],
    );
    let exe = link(&dir, "exe", &[&obj], "0x1000", &[]);
    let r = check(&exe);
    assert_eq!(r.file_kind, "executable (ET_EXEC)");
    assert_eq!(r.forbidden_instructions.len(), 1, "{r}");
    assert_eq!(r.forbidden_instructions[0].location.address, 0x1000);
    assert_eq!(r.forbidden_instructions[0].location.offset, 0);
    assert_eq!(r.relocation_types.get("R_X86_64_64"), Some(&1), "{r}");
}

#[test]
fn not_elf_is_an_error() {
    assert!(check_smm(b"not an elf file at all", &SmmCheckOptions::default()).is_err());
    let dir = TempDir::new("notelf");
    let p = dir.write("x.o", b"\x7fELF\x01\x01\x01\0\0\0\0\0\0\0\0\0");
    let e = check_smm_file(&p, &SmmCheckOptions::default()).unwrap_err();
    assert!(e.to_string().contains("64-bit"), "{e}");
}

#[test]
fn cli_exit_codes_and_report() {
    let dir = TempDir::new("cli");
    let bad = assemble(
        &dir,
        "bad",
        &func("\tmovaps %xmm0, (%rdi)\n\tsub $2048, %rsp"),
        &[],
    );
    let good = assemble(
        &dir,
        "good",
        &func("\tsub $2048, %rsp\n\tcall helper_x"),
        &[],
    );

    let out = fwtool().arg("check-smm").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("movaps"), "{text}");
    assert!(text.contains("result: FAIL"), "{text}");
    assert!(text.contains(".text"), "{text}");

    let out = fwtool()
        .arg("check-smm")
        .arg(&good)
        .args(["--allow-symbol-prefix", "helper_", "--max-frame=0x800"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("result: PASS"), "{text}");
    assert!(text.contains("largest frame: 2048 bytes"), "{text}");

    // The default limit (1024) fails the same object.
    let out = fwtool()
        .arg("check-smm")
        .arg(&good)
        .args(["--allow-symbol-prefix", "helper_"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));

    let out = fwtool()
        .args(["check-smm", "/nonexistent/x.o"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/x.o"));

    let out = fwtool().args(["check-smm", "--bogus"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option --bogus"));
}
