//! R1 (`docs/security.md#r1`): once the firmware has closed SMI feature negotiation, the
//! OS cannot redo it. The payload, as its first use of the SMI files, writes
//! `etc/smi/requested-features` with 0 and with 0x1 (broadcast without CPU hotplug) over
//! fw_cfg DMA and selects `etc/smi/features-ok` after each (`payload/src/renegotiate.rs`).
//! QEMU's own record of the negotiated features (QMP, ICH9-LPC
//! `x-smi-negotiated-features`) must still be the firmware's request afterwards, and CPU
//! hot-add, which QEMU allows only while CPU hotplug stays negotiated, must still work.

use qemu_tests::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(180);

/// `0x..` at the end of `line`, after `prefix`.
fn hex_after(line: &str, prefix: &str) -> Option<u64> {
    let v = line
        .split(prefix)
        .nth(1)?
        .split(|c: char| c == ';' || c.is_whitespace())
        .next()?;
    u64::from_str_radix(v.strip_prefix("0x")?, 16).ok()
}

#[test]
fn the_os_cannot_renegotiate_smi_features_after_the_firmware_locked_them() {
    let cfg = VmConfig::new("1,maxcpus=4")
        .with_qmp()
        .arg("-fw_cfg")
        .arg("name=opt/payload/renegotiate,string=0:0x1")
        .arg("-fw_cfg")
        .arg("name=opt/payload/hotplug,string=1")
        .arg("-fw_cfg")
        .arg("name=opt/payload/stay,string=1");
    let mut vm = Vm::start(&cfg).expect("start QEMU");
    let prefix = "payload: renegotiation: the firmware's request reads ";
    let line = vm.wait_for_line(prefix, T).unwrap();
    let firmware = hex_after(&line, prefix).unwrap_or_else(|| panic!("{}", vm.output()));
    let check = vm.wait_for_line("CHECK smi-renegotiation:", T).unwrap();
    assert!(
        check.starts_with("CHECK smi-renegotiation: PASS"),
        "{}",
        vm.output()
    );
    // The attempt is over once the payload waits for the hot-add.
    vm.wait_for_line("payload: ready for hotplug", T).unwrap();
    let out = vm.output();
    for v in ["0x0", "0x1"] {
        assert!(
            out.contains(&format!("requested-features := {v} (DMA write")),
            "{out}"
        );
    }
    assert_eq!(firmware, 7, "{out}");
    assert!(
        out.contains(says(
            "requested 0x7, granted (broadcast cpu-hotplug cpu-hot-unplug)",
            "requested and granted 0x7"
        )),
        "{out}"
    );
    let q = vm.qmp.as_mut().unwrap();
    assert_eq!(
        qemu_negotiated_smi_features(q),
        Some(firmware),
        "QEMU's negotiated features after the OS's attempt must be the firmware's request\n{out}"
    );
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    q.device_add_cpu(&free[0], "hp0")
        .expect("device_add after the attempt: QEMU still has CPU hotplug negotiated");
    let result = vm.wait_for_line("RESULT:", T).unwrap();
    let out = vm.output();
    assert!(result.starts_with("RESULT: PASS"), "{out}");
    assert!(out.contains("CHECK hotplug-count: PASS 1 of 1"), "{out}");
    let q = vm.qmp.as_mut().unwrap();
    assert_eq!(qemu_negotiated_smi_features(q), Some(firmware), "{out}");
}
