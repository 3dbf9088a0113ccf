//! `libpayload-sys` against a real libpayload: with `LIBPAYLOAD_DIR` naming a libpayload
//! install (docs/libpayload.md), every function and variable the crate declares must be
//! defined in its `lib/libpayload.a`, and each function's C prototype must be the one in
//! its headers. Without `LIBPAYLOAD_DIR` (CI has no coreboot tree) the test says so and
//! passes; the declarations still build there (`scripts/test` lints the payload's
//! libpayload build).

use qemu_tests::workspace_root;
use std::path::PathBuf;
use std::process::Command;

/// Each declaration of `platform/libpayload-sys/src/lib.rs`: its name, and the header and
/// prototype it was written from (`None`: a variable of the x86 start code, no header).
const DECLARED: &[(&str, Option<(&str, &str)>)] = &[
    (
        "console_init",
        Some(("libpayload.h", "void console_init(void);")),
    ),
    (
        "putchar",
        Some(("libpayload.h", "int putchar(unsigned int c);")),
    ),
    ("puts", Some(("libpayload.h", "int puts(const char *s);"))),
    ("ndelay", Some(("delay.h", "void ndelay(uint64_t n);"))),
    (
        "timer_us",
        Some(("libpayload.h", "uint64_t timer_us(uint64_t base);")),
    ),
    (
        "timer_hz",
        Some(("libpayload.h", "uint64_t timer_hz(void);")),
    ),
    (
        "halt",
        Some(("libpayload.h", "void __noreturn halt(void);")),
    ),
    (
        "memcmp",
        Some((
            "string.h",
            "int memcmp(const void *s1, const void *s2, size_t len);",
        )),
    ),
    ("cb_header_ptr", None),
];

fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn the_crate_declares_exactly_the_listed_names() {
    let src = std::fs::read_to_string(workspace_root().join("platform/libpayload-sys/src/lib.rs"))
        .unwrap();
    for (name, _) in DECLARED {
        let f = format!("pub fn {name}(");
        let v = format!("pub static {name}:");
        assert!(
            src.contains(&f) || src.contains(&v),
            "{name} is not declared in libpayload-sys"
        );
    }
    // The shim's functions (`lp_sysinfo_*`, this project's own C) are not libpayload's.
    let declared = src.matches("    pub fn ").count() + src.matches("    pub static ").count()
        - src.matches("    pub fn lp_sysinfo_").count();
    assert_eq!(
        declared,
        DECLARED.len(),
        "a declaration is missing from DECLARED"
    );
}

#[test]
fn every_declaration_matches_the_libpayload_install_in_libpayload_dir() {
    let Some(dir) = std::env::var_os("LIBPAYLOAD_DIR").map(PathBuf::from) else {
        eprintln!("skipped: LIBPAYLOAD_DIR is not set (a libpayload install; docs/libpayload.md)");
        return;
    };
    let nm = Command::new("nm")
        .arg("--defined-only")
        .arg(dir.join("lib/libpayload.a"))
        .output()
        .expect("nm (binutils)");
    let symbols = String::from_utf8_lossy(&nm.stdout);
    for (name, proto) in DECLARED {
        assert!(
            symbols.lines().any(|l| l.ends_with(&format!(" {name}"))),
            "{name} is not defined in {}",
            dir.join("lib/libpayload.a").display()
        );
        if let Some((header, proto)) = proto {
            let text = std::fs::read_to_string(dir.join("include").join(header))
                .unwrap_or_else(|e| panic!("{header}: {e}"));
            assert!(
                squash(&text).contains(&squash(proto)),
                "{header} no longer declares `{proto}`"
            );
        }
    }
}
