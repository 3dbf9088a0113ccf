//! The two host ROM images. The production ROM (`build/host-rom.rom`) has no test knobs
//! and answers the diagnostic query only during its boot phase; the checker payload then
//! reports the per-CPU slot checks as skipped and still checks the rest. The test image
//! (`build/host-rom-test.rom`) has both; its knobs act only on their exact values and
//! never where they would be unsafe.

use qemu_tests::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(180);
const ABSENT: &str = "diagnostic query not built into this firmware (test image: build/host-rom-test.rom, coreboot: CONFIG_CPU_HOTPLUG_RUST_DIAG_QUERY)";

fn has(output: &str, needle: &str) {
    assert!(output.contains(needle), "missing {needle:?}:\n{output}");
}

fn lacks(output: &str, needle: &str) {
    assert!(!output.contains(needle), "unexpected {needle:?}:\n{output}");
}

/// The checks that say SMM is set up and locked, as the payload reports them.
fn smram_locked(output: &str) {
    for c in [
        "CHECK smram-d_lck: PASS",
        "CHECK tseg-enabled-and-locked: PASS",
        "CHECK tseg-unreadable: PASS",
        "CHECK default-smbase-smram-locked: PASS",
    ] {
        has(output, c);
    }
}

#[test]
fn the_production_rom_does_not_contain_the_test_knobs() {
    let prod = std::fs::read(host_rom_image(PRODUCTION_ROM)).unwrap();
    let test = std::fs::read(host_rom_image(TEST_ROM)).unwrap();
    let contains = |hay: &[u8], s: &str| hay.windows(s.len()).any(|w| w == s.as_bytes());
    for (file, value) in [KNOB_OPEN_WINDOW, KNOB_NO_SMM, KNOB_ONE_STACK] {
        assert!(!contains(&prod, file), "{PRODUCTION_ROM} names {file}");
        assert!(!contains(&prod, value), "{PRODUCTION_ROM} names {value}");
        assert!(contains(&test, file), "{TEST_ROM} lacks {file}");
    }
}

#[test]
fn the_production_rom_boots_two_of_four_cpus_and_the_payload_reports_the_query_absent() {
    let o = boot(&VmConfig::new("2,maxcpus=4").production_image(), T);
    o.assert_pass();
    // The boot code still checks every CPU's slot with the query during boot.
    has(&o.output, "CPU APIC 0: SMI served by slot 0");
    has(&o.output, "CPU APIC 1: SMI served by slot 1");
    has(&o.output, "diagnostic query after boot: off");
    has(&o.output, "payload: cpus present=2 possible=4");
    has(&o.output, "CHECK aps-started: PASS 1 of 1");
    has(&o.output, &format!("CHECK cpu-smi-slots: SKIP {ABSENT}"));
    has(&o.output, "skipped)");
    smram_locked(&o.output);
    has(
        &o.output,
        "features-ok=1 negotiated: broadcast cpu-hotplug cpu-hot-unplug",
    );
    assert!(
        lines_with(&o.output, "CPU apic=").is_empty(),
        "{}",
        o.output
    );
    lacks(&o.output, "TEST IMAGE");
}

#[test]
fn the_production_rom_hot_adds_a_cpu_and_the_payload_reports_the_query_absent() {
    let cfg = VmConfig::new("1,maxcpus=4")
        .production_image()
        .with_qmp()
        .fw_cfg("opt/payload/hotplug", "1");
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for("payload: ready for hotplug", T).unwrap();
    let q = vm.qmp.as_mut().unwrap();
    let free = q.free_cpus().unwrap();
    q.device_add_cpu(&free[0], "hp0").unwrap();
    let o = vm.wait_exit(T);
    o.assert_pass();
    has(&o.output, "CHECK hotplug-count: PASS 1 of 1");
    has(
        &o.output,
        "HOTPLUG selector=1 apic=1 online=true slot=unknown",
    );
    has(&o.output, "CHECK hotplug-cpu: PASS APIC 1 online");
    has(
        &o.output,
        &format!("CHECK hotplug-cpu-slots: SKIP {ABSENT}"),
    );
    has(&o.output, "CHECK smram-locked-after-hotplug: PASS");
    assert_eq!(
        o.output.matches("[SMM INFO ] relocated APIC ID 1").count(),
        1,
        "{}",
        o.output
    );
    smram_locked(&o.output);
}

