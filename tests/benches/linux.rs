//! Linux as the guest, side by side in one run: an unmodified Debian kernel on the host ROM
//! with SMM and without it (the test image's baseline knob on a QEMU whose `smm=off`
//! removes SMM), for 1, 3 and 7 CPUs added back to back: `device_add` → every new CPU
//! online in Linux with a pinned task run on it, and `device_del` → Linux reports the CPU
//! gone (one at a time), as ratios SMM / no SMM; plus QEMU start → the guest's `/init`
//! ready. Figures only, nothing asserted. Needs the guest (`scripts/linux-guest`).
//!
//! Both sides run on one QEMU whose `smm=off` really removes SMM (`$QEMU_ALT`, else
//! `/opt/qemu10/qemu-system-x86_64`); without one, only the SMM side runs, on `$QEMU`.
//! Run: `cargo bench -p qemu-tests --bench linux`.

use qemu_tests::linux::{boot, guest, LinuxGuest, Side};
use qemu_tests::{check_qemu, no_smm_qemu_candidates, qemu_binary};
use std::path::{Path, PathBuf};
use std::time::Duration;

const RUNS: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One VM: boot → ready, `n` CPUs added → all online, each removed → gone (mean).
/// `None` when the no-SMM side turns out to have SMM after all.
fn one(g: &LinuxGuest, qemu: &Path, n: usize, smm: bool) -> Option<(f64, f64, f64)> {
    let side = if smm {
        Side::Smm(Some(qemu.to_path_buf()))
    } else {
        Side::NoSmm(qemu.to_path_buf())
    };
    let mut v = boot(g, "1,maxcpus=8", "", side);
    let ready = ms(v.vm.started.elapsed());
    if !smm && !v.vm.output().contains("BASELINE: no SMM set up") {
        return None;
    }
    let (_, t) = v.plug(n, "hp");
    v.onlined(0, n);
    let online = ms(t.elapsed());
    let mut gone = 0.0;
    for i in 0..n {
        // A guest stuck after an eject (7.2.22's defect) gives no figure.
        gone += ms(v.remove(&format!("hp{i}"), i + 1)?);
    }
    v.finish();
    Some((ready, online, gone / n as f64))
}

fn main() {
    let g = match guest() {
        Ok(g) => g,
        Err(e) => {
            println!("Linux bench not run: {e}");
            return;
        }
    };
    let baseline: Option<PathBuf> = no_smm_qemu_candidates().into_iter().next();
    let qemu = baseline
        .clone()
        .unwrap_or_else(|| qemu_binary().expect("QEMU"));
    let version = check_qemu(&qemu).unwrap_or_default();
    println!(
        "Linux guest ({}) hot-add/remove under TCG, -smp 1,maxcpus=8, median of {RUNS} runs, on {version}",
        g.kernel_package
    );
    let mut boots = (vec![], vec![]);
    println!(
        "{:>5} {:>14} {:>14} {:>7} {:>14} {:>14} {:>7}",
        "CPUs", "SMM online ms", "no-SMM ms", "ratio", "SMM gone ms", "no-SMM ms", "ratio"
    );
    for n in [1usize, 3, 7] {
        let (mut on, mut gone, mut on0, mut gone0) = (vec![], vec![], vec![], vec![]);
        for _ in 0..RUNS {
            if let Some((b, o, r)) = one(&g, &qemu, n, true) {
                boots.0.push(b);
                on.push(o);
                gone.push(r);
            }
            if baseline.is_some() {
                if let Some((b, o, r)) = one(&g, &qemu, n, false) {
                    boots.1.push(b);
                    on0.push(o);
                    gone0.push(r);
                }
            }
        }
        let cell = |v: &Vec<f64>| {
            if v.is_empty() {
                "n/a".to_string()
            } else {
                format!("{:.0}", median(v.clone()))
            }
        };
        let ratio = |a: &Vec<f64>, b: &Vec<f64>| {
            if a.is_empty() || b.is_empty() {
                "n/a".to_string()
            } else {
                format!("{:.2}x", median(a.clone()) / median(b.clone()))
            }
        };
        println!(
            "{:>5} {:>14} {:>14} {:>7} {:>14} {:>14} {:>7}",
            n,
            cell(&on),
            cell(&on0),
            ratio(&on, &on0),
            cell(&gone),
            cell(&gone0),
            ratio(&gone, &gone0)
        );
    }
    println!(
        "QEMU start -> guest /init ready: SMM {} ms, no SMM {} ms",
        if boots.0.is_empty() {
            "n/a".into()
        } else {
            format!("{:.0}", median(boots.0.clone()))
        },
        if boots.1.is_empty() {
            "n/a".into()
        } else {
            format!("{:.0}", median(boots.1.clone()))
        }
    );
    if baseline.is_none() {
        println!("no-SMM baseline unavailable: no QEMU whose smm=off removes SMM ($QEMU_ALT or /opt/qemu10)");
    }
}
