//! mkrom layout and errors.

mod common;

use common::{fwtool, TempDir};
use fwtool::rom::{build_rom, find_file, read_directory, RomEntry, RomError, RomFile};

const SIZE: u64 = 0x10000;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn boot(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn layout_alignment_and_padding() {
    let boot = boot(0x200);
    let files = [
        RomFile::new("payload", vec![0x11; 5]),
        RomFile::new("smm.rmod", vec![0x22; 17]),
        RomFile::new("empty", Vec::new()),
        RomFile::new("x".repeat(23), vec![0x33; 16]),
    ];
    let rom = build_rom(&boot, SIZE, &files).unwrap();
    assert_eq!(rom.len() as u64, SIZE);

    // Header.
    assert_eq!(&rom[0..4], b"HRFS");
    assert_eq!(u32_at(&rom, 4), 1);
    assert_eq!(u32_at(&rom, 8), 4);
    assert_eq!(u32_at(&rom, 12), 0);

    // Entries: directory is 16 + 4 * 32 = 144 bytes; files 16-byte aligned.
    let dir = read_directory(&rom).unwrap();
    let expect = [
        ("payload", 144, 5),
        ("smm.rmod", 160, 17),
        ("empty", 192, 0),
        ("xxxxxxxxxxxxxxxxxxxxxxx", 192, 16),
    ];
    let got: Vec<(&str, u32, u32)> = dir
        .iter()
        .map(|e| (e.name.as_str(), e.offset, e.size))
        .collect();
    assert_eq!(got, expect);
    for e in &dir {
        assert_eq!(e.offset % 16, 0);
    }

    // Raw entry bytes: NUL-padded names.
    assert_eq!(&rom[16..24], b"payload\0");
    assert!(rom[16 + 7..16 + 24].iter().all(|&b| b == 0));
    assert_eq!(u32_at(&rom, 16 + 24), 144);
    assert_eq!(u32_at(&rom, 16 + 28), 5);
    assert_eq!(rom[16 + 3 * 32 + 23], 0, "23-byte name keeps its NUL");

    // Contents and 0xFF padding.
    assert_eq!(&rom[144..149], &[0x11; 5]);
    assert!(rom[149..160].iter().all(|&b| b == 0xFF));
    assert_eq!(&rom[160..177], &[0x22; 17]);
    assert!(rom[177..192].iter().all(|&b| b == 0xFF));
    assert_eq!(&rom[192..208], &[0x33; 16]);
    let boot_at = SIZE as usize - boot.len();
    assert!(rom[208..boot_at].iter().all(|&b| b == 0xFF));
    assert_eq!(&rom[boot_at..], &boot[..]);

    assert_eq!(
        find_file(&rom, "smm.rmod").unwrap(),
        Some(&[0x22u8; 17][..])
    );
    assert_eq!(find_file(&rom, "empty").unwrap(), Some(&[0u8; 0][..]));
    assert_eq!(find_file(&rom, "nope").unwrap(), None);
}

#[test]
fn no_files_and_exact_fit() {
    let rom = build_rom(&boot(16), SIZE, &[]).unwrap();
    assert_eq!(read_directory(&rom).unwrap(), Vec::<RomEntry>::new());
    assert!(rom[16..SIZE as usize - 16].iter().all(|&b| b == 0xFF));

    // Directory 48 bytes + file 100 bytes at 48 -> ends at 148; boot fills the rest.
    let files = [RomFile::new("a", vec![1; 100])];
    let boot_len = SIZE as usize - 148;
    let rom = build_rom(&boot(boot_len), SIZE, &files).unwrap();
    assert_eq!(read_directory(&rom).unwrap()[0].offset, 48);
    assert_eq!(rom[147], 1);
    assert_eq!(&rom[148..], &boot(boot_len)[..]);

    // One byte more does not fit.
    let err = build_rom(&boot(boot_len + 1), SIZE, &files).unwrap_err();
    assert!(
        matches!(err, RomError::DoesNotFit { needed, size, .. } if needed == size + 1),
        "{err:?}"
    );
    assert!(err.to_string().contains("over by 1 byte"), "{err}");
}

#[test]
fn overflow_reports_excess() {
    let files = [RomFile::new("big", vec![0; 0x10000])];
    let err = build_rom(&boot(0x1000), SIZE, &files).unwrap_err();
    // 48 (directory) + 0x10000 + 0x1000 - 0x10000 = 4144.
    assert!(err.to_string().contains("over by 4144 bytes"), "{err}");
    // The same contents fit in 128 KiB.
    assert!(build_rom(&boot(0x1000), 2 * SIZE, &files).is_ok());
    // A boot block larger than the ROM.
    assert!(matches!(
        build_rom(&boot(0x10001), SIZE, &[]),
        Err(RomError::DoesNotFit { .. })
    ));
}

#[test]
fn name_and_size_errors() {
    let b = boot(16);
    let long = RomFile::new("y".repeat(24), vec![1]);
    assert!(matches!(
        build_rom(&b, SIZE, &[long]),
        Err(RomError::NameTooLong { len: 24, .. })
    ));
    let dup = [RomFile::new("a", vec![1]), RomFile::new("a", vec![2])];
    let err = build_rom(&b, SIZE, &dup).unwrap_err();
    assert_eq!(err, RomError::DuplicateName { name: "a".into() });
    assert!(err.to_string().contains("duplicate"));
    assert_eq!(
        build_rom(&b, SIZE, &[RomFile::new("", vec![])]),
        Err(RomError::EmptyName)
    );
    assert!(matches!(
        build_rom(&b, SIZE, &[RomFile::new("a\0b", vec![])]),
        Err(RomError::NameHasNul { .. })
    ));
    for size in [0, 0x8000, 0x10001, 0x18000] {
        assert_eq!(
            build_rom(&b, size, &[]),
            Err(RomError::SizeNotMultiple { size })
        );
    }
    assert_eq!(build_rom(&[], SIZE, &[]), Err(RomError::EmptyBoot));
}

#[test]
fn bad_directory_is_rejected() {
    assert!(read_directory(&[0xFF; 64]).is_err());
    let mut rom = build_rom(&boot(16), SIZE, &[RomFile::new("a", vec![1])]).unwrap();
    rom[16 + 28..16 + 32].copy_from_slice(&0x20000u32.to_le_bytes());
    assert!(read_directory(&rom).is_err());
}

#[test]
fn cli_mkrom() {
    let dir = TempDir::new("mkrom");
    let bootp = dir.write("boot.bin", boot(0x100));
    let a = dir.write("a.bin", [7u8; 33]);
    let out = dir.join("rom.bin");
    let res = fwtool()
        .arg("mkrom")
        .arg("--boot")
        .arg(&bootp)
        .args(["--size", "0x20000", "--out"])
        .arg(&out)
        .arg(format!("--file=payload={}", a.display()))
        .arg("--file")
        .arg(format!("second={}", a.display()))
        .output()
        .unwrap();
    assert!(res.status.success(), "{res:?}");
    let rom = std::fs::read(&out).unwrap();
    assert_eq!(rom.len(), 0x20000);
    let files = [
        RomFile::new("payload", vec![7u8; 33]),
        RomFile::new("second", vec![7u8; 33]),
    ];
    assert_eq!(rom, build_rom(&boot(0x100), 0x20000, &files).unwrap());

    let ls = fwtool().arg("rom-ls").arg(&out).output().unwrap();
    assert!(ls.status.success());
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        text.contains("payload") && text.contains("second"),
        "{text}"
    );

    // Decimal size works too.
    let res = fwtool()
        .arg("mkrom")
        .arg("--boot")
        .arg(&bootp)
        .args(["--size", "65536", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(res.status.success(), "{res:?}");
    assert_eq!(std::fs::read(&out).unwrap().len(), 65536);

    let run_err = |args: &[&str]| {
        let res = fwtool()
            .arg("mkrom")
            .arg("--boot")
            .arg(&bootp)
            .arg("--out")
            .arg(dir.join("err.bin"))
            .args(args)
            .output()
            .unwrap();
        assert!(!res.status.success(), "{args:?} succeeded");
        assert!(!dir.join("err.bin").exists());
        (
            res.status.code(),
            String::from_utf8_lossy(&res.stderr).into_owned(),
        )
    };
    let missing = format!("x={}", dir.join("missing.bin").display());
    let (code, msg) = run_err(&["--size", "0x10000", "--file", &missing]);
    assert_eq!(code, Some(1));
    assert!(msg.contains("missing.bin"), "{msg}");
    let (code, msg) = run_err(&["--size", "0x10001"]);
    assert_eq!(code, Some(1));
    assert!(msg.contains("64 KiB"), "{msg}");
    let (code, msg) = run_err(&["--size", "lots"]);
    assert_eq!(code, Some(2));
    assert!(msg.contains("not a number"), "{msg}");
    let (code, msg) = run_err(&["--size", "0x10000", "--file", "noequals"]);
    assert_eq!(code, Some(2));
    assert!(msg.contains("NAME=PATH"), "{msg}");
    let dup_a = format!("a={}", a.display());
    let (_, msg) = run_err(&["--size", "0x10000", "--file", &dup_a, "--file", &dup_a]);
    assert!(msg.contains("duplicate"), "{msg}");
    let (_, msg) = run_err(&["--file", &dup_a]);
    assert!(msg.contains("missing --size"), "{msg}");
}