/// Boot `cfg` (which keeps QEMU running after the result), wait for the whole RESULT
/// line and return the console and QEMU's own record of the negotiated SMI features.
fn result_and_negotiation(cfg: VmConfig) -> (String, String, Option<u64>) {
    let mut vm = Vm::start(&cfg.with_qmp().fw_cfg("opt/payload/stay", "1")).unwrap();
    let line = vm.wait_for_line("RESULT:", T).unwrap();
    let q = vm.qmp.as_mut().unwrap();
    let f = qemu_negotiated_smi_features(q);
    (line, vm.output(), f)
}

#[test]
fn the_production_rom_ignores_the_open_window_knob() {
    let cfg = VmConfig::new("1,maxcpus=4")
        .production_image()
        .with_qmp()
        .fw_cfg(KNOB_OPEN_WINDOW.0, KNOB_OPEN_WINDOW.1)
        .fw_cfg("opt/payload/hotplug", "1")
        .fw_cfg("opt/payload/hotplug-variant", "attack")
        .fw_cfg("opt/payload/stay", "1");
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for("payload: ready for hotplug", T).unwrap();
    let q = vm.qmp.as_mut().unwrap();
    let free = q.free_cpus().unwrap();
    q.device_add_cpu(&free[0], "hp0").unwrap();
    let line = vm.wait_for_line("RESULT:", T).unwrap();
    let out = vm.output();
    assert!(line.starts_with("RESULT: PASS"), "{out}");
    lacks(&out, "INSECURE");
    lacks(&out, KNOB_OPEN_WINDOW.0);
    has(&out, "CHECK attack-nothing-planted-ran-in-smm: PASS");
    has(&out, "CHECK hotplug-count: PASS 1 of 1");
    smram_locked(&out);
    has(&out, "CHECK smram-locked-after-hotplug: PASS");
    has(
        &out,
        "CHECK smi-features: PASS supported=0x7 requested=0x7 features-ok=1",
    );
    let q = vm.qmp.as_mut().unwrap();
    assert_eq!(qemu_negotiated_smi_features(q), Some(7), "{out}");
}

#[test]
fn the_production_rom_ignores_the_no_smm_baseline_knob() {
    let (line, out, features) = result_and_negotiation(
        VmConfig::new("2,maxcpus=4")
            .production_image()
            .fw_cfg(KNOB_NO_SMM.0, KNOB_NO_SMM.1),
    );
    assert!(line.starts_with("RESULT: PASS"), "{out}");
    lacks(&out, "BASELINE");
    lacks(&out, "FATAL");
    smram_locked(&out);
    has(
        &out,
        "CHECK smi-features: PASS supported=0x7 requested=0x7 features-ok=1",
    );
    assert_eq!(features, Some(7), "{out}");
}

#[test]
fn the_test_image_ignores_a_knob_with_another_value() {
    host_rom_only!();
    let (line, out, features) = result_and_negotiation(
        VmConfig::new("2,maxcpus=4")
            .test_image()
            .fw_cfg(KNOB_OPEN_WINDOW.0, "no")
            .fw_cfg(KNOB_NO_SMM.0, "1"),
    );
    assert!(line.starts_with("RESULT: PASS"), "{out}");
    has(&out, "TEST IMAGE");
    for (file, value) in [KNOB_OPEN_WINDOW, KNOB_NO_SMM] {
        has(
            &out,
            &format!("[WARN ] host-rom: {file} ignored: this knob acts only on the exact value \"{value}\""),
        );
    }
    lacks(&out, "INSECURE");
    lacks(&out, "BASELINE");
    smram_locked(&out);
    assert_eq!(features, Some(7), "{out}");
}

const HAS_SMM: &str = "FATAL: no-SMM baseline (test knob): this machine has SMM; the baseline needs -machine smm=off on a QEMU whose smm=off removes SMM, e.g. 10.0.2";

#[test]
fn the_baseline_knob_on_a_machine_with_smm_stops_the_boot() {
    host_rom_only!();
    let cfg = VmConfig::new("1,maxcpus=4")
        .test_image()
        .fw_cfg(KNOB_NO_SMM.0, KNOB_NO_SMM.1);
    let o = boot(&cfg, T);
    assert_eq!(o.code(), Some(EXIT_FIRMWARE_FATAL), "{}", o.output);
    has(&o.output, HAS_SMM);
    lacks(&o.output, "payload: entered");
    // Debian's 7.2 keeps SMM with smm=off (measured): the baseline refuses it too.
    if qemu_version().contains("version 7.") {
        let mut off = cfg.clone();
        off.smm = false;
        let o = boot(&off, T);
        assert_eq!(o.code(), Some(EXIT_FIRMWARE_FATAL), "{}", o.output);
        has(&o.output, HAS_SMM);
        lacks(&o.output, "payload: entered");
    }
}

