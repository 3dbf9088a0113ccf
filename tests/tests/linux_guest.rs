//! An unmodified Debian kernel (`scripts/linux-guest`) with the busybox guest
//! (`tests/guest/init`) on the host ROM with SMM: the ROM boots it with QEMU's ACPI tables,
//! QEMU's own CPU-hotplug AML runs in Linux, and CPUs hot-added and removed over QMP are
//! relocated and ejected by SMM and brought online or ejected by Linux itself. After each
//! step SMRAM must still be locked as the OS sees it (PCI config of the MCH, TSEG and the
//! default-SMBASE window through `/dev/mem`), and every relocated CPU must have had a slot
//! of its own (SMM's log, on the same serial console). One scenario also runs without
//! SMM (the test image's baseline knob on a QEMU whose `smm=off` removes SMM).
//!
//! On a coreboot.rom (`HOST_ROM`), which boots Linux as its own payload from CBFS, the
//! scenarios with the default command line boot the ROM in `LINUX_ROM` instead
//! (`coreboot-config/configure --linux-test`) and read SMM's lines from the CBMEM console;
//! the no-SMM baseline is the host ROM's (a test knob). Skipped with a note when
//! `scripts/linux-guest` has not filled the cache; with `LINUX_GUEST_REQUIRED=1` (CI) they
//! fail instead.

use qemu_tests::linux::{self, boot, guest_or_skip, Side, STEP};
use qemu_tests::*;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Whether one guest may see more than one CPU removed: on Debian's 7.2.22 a second
/// removal after an eject can stall the guest on a loaded machine, with any firmware
/// (`docs/qemu.md#q-offline-stall`), so there each guest loses one CPU; 10.0.2 removes
/// them all.
fn several_removals() -> bool {
    let several = unplug::qemu_replugs(&qemu_binary().unwrap());
    if !several {
        eprintln!(
            "one removal per guest on {} (docs/qemu.md#q-offline-stall)",
            qemu_version()
        );
    }
    several
}

#[test]
fn linux_onlines_a_cpu_smm_relocated_ejects_it_on_device_del_and_takes_it_back() {
    let Some(g) = linux::guest_for_this_rom() else {
        return;
    };
    let mut v = boot(&g, "1,maxcpus=4", "", Side::Smm(None));
    v.assert_smram_locked("at boot");

    let (cpus, t) = v.plug(1, "hp");
    let new = v.nth_line("GUEST: new ", 1);
    // The kernel registers the CPU but leaves it offline; /init onlines it, as udev would.
    assert_eq!(new, "GUEST: new cpu=1 online=0", "{}", v.vm.output());
    let on = v.onlined(0, 1);
    let to_online = t.elapsed();
    assert_eq!(on, [(1, 1)]);
    v.assert_own_slots(&[1]);
    assert_eq!(v.status(), ("0-1".into(), "0-1".into()));
    v.assert_smram_locked("after the hot-add");

    // Linux's ACPI processor driver offlines the CPU and runs _EJ0; SMM ejects it.
    let Some(to_gone) = v.remove("hp0", 1) else {
        return;
    };
    assert_eq!(v.status(), ("0".into(), "0".into()));
    assert_eq!(unplug::cpu_count(v.qmp()).unwrap(), 1);
    let out = v.smm_log();
    assert!(
        out.contains("[SMM INFO ] ejected APIC ID 1; slot 1 kept for it"),
        "{out}"
    );
    v.assert_smram_locked("after the hot-remove");

    // The same socket again: SMM frees the old slot and relocates the CPU anew.
    if unplug::qemu_replugs(&qemu_binary().unwrap()) {
        let t = Instant::now();
        v.qmp()
            .device_add_cpu(&cpus[0], "hp0b")
            .expect("device_add");
        let again = v.onlined(1, 1);
        assert_eq!(again, [(1, 1)]);
        eprintln!("timing: re-plug -> online+pinned {:?}", t.elapsed());
        let out = v.smm_log();
        assert!(
            out.contains(
                "[SMM INFO ] APIC ID 1 is back at the default SMBASE: its old slot 1 freed"
            ),
            "{out}"
        );
        v.assert_own_slots(&[1]);
        v.assert_smram_locked("after the re-plug");
    } else {
        eprintln!("re-plug not tried: this QEMU dies on it (docs/qemu.md#q-replug)");
    }
    eprintln!(
        "timing ({}): device_add -> online+pinned {to_online:?}; device_del -> gone {to_gone:?}",
        qemu_version()
    );
    v.finish();
}

