//! Hot-remove soak and benchmark: add / remove / re-plug cycles of one CPU socket on a QEMU
//! that re-plugs (10.0.2: `$QEMU_ALT`, else `/opt/qemu10/qemu-system-x86_64`), the
//! payload in the OS role (`payload/src/unplug.rs`). Each cycle: `device_add` of the same
//! socket (a re-plug from the second cycle on), the payload relocates and starts it and
//! checks its slot (`PLUG … smi=ok`), `device_del`, the payload offlines it and runs
//! `CEJ0`, SMM ejects it (`UNPLUG … gone=true at-smi-return=true`), QEMU reports
//! `DEVICE_DELETED`. QEMU never frees an ejected vCPU under TCG and aborts once the vCPUs
//! ever created reach `maxcpus` (`docs/qemu.md#q-replug`), so the VM (`-smp 1,maxcpus=64`)
//! is restarted every 62 cycles.
//!
//! Prints the cycles done, the failures (any cycle whose lines, event or verdict were not
//! as expected), the SMM slot states at the end (replayed from the host ROM's SMM log),
//! and device_del → `DEVICE_DELETED` with SMM against the no-SMM baseline (the same
//! cycles on `-machine q35,smm=off` with the test image's knob
//! `opt/host-rom/baseline-no-smm`; there the OS ejects with status bit 3 itself, as
//! QEMU's AML does when firmware did not take CPU hot-unplug over) as a ratio.
//!
//! Run: `cargo bench -p qemu-tests --bench unplug [-- CYCLES [BASELINE_CYCLES]]`
//! (defaults 1000 and 200; also `UNPLUG_CYCLES`, `UNPLUG_BASELINE_CYCLES`).

use qemu_tests::unplug::*;
use qemu_tests::{check_qemu, lines_with, no_smm_qemu_candidates, Vm, VmConfig, KNOB_NO_SMM};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MAXCPUS: usize = 64;
/// Cycles per VM: the boot CPU plus this many vCPUs stay below `maxcpus`.
const PER_VM: usize = MAXCPUS - 2;
const T: Duration = Duration::from_secs(60);

