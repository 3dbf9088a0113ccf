//! Hot-add benchmark, side by side in one run: device_add → CPU online as seen by the
//! payload (the OS role) for 1, 3, 7 and 16 CPUs added back to back, with SMM (this
//! project's handler relocating every new CPU) and without SMM (QEMU smm=off, the test
//! image's no-SMM baseline knob), as ratios; plus the SMM time per relocated CPU
//! (measured in SMM with the TSC) and a null SMI round trip for comparison. Figures only,
//! nothing asserted.
//!
//! Both sides run on one QEMU whose `smm=off` really removes SMM (`$QEMU_ALT`, else
//! `/opt/qemu10/qemu-system-x86_64`; Debian's 7.2 keeps SMM with `smm=off`, and the
//! baseline knob then stops the boot). Without one, only the SMM side runs (on `$QEMU`)
//! and the baseline is reported unavailable.
//! Run: `cargo bench -p qemu-tests --bench hotplug`.

use qemu_tests::{check_qemu, no_smm_qemu_candidates, qemu_version, Vm, VmConfig, KNOB_NO_SMM};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const RUNS: usize = 3;
/// One boot CPU and room for the largest batch.
const SMP: &str = "1,maxcpus=17";
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

/// One VM of either side on `qemu` (default `$QEMU`), both from the test image.
fn vm_config(smm: bool, qemu: Option<&Path>) -> VmConfig {
    let mut cfg = VmConfig::new(SMP).test_image().with_qmp();
    cfg.qemu = qemu.map(Path::to_path_buf);
    if !smm {
        cfg.smm = false;
        cfg = cfg.fw_cfg(KNOB_NO_SMM.0, KNOB_NO_SMM.1);
    }
    cfg
}

/// The first candidate QEMU on which the baseline knob boots (its `smm=off` removes SMM).
fn baseline_qemu() -> Option<PathBuf> {
    no_smm_qemu_candidates().into_iter().find(|q| {
        let o = qemu_tests::boot(&vm_config(false, Some(q)), T);
        o.output.contains("BASELINE: no SMM set up")
    })
}

fn one(n: usize, smm: bool, qemu: Option<&Path>) -> Run {
    let cfg = vm_config(smm, qemu).fw_cfg("opt/payload/hotplug", &n.to_string());
    let mut vm = Vm::start(&cfg).expect("start");
    vm.wait_for_line("payload: ready for hotplug", T)
        .expect("ready");
    let q = vm.qmp.as_mut().unwrap();
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    let t0 = Instant::now();
    for (i, cpu) in free.iter().take(n).enumerate() {
        q.device_add_cpu(cpu, &format!("hp{i}"))
            .expect("device_add");
    }
    vm.wait_for_lines("HOTPLUG selector=", n, T)
        .expect("hot-added CPUs online");
    let online_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let lines = vm.lines();
    let smm_us_per_cpu = lines
        .iter()
        .filter(|l| l.contains("relocated APIC ID"))
        .filter_map(|l| {
            l.rsplit(" in ")
                .next()?
                .trim_end_matches(" us")
                .parse()
                .ok()
        })
        .collect();
    let null_smi_us = lines.iter().find_map(|l| {
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
    let qemu = baseline_qemu();
    let version = match &qemu {
        Some(q) => check_qemu(q).unwrap_or_default(),
        None => qemu_version(),
    };
    println!("CPU hot-add under TCG, -smp {SMP}, median of {RUNS} runs");
    match &qemu {
        Some(q) => println!(
            "both sides on {version} ({}): its smm=off removes SMM",
            q.display()
        ),
        None => println!(
            "no-SMM baseline unavailable: no QEMU whose smm=off removes SMM ($QEMU_ALT or /opt/qemu10); SMM side only, on {version}"
        ),
    }
    let qemu = qemu.as_deref();
    println!(
        "{:>5} {:>16} {:>16} {:>8} {:>22}",
        "CPUs", "SMM online ms", "no-SMM online ms", "ratio", "SMM relocation us/CPU"
    );
    let mut null = Vec::new();
    for n in [1usize, 3, 7, 16] {
        let (mut with, mut without, mut reloc) = (vec![], vec![], vec![]);
        for _ in 0..RUNS {
            let r = one(n, true, qemu);
            with.push(r.online_ms);
            reloc.extend(r.smm_us_per_cpu);
            null.extend(r.null_smi_us);
            if qemu.is_some() {
                without.push(one(n, false, qemu).online_ms);
            }
        }
        let (w, wo) = (median(with), median(without.clone()));
        let (wo, ratio) = if without.is_empty() {
            ("n/a".to_string(), "n/a".to_string())
        } else {
            (format!("{wo:.1}"), format!("{:.2}x", w / wo))
        };
        println!(
            "{:>5} {:>16.1} {:>16} {:>8} {:>22.0}",
            n,
            w,
            wo,
            ratio,
            median(reloc)
        );
    }
    let ns = median(null);
    println!("null SMI round trip (payload, mean of 100 per boot): {ns:.0} us");
}
