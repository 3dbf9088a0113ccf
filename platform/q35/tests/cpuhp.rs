//! The CPU hotplug register block: legacy→modern switch, boot-time counting, and the
//! modern interface the SMM handler and the OS use at runtime (see
//! `docs/protocol.md#the-cpu-hotplug-register-block`).

use q35::cpuhp::{
    CpuHp, CpuHpError, CpuTopology, BASE, CMD_GET_ARCH_ID, CMD_GET_NEXT_EVENT, CTL_CLEAR_INSERT,
    CTL_CLEAR_REMOVE, CTL_EJECT, CTL_SET_FW_REMOVE, MAX_COUNTED, MAX_POSSIBLE, OFF_COMMAND,
    OFF_STATUS, STS_ENABLED, STS_FW_REMOVE, STS_INSERT, STS_REMOVE,
};
use q35::fw_cfg::{FwCfg, KEY_NB_CPUS};
use q35::PortIo;
use q35_sim::{CpuEvents, CpuHpMode, CpuHpModel, HotplugError, Q35Sim};

fn boot_count(sim: &Q35Sim) -> Result<CpuTopology, CpuHpError> {
    let hp = CpuHp::new(sim);
    hp.switch_to_modern()?;
    hp.count()
}

fn present_mask(t: &CpuTopology) -> Vec<bool> {
    t.present_mask[..t.recorded() as usize].to_vec()
}

fn apic_ids(t: &CpuTopology) -> Vec<u32> {
    t.apic_ids[..t.recorded() as usize].to_vec()
}

fn modern(sim: &Q35Sim) -> CpuHp<'_, Q35Sim> {
    let hp = CpuHp::new(sim);
    hp.switch_to_modern().expect("modern interface");
    hp
}

#[test]
fn the_block_starts_legacy_with_one_present_bit_per_apic_id() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Legacy);
    assert_eq!(sim.inl(BASE), 0x03);
    assert_eq!(sim.inb(BASE + 1), 0x00);

    let holes = Q35Sim::builder().cpus(&[0, 1, 2, 4, 9], &[0, 3, 4]).build();
    assert_eq!(holes.inw(BASE), 0x0211, "APIC IDs 0, 4 and 9");
}

#[test]
fn switch_to_modern_moves_the_block_to_the_modern_interface() {
    let sim = Q35Sim::builder().smp(1, 8).build();
    let hp = CpuHp::new(&sim);
    assert_eq!(hp.switch_to_modern(), Ok(()));
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Modern);
    hp.select(0);
    assert_eq!(hp.status(), STS_ENABLED);
}

#[test]
fn switch_to_modern_is_harmless_when_already_modern() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    let hp = CpuHp::new(&sim);
    assert_eq!(hp.switch_to_modern(), Ok(()));
    assert_eq!(hp.switch_to_modern(), Ok(()));
    assert_eq!(boot_count(&sim).unwrap().possible, 4);
}

#[test]
fn count_finds_one_present_of_eight_possible_for_smp_1_maxcpus_8() {
    let sim = Q35Sim::builder().smp(1, 8).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!((t.present, t.possible), (1, 8));
    assert_eq!(apic_ids(&t), (0..8).collect::<Vec<u32>>());
    assert_eq!(
        present_mask(&t),
        [true, false, false, false, false, false, false, false]
    );
    assert_eq!(t.max_apic_id(), 7);
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(u32::from(cfg.read_key_u16(KEY_NB_CPUS)), t.present);
}

#[test]
fn count_finds_two_present_of_four_possible_for_smp_2_maxcpus_4() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!((t.present, t.possible), (2, 4));
    assert_eq!(apic_ids(&t), [0, 1, 2, 3]);
    assert_eq!(present_mask(&t), [true, true, false, false]);
    assert_eq!(t.apic_id(3), Some(3));
    assert_eq!(t.apic_id(4), None);
}

#[test]
fn count_records_apic_ids_with_holes() {
    // e.g. -smp 1,sockets=2,cores=1,threads=3,maxcpus=6: APIC IDs 0,1,2 and 4,5,6.
    let sim = Q35Sim::builder().cpus(&[0, 1, 2, 4, 5, 6], &[0]).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!((t.present, t.possible), (1, 6));
    assert_eq!(apic_ids(&t), [0, 1, 2, 4, 5, 6]);
    assert!(t.is_possible_apic_id(4));
    assert!(!t.is_possible_apic_id(3));
    assert!(!t.is_possible_apic_id(7));
    assert_eq!(t.max_apic_id(), 6);
    assert_eq!(t.apic_id(3), Some(4));
}

#[test]
fn count_marks_an_arch_id_above_32_bits_as_unusable() {
    let sim = Q35Sim::builder().cpus(&[0, 1 << 32, 2], &[0]).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!(apic_ids(&t), [0, u32::MAX, 2]);
}

