//! QEMU's ACPI linker/loader script (`q35::table_loader`): a script shaped like QEMU's,
//! WRITE_POINTER through fw_cfg DMA, and hostile scripts, which must end in an error
//! and never in a write outside the area.

use proptest::prelude::*;
use q35::fw_cfg::{FwCfg, FwCfgError};
use q35::table_loader::{
    plan, rsdp, run, ErrorKind, LoaderError, Plan, RsdpError, CMD_ADD_CHECKSUM, CMD_ADD_POINTER,
    CMD_ALLOCATE, CMD_WRITE_POINTER, ENTRY_LEN, FILE_RSDP, MAX_ALLOCATIONS, MAX_ENTRIES, ZONE_FSEG,
    ZONE_HIGH,
};
use q35_sim::Q35Sim;

const TABLES: &str = "etc/acpi/tables";
const GUID: &str = "etc/vmgenid_guid";
const GUID_ADDR: &str = "etc/vmgenid_addr";
/// Where the tests pretend the area is.
const BASE: u64 = 0x7fe_0000;
/// What the tests allow the area to be.
const MAX: u64 = 1 << 20;

fn name(field: &mut [u8], n: &str) {
    field[..n.len()].copy_from_slice(n.as_bytes());
}

fn entry(cmd: u32) -> [u8; ENTRY_LEN] {
    let mut e = [0u8; ENTRY_LEN];
    e[0..4].copy_from_slice(&cmd.to_le_bytes());
    e
}

fn allocate(file: &str, align: u32, zone: u8) -> [u8; ENTRY_LEN] {
    let mut e = entry(CMD_ALLOCATE);
    name(&mut e[4..60], file);
    e[60..64].copy_from_slice(&align.to_le_bytes());
    e[64] = zone;
    e
}

fn add_pointer(dest: &str, src: &str, offset: u32, size: u8) -> [u8; ENTRY_LEN] {
    let mut e = entry(CMD_ADD_POINTER);
    name(&mut e[4..60], dest);
    name(&mut e[60..116], src);
    e[116..120].copy_from_slice(&offset.to_le_bytes());
    e[120] = size;
    e
}

fn add_checksum(file: &str, offset: u32, start: u32, length: u32) -> [u8; ENTRY_LEN] {
    let mut e = entry(CMD_ADD_CHECKSUM);
    name(&mut e[4..60], file);
    e[60..64].copy_from_slice(&offset.to_le_bytes());
    e[64..68].copy_from_slice(&start.to_le_bytes());
    e[68..72].copy_from_slice(&length.to_le_bytes());
    e
}

fn write_pointer(dest: &str, src: &str, dst: u32, src_off: u32, size: u8) -> [u8; ENTRY_LEN] {
    let mut e = entry(CMD_WRITE_POINTER);
    name(&mut e[4..60], dest);
    name(&mut e[60..116], src);
    e[116..120].copy_from_slice(&dst.to_le_bytes());
    e[120..124].copy_from_slice(&src_off.to_le_bytes());
    e[124] = size;
    e
}

fn script(entries: &[[u8; ENTRY_LEN]]) -> Vec<u8> {
    entries.concat()
}

/// An ACPI 2.0 RSDP whose RSDT (offset 16) and XSDT (offset 24) pointers hold offsets into
/// the tables file, as QEMU writes them.
fn rsdp_blob() -> Vec<u8> {
    let mut r = vec![0u8; 36];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(b"BOCHS ");
    r[15] = 2;
    r[16..20].copy_from_slice(&0u32.to_le_bytes());
    r[20..24].copy_from_slice(&36u32.to_le_bytes());
    r[24..32].copy_from_slice(&0x40u64.to_le_bytes());
    r
}

/// A tables file: an "RSDT" at 0 with one entry pointing at offset 0x40 ("FACP").
fn tables_blob() -> Vec<u8> {
    let mut t = vec![0u8; 0x100];
    t[0..4].copy_from_slice(b"RSDT");
    t[4..8].copy_from_slice(&40u32.to_le_bytes());
    t[36..40].copy_from_slice(&0x40u32.to_le_bytes());
    t[0x40..0x44].copy_from_slice(b"FACP");
    t[0x44..0x48].copy_from_slice(&0x40u32.to_le_bytes());
    t
}