#[test]
fn three_cpus_added_back_to_back_come_online_in_slots_of_their_own_and_all_three_are_ejected() {
    let Some(g) = linux::guest_for_this_rom() else {
        return;
    };
    let mut v = boot(&g, "1,maxcpus=4", "", Side::Smm(None));
    let (_, t) = v.plug(3, "hp");
    let on = v.onlined(0, 3);
    eprintln!("timing: 3 x device_add -> all online {:?}", t.elapsed());
    let apics: BTreeSet<u32> = on.iter().map(|&(_, a)| a).collect();
    assert_eq!(apics, BTreeSet::from([1, 2, 3]), "{on:?}");
    v.assert_own_slots(&[1, 2, 3]);
    assert_eq!(v.status(), ("0-3".into(), "0-3".into()));
    v.assert_smram_locked("after three hot-adds");
    if !several_removals() {
        if v.remove("hp1", 1).is_none() {
            return;
        }
        assert_eq!(v.status(), ("0-1,3".into(), "0-1,3".into()));
        assert_eq!(unplug::cpu_count(v.qmp()).unwrap(), 3);
        v.assert_smram_locked("after a hot-remove");
        v.finish();
        return;
    }
    for (i, id) in ["hp1", "hp0", "hp2"].iter().enumerate() {
        if v.remove(id, i + 1).is_none() {
            return;
        }
    }
    assert_eq!(v.status(), ("0".into(), "0".into()));
    assert_eq!(unplug::cpu_count(v.qmp()).unwrap(), 1);
    v.assert_smram_locked("after three hot-removes");
    v.finish();
}

