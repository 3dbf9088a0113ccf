//! SMI feature negotiation through fw_cfg (see `docs/protocol.md#smi-feature-negotiation`),
//! and what it changes for APMC SMIs and CPU hotplug.

use q35::fw_cfg::{
    negotiate_smi_features, read_smi_features, FwCfg, FwCfgError, Negotiation, NegotiationError,
    FILE_SMI_FEATURES_OK, FILE_SMI_REQUESTED, FILE_SMI_SUPPORTED, SMI_FEATURE_BROADCAST,
    SMI_FEATURE_CPU_HOTPLUG, SMI_FEATURE_CPU_HOT_UNPLUG,
};
use q35::ich9;
use q35_sim::{HotplugError, Q35Sim, SmiTarget};

const BROADCAST: u64 = SMI_FEATURE_BROADCAST;
const HOTPLUG: u64 = SMI_FEATURE_CPU_HOTPLUG;
const UNPLUG: u64 = SMI_FEATURE_CPU_HOT_UNPLUG;
const ALL: u64 = BROADCAST | HOTPLUG | UNPLUG;

fn negotiate(sim: &Q35Sim, wanted: u64) -> Result<Negotiation, NegotiationError> {
    let cfg = FwCfg::detect(sim).expect("fw_cfg present");
    negotiate_smi_features(&cfg, wanted)
}

/// Write `requested` straight into requested-features and select features-ok, bypassing
/// the driver's `supported & wanted` masking. Returns the features-ok byte.
fn raw_request(sim: &Q35Sim, requested: u64) -> u8 {
    let cfg = FwCfg::detect(sim).unwrap();
    let req = cfg.find_file(FILE_SMI_REQUESTED).unwrap();
    cfg.write_file(req, &requested.to_le_bytes()).unwrap();
    let ok = cfg.find_file(FILE_SMI_FEATURES_OK).unwrap();
    let mut verdict = [0u8; 1];
    cfg.read_key(ok.key, &mut verdict);
    verdict[0]
}

fn assert_refused(sim: &Q35Sim, wanted: u64, supported: u64, requested: u64) {
    assert_eq!(
        negotiate(sim, wanted),
        Err(NegotiationError::Refused {
            supported,
            requested
        })
    );
    assert_eq!(
        sim.negotiated_smi_features(),
        None,
        "negotiation stays open"
    );
}

#[test]
fn negotiation_grants_all_three_features_on_pc_q35_7_2() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    assert_eq!(
        negotiate(&sim, ALL),
        Ok(Negotiation::Granted {
            supported: ALL,
            requested: ALL
        })
    );
    assert_eq!(sim.negotiated_smi_features(), Some(ALL));
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(read_smi_features(&cfg), Some((ALL, ALL, 1)));
}

#[test]
fn negotiation_reports_unsupported_when_qemu_predates_the_smi_files() {
    let sim = Q35Sim::builder().without_smi_files().build();
    assert_eq!(negotiate(&sim, ALL), Ok(Negotiation::Unsupported));
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(read_smi_features(&cfg), None);
}

#[test]
fn negotiation_requests_only_broadcast_when_qemu_supports_only_broadcast() {
    // pc-q35-5.1 reads supported = 0x1.
    let sim = Q35Sim::builder().smi_supported(BROADCAST).build();
    assert_eq!(
        negotiate(&sim, ALL),
        Ok(Negotiation::Granted {
            supported: BROADCAST,
            requested: BROADCAST
        })
    );
    assert_eq!(sim.negotiated_smi_features(), Some(BROADCAST));
}

#[test]
fn negotiation_requests_only_what_the_firmware_wants() {
    let sim = Q35Sim::new();
    assert_eq!(
        negotiate(&sim, BROADCAST),
        Ok(Negotiation::Granted {
            supported: ALL,
            requested: BROADCAST
        })
    );
    assert_eq!(sim.negotiated_smi_features(), Some(BROADCAST));
}

#[test]
fn negotiating_nothing_is_granted_and_locks_the_empty_set() {
    let sim = Q35Sim::new();
    assert_eq!(
        negotiate(&sim, 0),
        Ok(Negotiation::Granted {
            supported: ALL,
            requested: 0
        })
    );
    assert_eq!(sim.negotiated_smi_features(), Some(0));
    assert_eq!(raw_request(&sim, ALL), 1);
    assert_eq!(sim.negotiated_smi_features(), Some(0), "locked");
}

#[test]
fn negotiation_refuses_cpu_hotplug_without_broadcast() {
    assert_refused(&Q35Sim::new(), HOTPLUG, ALL, HOTPLUG);
}

#[test]
fn negotiation_refuses_cpu_hot_unplug_without_broadcast() {
    assert_refused(&Q35Sim::new(), UNPLUG, ALL, UNPLUG);
}

#[test]
fn negotiation_refuses_hotplug_and_hot_unplug_without_broadcast() {
    assert_refused(&Q35Sim::new(), HOTPLUG | UNPLUG, ALL, HOTPLUG | UNPLUG);
}

#[test]
fn negotiation_refuses_cpu_hot_unplug_without_cpu_hotplug() {
    assert_refused(&Q35Sim::new(), BROADCAST | UNPLUG, ALL, BROADCAST | UNPLUG);
}

#[test]
fn negotiation_refuses_when_the_host_offers_hotplug_but_not_broadcast() {
    let sim = Q35Sim::builder().smi_supported(HOTPLUG | UNPLUG).build();
    assert_refused(&sim, ALL, HOTPLUG | UNPLUG, HOTPLUG | UNPLUG);
}

