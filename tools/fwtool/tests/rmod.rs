//! rmod conversion of tiny modules linked with `ld -q -Ttext=0`.

mod common;

use common::{assemble, fwtool, link, TempDir};
use fwtool::rmod::{elf_to_rmod, Rmod, RmodError, RMOD_HEADER_SIZE};
use object::{Object, ObjectSection, ObjectSymbol};

const MODULE: &str = "\
\t.text
\t.globl _start
_start:
\tlea table(%rip), %rax
\tcall helper
\tret
helper:
\tret
\t.data
\t.p2align 3
table:
\t.quad helper
\t.quad params + 8
\t.quad 0x1234
\t.quad abs_sym
\t.quad maybe
\t.weak maybe
\t.globl abs_sym
\t.set abs_sym, 0x5000
\t.bss
\t.globl params
\t.p2align 4
params:
\t.space 40
";

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

struct Linked {
    _dir: TempDir,
    elf: Vec<u8>,
    path: std::path::PathBuf,
}

fn build(name: &str, source: &str, text: &str, extra: &[&str]) -> Linked {
    let dir = TempDir::new(name);
    let obj = assemble(&dir, name, source, &[]);
    let path = link(&dir, name, &[&obj], text, extra);
    Linked {
        elf: std::fs::read(&path).unwrap(),
        path,
        _dir: dir,
    }
}

fn sym(elf: &object::File<'_>, name: &str) -> u64 {
    elf.symbols()
        .find(|s| s.name() == Ok(name))
        .unwrap_or_else(|| panic!("no symbol {name}"))
        .address()
}

#[test]
fn converts_module_and_header_is_exact() {
    let m = build("mod", MODULE, "0", &["-e", "_start"]);
    let elf = object::File::parse(&*m.elf).unwrap();
    let data = elf.section_by_name(".data").unwrap();
    let bss = elf.section_by_name(".bss").unwrap();
    let text = elf.section_by_name(".text").unwrap();
    let table = sym(&elf, "table");
    let params = sym(&elf, "params");
    let helper = sym(&elf, "helper");
    assert_eq!(text.address(), 0);
    assert!(bss.address() >= data.address() + data.size());

    let rmod = elf_to_rmod(&m.elf, "_start", "params").unwrap();
    let bytes = rmod.to_bytes();

    // Header.
    assert_eq!(&bytes[0..4], b"HRMD");
    assert_eq!(u32_at(&bytes, 4), 1);
    let image_size = u32_at(&bytes, 8) as u64;
    let file_size = u32_at(&bytes, 12) as usize;
    assert_eq!(image_size, (bss.address() + bss.size()).div_ceil(16) * 16);
    assert_eq!(image_size % 16, 0);
    assert_eq!(file_size as u64, data.address() + data.size());
    assert_eq!(u32_at(&bytes, 16), 0, "entry");
    assert_eq!(u32_at(&bytes, 20) as u64, params, "params");
    assert_eq!(u32_at(&bytes, 24), 2, "reloc_count");
    assert_eq!(u32_at(&bytes, 28), 0, "reserved");
    assert_eq!(bytes.len(), RMOD_HEADER_SIZE + file_size + 2 * 4);

    // Image: sections at their addresses, gap zero.
    let image = &bytes[RMOD_HEADER_SIZE..RMOD_HEADER_SIZE + file_size];
    let text_bytes = text.data().unwrap();
    assert_eq!(&image[..text_bytes.len()], text_bytes);
    assert!(image[text_bytes.len()..data.address() as usize]
        .iter()
        .all(|&b| b == 0));
    let t = table as usize;
    assert_eq!(u64_at(image, t), helper);
    assert_eq!(u64_at(image, t + 8), params + 8);
    assert_eq!(u64_at(image, t + 16), 0x1234);
    assert_eq!(u64_at(image, t + 24), 0x5000);
    assert_eq!(u64_at(image, t + 32), 0);

    // Relocations: only the two section-relative words (not the constant,
    // the SHN_ABS symbol or the undefined weak symbol).
    let relocs: Vec<u32> = (0..2)
        .map(|i| u32_at(&bytes, RMOD_HEADER_SIZE + file_size + 4 * i))
        .collect();
    assert_eq!(relocs, [table as u32, table as u32 + 8]);

    // Round trip and loading.
    let parsed = Rmod::parse(&bytes).unwrap();
    assert_eq!(parsed, rmod);
    let base = 0x7f00_0000u64;
    let mem = parsed.load(base);
    assert_eq!(mem.len() as u64, image_size);
    assert_eq!(u64_at(&mem, t), base + helper);
    assert_eq!(u64_at(&mem, t + 8), base + params + 8);
    assert_eq!(u64_at(&mem, t + 24), 0x5000);
    assert!(mem[file_size..].iter().all(|&b| b == 0));
}