#[test]
fn count_handles_exactly_max_possible_cpus() {
    let ids: Vec<u64> = (0..MAX_POSSIBLE as u64).collect();
    let sim = Q35Sim::builder().cpus(&ids, &[0]).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!(t.possible as usize, MAX_POSSIBLE);
    assert_eq!(t.recorded() as usize, MAX_POSSIBLE);
    assert_eq!(t.max_apic_id(), MAX_POSSIBLE as u32 - 1);
    assert!(!t.truncated);
}

/// More possible CPUs than are recorded (QEMU 10.0.2: `-smp 2,maxcpus=1100`): every one is
/// counted, the first MAX_POSSIBLE are recorded, and the largest APIC ID counts the
/// unrecorded ones too, so the feature policy sees both why hotplug cannot be offered.
#[test]
fn count_goes_on_past_the_recorded_cpus() {
    let n = MAX_POSSIBLE as u64 + 76;
    let ids: Vec<u64> = (0..n).collect();
    let sim = Q35Sim::builder().cpus(&ids, &[0, 1]).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!((t.present, t.possible), (2, n as u32));
    assert_eq!(t.recorded() as usize, MAX_POSSIBLE);
    assert_eq!(apic_ids(&t)[..3], [0, 1, 2]);
    let last = MAX_POSSIBLE as u32 - 1;
    assert_eq!(t.apic_id(last), Some(last));
    assert_eq!(t.apic_id(last + 1), None, "past the recorded selectors");
    assert_eq!(t.max_apic_id(), n as u32 - 1);
    assert_eq!(t.present_unrecorded, 0);
    assert!(!t.truncated);
    // The count leaves selector 0 and command 0 behind, as with fewer CPUs.
    let hp = CpuHp::new(&sim);
    assert_eq!(hp.data(), 0);
    assert_eq!(hp.status(), STS_ENABLED);
}

#[test]
fn count_reports_present_cpus_past_the_recorded_ones() {
    let n = MAX_POSSIBLE as u64 + 76;
    let ids: Vec<u64> = (0..n).collect();
    let sim = Q35Sim::builder().cpus(&ids, &[0, n as usize - 10]).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!((t.present, t.possible), (2, n as u32));
    assert_eq!(t.present_unrecorded, 1);
    assert_eq!(present_mask(&t).iter().filter(|&&p| p).count(), 1);
}

#[test]
fn count_stops_at_max_counted_and_says_so() {
    let ids: Vec<u64> = (0..MAX_COUNTED as u64 + 5).collect();
    let sim = Q35Sim::builder().cpus(&ids, &[0]).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!(t.possible, MAX_COUNTED);
    assert!(t.truncated);
    assert_eq!(t.max_apic_id(), MAX_COUNTED - 1);

    let ids: Vec<u64> = (0..MAX_COUNTED as u64).collect();
    let sim = Q35Sim::builder().cpus(&ids, &[0]).build();
    let t = boot_count(&sim).unwrap();
    assert_eq!(t.possible, MAX_COUNTED);
    assert!(!t.truncated, "exactly MAX_COUNTED is a complete count");
}

#[test]
fn switch_fails_with_no_modern_interface_on_a_legacy_only_block() {
    let sim = Q35Sim::builder()
        .smp(1, 4)
        .cpu_hotplug(CpuHpModel::LegacyOnly)
        .build();
    assert_eq!(
        CpuHp::new(&sim).switch_to_modern(),
        Err(CpuHpError::NoModernInterface)
    );
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Legacy);
}

#[test]
fn switch_fails_with_no_modern_interface_when_there_is_no_block() {
    let sim = Q35Sim::builder().cpu_hotplug(CpuHpModel::Absent).build();
    assert_eq!(sim.inl(BASE), 0xFFFF_FFFF);
    assert_eq!(
        CpuHp::new(&sim).switch_to_modern(),
        Err(CpuHpError::NoModernInterface)
    );
}

#[test]
fn count_fails_with_none_present_when_the_tcg_byte_access_bug_drops_the_switch() {
    // Upstream QEMU 5.1-7.2.0 under TCG: the dword switch write is dropped and the dword
    // read returns 0, so the switch looks fine but the block is still the legacy bitmap.
    let sim = Q35Sim::builder()
        .smp(2, 4)
        .cpu_hotplug(CpuHpModel::LegacyByteOnly)
        .build();
    let hp = CpuHp::new(&sim);
    assert_eq!(hp.switch_to_modern(), Ok(()));
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Legacy);
    assert_eq!(hp.count().err(), Some(CpuHpError::NonePresent));
}

