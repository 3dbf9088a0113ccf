//! Setup header checks, kernel and initrd placement, and the zero page.

use linux_boot::offset::*;
use linux_boot::*;

const MIB: u64 = 1 << 20;

/// A setup part like Debian 12's 6.1 kernel's, as QEMU hands it over (2.15, relocatable,
/// 2 MiB alignment, 16 MiB preferred, 64-bit entry).
fn setup() -> Vec<u8> {
    let mut s = vec![0u8; 40 * 512];
    s[SETUP_SECTS] = 39;
    s[BOOT_FLAG..BOOT_FLAG + 2].copy_from_slice(&0xAA55u16.to_le_bytes());
    s[JUMP] = 0xeb;
    s[JUMP + 1] = 0x6a; // header ends at 0x26c
    s[HEADER..HEADER + 4].copy_from_slice(b"HdrS");
    s[VERSION..VERSION + 2].copy_from_slice(&0x020fu16.to_le_bytes());
    s[TYPE_OF_LOADER] = 0xb0;
    s[LOADFLAGS] = LOADED_HIGH;
    s[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
    s[KERNEL_ALIGNMENT..KERNEL_ALIGNMENT + 4].copy_from_slice(&0x20_0000u32.to_le_bytes());
    s[RELOCATABLE_KERNEL] = 1;
    s[XLOADFLAGS..XLOADFLAGS + 2].copy_from_slice(&0x7fu16.to_le_bytes());
    s[CMDLINE_SIZE..CMDLINE_SIZE + 4].copy_from_slice(&0x7ffu32.to_le_bytes());
    s[PREF_ADDRESS..PREF_ADDRESS + 8].copy_from_slice(&0x100_0000u64.to_le_bytes());
    s[INIT_SIZE..INIT_SIZE + 4].copy_from_slice(&0x3f9_8000u32.to_le_bytes());
    s
}

fn ram(addr: u64, end: u64) -> E820Entry {
    E820Entry {
        addr,
        size: end - addr,
        kind: E820_RAM,
    }
}

fn reserved(addr: u64, end: u64) -> E820Entry {
    E820Entry {
        addr,
        size: end - addr,
        kind: E820_RESERVED,
    }
}

/// The host ROM's map on 512 MiB: firmware window 1-8 MiB, ACPI, tables and TSEG on top.
fn map_512() -> Vec<E820Entry> {
    vec![
        reserved(0, 0x1000),
        ram(0x1000, 0x3_0000),
        reserved(0x3_0000, 0x5_1000),
        ram(0x5_1000, 0xa_0000),
        reserved(0xa_0000, 0x80_0000),
        ram(0x80_0000, 0x1fed_0000),
        E820Entry {
            addr: 0x1fed_0000,
            size: 0x2_0000,
            kind: E820_ACPI,
        },
        reserved(0x1fef_0000, 0x2000_0000),
    ]
}

#[test]
fn a_debian_like_header_is_accepted() {
    let h = parse_header(&setup()).unwrap();
    assert_eq!(h.version, 0x020f);
    assert!(h.relocatable);
    assert_eq!(h.kernel_alignment, 0x20_0000);
    assert_eq!(h.pref_address, 16 * MIB);
    assert_eq!(h.init_size, 0x3f9_8000);
    assert_eq!(h.cmdline_size, 0x7ff);
    assert_eq!(h.header_end, 0x26c);
}

#[test]
fn images_without_a_64_bit_entry_or_not_bzimages_are_rejected() {
    let check = |f: &dyn Fn(&mut Vec<u8>), e: ImageError| {
        let mut s = setup();
        f(&mut s);
        assert_eq!(parse_header(&s), Err(e));
    };
    check(&|s| s.truncate(0x263), ImageError::SetupTooShort(0x263));
    check(&|s| s[HEADER] = b'X', ImageError::NoSignature);
    check(&|s| s.fill(0x5a), ImageError::NoSignature);
    check(&|s| s[BOOT_FLAG] = 0, ImageError::BootFlag(0xAA00));
    check(
        &|s| s[VERSION..VERSION + 2].copy_from_slice(&0x020bu16.to_le_bytes()),
        ImageError::ProtocolTooOld(0x020b),
    );
    check(&|s| s[JUMP + 1] = 0x5e, ImageError::HeaderTooShort(0x260));
    check(&|s| s[LOADFLAGS] = 0, ImageError::NotLoadedHigh);
    check(&|s| s[XLOADFLAGS] = 0x7e, ImageError::No64BitEntry);
    check(
        &|s| s[KERNEL_ALIGNMENT..KERNEL_ALIGNMENT + 4].copy_from_slice(&0x30_0000u32.to_le_bytes()),
        ImageError::Alignment(0x30_0000),
    );
}

#[test]
fn a_jump_past_the_header_space_is_capped() {
    let mut s = setup();
    s[JUMP + 1] = 0xff;
    assert_eq!(parse_header(&s).unwrap().header_end, SETUP_HEADER_LIMIT);
}

#[test]
fn the_kernel_goes_to_its_preferred_address_and_the_initrd_to_the_top_of_ram() {
    let h = parse_header(&setup()).unwrap();
    let p = place(&h, 8 * MIB, 3 * MIB + 5, &map_512()).unwrap();
    assert_eq!(p.kernel, 16 * MIB);
    assert_eq!(p.kernel_end, 16 * MIB + 0x3f9_8000);
    assert_eq!(p.initrd, (0x1fed_0000 - (3 * MIB + 5)) & !0xfff);
    assert_eq!(p.initrd % 4096, 0);
}

#[test]
fn a_relocatable_kernel_moves_up_to_the_next_aligned_free_address() {
    let h = parse_header(&setup()).unwrap();
    // RAM starts at 17 MiB + 4 KiB: the next 2 MiB boundary is 18 MiB.
    let map = [ram(0x110_1000, 0x1000_0000)];
    let p = place(&h, 8 * MIB, 0, &map).unwrap();
    assert_eq!(p.kernel, 18 * MIB);
    assert_eq!(p.initrd, 0);
    // A hole at the preferred address, RAM again at 200 MiB.
    let map = [ram(0x80_0000, 0x200_0000), ram(200 * MIB, 512 * MIB)];
    assert_eq!(place(&h, 8 * MIB, 0, &map).unwrap().kernel, 200 * MIB);
}

#[test]
fn a_fixed_kernel_loads_only_at_its_preferred_address() {
    let mut s = setup();
    s[RELOCATABLE_KERNEL] = 0;
    let h = parse_header(&s).unwrap();
    let map = [ram(0x110_1000, 0x1000_0000)];
    assert_eq!(
        place(&h, 8 * MIB, 0, &map),
        Err(PlaceError::NoRoomForKernel {
            size: 0x3f9_8000,
            from: 16 * MIB
        })
    );
    assert_eq!(place(&h, 8 * MIB, 0, &map_512()).unwrap().kernel, 16 * MIB);
}

#[test]
fn a_kernel_never_goes_below_its_preferred_address_or_into_reserved_memory() {
    let h = parse_header(&setup()).unwrap();
    // 64 MiB of RAM: 16 MiB + init_size (~64 MiB) does not fit, and the 8 MiB below
    // 16 MiB must not be used.
    let map = [ram(0x80_0000, 0x400_0000), reserved(0x400_0000, 0x410_0000)];
    assert!(matches!(
        place(&h, 8 * MIB, 0, &map),
        Err(PlaceError::NoRoomForKernel { .. })
    ));
    assert!(matches!(
        place(&h, 0x3f9_8001, 0, &map_512()),
        Err(PlaceError::KernelLargerThanInitSize { .. })
    ));
}

#[test]
fn the_initrd_respects_initrd_addr_max_and_avoids_the_kernel() {
    let mut s = setup();
    s[INITRD_ADDR_MAX..INITRD_ADDR_MAX + 4].copy_from_slice(&(0x500_0000u32 - 1).to_le_bytes());
    let h = parse_header(&s).unwrap();
    // The kernel takes 16 MiB .. ~80 MiB; below 80 MiB only 8..16 MiB is left.
    let p = place(&h, 8 * MIB, 4 * MIB, &map_512()).unwrap();
    assert_eq!(p.initrd, 12 * MIB);
    assert!(p.initrd + 4 * MIB <= p.kernel);
    assert!(matches!(
        place(&h, 8 * MIB, 9 * MIB, &map_512()),
        Err(PlaceError::NoRoomForInitrd { .. })
    ));
    let h = parse_header(&setup()).unwrap();
    assert!(matches!(
        place(&h, 8 * MIB, 600 * MIB, &map_512()),
        Err(PlaceError::NoRoomForInitrd { .. })
    ));
}

#[test]
fn the_zero_page_holds_the_header_and_what_the_loader_fills_in() {
    let s = setup();
    let h = parse_header(&s).unwrap();
    let map = map_512();
    let mut zp = [0xeeu8; ZERO_PAGE_SIZE];
    let args = BootArgs {
        kernel: 16 * MIB,
        cmdline: 0x20_1000,
        cmdline_len: 20,
        initrd: (0x1f00_0000, 0x12345),
        rsdp: 0x1fed_0000,
        setup_data: 0,
        e820: &map,
    };
    write_zero_page(&mut zp, &s, &h, &args).unwrap();
    let rd = |o: usize, n: usize| {
        zp[o..o + n]
            .iter()
            .rev()
            .fold(0u64, |a, &x| (a << 8) | u64::from(x))
    };
    assert_eq!(&zp[HEADER..HEADER + 4], b"HdrS");
    assert_eq!(rd(VERSION, 2), 0x020f);
    assert_eq!(zp[TYPE_OF_LOADER], 0xff, "QEMU's 0xb0 replaced");
    assert_eq!(rd(CODE32_START, 4), 16 * MIB);
    assert_eq!(rd(CMD_LINE_PTR, 4), 0x20_1000);
    assert_eq!(rd(EXT_CMD_LINE_PTR, 4), 0);
    assert_eq!(rd(RAMDISK_IMAGE, 4), 0x1f00_0000);
    assert_eq!(rd(RAMDISK_SIZE, 4), 0x12345);
    assert_eq!(rd(ACPI_RSDP_ADDR, 8), 0x1fed_0000);
    assert_eq!(rd(SETUP_DATA, 8), 0);
    assert_eq!(zp[E820_ENTRIES], 8);
    assert_eq!(rd(E820_TABLE + 20 * 3, 8), 0x5_1000);
    assert_eq!(rd(E820_TABLE + 20 * 3 + 8, 8), 0xa_0000 - 0x5_1000);
    assert_eq!(rd(E820_TABLE + 20 * 6 + 16, 4), u64::from(E820_ACPI));
    // Nothing of the image past its header, nothing of the old contents elsewhere.
    assert!(zp[0x26c..E820_TABLE].iter().all(|&b| b == 0));
    assert!(zp[..SETUP_HEADER].iter().enumerate().all(|(i, &b)| b == 0
        || (ACPI_RSDP_ADDR..ACPI_RSDP_ADDR + 8).contains(&i)
        || i == E820_ENTRIES));
}

#[test]
fn too_many_e820_entries_or_a_long_command_line_are_refused() {
    let s = setup();
    let h = parse_header(&s).unwrap();
    let map = vec![ram(0, 4096); E820_MAX + 1];
    let mut zp = [0u8; ZERO_PAGE_SIZE];
    let mut args = BootArgs {
        kernel: 16 * MIB,
        cmdline: 0x20_1000,
        cmdline_len: 0x7ff,
        initrd: (0, 0),
        rsdp: 0,
        setup_data: 0,
        e820: &map[..E820_MAX],
    };
    assert_eq!(write_zero_page(&mut zp, &s, &h, &args), Ok(()));
    args.e820 = &map;
    assert_eq!(
        write_zero_page(&mut zp, &s, &h, &args),
        Err(ZeroPageError::TooManyE820(E820_MAX + 1))
    );
    args.e820 = &map[..1];
    args.cmdline_len = 0x800;
    assert_eq!(
        write_zero_page(&mut zp, &s, &h, &args),
        Err(ZeroPageError::CmdlineTooLong {
            len: 0x800,
            max: 0x7ff
        })
    );
}