#[test]
fn cli_writes_the_same_bytes() {
    let m = build("modcli", MODULE, "0", &["-e", "_start"]);
    let out = m.path.with_extension("rmod");
    let res = fwtool()
        .arg("rmod")
        .arg(&m.path)
        .arg(&out)
        .args(["--entry", "helper", "--params=params"])
        .output()
        .unwrap();
    assert!(res.status.success(), "{res:?}");
    let expected = elf_to_rmod(&m.elf, "helper", "params").unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), expected.to_bytes());
    assert_ne!(expected.entry, 0);

    let info = fwtool().arg("rmod-info").arg(&out).output().unwrap();
    assert!(info.status.success());
    assert!(String::from_utf8_lossy(&info.stdout).contains("relocations 2"));

    // Missing symbol: non-zero exit, message names it, no output written.
    let out2 = m.path.with_extension("bad.rmod");
    let res = fwtool()
        .arg("rmod")
        .arg(&m.path)
        .arg(&out2)
        .args(["--entry", "no_such_entry", "--params", "params"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&res.stderr).contains("no_such_entry"));
    assert!(!out2.exists());

    // Missing option: usage error.
    let res = fwtool()
        .arg("rmod")
        .arg(&m.path)
        .arg(&out2)
        .args(["--entry", "helper"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("missing --params"));
}

#[test]
fn r_x86_64_32_is_rejected() {
    let src = "\t.text\n\t.globl _start\n_start:\n\tmovl $data_word, %eax\n\tret\n\t.data\ndata_word:\t.long 1\nparams:\t.long 0\n";
    let m = build("abs32", src, "0", &[]);
    let err = elf_to_rmod(&m.elf, "_start", "params").unwrap_err();
    match &err {
        RmodError::UnsupportedRelocation {
            type_name,
            section,
            offset,
            ..
        } => {
            assert_eq!(type_name, "R_X86_64_32");
            assert_eq!(section, ".text");
            assert_eq!(*offset, 1);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("R_X86_64_32") && msg.contains(".text"),
        "{msg}"
    );
}

#[test]
fn gotpcrel_is_rejected() {
    let src = "\t.text\n\t.globl _start\n_start:\n\tmovq params@GOTPCREL(%rip), %rax\n\tret\n\t.data\nparams:\t.quad 0\n";
    let dir = TempDir::new("got");
    let obj = assemble(&dir, "got", src, &["-mrelax-relocations=no"]);
    // Without --no-relax, ld rewrites the load into a `lea` and the
    // relocation into R_X86_64_PC32; keep the GOT access.
    let exe = link(&dir, "got", &[&obj], "0", &["--no-relax"]);
    let err = match elf_to_rmod(&std::fs::read(exe).unwrap(), "_start", "params") {
        Ok(m) => panic!("GOTPCREL accepted: {m}"),
        Err(e) => e,
    };
    assert!(
        matches!(&err, RmodError::UnsupportedRelocation { type_name, .. } if type_name == "R_X86_64_GOTPCREL"),
        "{err:?}"
    );
}

#[test]
fn missing_and_undefined_symbols_are_errors() {
    let m = build("missing", MODULE, "0", &["-e", "_start"]);
    let err = elf_to_rmod(&m.elf, "_start", "nope").unwrap_err();
    assert_eq!(
        err,
        RmodError::MissingSymbol {
            role: "params",
            name: "nope".into()
        }
    );
    assert!(err.to_string().contains("nope"));

    let src = "\t.text\n\t.globl _start\n_start:\n\tret\n\t.data\nparams:\t.quad elsewhere\n";
    let m = build("undef", src, "0", &["--unresolved-symbols=ignore-all"]);
    let err = elf_to_rmod(&m.elf, "_start", "params").unwrap_err();
    assert!(
        matches!(&err, RmodError::UndefinedSymbol { name, .. } if name == "elsewhere"),
        "{err:?}"
    );
}

#[test]
fn section_beyond_16_mib_is_rejected() {
    let m = build("high", MODULE, "0x1000000", &["-e", "_start"]);
    let err = elf_to_rmod(&m.elf, "_start", "params").unwrap_err();
    assert!(
        matches!(&err, RmodError::SectionOutOfRange { section, .. } if section == ".text"),
        "{err:?}"
    );
}

#[test]
fn unlinked_object_is_rejected() {
    let dir = TempDir::new("rel");
    let obj = assemble(&dir, "rel", MODULE, &[]);
    let err = elf_to_rmod(&std::fs::read(obj).unwrap(), "_start", "params").unwrap_err();
    assert!(
        matches!(err, RmodError::NotExecutable { e_type: 1 }),
        "{err:?}"
    );
}

#[test]
fn malformed_rmod_is_rejected() {
    let m = build("malformed", MODULE, "0", &["-e", "_start"]);
    let bytes = elf_to_rmod(&m.elf, "_start", "params").unwrap().to_bytes();
    assert!(Rmod::parse(&bytes[..bytes.len() - 1]).is_err());
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert!(Rmod::parse(&bad).is_err());
}
