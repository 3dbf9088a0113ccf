//! Boot benchmark: prints, per topology, the time from QEMU start to the first ROM line,
//! to "SMRAM locked" (SMM set up and relocated), to payload entry and to the payload's
//! result, plus the SMRAM bytes the ROM reports. Figures only, nothing asserted; runs
//! side by side in one process and prints ratios against the 1-CPU boot and, for the
//! possible-CPU sweep (one present CPU; 8, 64, 255 and, where QEMU allows it, 1024
//! possible), against `1,maxcpus=8`.
//! Run: `cargo bench -p qemu-tests --bench boot` (QEMU from $QEMU).

use qemu_tests::{qemu_version, Vm, VmConfig};
use std::time::Duration;

const RUNS: usize = 3;
const T: Duration = Duration::from_secs(120);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let mut topologies = vec![
        "1",
        "2,maxcpus=4",
        "4",
        "8",
        "1,maxcpus=8",
        "1,maxcpus=64",
        "1,maxcpus=255",
    ];
    // 7.2 refuses more than 255 CPUs under TCG; 10.0.2 starts 1024.
    if !qemu_version().contains("version 7.") {
        topologies.push("1,maxcpus=1024");
    }
    println!("host ROM boot under TCG, median of {RUNS} runs (ms since QEMU start)");
    println!(
        "{:<16} {:>8} {:>12} {:>10} {:>8}   SMRAM",
        "-smp", "rom", "smram-lock", "payload", "result"
    );
    let (mut base, mut base8) = (None, None);
    for smp in topologies {
        let (mut rom, mut lock, mut entry, mut result) = (vec![], vec![], vec![], vec![]);
        let mut smram = String::new();
        for _ in 0..RUNS {
            let mut vm = Vm::start(&VmConfig::new(smp)).expect("start QEMU");
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            rom.push(ms(vm
                .wait_for("host-rom: starting", T)
                .expect("ROM output")));
            lock.push(ms(vm.wait_for("SMRAM locked", T).expect("SMRAM lock")));
            entry.push(ms(vm
                .wait_for("payload: entered", T)
                .expect("payload entry")));
            vm.wait_for_line("RESULT:", T).expect("payload result");
            result.push(ms(vm.started.elapsed()));
            smram = vm
                .lines()
                .iter()
                .find_map(|l| l.split("SMRAM used: ").nth(1))
                .unwrap_or("?")
                .to_string();
            let _ = vm.wait_exit(T);
        }
        let e = median(entry.clone());
        let b = *base.get_or_insert(e);
        if smp == "1,maxcpus=8" {
            base8 = Some(e);
        }
        let vs8 = match (smp.starts_with("1,maxcpus="), base8) {
            (true, Some(b8)) => format!(", {:.2}x 1,maxcpus=8", e / b8),
            _ => String::new(),
        };
        println!(
            "{:<16} {:>8.0} {:>12.0} {:>10.0} {:>8.0}   {}   (payload entry {:.2}x the 1-CPU boot{vs8})",
            smp,
            median(rom),
            median(lock),
            e,
            median(result),
            smram,
            e / b
        );
    }
}