/// The shape of QEMU's script: allocations first, then pointers and checksums.
fn qemu_like() -> Vec<[u8; ENTRY_LEN]> {
    vec![
        allocate(FILE_RSDP, 16, ZONE_FSEG),
        allocate(TABLES, 64, ZONE_HIGH),
        add_pointer(TABLES, TABLES, 36, 4),
        add_checksum(TABLES, 9, 0, 40),
        add_checksum(TABLES, 0x49, 0x40, 0x40),
        add_pointer(FILE_RSDP, TABLES, 16, 4),
        add_pointer(FILE_RSDP, TABLES, 24, 8),
        add_checksum(FILE_RSDP, 8, 0, 20),
        add_checksum(FILE_RSDP, 32, 0, 36),
    ]
}

fn sim() -> Q35Sim {
    Q35Sim::builder()
        .file(FILE_RSDP, &rsdp_blob())
        .file(TABLES, &tables_blob())
        .file(GUID, &[0x5a; 4096])
        .writable_file(GUID_ADDR, &[0; 8])
        .file("etc/empty", &[])
        .file("etc/readonly-addr", &[0; 8])
        .build()
}

fn load(sim: &Q35Sim, s: &[u8]) -> Result<(Plan, Vec<u8>), LoaderError> {
    let cfg = FwCfg::detect(sim).unwrap();
    let p = plan(&cfg, s, MAX)?;
    let mut area = vec![0u8; p.size as usize];
    run(&cfg, s, &p, &mut area, BASE)?;
    Ok((p, area))
}

fn err(sim: &Q35Sim, s: &[u8]) -> LoaderError {
    match load(sim, s) {
        Ok(_) => panic!("script accepted"),
        Err(e) => e,
    }
}

