//! Boot the host ROM in QEMU q35 (smm=on, TCG) and check the payload's report.

use qemu_tests::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);

fn boot_pass(smp: &str, present: usize, possible: usize) -> Outcome {
    let o = boot(&VmConfig::new(smp), T);
    o.assert_pass();
    assert!(
        o.output.contains(&format!(
            "payload: cpus present={present} possible={possible}"
        )),
        "{}",
        o.output
    );
    let cpus = lines_with(&o.output, "CPU apic=");
    assert_eq!(cpus.len(), present, "{}", o.output);
    assert!(cpus.iter().all(|l| l.ends_with("smi=ok")), "{}", o.output);
    let mut slots: Vec<&str> = cpus
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(
        slots.len(),
        present,
        "each CPU needs its own slot: {}",
        o.output
    );
    let locked = says("SMRAM locked: TSEG", "SMRAM tested closed and locked");
    assert!(o.output.contains(locked), "{}", o.output);
    o
}

#[test]
fn one_cpu_of_eight_possible_boots_to_pass() {
    let o = boot_pass("1,maxcpus=8", 1, 8);
    assert!(
        o.output.contains(says("for 8 slots", "8 SMM slot(s)")),
        "SMM slots for every possible CPU: {}",
        o.output
    );
}

#[test]
fn two_cpus_of_four_possible_boot_to_pass() {
    let o = boot_pass("2,maxcpus=4", 2, 4);
    let slots = says("for 4 slots", "4 SMM slot(s)");
    assert!(o.output.contains(slots), "{}", o.output);
}

#[test]
fn four_cpus_all_present_boot_to_pass() {
    boot_pass("4", 4, 4);
}

#[test]
fn topology_with_apic_id_holes_boots_to_pass() {
    // 2 sockets x 3 cores: APIC IDs 0,1,2,4,5,6.
    let o = boot_pass("2,maxcpus=6,sockets=2,cores=3", 2, 6);
    let counted = says("APIC-ID limit 7", "present 2, possible 6,");
    assert!(o.output.contains(counted), "{}", o.output);
}

#[test]
fn all_smi_features_are_negotiated_and_qemu_agrees() {
    let cfg = VmConfig::new("2,maxcpus=4")
        .with_qmp()
        .arg("-fw_cfg")
        .arg("name=opt/payload/stay,string=1");
    let mut vm = Vm::start(&cfg).unwrap();
    let result = vm.wait_for_line("RESULT:", T).unwrap();
    let out = vm.output();
    assert!(result.starts_with("RESULT: PASS"), "{out}");
    assert!(
        out.contains(says(
            "granted (broadcast cpu-hotplug cpu-hot-unplug)",
            "requested and granted 0x7"
        )),
        "{out}"
    );
    let q = vm.qmp.as_mut().unwrap();
    assert_eq!(
        qemu_negotiated_smi_features(q),
        Some(7),
        "QEMU's view of the negotiated features"
    );
}

#[test]
fn boot_without_qemu_hotplug_features_still_locks_smm_and_says_what_is_missing() {
    let cfg = VmConfig::new("1,maxcpus=4")
        .arg("-global")
        .arg("ICH9-LPC.x-smi-cpu-hotplug=off")
        .arg("-global")
        .arg("ICH9-LPC.x-smi-cpu-hotunplug=off");
    let o = boot(&cfg, T);
    o.assert_pass();
    assert!(
        o.output.contains(says(
            "supported 0x1, wanted 0x7, requested 0x1, granted (broadcast)",
            "SMI features supported 0x1, requested and granted 0x1"
        )),
        "{}",
        o.output
    );
    assert!(
        o.output.contains("CPU hotplug with SMM not negotiated"),
        "{}",
        o.output
    );
    assert!(
        o.output
            .contains("not negotiated: cpu-hotplug cpu-hot-unplug"),
        "{}",
        o.output
    );
    assert!(o.output.contains("CHECK smram-d_lck: PASS"), "{}", o.output);
    assert!(
        o.output.contains("CHECK default-smbase-smram-locked: PASS"),
        "{}",
        o.output
    );
}

/// SMM slots the ROM under test lays out at most: the handler's 1024 on the host ROM, the
/// `MAX_CPUS` default of `coreboot-config/site-local/Kconfig` on a coreboot.rom (255, see
/// there why).
fn slot_limit() -> u32 {
    if testing_host_rom() {
        smm_handler::slots::MAX_SLOTS as u32
    } else {
        coreboot_max_cpus()
    }
}