#[test]
fn negotiation_refuses_when_the_host_offers_hot_unplug_but_not_hotplug() {
    let sim = Q35Sim::builder().smi_supported(BROADCAST | UNPLUG).build();
    assert_refused(&sim, ALL, BROADCAST | UNPLUG, BROADCAST | UNPLUG);
}

#[test]
fn features_ok_reads_zero_when_the_request_exceeds_the_supported_mask() {
    // The driver never requests unsupported bits (it masks with `supported`), so write the
    // file directly, as a guest OS could.
    let sim = Q35Sim::builder().smi_supported(BROADCAST).build();
    assert_eq!(raw_request(&sim, BROADCAST | HOTPLUG), 0);
    assert_eq!(sim.negotiated_smi_features(), None);
}

#[test]
fn a_refused_negotiation_stays_open_for_a_valid_retry() {
    let sim = Q35Sim::new();
    assert!(negotiate(&sim, HOTPLUG).is_err());
    assert_eq!(
        negotiate(&sim, ALL),
        Ok(Negotiation::Granted {
            supported: ALL,
            requested: ALL
        })
    );
    assert_eq!(sim.negotiated_smi_features(), Some(ALL));
}

#[test]
fn a_granted_negotiation_ignores_later_requests_until_platform_reset() {
    let sim = Q35Sim::new();
    negotiate(&sim, BROADCAST).unwrap();

    // The OS (or a second negotiation) writes a new request: QEMU accepts the bytes and
    // features-ok still reads 1, but the negotiated set does not move.
    assert_eq!(raw_request(&sim, ALL), 1);
    assert_eq!(
        sim.fw_cfg_file(FILE_SMI_REQUESTED).unwrap(),
        ALL.to_le_bytes()
    );
    assert_eq!(sim.negotiated_smi_features(), Some(BROADCAST));

    // The driver cannot tell a locked negotiation from a fresh grant: it reports what it
    // requested, while QEMU keeps what was locked first.
    assert_eq!(
        negotiate(&sim, ALL),
        Ok(Negotiation::Granted {
            supported: ALL,
            requested: ALL
        })
    );
    assert_eq!(sim.negotiated_smi_features(), Some(BROADCAST));

    sim.reset();
    assert_eq!(sim.negotiated_smi_features(), None);
    assert_eq!(sim.fw_cfg_file(FILE_SMI_REQUESTED).unwrap(), [0u8; 8]);
    assert_eq!(sim.fw_cfg_file(FILE_SMI_FEATURES_OK).unwrap(), [0u8]);
    negotiate(&sim, ALL).unwrap();
    assert_eq!(sim.negotiated_smi_features(), Some(ALL));
}

#[test]
fn reading_the_smi_files_before_negotiating_locks_an_empty_feature_set() {
    // `read_smi_features` selects features-ok, which is what completes negotiation.
    let sim = Q35Sim::new();
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(read_smi_features(&cfg), Some((ALL, 0, 1)));
    assert_eq!(sim.negotiated_smi_features(), Some(0));
    negotiate_smi_features(&cfg, ALL).unwrap();
    assert_eq!(sim.negotiated_smi_features(), Some(0), "too late");
}

#[test]
fn negotiation_without_dma_fails_writing_requested_features() {
    let sim = Q35Sim::builder().without_fw_cfg_dma().build();
    assert_eq!(
        negotiate(&sim, ALL),
        Err(NegotiationError::Write(FwCfgError::NoDma))
    );
    assert_eq!(sim.negotiated_smi_features(), None);
}

#[test]
fn negotiation_rejects_smi_files_with_unexpected_sizes() {
    let sim = Q35Sim::builder()
        .without_smi_files()
        .file(FILE_SMI_SUPPORTED, &[7, 0, 0, 0])
        .writable_file(FILE_SMI_REQUESTED, &[0; 8])
        .file(FILE_SMI_FEATURES_OK, &[0])
        .build();
    assert_eq!(negotiate(&sim, ALL), Err(NegotiationError::BadFileSizes));
}

#[test]
fn apmc_smis_go_to_every_cpu_only_after_broadcast_was_negotiated() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    ich9::enable_pmbase(&sim, ich9::PMBASE);
    let pmbase = ich9::pmbase(&sim).unwrap();
    ich9::set_smi_en(&sim, pmbase, ich9::SMI_EN_APMC | ich9::SMI_EN_GBL_SMI);

    q35::PortIo::outb(&sim, ich9::APM_CNT, 0x04);
    negotiate(&sim, ALL).unwrap();
    q35::PortIo::outb(&sim, ich9::APM_CNT, 0x04);

    let smis: Vec<SmiTarget> = sim.apm_writes().iter().map(|w| w.smi).collect();
    assert_eq!(smis, [SmiTarget::Current, SmiTarget::Broadcast]);
}

#[test]
fn cpu_hotplug_is_refused_after_the_firmware_negotiated_broadcast_only() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    negotiate(&sim, BROADCAST).unwrap();
    assert_eq!(
        sim.plug_cpu(1),
        Err(HotplugError::HotplugNotEnabledByFirmware)
    );
    assert_eq!(sim.present_cpus(), 1);
}

#[test]
fn cpu_hotplug_is_allowed_when_nothing_was_negotiated() {
    // QEMU refuses hot-add only when BROADCAST was negotiated without CPU_HOTPLUG, so
    // negotiated == 0 allows it (and there is no SMI upcall).
    let sim = Q35Sim::builder().smp(1, 4).build();
    assert_eq!(sim.plug_cpu(1), Ok(()));
    assert_eq!(sim.present_cpus(), 2);
}

#[test]
fn cpu_hotplug_is_allowed_after_negotiating_broadcast_and_hotplug() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    negotiate(&sim, BROADCAST | HOTPLUG).unwrap();
    assert_eq!(sim.plug_cpu(1), Ok(()));
}
