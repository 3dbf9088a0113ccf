//! Losing the SMI-lock owner mid-hot-add (`docs/security.md#r11`, `#r15`;
//! `docs/protocol.md#lost-monarch-recovery`): an AP becomes the monarch of an APMC 4
//! service that waits in the arrival barrier for a CPU hot-added over QMP, and the OS (the
//! payload, `payload/src/lock_owner.rs`, fw_cfg `opt/payload/lock-owner`) INITs or ejects
//! that AP mid-service. The normal hot-add afterwards must relocate the new CPU into a
//! slot of its own, and no CPU may be left in SMM (HMP `info registers -a` after the
//! payload's result, with `opt/payload/stay`).
//!
//! On the host ROM the owner-aware SMI lock is `smm_handler::entry::SmiLock`; on coreboot
//! it is coreboot's own lock with patch 6 and the hooks of `coreboot-config/` (the
//! assertions on SMM's log lines are host-ROM-only). Against a lock without the takeover
//! (only same-CPU recovery, 60 s bound) both tests fail: the INIT'd monarch never reaches the lock again
//! (the slot stub sends a CPU in the INIT reset state to the pen), the ejected one no
//! longer exists, so the BSP waits out 60 s, leaves the new CPU at the gate inside SMM and
//! the hot-add fails.

use qemu_tests::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(180);

/// The ROM's first log line; the boot code runs exactly once per VM.
fn rom_starting() -> &'static str {
    says("host-rom: starting", "bootblock starting")
}
/// SMM's log lines of the two ways the lock comes back: a waiter takes over from a
/// monarch without progress, or the owner finds its own mark. The host ROM's lock
/// names slots, coreboot's (patch 6) CPU numbers.
fn takeover() -> &'static str {
    says(
        "[SMM WARN ] SMI lock: the monarch in slot ",
        "[SMM WARN ] SMI lock: CPU ",
    )
}
fn same_cpu() -> &'static str {
    says(
        "[SMM WARN ] SMI lock of slot ",
        "[SMM WARN ] SMI lock of CPU ",
    )
}

/// What a run left behind.
struct Run {
    /// The serial console.
    out: String,
    /// The payload's result line.
    result: String,
    /// HMP `info registers -a` after the result.
    regs: String,
    /// CPUs QEMU lists (`query-cpus-fast`) after the result.
    cpus: usize,
}

/// Boot `-smp 2,maxcpus=4` with the job, plug one CPU when the payload is ready, wait for
/// the result and read every CPU's registers while QEMU stays up.
fn lose_the_owner(job: &str) -> Run {
    let cfg = VmConfig::new("2,maxcpus=4")
        .with_qmp()
        .fw_cfg("opt/payload/lock-owner", job)
        .fw_cfg("opt/payload/hotplug", "1")
        .fw_cfg("opt/payload/stay", "1");
    let mut vm = Vm::start(&cfg).expect("start QEMU");
    vm.wait_for_line("payload: lock-owner: ready for hotplug", T)
        .expect("payload ready");
    let q = vm.qmp.as_mut().unwrap();
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    q.device_add_cpu(&free[0], "hp0").expect("device_add");
    let result = vm
        .wait_for_line("RESULT:", T)
        .unwrap_or_else(|e| panic!("no result: {e}"));
    let q = vm.qmp.as_mut().unwrap();
    let regs = q.hmp("info registers -a").expect("info registers -a");
    let cpus = q
        .execute("query-cpus-fast", serde_json::json!({}))
        .expect("query-cpus-fast")
        .as_array()
        .map_or(0, Vec::len);
    let out = vm.output();
    if std::env::var_os("QEMU_TESTS_SHOW").is_some() {
        eprintln!("--- serial ---\n{out}");
    }
    Run {
        out,
        result,
        regs,
        cpus,
    }
}

/// The `SMM=` flag of every CPU in `info registers -a`.
fn smm_flags(regs: &str) -> Vec<bool> {
    regs.split_whitespace()
        .filter_map(|w| w.strip_prefix("SMM="))
        .map(|v| v != "0")
        .collect()
}