#[derive(Default)]
struct Tally {
    cycles: usize,
    failures: Vec<String>,
    /// device_del → DEVICE_DELETED (QEMU's event timestamp), ms.
    deleted_ms: Vec<f64>,
    /// The payload's remove event → CPU gone after its eject, µs.
    os_us: Vec<f64>,
    /// device_add → the payload's PLUG line, ms.
    plug_ms: Vec<f64>,
    vms: usize,
    last_console: String,
    /// Each VM's SMM slot states at its end (replayed from its SMM log), with a count.
    end_states: std::collections::BTreeMap<String, usize>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(((v.len() as f64 - 1.0) * p) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split(key).nth(1)?.split(' ').next()?.parse().ok()
}

/// One VM of `cycles` cycles; adds what it saw to `t`.
fn one_vm(qemu: &Path, smm: bool, cycles: usize, t: &mut Tally) {
    let mut cfg = VmConfig::new(&format!("1,maxcpus={MAXCPUS}"))
        .test_image()
        .with_qmp()
        .fw_cfg("opt/payload/stay", "1")
        .fw_cfg(FW_UNPLUG, &cycles.to_string())
        .fw_cfg(FW_REPLUG, &cycles.to_string());
    cfg.qemu = Some(qemu.to_path_buf());
    if !smm {
        cfg.smm = false;
        cfg = cfg.fw_cfg(KNOB_NO_SMM.0, KNOB_NO_SMM.1);
    }
    t.vms += 1;
    let mut vm = match Vm::start(&cfg) {
        Ok(vm) => vm,
        Err(e) => {
            t.failures.push(format!("VM {}: start: {e}", t.vms));
            return;
        }
    };
    if let Err(e) = vm.wait_for_line(READY, T) {
        t.failures.push(format!("VM {}: not ready: {e}", t.vms));
        return;
    }
    let socket: Value = match vm.qmp.as_mut().unwrap().free_cpus() {
        Ok(f) => f[0].clone(),
        Err(e) => {
            t.failures
                .push(format!("VM {}: query-hotpluggable-cpus: {e}", t.vms));
            return;
        }
    };
    for i in 0..cycles {
        if let Err(e) = cycle(&mut vm, &socket, i, smm, t) {
            t.failures.push(format!("VM {} cycle {i}: {e}", t.vms));
            t.last_console = vm.output();
            return;
        }
        t.cycles += 1;
    }
    match vm.wait_for_line("RESULT:", T) {
        Ok(r) if r.starts_with("RESULT: PASS") => {}
        // Without SMM the payload's SMRAM checks fail by design: only the cycles count.
        Ok(_) if !smm => {}
        Ok(r) => t.failures.push(format!("VM {}: {r}", t.vms)),
        Err(e) => t.failures.push(format!("VM {}: no RESULT: {e}", t.vms)),
    }
    t.last_console = vm.output();
    if smm {
        let states = slot_states_line(&slot_states(&t.last_console));
        *t.end_states.entry(states).or_default() += 1;
    }
}

fn cycle(vm: &mut Vm, socket: &Value, i: usize, smm: bool, t: &mut Tally) -> Result<(), String> {
    let id = format!("c{i}");
    let q = vm.qmp.as_mut().unwrap();
    let t0 = Instant::now();
    q.device_add_cpu(socket, &id)?;
    let plug = vm
        .wait_for_lines("PLUG ", i + 1, T)?
        .pop()
        .unwrap_or_default();
    t.plug_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
    let want = if smm { "smi=ok" } else { "smi=not-queried" };
    if !plug.contains("online=true") || !plug.ends_with(want) {
        return Err(plug);
    }
    let q = vm.qmp.as_mut().unwrap();
    let sent = device_del(q, &id)?;
    let line = vm
        .wait_for_lines("UNPLUG ", i + 1, T)?
        .pop()
        .unwrap_or_default();
    if !line.contains(" gone=true at-smi-return=true status=0x00") {
        return Err(line);
    }
    if let Some(us) = field(&line, "remove-event-to-gone-us=") {
        t.os_us.push(us);
    }
    let q = vm.qmp.as_mut().unwrap();
    let d = wait_deleted(q, &id, sent, T)?;
    t.deleted_ms.push(d.as_secs_f64() * 1000.0);
    Ok(())
}

/// `total` cycles with SMM in VMs of at most [`PER_VM`] cycles, and `base_total`
/// baseline cycles spread over as many VMs, each baseline VM right after an SMM VM, so
/// that the host's load drifts alike for both sides. Returns both tallies and times.
fn soak(qemu: &Path, total: usize, base_total: usize) -> ((Tally, Duration), (Tally, Duration)) {
    let (mut smm, mut base) = (Tally::default(), Tally::default());
    let (mut t_smm, mut t_base) = (Duration::ZERO, Duration::ZERO);
    let vms = total.div_ceil(PER_VM).max(1);
    let base_per_vm = base_total.div_ceil(vms).min(PER_VM);
    let (mut left, mut base_left) = (total, base_total);
    while left > 0 || base_left > 0 {
        // A VM that stops early leaves its remaining cycles not done (and a failure).
        if left > 0 {
            let n = left.min(PER_VM);
            let t0 = Instant::now();
            one_vm(qemu, true, n, &mut smm);
            t_smm += t0.elapsed();
            left -= n;
        }
        if base_left > 0 {
            let n = base_left.min(base_per_vm.max(1));
            let t0 = Instant::now();
            one_vm(qemu, false, n, &mut base);
            t_base += t0.elapsed();
            base_left -= n;
        }
    }
    ((smm, t_smm), (base, t_base))
}

/// The first QEMU that re-plugs: `$QEMU_ALT`, else /opt/qemu10 (10.0.2's smm=off also
/// removes SMM, so the baseline runs there too).
fn replug_qemu() -> Option<PathBuf> {
    no_smm_qemu_candidates()
        .into_iter()
        .find(|q| qemu_replugs(q))
}

fn arg_or_env(pos: usize, env: &str, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(pos)
        .or_else(|| std::env::var(env).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn report(name: &str, t: &Tally, took: Duration) {
    println!(
        "{name}: {} cycles done in {} VM(s), {:.1} s ({:.1} ms/cycle); failures: {}",
        t.cycles,
        t.vms,
        took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / t.cycles.max(1) as f64,
        t.failures.len()
    );
    for f in t.failures.iter().take(5) {
        println!("  failure: {}", f.lines().next().unwrap_or(""));
    }
    println!(
        "  device_del -> DEVICE_DELETED ms: median {:.2}, p90 {:.2}, max {:.2}; remove event -> gone (payload) median {:.0} us; device_add -> online median {:.1} ms",
        median(&t.deleted_ms),
        pct(&t.deleted_ms, 0.9),
        pct(&t.deleted_ms, 1.0),
        median(&t.os_us),
        median(&t.plug_ms)
    );
}

fn main() {
    let cycles = arg_or_env(0, "UNPLUG_CYCLES", 1000);
    let base_cycles = arg_or_env(1, "UNPLUG_BASELINE_CYCLES", 200);
    let Some(qemu) = replug_qemu() else {
        println!("unplug soak unavailable: no QEMU that re-plugs CPUs ($QEMU_ALT or /opt/qemu10: 10.0.2); Debian's 7.2.22 aborts on a plug after an eject (docs/qemu.md#q-replug)");
        return;
    };
    let version = check_qemu(&qemu).unwrap_or_default();
    println!(
        "CPU hot-remove soak under TCG on {version} ({}), -smp 1,maxcpus={MAXCPUS}, VM restarted every {PER_VM} cycles",
        qemu.display()
    );
    let ((smm, took), (base, took_base)) = soak(&qemu, cycles, base_cycles);
    report("SMM (test image)", &smm, took);
    let states = slot_states(&smm.last_console);
    println!(
        "  SMRAM slot states at the end of the last VM (replayed from its SMM log): {}",
        slot_states_line(&states)
    );
    for (states, n) in &smm.end_states {
        println!("  SMRAM slot states at the end of {n} VM(s): {states}");
    }
    println!(
        "  SMM log of the last VM: {} relocated, {} ejected, {} old slots freed at re-plug, {} quarantined, {} error line(s)",
        smm.last_console.matches("relocated APIC ID").count(),
        smm.last_console.matches("[SMM INFO ] ejected APIC ID").count(),
        smm.last_console.matches("is back at the default SMBASE").count(),
        smm.last_console.matches("quarantined").count(),
        lines_with(&smm.last_console, "[SMM ERROR]").len()
    );
    if base.cycles == 0 {
        println!("no-SMM baseline: none done ({:?})", base.failures.first());
        std::process::exit(i32::from(!smm.failures.is_empty()));
    }
    report(
        "no-SMM baseline (smm=off, the OS ejects with bit 3; VMs interleaved with the SMM ones)",
        &base,
        took_base,
    );
    println!(
        "device_del -> DEVICE_DELETED, SMM / no-SMM (medians): {:.2}x; remove event -> gone in the OS: {:.2}x",
        median(&smm.deleted_ms) / median(&base.deleted_ms),
        median(&smm.os_us) / median(&base.os_us)
    );
    if !smm.failures.is_empty() {
        std::process::exit(1);
    }
}
