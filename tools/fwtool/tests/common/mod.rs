//! Test helpers: a temporary directory and the system toolchain (`as`, `gcc`,
//! `ld`). A missing tool fails the test; nothing is skipped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("fwtool-test-{}-{}-{tag}", std::process::id(), n));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn write(&self, name: &str, data: impl AsRef<[u8]>) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, data).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run a command, panicking with its output if it cannot run or fails.
pub fn run(cmd: &mut Command) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is binutils/gcc installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Assemble GNU assembler source into `<name>.o` with `as --64 [extra...]`.
pub fn assemble(dir: &TempDir, name: &str, source: &str, extra: &[&str]) -> PathBuf {
    let src = dir.write(&format!("{name}.s"), source);
    let obj = dir.join(&format!("{name}.o"));
    run(Command::new("as")
        .arg("--64")
        .args(extra)
        .arg(&src)
        .arg("-o")
        .arg(&obj));
    obj
}

/// Compile C source into `<name>.o` with `gcc -c [flags...]`.
pub fn compile_c(dir: &TempDir, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.write(&format!("{name}.c"), source);
    let obj = dir.join(&format!("{name}.o"));
    run(Command::new("gcc")
        .arg("-c")
        .args(flags)
        .arg(&src)
        .arg("-o")
        .arg(&obj));
    obj
}

/// Link objects with `ld -q -Ttext=<text> [extra...]` into `<name>.elf`.
pub fn link(dir: &TempDir, name: &str, objs: &[&Path], text: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(&format!("{name}.elf"));
    run(Command::new("ld")
        .arg("-q")
        .arg(format!("-Ttext={text}"))
        .args(extra)
        .args(objs)
        .arg("-o")
        .arg(&out));
    out
}

/// Path of the fwtool binary built for these tests.
pub fn fwtool() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fwtool"))
}
