//! With the `link` feature: check that `LIBPAYLOAD_DIR` names a libpayload install, and
//! say what is missing otherwise. The image itself is linked by libpayload's `lpgcc`
//! (`scripts/payload-on-libpayload`), which brings its start code and link script.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBPAYLOAD_DIR");
    if std::env::var_os("CARGO_FEATURE_LINK").is_none() {
        return;
    }
    let Some(dir) = std::env::var_os("LIBPAYLOAD_DIR").map(PathBuf::from) else {
        panic!(
            "libpayload-sys: feature `link` needs LIBPAYLOAD_DIR, a libpayload install: in a \
             coreboot tree, `make install DESTDIR=/some/dir` in payloads/libpayload, then \
             LIBPAYLOAD_DIR=/some/dir/libpayload (see docs/libpayload.md)"
        );
    };
    for need in ["lib/libpayload.a", "include/libpayload.h", "bin/lpgcc"] {
        let p = dir.join(need);
        if !p.exists() {
            panic!(
                "libpayload-sys: {} is missing: LIBPAYLOAD_DIR={} is not a libpayload install \
                 (`make install DESTDIR=…` in payloads/libpayload gives one)",
                p.display(),
                dir.display()
            );
        }
        println!("cargo:rerun-if-changed={}", p.display());
    }
}
