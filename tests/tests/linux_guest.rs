//! An unmodified Debian kernel with the busybox guest (`tests/guest/init`) hot-adds and
//! hot-removes CPUs driven over QMP. For now on QEMU's own firmware (SeaBIOS): the host
//! ROM cannot boot Linux yet.
//!
//! Skipped with a note when `scripts/linux-guest` has not filled the cache; with
//! `LINUX_GUEST_REQUIRED=1` (CI) they fail instead.

use qemu_tests::linux::{field, guest_or_skip, LinuxGuest};
use qemu_tests::*;
use std::time::{Duration, Instant};

/// Boot to `GUEST: ready` under TCG takes 5-6 s on an idle machine; other QEMU tests may
/// share the two cores.
const BOOT: Duration = Duration::from_secs(120);
/// One hot-add or hot-remove: well under a second when idle.
const STEP: Duration = Duration::from_secs(30);

fn boot(g: &LinuxGuest, append: &str) -> Vm {
    let cfg = g
        .vm_config("1,maxcpus=4", append)
        .qemu_default_firmware()
        .with_qmp();
    let mut vm = Vm::start(&cfg).expect("start QEMU");
    let ready = vm.wait_for_line("GUEST: ready", BOOT).expect("guest ready");
    eprintln!(
        "{} on {}: {ready} after {:?}",
        g.kernel_package,
        qemu_version(),
        vm.started.elapsed()
    );
    assert_eq!(field(&ready, "cpus"), Some("0"), "{ready}");
    assert_eq!(field(&ready, "possible"), Some("0-3"), "{ready}");
    vm
}

/// The `n`-th complete console line starting with `prefix` (1-based), waited for.
fn nth_line(vm: &mut Vm, prefix: &str, n: usize) -> String {
    vm.wait_for_lines(prefix, n, STEP)
        .expect(prefix)
        .pop()
        .unwrap()
}

/// Ask the guest for its CPU lists; the `n`-th `status` answer.
fn status(vm: &mut Vm, n: usize) -> String {
    vm.send_console("status").expect("console");
    nth_line(vm, "GUEST: status ", n)
}

fn qmp(vm: &mut Vm) -> &mut qmp::Qmp {
    vm.qmp.as_mut().unwrap()
}

/// Plug the lowest free CPU slot as device `id`.
fn plug(vm: &mut Vm, id: &str) -> Instant {
    let q = qmp(vm);
    let free = q.free_cpus().expect("query-hotpluggable-cpus");
    let t = Instant::now();
    q.device_add_cpu(&free[0], id).expect("device_add");
    t
}

/// device_del `id`, then wait for the guest's `gone` line and for QEMU to have deleted
/// the CPU; returns (device_del → gone line, device_del → deleted).
fn remove(vm: &mut Vm, id: &str, cpu: u32, gone_nth: usize) -> (Duration, Duration) {
    let t = Instant::now();
    let sent = unplug::device_del(qmp(vm), id).expect("device_del");
    let line = nth_line(vm, "GUEST: gone ", gone_nth);
    let to_gone = t.elapsed();
    assert_eq!(
        field(&line, "cpu"),
        Some(cpu.to_string().as_str()),
        "{line}"
    );
    unplug::wait_deleted(qmp(vm), id, sent, STEP).expect("DEVICE_DELETED");
    assert!(
        !unplug::plugged(qmp(vm), id).unwrap(),
        "QEMU still lists {id}"
    );
    let to_deleted = t.elapsed();
    (to_gone, to_deleted)
}

