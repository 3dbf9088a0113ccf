//! fw_cfg detection, the file directory, reads and writes (see `docs/qemu.md`).

use q35::fw_cfg::{
    FwCfg, FwCfgError, FwCfgFile, FILE_SMI_FEATURES_OK, FILE_SMI_REQUESTED, FILE_SMI_SUPPORTED,
    KEY_FILE_DIR, KEY_ID, KEY_MAX_CPUS, KEY_NB_CPUS, KEY_SIGNATURE, PORT_DATA, PORT_DMA_HIGH,
    PORT_DMA_LOW,
};
use q35::PortIo;
use q35_sim::Q35Sim;

const GREETING: &[u8] = b"hello from the host, this file is longer than one DMA word";

fn sim_with_files() -> Q35Sim {
    Q35Sim::builder()
        .smp(2, 4)
        .file("opt/test/greeting", GREETING)
        .file("bootorder", b"/pci@i0cf8/*@1f,2\n")
        .writable_file("opt/test/scratch", &[0u8; 8])
        .build()
}

#[test]
fn detect_finds_the_qemu_signature_and_the_dma_interface() {
    let sim = Q35Sim::new();
    let cfg = FwCfg::detect(&sim).expect("fw_cfg present");
    assert!(cfg.has_dma());
    let mut sig = [0u8; 4];
    cfg.read_key(KEY_SIGNATURE, &mut sig);
    assert_eq!(&sig, b"QEMU");
    assert_eq!(cfg.read_key_u32(KEY_ID), 0x3);
}

#[test]
fn detect_reports_no_dma_when_the_id_lacks_bit_1() {
    let sim = Q35Sim::builder().without_fw_cfg_dma().build();
    let cfg = FwCfg::detect(&sim).expect("fw_cfg present");
    assert!(!cfg.has_dma());
    assert_eq!(cfg.read_key_u32(KEY_ID), 0x1);
}

#[test]
fn detect_fails_with_not_present_when_no_fw_cfg_device_answers() {
    let sim = Q35Sim::builder().without_fw_cfg().build();
    assert_eq!(
        FwCfg::detect(&sim).err(),
        Some(FwCfgError::NotPresent),
        "all-ones is not the QEMU signature"
    );
}

#[test]
fn nb_cpus_counts_present_cpus_and_max_cpus_is_the_apic_id_limit() {
    let sim = Q35Sim::builder().smp(2, 4).build();
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(cfg.read_key_u16(KEY_NB_CPUS), 2);
    assert_eq!(cfg.read_key_u16(KEY_MAX_CPUS), 4);

    // With APIC-ID holes MAX_CPUS is max APIC ID + 1 (QEMU's `apic_id_limit`), not the
    // possible count.
    let sim = Q35Sim::builder().cpus(&[0, 1, 2, 4, 5, 6], &[0]).build();
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(cfg.read_key_u16(KEY_NB_CPUS), 1);
    assert_eq!(cfg.read_key_u16(KEY_MAX_CPUS), 7);
}

#[test]
fn nb_cpus_follows_a_hot_plug_without_a_reset() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    let cfg = FwCfg::detect(&sim).unwrap();
    sim.plug_cpu(2).unwrap();
    assert_eq!(cfg.read_key_u16(KEY_NB_CPUS), 2);
}

#[test]
fn find_file_returns_the_key_and_size_of_a_named_file() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/greeting").expect("file listed");
    assert_eq!(f.size as usize, GREETING.len());
    assert_eq!(Some(f.key), sim.fw_cfg_file_key("opt/test/greeting"));

    let sup = cfg.find_file(FILE_SMI_SUPPORTED).unwrap();
    let req = cfg.find_file(FILE_SMI_REQUESTED).unwrap();
    let ok = cfg.find_file(FILE_SMI_FEATURES_OK).unwrap();
    assert_eq!((sup.size, req.size, ok.size), (8, 8, 1));
}

#[test]
fn find_file_assigns_keys_in_name_order_like_qemu() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let key = |n: &str| cfg.find_file(n).unwrap().key;
    // "bootorder" < "etc/smi/features-ok" < "etc/smi/requested-features"
    //   < "etc/smi/supported-features" < "opt/test/greeting" < "opt/test/scratch"
    let keys = [
        key("bootorder"),
        key(FILE_SMI_FEATURES_OK),
        key(FILE_SMI_REQUESTED),
        key(FILE_SMI_SUPPORTED),
        key("opt/test/greeting"),
        key("opt/test/scratch"),
    ];
    assert_eq!(keys, [0x20, 0x21, 0x22, 0x23, 0x24, 0x25]);
}

