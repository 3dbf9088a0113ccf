//! R5 (`docs/security.md#r5`): the register block is untrusted input, and OS CPUs outside
//! SMM can move its selector at any moment. In the payload's `selector-hammer` variant
//! (`payload/src/selector_hammer.rs`) an AP, and the BSP after each of its 100 APMC 4
//! writes, write the selector (I/O 0xCD8) in a tight loop while SMM services a hot-add:
//! the CPUs that take the SMI lock after the first one scan the register block while the
//! others are back in OS code hammering. The race is probabilistic under TCG: against the
//! scan before the fix (status of one selector, APIC ID of whichever the selector is by
//! then) this test failed in about half of its runs, never with the fix. The hot-added CPU must still be relocated into a slot of its
//! own (at the latest by the APMC 4 the payload raises once more after the hammer stopped,
//! as the OS's AML would on the next GPE), SMM must never send IPIs to a possible CPU
//! that was not plugged (its "never arrived" line), and nothing may hang.

use qemu_tests::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(180);

/// The APIC IDs SMM gave up on: `[SMM WARN ] APIC ID <n> never arrived ...`.
fn never_arrived(out: &str) -> Vec<u32> {
    out.lines()
        .filter(|l| l.contains("never arrived"))
        .filter_map(|l| l.split("APIC ID ").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// Plug `n` CPUs into `-smp smp` while the selector is hammered; returns the console.
fn hammered_hot_add(smp: &str, n: usize) -> String {
    let cfg = VmConfig::new(smp)
        .with_qmp()
        .arg("-fw_cfg")
        .arg(&format!("name=opt/payload/hotplug,string={n}"))
        .arg("-fw_cfg")
        .arg("name=opt/payload/hotplug-variant,string=selector-hammer");
    let mut vm = Vm::start(&cfg).expect("start QEMU");
    vm.wait_for_line("payload: ready for hotplug", T)
        .expect("payload ready");
    let q = vm.qmp.as_mut().unwrap();
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    for (i, cpu) in free.iter().take(n).enumerate() {
        q.device_add_cpu(cpu, &format!("hp{i}"))
            .expect("device_add");
    }
    let o = vm.wait_exit(T);
    assert!(!o.timed_out, "hung:\n{}", o.output);
    o.assert_pass();
    let out = o.output;
    let hammer = lines_with(&out, "CHECK selector-hammer: ");
    assert_eq!(hammer.len(), 1, "{out}");
    assert!(
        hammer[0].starts_with("CHECK selector-hammer: PASS"),
        "{out}"
    );
    assert!(
        out.contains("APMC 4 once more with the hammer stopped"),
        "{out}"
    );
    assert!(
        out.contains(&format!("CHECK hotplug-count: PASS {n} of {n}")),
        "{out}"
    );
    // Each hot-added CPU in a slot of its own (the payload's HOTPLUG lines come from
    // the diagnostic query, which the test image answers).
    let hotplug = lines_with(&out, "HOTPLUG ");
    assert_eq!(hotplug.len(), n, "{out}");
    assert!(hotplug.iter().all(|l| l.ends_with("smi=ok")), "{out}");
    let plugged: Vec<u32> = hotplug
        .iter()
        .filter_map(|l| l.split("apic=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(plugged.len(), n, "{out}");
    // Nothing is ejected here: a slot SMM frees would belong to a live CPU that a
    // hammered status read made look absent.
    let freed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("[SMM") && l.contains(" freed"))
        .collect();
    assert!(
        freed.is_empty(),
        "SMM freed slots of live CPUs: {freed:?}\n{out}"
    );
    for apic in never_arrived(&out) {
        assert!(
            plugged.contains(&apic),
            "SMM sent IPIs to APIC ID {apic}, which was never plugged\n{out}"
        );
    }
    assert_eq!(
        out.matches("[SMM INFO ] relocated APIC ID").count(),
        n,
        "{out}"
    );
    out
}

/// One test, so the two VMs run one after the other: the race needs the hammering vCPU
/// and the scanning one on host CPUs at the same time, which parallel VMs make rarer.
#[test]
fn cpus_hammering_the_selector_during_apmc4_mislead_no_scan() {
    hammered_hot_add("2,maxcpus=8", 1);
    // APIC IDs 0,1,2 and 4,5,6; two new CPUs.
    hammered_hot_add("2,maxcpus=6,sockets=2,cores=3", 2);
}