#[test]
fn linux_onlines_a_hot_added_cpu_runs_a_pinned_task_on_it_and_ejects_it_on_device_del() {
    let Some(g) = guest_or_skip() else { return };
    let mut vm = boot(&g, "");

    let t = plug(&mut vm, "hp0");
    let new = nth_line(&mut vm, "GUEST: new ", 1);
    let to_new = t.elapsed();
    let online = nth_line(&mut vm, "GUEST: online ", 1);
    let to_online = t.elapsed();
    // The kernel registers the CPU but leaves it offline; /init onlines it.
    assert_eq!(new, "GUEST: new cpu=1 online=0", "{}", vm.output());
    assert_eq!(field(&online, "cpu"), Some("1"), "{online}");
    assert_eq!(field(&online, "pinned"), Some("ok"), "{online}");
    let apic = field(&online, "apic").expect("apic=");
    assert!(apic.parse::<u32>().is_ok_and(|a| a != 0), "{online}");
    let st = status(&mut vm, 1);
    assert_eq!(field(&st, "cpus"), Some("0-1"), "{st}");
    assert_eq!(unplug::cpu_count(qmp(&mut vm)).unwrap(), 2);

    // Linux's ACPI processor driver offlines and ejects the CPU on its own.
    let (to_gone, to_deleted) = remove(&mut vm, "hp0", 1, 1);
    assert_eq!(unplug::cpu_count(qmp(&mut vm)).unwrap(), 1);
    let st = status(&mut vm, 2);
    assert_eq!(field(&st, "cpus"), Some("0"), "{st}");
    assert_eq!(field(&st, "present"), Some("0"), "{st}");

    // The same slot plugged again comes back as the same CPU; 7.2 dies on a re-plug.
    if unplug::qemu_replugs(&qemu_binary().unwrap()) {
        let t = plug(&mut vm, "hp1");
        let again = nth_line(&mut vm, "GUEST: online ", 2);
        let to_online_again = t.elapsed();
        assert_eq!(field(&again, "cpu"), Some("1"), "{again}");
        assert_eq!(field(&again, "apic"), Some(apic), "{again}");
        assert_eq!(field(&again, "pinned"), Some("ok"), "{again}");
        eprintln!("timing: re-plug -> online+pinned {to_online_again:?}");
    } else {
        eprintln!("re-plug not tried: this QEMU dies on it (docs/qemu.md#q-replug)");
    }
    eprintln!(
        "timing ({}): device_add -> new {to_new:?}, -> online+pinned {to_online:?}; \
         device_del -> gone {to_gone:?}, -> deleted in QEMU {to_deleted:?}",
        qemu_version()
    );
    vm.send_console("poweroff").unwrap();
    let o = vm.wait_exit(STEP);
    assert!(!o.timed_out, "{}", o.output);
    assert!(!o.output.contains("GUEST: error"), "{}", o.output);
    if std::env::var_os("QEMU_TESTS_SHOW").is_some() {
        eprintln!("--- serial ---\n{}", o.output);
    }
}

#[test]
fn without_init_onlining_it_a_hot_added_cpu_stays_offline_and_an_offline_cpu_is_ejected_too() {
    let Some(g) = guest_or_skip() else { return };
    let mut vm = boot(&g, "guest.online=0");

    plug(&mut vm, "hp0");
    plug(&mut vm, "hp1");
    let news = vm.wait_for_lines("GUEST: new ", 2, STEP).expect("new CPUs");
    assert_eq!(
        news,
        ["GUEST: new cpu=1 online=0", "GUEST: new cpu=2 online=0"],
        "{}",
        vm.output()
    );
    // Nothing in the kernel onlines them later either.
    std::thread::sleep(Duration::from_secs(2));
    let st = status(&mut vm, 1);
    assert_eq!(field(&st, "cpus"), Some("0"), "{st}");
    assert_eq!(field(&st, "present"), Some("0-2"), "{st}");

    // Onlined on command, each runs a pinned task; two distinct APIC IDs.
    vm.send_console("online 2").unwrap();
    let two = nth_line(&mut vm, "GUEST: online ", 1);
    vm.send_console("online 1").unwrap();
    let one = nth_line(&mut vm, "GUEST: online ", 2);
    assert_eq!(field(&two, "cpu"), Some("2"), "{two}");
    assert_eq!(field(&one, "cpu"), Some("1"), "{one}");
    assert!(
        [&one, &two]
            .iter()
            .all(|l| field(l, "pinned") == Some("ok")),
        "{one}\n{two}"
    );
    assert_ne!(field(&one, "apic"), field(&two, "apic"));

    // An online CPU and one the OS took offline are both ejected by the kernel itself.
    vm.send_console("offline 2").unwrap();
    nth_line(&mut vm, "GUEST: offline cpu=2", 1);
    let (gone2, _) = remove(&mut vm, "hp1", 2, 1);
    let (gone1, _) = remove(&mut vm, "hp0", 1, 2);
    eprintln!(
        "timing ({}): device_del -> gone: offline CPU {gone2:?}, online CPU {gone1:?}",
        qemu_version()
    );
    assert_eq!(unplug::cpu_count(qmp(&mut vm)).unwrap(), 1);
    let st = status(&mut vm, 2);
    assert_eq!(field(&st, "cpus"), Some("0"), "{st}");
    assert_eq!(field(&st, "present"), Some("0"), "{st}");
    assert!(!vm.output().contains("GUEST: error"), "{}", vm.output());
}