#[test]
fn find_file_returns_none_for_unknown_empty_or_overlong_names() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(cfg.find_file("opt/test/missing"), None);
    assert_eq!(cfg.find_file("opt/test/greet"), None, "no prefix match");
    assert_eq!(cfg.find_file(""), None);
    assert_eq!(cfg.find_file(&"x".repeat(56)), None);
}

#[test]
fn find_file_finds_nothing_when_the_directory_is_empty() {
    let sim = Q35Sim::builder().without_smi_files().build();
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(cfg.read_key_u32(KEY_FILE_DIR), 0);
    assert_eq!(cfg.find_file(FILE_SMI_SUPPORTED), None);
}

#[test]
fn read_file_via_dma_returns_the_file_contents() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/greeting").unwrap();
    let mut buf = vec![0u8; f.size as usize];
    cfg.read_file(f, &mut buf).unwrap();
    assert_eq!(buf, GREETING);
}

#[test]
fn read_file_via_the_data_port_returns_the_file_contents_without_dma() {
    let sim = Q35Sim::builder()
        .without_fw_cfg_dma()
        .file("opt/test/greeting", GREETING)
        .build();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/greeting").unwrap();
    let mut buf = vec![0u8; f.size as usize];
    cfg.read_file(f, &mut buf).unwrap();
    assert_eq!(buf, GREETING);
}

#[test]
fn read_file_may_read_just_a_prefix() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/greeting").unwrap();
    let mut buf = [0u8; 5];
    cfg.read_file(f, &mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    cfg.read_file(f, &mut []).unwrap();
}

#[test]
fn read_file_rejects_a_buffer_longer_than_the_file() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/greeting").unwrap();
    let mut buf = vec![0xAAu8; f.size as usize + 1];
    assert_eq!(cfg.read_file(f, &mut buf), Err(FwCfgError::BadLength));
    assert!(buf.iter().all(|&b| b == 0xAA), "nothing was transferred");
}

#[test]
fn read_file_u64_reads_an_eight_byte_file_little_endian() {
    let sim = Q35Sim::builder()
        .file("opt/test/u64", &0x1122_3344_5566_7788u64.to_le_bytes())
        .file("opt/test/short", &[1, 2, 3])
        .build();
    let cfg = FwCfg::detect(&sim).unwrap();
    assert_eq!(
        cfg.read_file_u64("opt/test/u64"),
        Some(0x1122_3344_5566_7788)
    );
    assert_eq!(cfg.read_file_u64(FILE_SMI_SUPPORTED), Some(0x7));
    assert_eq!(cfg.read_file_u64("opt/test/short"), None);
    assert_eq!(cfg.read_file_u64("opt/test/missing"), None);
}

#[test]
fn write_file_replaces_the_contents_of_a_writable_file() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/scratch").unwrap();
    cfg.write_file(f, b"12345678").unwrap();
    assert_eq!(sim.fw_cfg_file("opt/test/scratch").unwrap(), b"12345678");
    let mut back = [0u8; 8];
    cfg.read_file(f, &mut back).unwrap();
    assert_eq!(&back, b"12345678");
}

#[test]
fn write_file_with_a_length_other_than_the_file_size_is_rejected_up_front() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/scratch").unwrap();
    assert_eq!(cfg.write_file(f, b"1234567"), Err(FwCfgError::BadLength));
    assert_eq!(cfg.write_file(f, b"123456789"), Err(FwCfgError::BadLength));
    assert_eq!(sim.fw_cfg_file("opt/test/scratch").unwrap(), [0u8; 8]);
}

#[test]
fn write_file_at_changes_only_the_bytes_at_the_offset() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/scratch").unwrap();
    cfg.write_file_at(f, 3, b"abc").unwrap();
    assert_eq!(
        sim.fw_cfg_file("opt/test/scratch").unwrap(),
        b"\0\0\0abc\0\0"
    );
    cfg.write_file_at(f, 0, b"12345678").unwrap();
    assert_eq!(sim.fw_cfg_file("opt/test/scratch").unwrap(), b"12345678");
}