/// What both jobs require: the loss happened mid-service, the lock came back, the new
/// CPU was relocated into a slot of its own and came online, nothing ran the firmware's
/// boot code again, and no CPU is in SMM.
fn assert_recovered(r: &Run, cpus: usize) {
    let out = &r.out;
    let lost = lines_with(out, "payload: lock-owner: ");
    assert!(
        lost.iter()
            .any(|l| l.contains("(the SMI-lock owner)") && l.ends_with(": true")),
        "the loss did not happen while the monarch waited in the barrier:\n{out}"
    );
    assert!(
        out.contains("CHECK lock-owner-lost-mid-service: PASS"),
        "{out}"
    );
    assert!(
        r.result.starts_with("RESULT: PASS"),
        "{}\n--- serial ---\n{out}",
        r.result
    );
    assert!(out.contains("CHECK hotplug-count: PASS 1 of 1"), "{out}");
    let hot = lines_with(out, "HOTPLUG ");
    assert_eq!(hot.len(), 1, "{out}");
    assert!(hot[0].ends_with("smi=ok"), "{out}");
    let smm = smm_flags(&r.regs);
    assert_eq!(r.cpus, cpus, "CPUs QEMU lists:\n{}", r.regs);
    assert_eq!(smm.len(), cpus, "one SMM= flag per CPU:\n{}", r.regs);
    assert!(
        smm.iter().all(|&in_smm| !in_smm),
        "a CPU is left in SMM:\n{}\n--- serial ---\n{out}",
        r.regs
    );
    assert!(
        out.contains(takeover()) || out.contains(same_cpu()),
        "SMM logged neither a takeover nor a same-CPU recovery of the lock:\n{out}"
    );
    assert_eq!(
        out.matches("[SMM INFO ] relocated APIC ID").count(),
        1,
        "{out}"
    );
    assert_eq!(out.matches(rom_starting()).count(), 1, "{out}");
}

/// The slot the new CPU got, from its `HOTPLUG` line.
fn hotplug_slot(out: &str) -> i64 {
    let l = lines_with(out, "HOTPLUG ");
    l[0].split_whitespace()
        .find_map(|w| w.strip_prefix("slot="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no slot in {l:?}"))
}

#[test]
fn an_init_to_the_smi_lock_owner_mid_hot_add_leaves_hot_add_working_and_no_cpu_in_smm() {
    let r = lose_the_owner("init");
    // BSP, AP (INIT'd, then brought back) and the new CPU.
    let out = &r.out;
    assert!(
        out.contains("CHECK lock-owner-back: PASS")
            || (out.contains("CHECK lock-owner-back: SKIP")
                && out.contains("diagnostic query not built into this firmware")),
        "{out}"
    );
    // The AP kept slot 1; the new CPU got another.
    assert_ne!(hotplug_slot(out), 1, "{out}");
    assert_recovered(&r, 3);
    // On the host ROM the INIT'd CPU never reaches the lock again on its own: its next SMI
    // found it in the INIT reset state and the slot stub sent it to the pen. So a waiter
    // took over. coreboot's slot stub has no such check: the CPU the OS started again
    // finds its own mark at its next SMI and recovers (either is checked above).
    if testing_host_rom() {
        assert!(out.contains(takeover()), "no takeover:\n{out}");
    }
}

#[test]
fn an_eject_of_the_smi_lock_owner_mid_hot_add_leaves_hot_add_working_and_its_slot_unused() {
    let r = lose_the_owner("eject");
    // BSP and the new CPU: the AP is gone.
    let out = &r.out;
    assert!(
        out.contains("CHECK lock-owner-slot-kept: PASS")
            || out.contains("CHECK lock-owner-slot-kept: SKIP"),
        "{out}"
    );
    assert_ne!(
        hotplug_slot(out),
        1,
        "the ejected CPU's slot was reused:\n{out}"
    );
    assert_recovered(&r, 2);
    assert!(out.contains(takeover()), "no takeover:\n{out}");
    // The handler saw QEMU report the CPU absent and kept its slot for it.
    assert!(
        out.contains("[SMM INFO ] APIC ID 1 is gone (ejected by the OS); slot 1 kept for it"),
        "{out}"
    );
}