#[test]
fn more_possible_cpus_than_smm_slots_turns_hotplug_off_but_boots() {
    let possible = slot_limit() + 16;
    if possible > 255 && qemu_major() < 10 {
        eprintln!(
            "skipped: {} refuses -smp maxcpus > 255 under TCG; the host ROM's 255 slots are \
             exceeded only on 10.0.2 (more_possible_cpus_than_slots_…)",
            qemu_version()
        );
        return;
    }
    // One present CPU: a coreboot.rom on 10.0.2 with two present and 256 or more possible
    // gives both the same SMBASE (coreboot-config/README.md, "Known limits").
    let o = boot(&VmConfig::new(&format!("1,maxcpus={possible}")), T);
    o.assert_pass();
    let refusal = format!(
        "{possible} possible CPUs exceed {} SMM slots: CPU hotplug not offered",
        slot_limit()
    );
    assert!(o.output.contains(&refusal), "{}", o.output);
    let granted = says("granted (broadcast)", "requested and granted 0x1");
    assert!(o.output.contains(granted), "{}", o.output);
}

#[test]
fn two_hundred_fifty_five_possible_cpus_negotiate_hotplug_and_the_highest_apic_id_gets_a_slot() {
    // Every xAPIC ID but the broadcast one: the most 7.2.22 starts under TCG.
    let cfg = VmConfig::new("1,maxcpus=255")
        .with_qmp()
        .fw_cfg("opt/payload/stay", "1");
    let mut vm = Vm::start(&cfg.fw_cfg("opt/payload/hotplug", "1")).unwrap();
    vm.wait_for_line("payload: ready for hotplug", T).unwrap();
    let q = vm.qmp.as_mut().unwrap();
    assert_eq!(qemu_negotiated_smi_features(q), Some(7));
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    assert_eq!(free.len(), 254);
    let last = free
        .iter()
        .find(|c| c["props"]["core-id"] == 254)
        .unwrap_or_else(|| panic!("no socket with core-id 254: {free:?}"));
    q.device_add_cpu(last, "hp0").expect("device_add");
    let result = vm.wait_for_line("RESULT:", T).unwrap();
    let out = vm.output();
    assert!(result.starts_with("RESULT: PASS"), "{out}");
    assert!(
        out.contains(says("for 255 slots", "255 SMM slot(s)")),
        "{out}"
    );
    let hot = lines_with(&out, "HOTPLUG ");
    assert_eq!(hot.len(), 1, "{out}");
    assert!(
        hot[0].contains("apic=254 online=true slot=1 ") && hot[0].ends_with("smi=ok"),
        "{out}"
    );
    assert!(
        out.contains("CHECK smram-locked-after-hotplug: PASS"),
        "{out}"
    );
}