#[test]
fn write_file_at_past_the_end_or_empty_is_rejected_up_front() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/scratch").unwrap();
    assert_eq!(cfg.write_file_at(f, 6, b"abc"), Err(FwCfgError::BadLength));
    assert_eq!(
        cfg.write_file_at(f, u32::MAX, b"a"),
        Err(FwCfgError::BadLength)
    );
    assert_eq!(cfg.write_file_at(f, 0, b""), Err(FwCfgError::BadLength));
    // A read-only file: QEMU sets the error bit.
    let ro = cfg.find_file("opt/test/greeting").unwrap();
    assert_eq!(cfg.write_file_at(ro, 1, b"x"), Err(FwCfgError::DmaError));
    assert_eq!(sim.fw_cfg_file("opt/test/scratch").unwrap(), [0u8; 8]);
}

#[test]
fn write_longer_than_the_file_gets_the_dma_error_bit_from_qemu() {
    // Lie about the size so the driver's own check passes and QEMU has to refuse:
    // 9 bytes into the 8-byte file (a DMA write must fit the file exactly).
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/scratch").unwrap();
    let lie = FwCfgFile {
        key: f.key,
        size: 9,
    };
    assert_eq!(cfg.write_file(lie, b"123456789"), Err(FwCfgError::DmaError));
    assert_eq!(sim.fw_cfg_file("opt/test/scratch").unwrap(), [0u8; 8]);
}

#[test]
fn write_to_a_read_only_file_gets_the_dma_error_bit() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let sup = cfg.find_file(FILE_SMI_SUPPORTED).unwrap();
    assert_eq!(
        cfg.write_file(sup, &0u64.to_le_bytes()),
        Err(FwCfgError::DmaError)
    );
    assert_eq!(cfg.read_file_u64(FILE_SMI_SUPPORTED), Some(0x7));
}

#[test]
fn a_failed_write_to_features_ok_still_selects_it_and_so_locks_the_request() {
    // The DMA SELECT runs QEMU's features-ok callback before the write is refused: the
    // (empty) request is validated and locked in.
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let ok = cfg.find_file(FILE_SMI_FEATURES_OK).unwrap();
    assert_eq!(cfg.write_file(ok, &[1]), Err(FwCfgError::DmaError));
    assert_eq!(sim.negotiated_smi_features(), Some(0));
}

#[test]
fn write_file_without_dma_fails_with_no_dma() {
    let sim = Q35Sim::builder()
        .without_fw_cfg_dma()
        .writable_file("opt/test/scratch", &[0u8; 8])
        .build();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/scratch").unwrap();
    assert_eq!(cfg.write_file(f, b"12345678"), Err(FwCfgError::NoDma));
}

#[test]
fn writes_through_the_data_port_are_ignored() {
    let sim = sim_with_files();
    let cfg = FwCfg::detect(&sim).unwrap();
    let f = cfg.find_file("opt/test/scratch").unwrap();
    cfg.select(f.key);
    for b in b"12345678" {
        sim.outb(PORT_DATA, *b);
    }
    assert_eq!(sim.fw_cfg_file("opt/test/scratch").unwrap(), [0u8; 8]);
}

#[test]
fn the_data_port_reads_zeros_past_the_end_of_an_item() {
    let sim = Q35Sim::new();
    let cfg = FwCfg::detect(&sim).unwrap();
    let mut buf = [0xAAu8; 6];
    cfg.read_key(KEY_SIGNATURE, &mut buf);
    assert_eq!(&buf, b"QEMU\0\0");
    // A key nobody populated reads as zeros too.
    let mut buf = [0xAAu8; 4];
    cfg.read_key(0x0002, &mut buf);
    assert_eq!(buf, [0; 4]);
}

#[test]
fn selecting_again_restarts_reading_at_offset_zero() {
    let sim = Q35Sim::new();
    let cfg = FwCfg::detect(&sim).unwrap();
    let mut two = [0u8; 2];
    cfg.read_key(KEY_SIGNATURE, &mut two);
    assert_eq!(&two, b"QE");
    cfg.read_data(&mut two);
    assert_eq!(&two, b"MU");
    cfg.read_key(KEY_SIGNATURE, &mut two);
    assert_eq!(&two, b"QE");
}

#[test]
fn the_dma_address_ports_read_back_the_qemu_cfg_signature() {
    let sim = Q35Sim::new();
    assert_eq!(sim.inl(PORT_DMA_HIGH).to_le_bytes(), *b"QEMU");
    assert_eq!(sim.inl(PORT_DMA_LOW).to_le_bytes(), *b" CFG");

    let no_dma = Q35Sim::builder().without_fw_cfg_dma().build();
    assert_eq!(no_dma.inl(PORT_DMA_HIGH), 0xFFFF_FFFF);
}
