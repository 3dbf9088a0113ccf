//! An unmodified Debian kernel (`scripts/linux-guest`) with the busybox guest
//! (`tests/guest/init`) on the host ROM with SMM: the ROM boots it with QEMU's ACPI tables,
//! QEMU's own CPU-hotplug AML runs in Linux, and CPUs hot-added and removed over QMP are
//! relocated and ejected by SMM and brought online or ejected by Linux itself. After each
//! step SMRAM must still be locked as the OS sees it (PCI config of the MCH, TSEG and the
//! default-SMBASE window through `/dev/mem`), and every relocated CPU must have had a slot
//! of its own (SMM's log, on the same serial console). One scenario also runs without
//! SMM (the test image's baseline knob on a QEMU whose `smm=off` removes SMM).
//!
//! Host-ROM-only (coreboot boots Linux as its own payload, not from `-kernel`). Skipped
//! with a note when `scripts/linux-guest` has not filled the cache; with
//! `LINUX_GUEST_REQUIRED=1` (CI) they fail instead.

use qemu_tests::linux::{field, guest_or_skip, relocations, tseg_base, LinuxGuest};
use qemu_tests::*;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Boot to `GUEST: ready` under TCG takes 5-6 s on an idle machine; other QEMU tests may
/// share the two cores.
const BOOT: Duration = Duration::from_secs(120);
/// One hot-add or hot-remove: well under a second when idle.
const STEP: Duration = Duration::from_secs(30);

/// Which firmware setup a guest runs on.
enum Side {
    /// The host ROM's test image with SMM (the product).
    Smm,
    /// The same image without SMM on this QEMU (the baseline knob).
    NoSmm(PathBuf),
}

/// A booted guest: the VM, the ROM's TSEG base (SMM side) and how many `GUEST: status`
/// answers it gave so far.
struct Guest {
    vm: Vm,
    tseg: Option<u64>,
    statuses: usize,
    smrams: usize,
}

fn boot(g: &LinuxGuest, smp: &str, append: &str, side: Side) -> Guest {
    let mut cfg = g.vm_config(smp, append).test_image().with_qmp();
    if let Side::NoSmm(q) = side {
        cfg.qemu = Some(q);
        cfg.smm = false;
        cfg = cfg.fw_cfg(KNOB_NO_SMM.0, KNOB_NO_SMM.1);
    }
    let mut vm = Vm::start(&cfg).expect("start QEMU");
    let ready = vm
        .wait_for_line("GUEST: ready", BOOT)
        .unwrap_or_else(|e| panic!("{e}\n{}\n--- stderr ---\n{}", vm.output(), vm.stderr()));
    eprintln!(
        "{} on {}: {ready} after {:?}",
        g.kernel_package,
        qemu_version(),
        vm.started.elapsed()
    );
    assert_eq!(field(&ready, "cpus"), field(&ready, "present"), "{ready}");
    let tseg = tseg_base(&vm.output());
    Guest {
        vm,
        tseg,
        statuses: 0,
        smrams: 0,
    }
}

impl Guest {
    fn qmp(&mut self) -> &mut qmp::Qmp {
        self.vm.qmp.as_mut().unwrap()
    }

    /// The `n`-th complete console line starting with `prefix` (1-based), waited for.
    fn nth_line(&mut self, prefix: &str, n: usize) -> String {
        self.vm
            .wait_for_lines(prefix, n, STEP)
            .unwrap_or_else(|e| panic!("{prefix}: {e}\n{}", self.vm.output()))
            .pop()
            .unwrap()
    }

    /// The guest's `status` answer: (online, present).
    fn status(&mut self) -> (String, String) {
        self.vm.send_console("status").expect("console");
        self.statuses += 1;
        let st = self.nth_line("GUEST: status ", self.statuses);
        (
            field(&st, "cpus").unwrap_or("").to_string(),
            field(&st, "present").unwrap_or("").to_string(),
        )
    }

