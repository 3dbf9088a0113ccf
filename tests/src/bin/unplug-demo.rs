//! Demo of a CPU hot-remove: boot the host ROM, plug N CPUs over QMP `device_add`, then
//! remove them with `device_del` while the payload plays the OS (offline, `CEJ0`, SMM
//! ejects); on a QEMU that re-plugs (10.0.2) the first socket is plugged again and must be
//! relocated. Prints the console as it goes and QEMU's view of each step.
//! Usage: unplug-demo [N (default 2)] [-smp value (default 1,maxcpus=4)]

use qemu_tests::unplug::*;
use qemu_tests::{complete_lines, qemu_binary, Vm, VmConfig};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

/// Print what the console gained since `shown`.
fn show(vm: &Vm, shown: &mut usize) {
    let out = vm.output();
    // Whole lines only (never one SMM or the payload is still writing).
    let end = out.rfind('\n').map_or(0, |i| i + 1);
    if end > *shown {
        print!("{}", &out[*shown..end]);
        *shown = end;
    }
}

fn main() {
    // `run` owns the VM, which stops QEMU when dropped; exit() afterwards.
    match run() {
        Ok(pass) => std::process::exit(if pass { 0 } else { 1 }),
        Err(e) => {
            eprintln!("unplug-demo: {e}");
            std::process::exit(1);
        }
    }
}

/// The demo; `Ok(whether the payload passed)`.
fn run() -> Result<bool, String> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let smp = args.next().unwrap_or_else(|| "1,maxcpus=4".into());
    let replug = qemu_binary().is_ok_and(|q| qemu_replugs(&q));
    let cfg = VmConfig::new(&smp)
        .with_qmp()
        // Stay up after the result: QMP is asked after the payload's last line.
        .fw_cfg("opt/payload/stay", "1")
        .fw_cfg("opt/payload/hotplug", &n.to_string())
        .fw_cfg(FW_UNPLUG, &n.to_string())
        .fw_cfg(FW_REPLUG, if replug { "1" } else { "0" });
    let mut vm = Vm::start(&cfg)?;
    let mut shown = 0;
    vm.wait_for_line("payload: ready for hotplug", T)?;
    show(&vm, &mut shown);
    let q = vm.qmp.as_mut().expect("QMP");
    let free = q.free_cpus()?;
    for (i, cpu) in free.iter().take(n).enumerate() {
        println!(
            ">>> QMP device_add {} ({}) id=cpu-hp{i}",
            cpu["props"], cpu["type"]
        );
        if let Err(e) = q.device_add_cpu(cpu, &format!("cpu-hp{i}")) {
            println!(">>> QEMU refused: {e}");
        }
    }
    vm.wait_for_line(READY, T)?;
    show(&vm, &mut shown);
    for i in 0..n {
        let id = format!("cpu-hp{i}");
        let q = vm.qmp.as_mut().expect("QMP");
        println!(">>> QMP device_del {id}");
        let sent = match device_del(q, &id) {
            Ok(s) => s,
            Err(e) => {
                println!(">>> QEMU refused: {e}");
                continue;
            }
        };
        let _ = vm.wait_for_lines("UNPLUG ", i + 1, T);
        show(&vm, &mut shown);
        let q = vm.qmp.as_mut().expect("QMP");
        match wait_deleted(q, &id, sent, T) {
            Ok(d) => println!(
                ">>> QMP event DEVICE_DELETED ({id}/lapic) {:.1} ms after device_del; query-cpus-fast: {} CPU(s)",
                d.as_secs_f64() * 1000.0,
                cpu_count(q).unwrap_or(0)
            ),
            Err(e) => println!(">>> {e}"),
        }
    }
    if replug {
        let q = vm.qmp.as_mut().expect("QMP");
        println!(
            ">>> QMP device_add {} id=cpu-hp0-again (re-plug of the first socket)",
            free[0]["props"]
        );
        if let Err(e) = q.device_add_cpu(&free[0], "cpu-hp0-again") {
            println!(">>> QEMU refused: {e}");
        }
    } else {
        println!(
            ">>> no re-plug: this QEMU aborts on a CPU plug after an eject (docs/qemu.md#q-replug); QEMU=/opt/qemu10/qemu-system-x86_64 shows it"
        );
    }
    let end = Instant::now() + T;
    let pass = loop {
        std::thread::sleep(Duration::from_millis(20));
        show(&vm, &mut shown);
        let out = vm.output();
        let result = complete_lines(&out, false).find(|l| l.starts_with("RESULT:"));
        if let Some(r) = result {
            break r.starts_with("RESULT: PASS");
        }
        if Instant::now() >= end {
            break false;
        }
    };
    if let Some(q) = vm.qmp.as_mut() {
        println!(">>> query-cpus-fast: {} CPU(s)", cpu_count(q).unwrap_or(0));
    }
    Ok(pass)
}
