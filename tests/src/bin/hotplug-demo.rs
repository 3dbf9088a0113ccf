//! Demo of a CPU hot-add: boot the host ROM, let the payload (the OS role) wait, plug N
//! CPUs over QMP `device_add`, and print the console as it goes.
//! Usage: hotplug-demo [N (default 2)] [-smp value (default 1,maxcpus=4)]

use qemu_tests::{complete_lines, Vm, VmConfig, EXIT_PASS};
use std::time::{Duration, Instant};

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(2);
    let smp = args.next().unwrap_or_else(|| "1,maxcpus=4".into());
    let t = Duration::from_secs(120);
    let cfg = VmConfig::new(&smp)
        .with_qmp()
        .arg("-fw_cfg")
        .arg(&format!("name=opt/payload/hotplug,string={n}"));
    let mut vm = match Vm::start(&cfg) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("hotplug-demo: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = vm.wait_for_line("payload: ready for hotplug", t) {
        eprintln!("hotplug-demo: {e}");
        std::process::exit(1);
    }
    let mut shown = vm.output().len();
    print!("{}", vm.output());
    let q = vm.qmp.as_mut().expect("QMP");
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    for (i, cpu) in free.iter().take(n).enumerate() {
        println!(">>> QMP device_add {} ({})", cpu["props"], cpu["type"]);
        if let Err(e) = q.device_add_cpu(cpu, &format!("cpu-hp{i}")) {
            println!(">>> QEMU refused: {e}");
        }
    }
    let end = Instant::now() + t;
    // Until the whole RESULT line is on the console (never a prefix still being written).
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let out = vm.output();
        print!("{}", &out[shown.min(out.len())..]);
        shown = out.len();
        let done = complete_lines(&out, false).any(|l| l.starts_with("RESULT:"));
        if done || Instant::now() >= end {
            break;
        }
    }
    let o = vm.wait_exit(Duration::from_secs(10));
    print!("{}", &o.output[shown.min(o.output.len())..]);
    std::process::exit(if o.code() == Some(EXIT_PASS) { 0 } else { 1 });
}