    /// Plug `n` free CPU slots back to back as `{prefix}0`, `{prefix}1`, …; returns their
    /// `query-hotpluggable-cpus` entries and when the first was sent.
    fn plug(&mut self, n: usize, prefix: &str) -> (Vec<serde_json::Value>, Instant) {
        let q = self.qmp();
        let free = q.free_cpus().expect("query-hotpluggable-cpus");
        assert!(free.len() >= n, "only {} free CPU slots", free.len());
        let t = Instant::now();
        for (i, cpu) in free.iter().take(n).enumerate() {
            q.device_add_cpu(cpu, &format!("{prefix}{i}"))
                .expect("device_add");
        }
        (free.into_iter().take(n).collect(), t)
    }

    /// Wait for `GUEST: online` lines number `from + 1 ..= from + n`; each must say the
    /// pinned task ran there. Returns (CPU number, APIC ID) per line.
    fn onlined(&mut self, from: usize, n: usize) -> Vec<(u32, u32)> {
        let lines = self
            .vm
            .wait_for_lines("GUEST: online ", from + n, STEP)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.vm.output()));
        lines[from..]
            .iter()
            .map(|l| {
                assert_eq!(field(l, "pinned"), Some("ok"), "{l}");
                let num = |k| field(l, k).and_then(|v| v.parse().ok());
                (
                    num("cpu").unwrap_or_else(|| panic!("{l}")),
                    num("apic").unwrap_or_else(|| panic!("{l}")),
                )
            })
            .collect()
    }

    /// `device_del` of `id`; waits for the `nth` `GUEST: gone` line and QEMU's deletion.
    /// Returns device_del → gone line.
    fn remove(&mut self, id: &str, nth: usize) -> Duration {
        let t = Instant::now();
        let sent = unplug::device_del(self.qmp(), id).expect("device_del");
        self.nth_line("GUEST: gone ", nth);
        let to_gone = t.elapsed();
        unplug::wait_deleted(self.qmp(), id, sent, STEP).expect("DEVICE_DELETED");
        assert!(
            !unplug::plugged(self.qmp(), id).unwrap(),
            "QEMU still lists {id}"
        );
        to_gone
    }

    /// SMRAM as the OS sees it must still be locked: 0x9C locked, SMRAMC with D_LCK and
    /// without D_OPEN, TSEG enabled, TSEG and the window read all-ones.
    fn assert_smram_locked(&mut self, when: &str) {
        let Some(tseg) = self.tseg else { return };
        self.vm
            .send_console(&format!("smram {tseg:#x}"))
            .expect("console");
        self.smrams += 1;
        let l = self.nth_line("GUEST: smram ", self.smrams);
        let hex = |k: &str| {
            field(&l, k)
                .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
                .unwrap_or_else(|| panic!("{k} in {l}"))
        };
        let smramc = hex("smramc");
        assert!(
            hex("mch9c") == 0x02
                && smramc & 0x10 != 0
                && smramc & 0x40 == 0
                && hex("esmramc") & 1 != 0
                && hex("tseg") == 0xffff_ffff
                && hex("window") == 0xffff_ffff,
            "SMRAM not locked {when}: {l}"
        );
    }

    /// Every CPU Linux reports online with these APIC IDs was relocated by SMM into a slot
    /// of its own (SMM's log on the same console).
    fn assert_own_slots(&self, apics: &[u32]) {
        let out = self.vm.output();
        let rel = relocations(&out);
        for a in apics {
            assert!(
                rel.iter().any(|(ra, _)| ra == a),
                "SMM did not relocate APIC ID {a}: {rel:?}\n{out}"
            );
        }
        // The last relocation of each APIC ID is its current slot; no two share one.
        let mut last = std::collections::BTreeMap::new();
        for (a, s) in rel {
            last.insert(a, s);
        }
        let slots: BTreeSet<u32> = last.values().copied().collect();
        assert_eq!(slots.len(), last.len(), "two CPUs in one slot: {last:?}");
        assert!(
            !slots.contains(&0),
            "a hot-added CPU in the boot CPU's slot: {last:?}"
        );
    }

    fn finish(mut self) {
        assert!(
            !self.vm.output().contains("GUEST: error"),
            "{}",
            self.vm.output()
        );
        self.vm.send_console("poweroff").unwrap();
        let o = self.vm.wait_exit(STEP);
        if std::env::var_os("QEMU_TESTS_SHOW").is_some() {
            eprintln!("--- serial ---\n{}", o.output);
        }
    }
}

