//! Hot-add benchmark, side by side in one run: device_add → CPU online as seen by the
//! payload (the OS role) for 1, 3 and 7 CPUs added back to back, with SMM (this
//! project's handler relocating every new CPU) and without SMM (QEMU smm=off, the host
//! ROM's baseline mode), as ratios; plus the SMM time per relocated CPU (measured in SMM
//! with the TSC) and a null SMI round trip for comparison. Figures only, nothing asserted.
//! Run: `cargo bench -p qemu-tests --bench hotplug` (QEMU from $QEMU).

use qemu_tests::{Vm, VmConfig};
use std::time::{Duration, Instant};

const RUNS: usize = 3;
const T: Duration = Duration::from_secs(120);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Run {
    online_ms: f64,
    smm_us_per_cpu: Vec<f64>,
    null_smi_us: Option<f64>,
}

fn one(n: usize, smm: bool) -> Run {
    let mut cfg = VmConfig::new("1,maxcpus=8")
        .with_qmp()
        .arg("-fw_cfg")
        .arg(&format!("name=opt/payload/hotplug,string={n}"));
    if !smm {
        cfg.smm = false;
        cfg = cfg
            .arg("-fw_cfg")
            .arg("name=opt/host-rom/baseline-no-smm,string=1");
    }
    let mut vm = Vm::start(&cfg).expect("start");
    vm.wait_for("payload: ready for hotplug", T).expect("ready");
    let q = vm.qmp.as_mut().unwrap();
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    let t0 = Instant::now();
    for (i, cpu) in free.iter().take(n).enumerate() {
        q.device_add_cpu(cpu, &format!("hp{i}"))
            .expect("device_add");
    }
    let end = Instant::now() + T;
    while vm.output().matches("HOTPLUG selector=").count() < n && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(2));
    }
    let online_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let out = vm.output();
    let smm_us_per_cpu = out
        .lines()
        .filter(|l| l.contains("relocated APIC ID"))
        .filter_map(|l| {
            l.rsplit(" in ")
                .next()?
                .trim_end_matches(" us")
                .parse()
                .ok()
        })
        .collect();
    let null_smi_us = out.lines().find_map(|l| {
        l.split("null SMI round trip ")
            .nth(1)?
            .split(' ')
            .next()?
            .parse()
            .ok()
    });
    let _ = vm.wait_exit(T);
    Run {
        online_ms,
        smm_us_per_cpu,
        null_smi_us,
    }
}

fn main() {
    println!("CPU hot-add under TCG, -smp 1,maxcpus=8, median of {RUNS} runs");
    println!(
        "{:>5} {:>16} {:>16} {:>8} {:>22}",
        "CPUs", "SMM online ms", "no-SMM online ms", "ratio", "SMM relocation us/CPU"
    );
    let mut null = Vec::new();
    for n in [1usize, 3, 7] {
        let (mut with, mut without, mut reloc) = (vec![], vec![], vec![]);
        for _ in 0..RUNS {
            let r = one(n, true);
            with.push(r.online_ms);
            reloc.extend(r.smm_us_per_cpu);
            null.extend(r.null_smi_us);
            without.push(one(n, false).online_ms);
        }
        let (w, wo) = (median(with), median(without));
        println!(
            "{:>5} {:>16.1} {:>16.1} {:>7.2}x {:>22.0}",
            n,
            w,
            wo,
            w / wo,
            median(reloc)
        );
    }
    let ns = median(null);
    println!("null SMI round trip (payload, mean of 100 per boot): {ns:.0} us");
}