/// The major version of the QEMU under test (0 when unknown).
fn qemu_major() -> u32 {
    qemu_version()
        .split("version ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

#[test]
fn the_most_possible_cpus_negotiate_hotplug_and_an_x2apic_cpu_gets_its_own_slot() {
    // As many possible CPUs as the ROM has slots: 1024 on the host ROM. 7.2.22 runs at
    // most 255 CPUs under TCG; 10.0.2 runs 1024 (and APIC IDs above 254).
    if qemu_major() < 10 {
        eprintln!(
            "skipped: {} refuses -smp maxcpus > 255 under TCG; this test runs on 10.0.2",
            qemu_version()
        );
        return;
    }
    // QEMU's qemu64 model lacks x2APIC; without it device_add of APIC ID 700 aborts the
    // whole VM ("APIC ID 700 requires x2APIC feature in CPU").
    let n = slot_limit();
    let cfg = VmConfig::new(&format!("1,maxcpus={n}"))
        .arg("-cpu")
        .arg("qemu64,x2apic=on")
        .with_qmp()
        .fw_cfg("opt/payload/stay", "1")
        .fw_cfg("opt/payload/hotplug", "1")
        .fw_cfg("opt/payload/hotplug-variant", "x2apic");
    let mut vm = Vm::start(&cfg).unwrap();
    vm.wait_for_line("payload: ready for hotplug", T).unwrap();
    let q = vm.qmp.as_mut().unwrap();
    assert_eq!(qemu_negotiated_smi_features(q), Some(7));
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    assert_eq!(free.len(), n as usize - 1);
    // One socket of n cores, one thread each: the core ID is the APIC ID.
    let apic = 700.min(n - 1);
    let cpu = free
        .iter()
        .find(|c| c["props"]["core-id"] == apic)
        .unwrap_or_else(|| panic!("no CPU with core-id {apic}: {:?}", &free[..3]));
    q.device_add_cpu(cpu, "hp0").expect("device_add");
    let result = vm.wait_for_line("RESULT:", T).unwrap();
    let out = vm.output();
    assert!(result.starts_with("RESULT: PASS"), "{out}");
    assert!(out.contains("CHECK x2apic-mode: PASS"), "{out}");
    let slots =
        format!("first-SMI handler installed, SMRAM at default SMBASE locked, {n} SMM slot(s)");
    assert!(out.contains(says("SMRAM used: handler", &slots)), "{out}");
    if testing_host_rom() {
        // 1024 slots of 1 KiB and a pool of 64 stacks take a 2 MiB TSEG (a small guest
        // keeps 1 MiB).
        assert!(out.contains("+2 MiB, D_LCK set"), "{out}");
        assert!(
            out.contains("stack pool 64 x 4096 bytes, per-CPU slot 1024 bytes"),
            "{out}"
        );
        assert!(out.contains("bytes for 1024 slots"), "{out}");
    }
    let hot = lines_with(&out, "HOTPLUG ");
    assert_eq!(hot.len(), 1, "{out}");
    assert!(
        hot[0].contains(&format!("apic={apic} online=true slot=1 ")) && hot[0].ends_with("smi=ok"),
        "{out}"
    );
    assert!(
        out.contains("CHECK smram-locked-after-hotplug: PASS"),
        "{out}"
    );
}

#[test]
fn more_possible_cpus_than_slots_boot_with_broadcast_only_and_qemu_refuses_device_add() {
    // Under TCG QEMU 7.2 refuses more than 255 CPUs ("current -smp configuration requires
    // kernel irqchip and X2APIC API support"); 10.0.2 accepts up to 4096.
    if qemu_major() < 10 {
        eprintln!(
            "skipped: {} refuses -smp maxcpus > 255 under TCG; this test runs on 10.0.2",
            qemu_version()
        );
        return;
    }
    let cfg = VmConfig::new("1,maxcpus=1100")
        .with_qmp()
        .arg("-fw_cfg")
        .arg("name=opt/payload/stay,string=1");
    let mut vm = Vm::start(&cfg).unwrap();
    let result = vm.wait_for_line("RESULT:", T).unwrap();
    let out = vm.output();
    assert!(result.starts_with("RESULT: PASS"), "{out}");
    assert!(
        out.contains("payload: cpus present=1 possible=1100\n"),
        "{out}"
    );
    assert!(
        out.contains("CHECK smi-features: PASS supported=0x7 requested=0x1 features-ok=1"),
        "broadcast only, negotiation closed: {out}"
    );
    for check in [
        "smram-d_lck",
        "tseg-unreadable",
        "default-smbase-smram-locked",
    ] {
        assert!(out.contains(&format!("CHECK {check}: PASS")), "{out}");
    }
    assert!(!out.contains("FATAL"), "{out}");
    let warn = format!(
        "{}1100 possible CPUs exceed {} SMM slots: CPU hotplug not offered",
        says("[WARN ] host-rom: ", "cpu hotplug: "),
        slot_limit()
    );
    assert!(out.lines().any(|l| l.contains(&warn)), "{out}");
    let granted = says(
        "granted (broadcast)\n",
        "SMI features supported 0x7, requested and granted 0x1",
    );
    assert!(out.contains(granted), "{out}");
    let locked = says("SMRAM locked: TSEG", "SMRAM tested closed and locked");
    assert!(out.contains(locked), "{out}");
    let q = vm.qmp.as_mut().unwrap();
    assert_eq!(
        qemu_negotiated_smi_features(q),
        Some(1),
        "QEMU's view: broadcast only"
    );
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    assert_eq!(free.len(), 1099);
    let e = q.device_add_cpu(&free[0], "hp0").unwrap_err();
    assert!(
        e.contains("cpu hotplug with SMI wasn't enabled by firmware"),
        "{e}"
    );
    let st = q.execute("query-status", serde_json::json!({})).unwrap();
    assert_eq!(st["status"], "running", "{st}");
}

#[test]
fn a_payload_that_is_not_an_elf_stops_the_boot_with_a_clear_error() {
    host_rom_only!();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.elf");
    std::fs::write(&bad, b"this is not an ELF file").unwrap();
    let cfg = VmConfig::new("1")
        .arg("-fw_cfg")
        .arg(&format!("name=opt/cbpayload,file={}", bad.display()));
    let o = boot(&cfg, T);
    assert_eq!(o.code(), Some(EXIT_FIRMWARE_FATAL), "{}", o.output);
    assert!(
        o.output
            .contains("payload opt/cbpayload does not load: NotElf"),
        "{}",
        o.output
    );
    assert!(!o.output.contains("payload: entered"), "{}", o.output);
}

#[test]
fn a_payload_that_loads_over_firmware_memory_is_refused() {
    host_rom_only!();
    // A valid ELF header whose one segment targets the firmware window (0x100000).
    let mut elf = vec![0u8; 64 + 56 + 16];
    elf[0..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2;
    elf[5] = 1;
    elf[6] = 1;
    elf[16..18].copy_from_slice(&2u16.to_le_bytes());
    elf[18..20].copy_from_slice(&62u16.to_le_bytes());
    elf[24..32].copy_from_slice(&0x100000u64.to_le_bytes());
    elf[32..40].copy_from_slice(&64u64.to_le_bytes());
    elf[54..56].copy_from_slice(&56u16.to_le_bytes());
    elf[56..58].copy_from_slice(&1u16.to_le_bytes());
    let ph = 64;
    elf[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes());
    elf[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes());
    elf[ph + 24..ph + 32].copy_from_slice(&0x100000u64.to_le_bytes());
    elf[ph + 32..ph + 40].copy_from_slice(&16u64.to_le_bytes());
    elf[ph + 40..ph + 48].copy_from_slice(&16u64.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("overlap.elf");
    std::fs::write(&p, &elf).unwrap();
    let cfg = VmConfig::new("1")
        .arg("-fw_cfg")
        .arg(&format!("name=opt/cbpayload,file={}", p.display()));
    let o = boot(&cfg, T);
    assert_eq!(o.code(), Some(EXIT_FIRMWARE_FATAL), "{}", o.output);
    assert!(o.output.contains("SegmentNotInRam"), "{}", o.output);
}

#[test]
fn the_payload_elf_loads_from_fw_cfg_like_a_coreboot_payload() {
    host_rom_only!();
    let (_, payload) = images();
    let cfg = VmConfig::new("2")
        .arg("-fw_cfg")
        .arg(&format!("name=opt/cbpayload,file={}", payload.display()));
    let o = boot(&cfg, T);
    o.assert_pass();
    assert!(
        o.output.contains("payload: fw_cfg opt/cbpayload"),
        "{}",
        o.output
    );
}

#[test]
fn an_old_machine_type_without_smi_negotiation_is_reported() {
    // pc-q35-2.8 predates SMI feature negotiation (2.9) and SMRAM at default SMBASE (5.0).
    let o = boot(
        &VmConfig::new("1").arg("-machine").arg("pc-q35-2.8,smm=on"),
        T,
    );
    assert!(
        o.output.contains(says(
            "QEMU offers no negotiation",
            "QEMU has no SMI feature negotiation"
        )),
        "{}",
        o.output
    );
    assert!(
        o.output.contains("no SMRAM at default SMBASE"),
        "{}",
        o.output
    );
    assert_eq!(o.code(), Some(EXIT_FAIL), "{}", o.output);
    assert!(
        o.output.contains("CHECK smi-features: FAIL"),
        "{}",
        o.output
    );
}

#[test]
fn a_missing_qemu_binary_gets_a_clear_error() {
    let e = check_qemu(std::path::Path::new("/nonexistent/qemu-system-x86_64")).unwrap_err();
    assert!(
        e.contains("QEMU not found") && e.contains("apt-get install -y qemu-system-x86"),
        "{e}"
    );
}

#[test]
fn too_little_ram_stops_the_boot_with_a_clear_error() {
    host_rom_only!();
    let mut cfg = VmConfig::new("1");
    cfg.mem_mb = 48;
    let o = boot(&cfg, T);
    assert_eq!(o.code(), Some(EXIT_FIRMWARE_FATAL), "{}", o.output);
    assert!(o.output.contains("needs at least 64 MiB"), "{}", o.output);
}