#[test]
fn count_fails_with_none_present_when_no_cpu_is_present() {
    let sim = Q35Sim::builder().cpus(&[0, 1, 2, 3], &[]).build();
    assert_eq!(boot_count(&sim).err(), Some(CpuHpError::NonePresent));
}

#[test]
fn count_is_not_misled_by_a_pending_insert_event_on_another_selector() {
    // A CPU hot-added after the switch but before the count has an insert event; command 0
    // must not move the count's view away from selector 0.
    let sim = Q35Sim::builder().smp(1, 4).build();
    modern(&sim);
    sim.plug_cpu(2).unwrap();
    let t = boot_count(&sim).unwrap();
    assert_eq!((t.present, t.possible), (2, 4));
    assert_eq!(apic_ids(&t), [0, 1, 2, 3]);
    assert_eq!(present_mask(&t), [true, false, true, false]);
}

#[test]
fn count_is_not_misled_by_a_stale_insert_event_of_an_absent_cpu() {
    // An insert event can outlive its CPU: QEMU keeps event bits across a platform reset
    // and an eject before the OS cleared the event. The status reads 0x02: "insert
    // without enabled".
    let sim = Q35Sim::builder().smp(1, 4).build();
    modern(&sim);
    sim.set_cpu_events(
        3,
        CpuEvents {
            insert: true,
            ..CpuEvents::default()
        },
    )
    .unwrap();
    let t = boot_count(&sim).unwrap();
    assert_eq!((t.present, t.possible), (1, 4));
    assert_eq!(apic_ids(&t), [0, 1, 2, 3]);
    assert_eq!(present_mask(&t), [true, false, false, false]);
}

#[test]
fn count_leaves_command_0_and_a_valid_selector_behind() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    boot_count(&sim).unwrap();
    assert_eq!(sim.cpuhp_command(), CMD_GET_NEXT_EVENT);
    assert!(sim.cpuhp_selector() < 4);
}

#[test]
fn a_cpu_hot_added_in_legacy_mode_is_present_without_an_event_after_the_switch() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    sim.plug_cpu(1).unwrap();
    assert_eq!(sim.inb(BASE), 0x03, "legacy present bit");
    let t = boot_count(&sim).unwrap();
    assert_eq!(present_mask(&t), [true, true, false, false]);
    let hp = CpuHp::new(&sim);
    hp.select(1);
    assert_eq!(
        hp.status(),
        STS_ENABLED,
        "modern state starts without events"
    );
}

#[test]
fn a_hot_added_cpu_shows_an_insert_event_that_command_0_finds() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    let hp = modern(&sim);
    sim.plug_cpu(3).unwrap();
    assert_eq!(sim.gpe0_sts() & 0x04, 0x04, "GPE0 bit 2");

    hp.select(0);
    hp.command(CMD_GET_NEXT_EVENT);
    assert_eq!(hp.data(), 3);
    assert_eq!(hp.status(), STS_ENABLED | STS_INSERT);
    assert_eq!(hp.arch_id(), Some(3));

    hp.select(3);
    hp.control(CTL_CLEAR_INSERT);
    assert_eq!(hp.status(), STS_ENABLED);
    hp.select(0);
    hp.command(CMD_GET_NEXT_EVENT);
    assert_eq!(hp.data(), 0, "no events left: the selector stays");
}

#[test]
fn command_0_scans_from_the_selector_inclusive_and_wraps_around() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    let hp = modern(&sim);
    sim.plug_cpu(1).unwrap();
    sim.plug_cpu(2).unwrap();

    hp.select(2);
    hp.command(CMD_GET_NEXT_EVENT);
    assert_eq!(hp.data(), 2, "inclusive");
    hp.select(3);
    hp.command(CMD_GET_NEXT_EVENT);
    assert_eq!(hp.data(), 1, "wrapped past the end");
    assert_eq!(hp.data2(), 0, "Command data 2 reads 0 after command 0");
}

#[test]
fn command_3_returns_the_arch_id_of_absent_cpus_too() {
    let sim = Q35Sim::builder().cpus(&[0, 1, 2, 4, 5, 6], &[0]).build();
    let hp = modern(&sim);
    hp.select(4);
    hp.command(CMD_GET_ARCH_ID);
    assert_eq!(hp.data(), 5);
    assert_eq!(hp.data2(), 0);
    assert_eq!(hp.status(), 0, "CPU 4 is absent");
}

#[test]
fn an_invalid_selector_reads_zero_and_ignores_everything_but_the_selector() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    let hp = modern(&sim);
    hp.select(4);
    assert_eq!(hp.status(), 0);
    assert_eq!(hp.data(), 0);
    assert_eq!(hp.data2(), 0);
    hp.command(CMD_GET_ARCH_ID);
    assert_eq!(
        sim.cpuhp_command(),
        CMD_GET_NEXT_EVENT,
        "command write ignored"
    );
    hp.control(CTL_SET_FW_REMOVE);
    hp.select(1);
    assert_eq!(hp.status(), STS_ENABLED);
}