#[test]
fn linux_onlines_a_cpu_smm_relocated_ejects_it_on_device_del_and_takes_it_back() {
    host_rom_only!();
    let Some(g) = guest_or_skip() else { return };
    let mut v = boot(&g, "1,maxcpus=4", "", Side::Smm);
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
    let to_gone = v.remove("hp0", 1);
    assert_eq!(v.status(), ("0".into(), "0".into()));
    assert_eq!(unplug::cpu_count(v.qmp()).unwrap(), 1);
    let out = v.vm.output();
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
        let out = v.vm.output();
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
    host_rom_only!();
    let Some(g) = guest_or_skip() else { return };
    let mut v = boot(&g, "1,maxcpus=4", "", Side::Smm);
    let (_, t) = v.plug(3, "hp");
    let on = v.onlined(0, 3);
    eprintln!("timing: 3 x device_add -> all online {:?}", t.elapsed());
    let apics: BTreeSet<u32> = on.iter().map(|&(_, a)| a).collect();
    assert_eq!(apics, BTreeSet::from([1, 2, 3]), "{on:?}");
    v.assert_own_slots(&[1, 2, 3]);
    assert_eq!(v.status(), ("0-3".into(), "0-3".into()));
    v.assert_smram_locked("after three hot-adds");
    for (i, id) in ["hp1", "hp0", "hp2"].iter().enumerate() {
        v.remove(id, i + 1);
    }
    assert_eq!(v.status(), ("0".into(), "0".into()));
    assert_eq!(unplug::cpu_count(v.qmp()).unwrap(), 1);
    v.assert_smram_locked("after three hot-removes");
    v.finish();
}

#[test]
fn linux_fills_up_to_maxcpus() {
    host_rom_only!();
    let Some(g) = guest_or_skip() else { return };
    let mut v = boot(&g, "1,maxcpus=8", "", Side::Smm);
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
    host_rom_only!();
    let Some(g) = guest_or_skip() else { return };
    // Two sockets of three cores: APIC IDs 0, 1, 2, 4, 5, 6 (3 and 7 are holes).
    let mut v = boot(&g, "2,maxcpus=6,sockets=2,cores=3", "", Side::Smm);
    let (_, _) = v.plug(4, "hp");
    if !unplug::qemu_replugs(&qemu_binary().unwrap()) {
        // Debian's 7.2.22: Linux registers all four but does not bring every one online,
        // with SeaBIOS and no SMM alike (docs/qemu.md#q-linux-holes). SMM's part holds.
        v.vm.wait_for_lines("GUEST: new ", 4, STEP)
            .unwrap_or_else(|e| panic!("{e}\n{}", v.vm.output()));
        // (/init is stuck in that write: it takes no console commands any more.)
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
    host_rom_only!();
    let Some(g) = guest_or_skip() else { return };
    let mut v = boot(&g, "1,maxcpus=4", "guest.online=0", Side::Smm);
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
    let gone2 = v.remove("hp1", 1);
    let gone1 = v.remove("hp0", 2);
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
    let to_gone = v.remove("hp0", 1);
    assert_eq!(v.status(), ("0".into(), "0".into()));
    assert!(!v.vm.output().contains("[SMM "), "{}", v.vm.output());
    eprintln!("timing without SMM: device_add -> online+pinned {to_online:?}; device_del -> gone {to_gone:?}");
    v.finish();
}