fn rd(b: &[u8], off: usize, n: usize) -> u64 {
    b[off..off + n]
        .iter()
        .rev()
        .fold(0, |a, &x| (a << 8) | u64::from(x))
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

#[test]
fn a_qemu_like_script_is_loaded_linked_and_checksummed() {
    let sim = sim();
    let (p, area) = load(&sim, &script(&qemu_like())).expect("script runs");
    assert_eq!((p.entries, p.unknown, p.write_pointers), (9, 0, 0));
    let allocs: Vec<_> = p.allocations().map(|a| (a.offset, a.file.size)).collect();
    // The 36-byte RSDP at 0, the tables at the next multiple of 64.
    assert_eq!(allocs, [(0, 36), (64, 0x100)]);
    assert_eq!(p.size, 4096, "the area is rounded up to a page");
    let tables = BASE + 64;
    let t = &area[64..64 + 0x100];
    assert_eq!(rd(t, 36, 4), tables + 0x40, "RSDT entry -> FACP");
    assert_eq!(sum(&t[0..40]), 0);
    assert_eq!(sum(&t[0x40..0x80]), 0);
    let r = &area[0..36];
    assert_eq!(rd(r, 16, 4), tables, "RSDP -> RSDT");
    assert_eq!(rd(r, 24, 8), tables + 0x40, "RSDP -> XSDT");
    assert_eq!(sum(&r[0..20]), 0);
    assert_eq!(sum(&r[0..36]), 0);
    assert_eq!(rsdp(&p, &area, BASE), Ok(BASE));
}

#[test]
fn write_pointer_reports_the_address_to_qemu_after_the_tables_are_done() {
    let sim = sim();
    let mut s = qemu_like();
    s.push(allocate(GUID, 4096, ZONE_HIGH));
    s.push(write_pointer(GUID_ADDR, GUID, 0, 40, 8));
    let (p, _) = load(&sim, &script(&s)).expect("script runs");
    assert_eq!(p.write_pointers, 1);
    let guid = p.allocations().find(|a| a.name.is(GUID)).unwrap().offset;
    assert_eq!(guid, 4096, "page aligned after the tables");
    assert_eq!(p.size, 8192);
    let written = sim.fw_cfg_file(GUID_ADDR).unwrap();
    assert_eq!(
        u64::from_le_bytes(written.try_into().unwrap()),
        BASE + 4096 + 40
    );
}

#[test]
fn write_pointer_at_an_offset_writes_only_its_bytes() {
    let sim = sim();
    let mut s = qemu_like();
    s.push(allocate(GUID, 4096, ZONE_HIGH));
    s.push(write_pointer(GUID_ADDR, GUID, 4, 0, 4));
    load(&sim, &script(&s)).expect("script runs");
    let written = sim.fw_cfg_file(GUID_ADDR).unwrap();
    assert_eq!(&written[..4], &[0; 4]);
    assert_eq!(rd(&written, 4, 4), BASE + 4096);
}

#[test]
fn write_pointer_into_a_read_only_file_fails_with_qemus_dma_error() {
    let sim = sim();
    let mut s = qemu_like();
    s.push(allocate(GUID, 4096, ZONE_HIGH));
    s.push(write_pointer("etc/readonly-addr", GUID, 0, 0, 8));
    let e = err(&sim, &script(&s));
    assert_eq!(e.entry, Some(10));
    assert!(
        matches!(
            e.kind,
            ErrorKind::FwCfg {
                error: FwCfgError::DmaError,
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn padding_and_unknown_commands_are_skipped_and_counted() {
    let sim = sim();
    let mut s = qemu_like();
    s.insert(2, entry(0x7777));
    // QEMU pads its script with zeroed entries to a page.
    s.resize(4096 / ENTRY_LEN, entry(0));
    let (p, area) = load(&sim, &script(&s)).expect("script runs");
    assert_eq!((p.entries, p.padding, p.unknown), (32, 22, 1));
    assert_eq!(rsdp(&p, &area, BASE), Ok(BASE));
}

#[test]
fn scripts_of_a_bad_length_are_rejected() {
    let sim = sim();
    let whole = |n| LoaderError {
        entry: None,
        kind: ErrorKind::ScriptLength(n),
    };
    assert_eq!(err(&sim, &[]), whole(0));
    let mut s = script(&qemu_like());
    s.pop();
    assert_eq!(err(&sim, &s), whole(9 * ENTRY_LEN - 1));
    let long = vec![0u8; (MAX_ENTRIES + 1) * ENTRY_LEN];
    assert_eq!(err(&sim, &long), whole(long.len()));
}

#[test]
fn names_without_nul_empty_or_unknown_are_rejected() {
    let sim = sim();
    let mut e = allocate(TABLES, 64, ZONE_HIGH);
    e[4..60].fill(b'a');
    assert_eq!(err(&sim, &e).kind, ErrorKind::UnterminatedName);
    let e = allocate("", 64, ZONE_HIGH);
    assert_eq!(err(&sim, &e).kind, ErrorKind::EmptyName);
    let e = allocate("etc/acpi/nothing", 64, ZONE_HIGH);
    assert!(matches!(err(&sim, &e).kind, ErrorKind::UnknownFile(n) if n.is("etc/acpi/nothing")));
    // A pointer's source name runs into the offset field.
    let mut s = qemu_like();
    s[2][60..116].fill(b'x');
    let e = err(&sim, &script(&s));
    assert_eq!((e.entry, e.kind), (Some(2), ErrorKind::UnterminatedName));
}

#[test]
fn files_must_be_allocated_once_and_before_use() {
    let sim = sim();
    let s = [
        add_pointer(TABLES, TABLES, 36, 4),
        allocate(TABLES, 64, ZONE_HIGH),
    ];
    let e = err(&sim, &script(&s));
    assert!(matches!((e.entry, e.kind), (Some(0), ErrorKind::NotAllocated(n)) if n.is(TABLES)));
    let s = [
        allocate(TABLES, 64, ZONE_HIGH),
        add_checksum(FILE_RSDP, 8, 0, 20),
    ];
    assert!(matches!(
        err(&sim, &script(&s)).kind,
        ErrorKind::NotAllocated(_)
    ));
    let s = [
        allocate(TABLES, 64, ZONE_HIGH),
        allocate(TABLES, 64, ZONE_HIGH),
    ];
    let e = err(&sim, &script(&s));
    assert!(matches!(
        (e.entry, e.kind),
        (Some(1), ErrorKind::AllocatedTwice(_))
    ));
    let s = [
        allocate(TABLES, 64, ZONE_HIGH),
        write_pointer(GUID_ADDR, GUID, 0, 0, 8),
    ];
    assert!(matches!(err(&sim, &script(&s)).kind, ErrorKind::NotAllocated(n) if n.is(GUID)));
}

#[test]
fn too_many_allocations_are_rejected() {
    let names: Vec<String> = (0..=MAX_ALLOCATIONS).map(|i| format!("etc/t{i}")).collect();
    let mut b = Q35Sim::builder();
    for n in &names {
        b = b.file(n, &[1; 16]);
    }
    let sim = b.build();
    let s: Vec<_> = names.iter().map(|n| allocate(n, 16, ZONE_HIGH)).collect();
    let e = err(&sim, &script(&s));
    assert_eq!(
        (e.entry, e.kind),
        (Some(MAX_ALLOCATIONS), ErrorKind::TooManyAllocations)
    );
}

#[test]
fn alignments_and_zones_outside_the_format_are_rejected() {
    let sim = sim();
    for a in [0, 3, 48, 8192, 1 << 31] {
        assert_eq!(
            err(&sim, &allocate(TABLES, a, ZONE_HIGH)).kind,
            ErrorKind::Alignment(a)
        );
    }
    for z in [0, 3, 0xff] {
        assert_eq!(err(&sim, &allocate(TABLES, 64, z)).kind, ErrorKind::Zone(z));
    }
}

#[test]
fn empty_files_and_allocations_beyond_the_area_are_rejected() {
    let sim = sim();
    assert!(matches!(
        err(&sim, &allocate("etc/empty", 16, ZONE_HIGH)).kind,
        ErrorKind::FileSize { size: 0, .. }
    ));
    // Two files that fit on their own but not together in 8 KiB.
    let cfg = FwCfg::detect(&sim).unwrap();
    let s = script(&[
        allocate(TABLES, 64, ZONE_HIGH),
        allocate(GUID, 4096, ZONE_HIGH),
    ]);
    assert_eq!(
        plan(&cfg, &s, 4096 + 0x100).unwrap_err().kind,
        ErrorKind::AreaTooSmall {
            needed: 8192,
            available: 4096 + 0x100
        }
    );
    assert!(matches!(
        plan(&cfg, &s, 0x80).unwrap_err().kind,
        ErrorKind::FileSize { size: 0x100, .. }
    ));
}

#[test]
fn pointer_widths_other_than_1_2_4_8_are_rejected() {
    let sim = sim();
    for w in [0, 3, 5, 16, 0xff] {
        let mut s = qemu_like();
        s[2] = add_pointer(TABLES, TABLES, 36, w);
        assert_eq!(err(&sim, &script(&s)).kind, ErrorKind::PointerWidth(w));
        let mut s = qemu_like();
        s.push(allocate(GUID, 4096, ZONE_HIGH));
        s.push(write_pointer(GUID_ADDR, GUID, 0, 0, w));
        assert_eq!(err(&sim, &script(&s)).kind, ErrorKind::PointerWidth(w));
    }
}

#[test]
fn offsets_and_lengths_outside_the_file_are_rejected() {
    let sim = sim();
    let bad = [
        add_pointer(TABLES, TABLES, 0xfe, 4),
        add_pointer(TABLES, TABLES, u32::MAX, 8),
        add_pointer(FILE_RSDP, TABLES, 32, 8),
        add_checksum(TABLES, 0x100, 0, 4),
        add_checksum(TABLES, 0, 0x80, 0x81),
        add_checksum(TABLES, 0, u32::MAX, 2),
        add_checksum(TABLES, 0, 1, u32::MAX),
        write_pointer(GUID_ADDR, TABLES, 1, 0, 8),
        write_pointer(GUID_ADDR, TABLES, u32::MAX, 0, 2),
        write_pointer(GUID_ADDR, TABLES, 0, 0x100, 8),
    ];
    for b in bad {
        let mut s = qemu_like();
        s.push(b);
        let e = err(&sim, &script(&s));
        assert!(
            matches!((e.entry, e.kind), (Some(9), ErrorKind::OutOfRange { .. })),
            "{e:?}"
        );
        assert_eq!(
            sim.fw_cfg_file(GUID_ADDR).unwrap(),
            [0; 8],
            "nothing written back"
        );
    }
}

#[test]
fn pointers_whose_value_is_not_an_offset_into_the_source_are_rejected() {
    let sim = sim();
    let mut s = qemu_like();
    // The FACP's length field (0x40) read as a pointer into the 36-byte RSDP.
    s.push(add_pointer(TABLES, FILE_RSDP, 0x44, 4));
    let e = err(&sim, &script(&s));
    assert!(matches!(
        e.kind,
        ErrorKind::PointerOutsideSource {
            value: 0x40,
            size: 36,
            ..
        }
    ));
}

#[test]
fn addresses_that_do_not_fit_the_pointer_are_rejected() {
    let sim = sim();
    let mut s = qemu_like();
    s.push(add_pointer(TABLES, TABLES, 0x80, 2));
    let e = err(&sim, &script(&s));
    assert_eq!(
        e.kind,
        ErrorKind::PointerTooWide {
            value: BASE + 64,
            width: 2
        }
    );
    let mut s = qemu_like();
    s.push(allocate(GUID, 4096, ZONE_HIGH));
    s.push(write_pointer(GUID_ADDR, GUID, 0, 0, 2));
    assert!(matches!(
        err(&sim, &script(&s)).kind,
        ErrorKind::PointerTooWide { .. }
    ));
    assert_eq!(sim.fw_cfg_file(GUID_ADDR).unwrap(), [0; 8]);
}

#[test]
fn run_refuses_a_misplaced_or_short_area() {
    let sim = sim();
    let cfg = FwCfg::detect(&sim).unwrap();
    let s = script(&qemu_like());
    let p = plan(&cfg, &s, MAX).unwrap();
    let mut area = vec![0u8; p.size as usize];
    for base in [BASE + 16, 0x1_0000_0000, !0xfff] {
        assert_eq!(
            run(&cfg, &s, &p, &mut area, base).unwrap_err().kind,
            ErrorKind::AreaPlacement(base)
        );
    }
    let mut short = vec![0u8; 100];
    assert!(matches!(
        run(&cfg, &s, &p, &mut short, BASE).unwrap_err().kind,
        ErrorKind::AreaTooSmall { .. }
    ));
}

#[test]
fn the_rsdp_must_be_allocated_signed_and_checksummed() {
    let sim = sim();
    let s: Vec<_> = qemu_like()
        .into_iter()
        .skip(1)
        .filter(|e| e[4..17] != *b"etc/acpi/rsdp")
        .collect();
    let (p, area) = load(&sim, &script(&s)).unwrap();
    assert_eq!(rsdp(&p, &area, BASE), Err(RsdpError::NotAllocated));

    let mut s = qemu_like();
    s.truncate(7); // no RSDP checksums
    let (p, area) = load(&sim, &script(&s)).unwrap();
    assert_eq!(rsdp(&p, &area, BASE), Err(RsdpError::Checksum));

    let mut s = qemu_like();
    s.truncate(8); // no extended checksum
    let (p, area) = load(&sim, &script(&s)).unwrap();
    assert_eq!(rsdp(&p, &area, BASE), Err(RsdpError::ExtendedChecksum));

    let mut bad = rsdp_blob();
    bad[6] = b'X';
    let sim = Q35Sim::builder()
        .file(FILE_RSDP, &bad)
        .file(TABLES, &tables_blob())
        .build();
    let (p, area) = load(&sim, &script(&qemu_like())).unwrap();
    assert_eq!(rsdp(&p, &area, BASE), Err(RsdpError::Signature));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any corruption of a valid script ends in Ok or an error; the loader never writes
    /// past what it planned, whatever the entries say.
    #[test]
    fn corrupted_scripts_never_write_outside_the_planned_area(
        flips in proptest::collection::vec((0usize..11 * ENTRY_LEN, any::<u8>()), 1..8),
    ) {
        let sim = sim();
        let mut s = qemu_like();
        s.push(allocate(GUID, 4096, ZONE_HIGH));
        s.push(write_pointer(GUID_ADDR, GUID, 0, 40, 8));
        let mut s = script(&s);
        for (at, v) in flips {
            s[at] = v;
        }
        let cfg = FwCfg::detect(&sim).unwrap();
        if let Ok(p) = plan(&cfg, &s, MAX) {
            prop_assert!(p.size <= MAX);
            let mut area = vec![0xA5u8; p.size as usize + 4096];
            let (inside, guard) = area.split_at_mut(p.size as usize);
            let _ = run(&cfg, &s, &p, inside, BASE);
            prop_assert!(guard.iter().all(|&b| b == 0xA5));
        }
    }
}