#[test]
fn commands_of_4_and_above_leave_the_command_unchanged() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    let hp = modern(&sim);
    hp.select(1);
    hp.command(CMD_GET_ARCH_ID);
    hp.command(4);
    hp.command(0xFF);
    assert_eq!(sim.cpuhp_command(), CMD_GET_ARCH_ID);
    assert_eq!(hp.data(), 1);
}

#[test]
fn control_bits_act_as_a_priority_chain() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    let hp = modern(&sim);
    sim.set_cpu_events(
        1,
        CpuEvents {
            insert: true,
            remove: true,
            fw_remove: false,
        },
    )
    .unwrap();
    hp.select(1);
    hp.control(CTL_CLEAR_INSERT | CTL_CLEAR_REMOVE | CTL_EJECT);
    assert_eq!(hp.status(), STS_ENABLED | STS_REMOVE, "only insert cleared");
    hp.control(CTL_CLEAR_REMOVE | CTL_EJECT);
    assert_eq!(hp.status(), STS_ENABLED, "only remove cleared, no eject");
    hp.control(CTL_EJECT | CTL_SET_FW_REMOVE);
    assert_eq!(hp.status(), 0, "eject wins over fw_remove");
    assert_eq!(sim.present_cpus(), 1);
}

#[test]
fn fw_remove_is_set_by_the_os_and_cleared_by_the_eject() {
    let sim = Q35Sim::builder().smp(3, 4).build();
    let hp = modern(&sim);
    hp.select(2);
    hp.control(CTL_SET_FW_REMOVE);
    assert_eq!(hp.status(), STS_ENABLED | STS_FW_REMOVE);
    hp.select(0);
    hp.command(CMD_GET_NEXT_EVENT);
    assert_eq!(hp.data(), 2, "fw_remove counts as an event");

    hp.control(CTL_EJECT);
    assert_eq!(hp.status(), 0);
    assert_eq!(sim.present_cpus(), 2);
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(cfg.read_key_u16(KEY_NB_CPUS), 2);
}

#[test]
fn the_first_cpu_and_absent_cpus_are_never_ejected_or_marked_for_removal() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    let hp = modern(&sim);
    for sel in [0, 3] {
        hp.select(sel);
        let before = hp.status();
        hp.control(CTL_SET_FW_REMOVE);
        hp.control(CTL_EJECT);
        assert_eq!(hp.status(), before, "selector {sel}");
    }
    assert_eq!(sim.present_cpus(), 2);
}

#[test]
fn an_eject_leaves_an_uncleared_insert_event_visible() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    let hp = modern(&sim);
    sim.plug_cpu(1).unwrap();
    hp.select(1);
    hp.control(CTL_EJECT);
    assert_eq!(hp.status(), STS_INSERT, "0x02: insert without enabled");
}

#[test]
fn unplug_requests_are_refused_for_the_boot_cpu_and_in_legacy_mode() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    assert_eq!(
        sim.request_cpu_unplug(1),
        Err(HotplugError::LegacyInterface)
    );
    modern(&sim);
    assert_eq!(sim.request_cpu_unplug(0), Err(HotplugError::BootCpu));
    assert_eq!(sim.request_cpu_unplug(2), Err(HotplugError::NotPresent));
    assert_eq!(sim.request_cpu_unplug(1), Ok(()));
    let hp = CpuHp::new(&sim);
    hp.select(1);
    assert_eq!(hp.status(), STS_ENABLED | STS_REMOVE);
}

#[test]
fn plugging_a_present_or_unknown_cpu_is_refused() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    assert_eq!(sim.plug_cpu(1), Err(HotplugError::AlreadyPresent));
    assert_eq!(sim.plug_cpu(4), Err(HotplugError::NoSuchSlot));
}

#[test]
fn byte_and_word_accesses_reach_the_modern_registers_by_offset() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    modern(&sim);
    sim.outb(BASE, 1);
    assert_eq!(sim.inb(BASE + OFF_STATUS), STS_ENABLED);
    assert_eq!(sim.inw(BASE + OFF_STATUS), u16::from(STS_ENABLED));
    sim.outb(BASE + OFF_COMMAND, CMD_GET_ARCH_ID);
    assert_eq!(sim.inb(BASE + 8), 1);
    assert_eq!(sim.inb(BASE + 9), 0, "no register at +9");
    assert_eq!(sim.inl(BASE + 12), 0xFFFF_FFFF, "past the 12-byte block");
}