#[test]
fn linux_fills_up_to_maxcpus() {
    let Some(g) = linux::guest_for_this_rom() else {
        return;
    };
    let mut v = boot(&g, "1,maxcpus=8", "", Side::Smm(None));
    for n in 0..7 {
        v.plug(1, &format!("hp{n}-"));
        v.onlined(n, 1);
    }
    v.assert_own_slots(&[1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(v.status(), ("0-7".into(), "0-7".into()));
    assert!(v.qmp().free_cpus().unwrap().is_empty());
    v.assert_smram_locked("with every CPU plugged");
    v.finish();
}

#[test]
fn linux_fills_a_topology_with_apic_id_holes() {
    let Some(g) = linux::guest_for_this_rom() else {
        return;
    };
    // Two sockets of three cores: APIC IDs 0, 1, 2, 4, 5, 6 (3 and 7 are holes).
    let mut v = boot(&g, "2,maxcpus=6,sockets=2,cores=3", "", Side::Smm(None));
    let (_, _) = v.plug(4, "hp");
    if !unplug::qemu_replugs(&qemu_binary().unwrap()) {
        // Debian's 7.2.22: Linux registers all four but does not bring every one online,
        // with SeaBIOS and no SMM alike (docs/qemu.md#q-linux-holes). SMM's part holds.
        // (/init is stuck in that write: it takes no console commands any more, and the
        // CPUs after the stuck one may never be announced.) SMM relocated all four.
        let t = Instant::now();
        while t.elapsed() < STEP {
            let rel = linux::relocations(&v.smm_log());
            if [2, 4, 5, 6].iter().all(|a| rel.iter().any(|(r, _)| r == a)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        v.assert_own_slots(&[2, 4, 5, 6]);
        eprintln!(
            "QEMU DEFECT, onlining not checked: {} (docs/qemu.md#q-linux-holes)",
            qemu_version()
        );
        return;
    }
    let on = v.onlined(0, 4);
    let apics: BTreeSet<u32> = on.iter().map(|&(_, a)| a).collect();
    assert_eq!(apics, BTreeSet::from([2, 4, 5, 6]), "{on:?}");
    v.assert_own_slots(&[2, 4, 5, 6]);
    assert_eq!(v.status(), ("0-5".into(), "0-5".into()));
    v.assert_smram_locked("with every CPU plugged");
    v.finish();
}

#[test]
fn without_init_onlining_it_a_hot_added_cpu_stays_offline_and_an_offline_cpu_is_ejected_too() {
    let Some(g) = linux::guest_for_this_rom() else {
        return;
    };
    let mut v = boot(&g, "1,maxcpus=4", "", Side::Smm(None));
    // As guest.online=0, but from the console: coreboot's Linux payload has its command
    // line built in.
    v.vm.send_console("auto-online off").unwrap();
    v.nth_line("GUEST: auto-online off", 1);
    v.plug(2, "hp");
    let news =
        v.vm.wait_for_lines("GUEST: new ", 2, STEP)
            .expect("new CPUs");
    assert_eq!(
        news,
        ["GUEST: new cpu=1 online=0", "GUEST: new cpu=2 online=0"],
        "{}",
        v.vm.output()
    );
    // Nothing in the kernel onlines them later either; SMM relocated them already.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(v.status(), ("0".into(), "0-2".into()));
    v.assert_own_slots(&[1, 2]);

    v.vm.send_console("online 2").unwrap();
    v.vm.send_console("online 1").unwrap();
    let on = v.onlined(0, 2);
    assert_eq!(on.len(), 2);
    assert_ne!(on[0].1, on[1].1);

    // An online CPU and one the OS took offline are both ejected by the kernel itself.
    v.vm.send_console("offline 2").unwrap();
    v.nth_line("GUEST: offline cpu=2", 1);
    let Some(gone2) = v.remove("hp1", 1) else {
        return;
    };
    if !several_removals() {
        assert_eq!(v.status(), ("0-1".into(), "0-1".into()));
        v.assert_smram_locked("after the removal");
        v.finish();
        return;
    }
    let Some(gone1) = v.remove("hp0", 2) else {
        return;
    };
    eprintln!(
        "timing ({}): device_del -> gone: offline CPU {gone2:?}, online CPU {gone1:?}",
        qemu_version()
    );
    assert_eq!(v.status(), ("0".into(), "0".into()));
    v.assert_smram_locked("after the removals");
    v.finish();
}

#[test]
fn the_same_hot_add_and_remove_without_smm_as_the_baseline() {
    host_rom_only!();
    let Some(g) = guest_or_skip() else { return };
    let Some(q) = no_smm_qemu_candidates().into_iter().next() else {
        eprintln!("no-SMM baseline skipped: no QEMU whose smm=off removes SMM (QEMU_ALT)");
        return;
    };
    let mut v = boot(&g, "1,maxcpus=4", "", Side::NoSmm(q));
    let out = v.vm.output();
    if !out.contains("BASELINE: no SMM set up") {
        eprintln!("no-SMM baseline skipped: this QEMU keeps SMM with smm=off:\n{out}");
        return;
    }
    let (_, t) = v.plug(1, "hp");
    assert_eq!(v.onlined(0, 1), [(1, 1)]);
    let to_online = t.elapsed();
    let Some(to_gone) = v.remove("hp0", 1) else {
        return;
    };
    assert_eq!(v.status(), ("0".into(), "0".into()));
    assert!(!v.vm.output().contains("[SMM "), "{}", v.vm.output());
    eprintln!("timing without SMM: device_add -> online+pinned {to_online:?}; device_del -> gone {to_gone:?}");
    v.finish();
}