#[test]
fn the_baseline_on_a_machine_without_smm_negotiates_nothing_and_device_add_works() {
    host_rom_only!();
    let mut cfg = VmConfig::new("1,maxcpus=4")
        .test_image()
        .with_qmp()
        .fw_cfg(KNOB_NO_SMM.0, KNOB_NO_SMM.1)
        .fw_cfg("opt/payload/hotplug", "1");
    cfg.smm = false;
    let mut vm = Vm::start(&cfg).unwrap();
    if let Err(e) = vm.wait_for("payload: ready for hotplug", T) {
        // This QEMU keeps SMM with smm=off (Debian's 7.2): the baseline refused to run.
        assert!(e.contains(HAS_SMM), "{e}");
        eprintln!(
            "no-SMM baseline not available on {}: smm=off keeps SMM",
            qemu_version()
        );
        return;
    }
    let q = vm.qmp.as_mut().unwrap();
    let free = q.free_cpus().unwrap();
    q.device_add_cpu(&free[0], "hp0")
        .expect("device_add on a machine without SMM and without negotiated SMI features");
    let o = vm.wait_exit(T);
    has(&o.output, "BASELINE: no SMM set up at all");
    has(
        &o.output,
        "BASELINE: SMI features not negotiated (a firmware without SMM)",
    );
    lacks(&o.output, "granted (");
    has(&o.output, "payload: SMRAM is not locked: no SMM");
    has(&o.output, "CHECK hotplug-count: PASS 1 of 1");
}

/// The fail-closed gate tests the locks instead of reading them back: on a machine without
/// SMM (10.0.2's `smm=off` keeps the MCH registers and their lock bits but no SMRAM) the
/// production ROM must stop before the payload, never saying SMRAM is locked. Where
/// `smm=off` keeps SMM (Debian's 7.2.22), the ROM locks it for real and the payload's own
/// checks from the OS side must agree.
#[test]
fn on_a_machine_without_smm_the_rom_never_claims_smram_locked() {
    let mut cfg = VmConfig::new("1,maxcpus=2");
    cfg.smm = false;
    if !testing_host_rom() {
        return coreboot_never_claims_smram_locked(&cfg);
    }
    let cfg = cfg.production_image();
    let o = boot(&cfg, T);
    if o.output.contains("SMRAM locked") {
        eprintln!(
            "{}: smm=off keeps SMM; the payload checks the locks",
            qemu_version()
        );
        o.assert_pass();
        return;
    }
    assert_eq!(o.code(), Some(EXIT_FIRMWARE_FATAL), "{}", o.output);
    let fatal = lines_with(&o.output, "[ERROR] host-rom: FATAL: ");
    assert_eq!(fatal.len(), 1, "{}", o.output);
    lacks(&o.output, "payload: entered");
    eprintln!("{}: smm=off stops the boot: {}", qemu_version(), fatal[0]);
}

/// The same on a coreboot.rom: its gate (`cpu_hotplug_check_smram_locked`) either claims
/// the locks after testing them or `die()`s before the payload, which halts the machine.
fn coreboot_never_claims_smram_locked(cfg: &VmConfig) {
    let mut vm = Vm::start(cfg).unwrap();
    let line = vm
        .wait_for_line_containing("CPU hotplug: SMRAM ", T)
        .unwrap_or_else(|e| panic!("{e}\n{}", vm.output()));
    if line.contains("SMRAM tested closed and locked") {
        eprintln!(
            "{}: smm=off keeps SMM; the payload checks the locks",
            qemu_version()
        );
        let o = vm.wait_exit(T);
        o.assert_pass();
        return;
    }
    assert!(
        line.contains("SMRAM is not locked (") && line.contains("not starting the payload"),
        "{line}\n{}",
        vm.output()
    );
    // Give a payload that should not start the time to say so.
    std::thread::sleep(Duration::from_secs(2));
    let out = vm.output();
    lacks(&out, "payload: entered");
    lacks(&out, "SMRAM tested closed and locked");
    let why: Vec<&str> = out.lines().filter(|l| l.contains("[ERROR]")).collect();
    assert!(
        !why.is_empty(),
        "no ERROR line says which test failed:\n{out}"
    );
    eprintln!(
        "{}: smm=off stops the boot: {line} after {why:?}",
        qemu_version()
    );
}
