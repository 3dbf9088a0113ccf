//! More possible CPUs than the handler can serve (QEMU 10.0.2 accepts `-smp
//! 1,maxcpus=4096` under TCG), and 32-bit APIC IDs: the boot-time decision both hosts make (the host ROM's
//! `count_cpus`/`negotiate`, coreboot's `rust_cpu_hotplug_pre_mp_init`) counts every
//! possible CPU, refuses CPU hotplug with a reason for each failed precondition, and
//! negotiates broadcast only, which QEMU then locks.

use q35::cpuhp::CpuHp;
use q35::fw_cfg::{negotiate_smi_features, FwCfg, Negotiation, SMI_FEATURE_BROADCAST};
use q35_sim::Q35Sim;
use smm_handler::arming::{feature_policy, slots_to_lay_out, Refusal};
use smm_handler::host::{APIC_ID_LIMIT, ROUTED_APIC_ID_MAX};
use smm_handler::slots::MAX_SLOTS;

#[test]
fn more_possible_cpus_than_slots_boot_with_broadcast_only_and_say_why() {
    let n = MAX_SLOTS as u64 + 76;
    let ids: Vec<u64> = (0..n).collect();
    let sim = Q35Sim::builder().cpus(&ids, &[0]).build();
    let hp = CpuHp::new(&sim);
    hp.switch_to_modern().unwrap();
    let topo = hp.count().expect("the count does not stop the boot");
    assert_eq!((topo.present, topo.possible), (1, n as u32));

    let policy = feature_policy(
        true,
        topo.possible,
        MAX_SLOTS as u32,
        topo.max_apic_id(),
        APIC_ID_LIMIT,
    );
    assert_eq!(policy.wanted, SMI_FEATURE_BROADCAST);
    assert_eq!(
        policy.refusals.as_slice(),
        [Refusal::TooManyPossible {
            possible: n as u32,
            slots: MAX_SLOTS as u32
        }]
    );
    let (t, args) = policy.refusals[0].template();
    assert_eq!(
        t,
        "{} possible CPUs exceed {} SMM slots: CPU hotplug not offered"
    );
    assert_eq!(args, [n, MAX_SLOTS as u64]);

    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(
        negotiate_smi_features(&cfg, policy.wanted),
        Ok(Negotiation::Granted {
            supported: 7,
            requested: SMI_FEATURE_BROADCAST
        })
    );
    assert_eq!(sim.negotiated_smi_features(), Some(SMI_FEATURE_BROADCAST));
}

#[test]
fn x2apic_ids_get_hotplug_up_to_what_the_host_routes() {
    // 1024 possible CPUs with sparse 32-bit APIC IDs (a topology with gaps): hotplug.
    let ids: Vec<u64> = (0..MAX_SLOTS as u64).map(|i| i * 0x40_0000 + 3).collect();
    let sim = Q35Sim::builder().cpus(&ids, &[3]).build();
    let hp = CpuHp::new(&sim);
    hp.switch_to_modern().unwrap();
    let topo = hp.count().unwrap();
    assert_eq!(topo.max_apic_id(), 1023 * 0x40_0000 + 3);
    let p = feature_policy(
        true,
        topo.possible,
        MAX_SLOTS as u32,
        topo.max_apic_id(),
        APIC_ID_LIMIT,
    );
    assert!(p.refusals.is_empty(), "{:?}", p.refusals);
    assert_eq!(p.wanted, 7);
    // coreboot's stub routes 16-bit APIC IDs only: refused there, with the reason.
    let p = feature_policy(
        true,
        topo.possible,
        MAX_SLOTS as u32,
        topo.max_apic_id(),
        ROUTED_APIC_ID_MAX,
    );
    assert_eq!(p.wanted, SMI_FEATURE_BROADCAST);
    assert_eq!(
        p.refusals.as_slice(),
        [Refusal::ApicIdTooLarge {
            max: 1023 * 0x40_0000 + 3,
            limit: 0xFFFE
        }]
    );
    // The x2APIC broadcast ID (an arch ID above 32 bits counts as it) is never taken.
    let p = feature_policy(true, 2, MAX_SLOTS as u32, u32::MAX, APIC_ID_LIMIT);
    assert_eq!(p.wanted, SMI_FEATURE_BROADCAST);
}

#[test]
fn slots_follow_what_can_run_and_never_exceed_the_table() {
    // With hotplug: one per possible CPU; without: one per present CPU.
    assert_eq!(slots_to_lay_out(true, 1, 8), 8);
    assert_eq!(slots_to_lay_out(false, 2, 1024), 2);
    // Never beyond the slot table, whichever count it follows.
    assert_eq!(slots_to_lay_out(true, 1, 1100), MAX_SLOTS as u32);
    assert_eq!(slots_to_lay_out(false, 1100, 1100), MAX_SLOTS as u32);
}
