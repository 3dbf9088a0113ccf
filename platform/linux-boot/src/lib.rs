//! The x86 Linux boot protocol, as far as the host ROM uses it to start a bzImage at its
//! 64-bit entry: checking the setup header ([`parse_header`]), choosing where the kernel
//! and the initrd go in the RAM of an e820 map ([`place`]), and writing the zero page,
//! `struct boot_params` ([`write_zero_page`]). Byte offsets are those of the kernel's
//! `struct boot_params` and `struct setup_header` ([`offset`]). No I/O here: the caller
//! reads the image and enters it.
#![no_std]

/// Offset of the setup header in the image's first sector and in the zero page.
pub const SETUP_HEADER: usize = 0x1f1;
/// The zero page ends the setup header's space here (`edd_mbr_sig_buffer` follows).
pub const SETUP_HEADER_LIMIT: usize = 0x290;
/// Bytes of the zero page.
pub const ZERO_PAGE_SIZE: usize = 4096;
/// The 64-bit entry (`startup_64`) lies this far into the loaded protected-mode code.
pub const ENTRY64_OFFSET: u64 = 0x200;
/// Oldest protocol with `xloadflags`, which announces the 64-bit entry: 2.12.
pub const MIN_PROTOCOL: u16 = 0x020c;
/// e820 entries the zero page holds.
pub const E820_MAX: usize = 128;
/// `type_of_loader` for a boot loader without an assigned ID.
pub const LOADER_UNDEFINED: u8 = 0xff;

/// `loadflags` bit 0: the protected-mode code is loaded at 0x100000 or above (bzImage).
pub const LOADED_HIGH: u8 = 1 << 0;
/// `xloadflags` bit 0: the kernel has the 64-bit entry at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// e820 type: ACPI tables.
pub const E820_ACPI: u32 = 3;

/// Zero-page and setup-header offsets (from the start of the zero page).
pub mod offset {
    /// `acpi_rsdp_addr` (u64).
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    /// `ext_ramdisk_image` (u32): bits 63:32 of the initrd address.
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    /// `ext_ramdisk_size` (u32).
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    /// `ext_cmd_line_ptr` (u32).
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    /// `e820_entries` (u8).
    pub const E820_ENTRIES: usize = 0x1e8;
    /// `setup_sects` (u8).
    pub const SETUP_SECTS: usize = 0x1f1;
    /// `boot_flag` (u16, 0xAA55).
    pub const BOOT_FLAG: usize = 0x1fe;
    /// `jump` (u16): its second byte gives the header's end, 0x202 + that byte.
    pub const JUMP: usize = 0x200;
    /// `header` (u32, "HdrS").
    pub const HEADER: usize = 0x202;
    /// `version` (u16).
    pub const VERSION: usize = 0x206;
    /// `type_of_loader` (u8).
    pub const TYPE_OF_LOADER: usize = 0x210;
    /// `loadflags` (u8).
    pub const LOADFLAGS: usize = 0x211;
    /// `code32_start` (u32).
    pub const CODE32_START: usize = 0x214;
    /// `ramdisk_image` (u32).
    pub const RAMDISK_IMAGE: usize = 0x218;
    /// `ramdisk_size` (u32).
    pub const RAMDISK_SIZE: usize = 0x21c;
    /// `cmd_line_ptr` (u32).
    pub const CMD_LINE_PTR: usize = 0x228;
    /// `initrd_addr_max` (u32).
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    /// `kernel_alignment` (u32).
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    /// `relocatable_kernel` (u8).
    pub const RELOCATABLE_KERNEL: usize = 0x234;
    /// `xloadflags` (u16).
    pub const XLOADFLAGS: usize = 0x236;
    /// `cmdline_size` (u32).
    pub const CMDLINE_SIZE: usize = 0x238;
    /// `setup_data` (u64).
    pub const SETUP_DATA: usize = 0x250;
    /// `pref_address` (u64).
    pub const PREF_ADDRESS: usize = 0x258;
    /// `init_size` (u32).
    pub const INIT_SIZE: usize = 0x260;
    /// The first byte after `init_size`: every header this crate accepts reaches it.
    pub const INIT_SIZE_END: usize = 0x264;
    /// `e820_table` (20-byte entries).
    pub const E820_TABLE: usize = 0x2d0;
}

/// One e820 entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub size: u64,
    /// [`E820_RAM`], [`E820_RESERVED`], [`E820_ACPI`], …
    pub kind: u32,
}

impl E820Entry {
    fn end(&self) -> u64 {
        self.addr.saturating_add(self.size)
    }
}

/// Why an image cannot be started at its 64-bit entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The setup part is shorter than a setup header.
    SetupTooShort(usize),
    /// No "HdrS" signature: not a bzImage.
    NoSignature,
    /// `boot_flag` is not 0xAA55.
    BootFlag(u16),
    /// The boot protocol predates 2.12 (no `xloadflags`, so no 64-bit entry).
    ProtocolTooOld(u16),
    /// The header ends before `init_size`, which this protocol version must have.
    HeaderTooShort(usize),
    /// `loadflags` lacks LOADED_HIGH: a zImage.
    NotLoadedHigh,
    /// `xloadflags` lacks XLF_KERNEL_64: no 64-bit entry.
    No64BitEntry,
    /// `kernel_alignment` is not a power of two (relocatable kernels only).
    Alignment(u32),
}

/// The header fields the loader uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Protocol version, e.g. 0x020f.
    pub version: u16,
    /// `relocatable_kernel`: the kernel may be loaded at any `kernel_alignment` address.
    pub relocatable: bool,
    /// Required alignment of a relocated load address.
    pub kernel_alignment: u32,
    /// Where the kernel wants to be (also its lowest load address).
    pub pref_address: u64,
    /// Bytes the kernel needs from its load address while it decompresses and starts.
    pub init_size: u32,
    /// Highest address the initrd may occupy.
    pub initrd_addr_max: u32,
    /// Longest command line, without its NUL.
    pub cmdline_size: u32,
    /// `setup_data` as found (QEMU may set it; only valid where QEMU put the data).
    pub setup_data: u64,
    /// First byte after the header (0x202 + the jump's second byte, at most 0x290).
    pub header_end: usize,
}

fn le(b: &[u8], off: usize, n: usize) -> u64 {
    b.get(off..off + n).map_or(0, |s| {
        s.iter().rev().fold(0, |a, &x| (a << 8) | u64::from(x))
    })
}

fn put(b: &mut [u8], off: usize, n: usize, v: u64) {
    if let Some(s) = b.get_mut(off..off + n) {
        s.copy_from_slice(&v.to_le_bytes()[..n]);
    }
}

/// Check the setup part of an image (at least its first [`SETUP_HEADER_LIMIT`] bytes,
/// as QEMU hands it over with `-kernel`) for a kernel with the 64-bit entry.
pub fn parse_header(setup: &[u8]) -> Result<Header, ImageError> {
    use offset::*;
    if setup.len() < INIT_SIZE_END {
        return Err(ImageError::SetupTooShort(setup.len()));
    }
    if le(setup, HEADER, 4) != u64::from(u32::from_le_bytes(*b"HdrS")) {
        return Err(ImageError::NoSignature);
    }
    let boot_flag = le(setup, BOOT_FLAG, 2) as u16;
    if boot_flag != 0xAA55 {
        return Err(ImageError::BootFlag(boot_flag));
    }
    let version = le(setup, VERSION, 2) as u16;
    if version < MIN_PROTOCOL {
        return Err(ImageError::ProtocolTooOld(version));
    }
    let header_end = (0x202 + le(setup, JUMP + 1, 1) as usize).min(SETUP_HEADER_LIMIT);
    if header_end < INIT_SIZE_END {
        return Err(ImageError::HeaderTooShort(header_end));
    }
    if le(setup, LOADFLAGS, 1) as u8 & LOADED_HIGH == 0 {
        return Err(ImageError::NotLoadedHigh);
    }
    if le(setup, XLOADFLAGS, 2) as u16 & XLF_KERNEL_64 == 0 {
        return Err(ImageError::No64BitEntry);
    }
    let relocatable = le(setup, RELOCATABLE_KERNEL, 1) != 0;
    let kernel_alignment = le(setup, KERNEL_ALIGNMENT, 4) as u32;
    if relocatable && !kernel_alignment.is_power_of_two() {
        return Err(ImageError::Alignment(kernel_alignment));
    }
    Ok(Header {
        version,
        relocatable,
        kernel_alignment,
        pref_address: le(setup, PREF_ADDRESS, 8),
        init_size: le(setup, INIT_SIZE, 4) as u32,
        initrd_addr_max: le(setup, INITRD_ADDR_MAX, 4) as u32,
        cmdline_size: le(setup, CMDLINE_SIZE, 4) as u32,
        setup_data: le(setup, SETUP_DATA, 8),
        header_end,
    })
}

/// Where kernel and initrd go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Load address of the protected-mode code; the kernel uses up to `init_size` from here.
    pub kernel: u64,
    /// One past the last byte the kernel may use.
    pub kernel_end: u64,
    /// Address of the initrd (0 without one).
    pub initrd: u64,
}

/// Why kernel or initrd do not fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaceError {
    /// The protected-mode code is larger than the `init_size` it declares.
    KernelLargerThanInitSize {
        /// Bytes of protected-mode code.
        kernel: u64,
        /// `init_size`.
        init_size: u32,
    },
    /// No RAM range holds `init_size` bytes at an allowed address (for a kernel that is
    /// not relocatable: at `pref_address`).
    NoRoomForKernel {
        /// Bytes needed.
        size: u64,
        /// Lowest allowed address.
        from: u64,
    },
    /// No RAM below `initrd_addr_max` holds the initrd outside the kernel's range.
    NoRoomForInitrd {
        /// Bytes of initrd.
        size: u64,
        /// `initrd_addr_max`.
        max: u32,
    },
}

/// Choose a load address for `kernel_size` bytes of protected-mode code and `initrd_size`
/// bytes of initrd (0: none) in the RAM entries of `map`. The kernel goes at its
/// `pref_address` if that RAM is free, else (relocatable kernels only) at the lowest
/// `kernel_alignment`-aligned address above it; never below `pref_address`, where a
/// relocatable kernel would move itself back up. The initrd goes as high as
/// `initrd_addr_max` allows, page aligned, outside the kernel's `init_size` range.
pub fn place(
    h: &Header,
    kernel_size: u64,
    initrd_size: u64,
    map: &[E820Entry],
) -> Result<Placement, PlaceError> {
    if kernel_size > u64::from(h.init_size) {
        return Err(PlaceError::KernelLargerThanInitSize {
            kernel: kernel_size,
            init_size: h.init_size,
        });
    }
    let need = u64::from(h.init_size);
    let ram = || map.iter().filter(|e| e.kind == E820_RAM && e.size > 0);
    let fits = |a: u64, len: u64| {
        a.checked_add(len)
            .is_some_and(|end| ram().any(|r| r.addr <= a && end <= r.end()))
    };
    let align = if h.relocatable {
        u64::from(h.kernel_alignment).max(4096)
    } else {
        1
    };
    let kernel = if fits(h.pref_address, need) {
        Some(h.pref_address)
    } else if h.relocatable {
        let mut starts: [u64; 64] = [u64::MAX; 64];
        for (s, r) in starts.iter_mut().zip(ram()) {
            *s = r.addr.max(h.pref_address).next_multiple_of(align);
        }
        starts.sort_unstable();
        starts.into_iter().find(|&a| a != u64::MAX && fits(a, need))
    } else {
        None
    }
    .ok_or(PlaceError::NoRoomForKernel {
        size: need,
        from: h.pref_address,
    })?;
    let kernel_end = kernel + need;
    let mut initrd = 0;
    if initrd_size > 0 {
        let limit = (u64::from(h.initrd_addr_max) + 1).min(0x1_0000_0000);
        let no_room = PlaceError::NoRoomForInitrd {
            size: initrd_size,
            max: h.initrd_addr_max,
        };
        let below = |top: u64| top.checked_sub(initrd_size).map(|a| a & !0xfff);
        initrd = ram()
            .filter_map(|r| {
                let top = r.end().min(limit);
                // Just below the top of the range, or just below the kernel when the
                // kernel is in the way.
                [below(top), below(kernel.min(top))]
                    .into_iter()
                    .flatten()
                    .filter(|&a| a >= r.addr && a + initrd_size <= top)
                    .find(|&a| a + initrd_size <= kernel || a >= kernel_end)
            })
            .max()
            .ok_or(no_room)?;
    }
    Ok(Placement {
        kernel,
        kernel_end,
        initrd,
    })
}

/// Why the zero page cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroPageError {
    /// More e820 entries than the zero page holds.
    TooManyE820(usize),
    /// The command line (without NUL) is longer than the kernel's `cmdline_size`.
    CmdlineTooLong {
        /// Its length.
        len: usize,
        /// The kernel's limit.
        max: u32,
    },
}

/// What goes into the zero page besides the image's setup header.
#[derive(Clone, Copy, Debug)]
pub struct BootArgs<'a> {
    /// The kernel's load address (`code32_start`).
    pub kernel: u64,
    /// Address of the NUL-terminated command line.
    pub cmdline: u64,
    /// Length of the command line without its NUL.
    pub cmdline_len: usize,
    /// Initrd address and size ((0, 0) without one).
    pub initrd: (u64, u64),
    /// Physical address of the ACPI RSDP (0 without ACPI).
    pub rsdp: u64,
    /// `setup_data` chain to hand over (0 for none).
    pub setup_data: u64,
    /// The memory map.
    pub e820: &'a [E820Entry],
}

/// Write the zero page: zeros, the image's setup header (from `setup`, up to
/// `h.header_end`), then what the boot loader fills in: loader type, command line,
/// initrd, ACPI RSDP, setup_data and the e820 map.
pub fn write_zero_page(
    zp: &mut [u8; ZERO_PAGE_SIZE],
    setup: &[u8],
    h: &Header,
    a: &BootArgs<'_>,
) -> Result<(), ZeroPageError> {
    use offset::*;
    if a.e820.len() > E820_MAX {
        return Err(ZeroPageError::TooManyE820(a.e820.len()));
    }
    if a.cmdline_len as u64 > u64::from(h.cmdline_size) {
        return Err(ZeroPageError::CmdlineTooLong {
            len: a.cmdline_len,
            max: h.cmdline_size,
        });
    }
    zp.fill(0);
    if let (Some(dst), Some(src)) = (
        zp.get_mut(SETUP_HEADER..h.header_end),
        setup.get(SETUP_HEADER..h.header_end),
    ) {
        dst.copy_from_slice(src);
    }
    zp[TYPE_OF_LOADER] = LOADER_UNDEFINED;
    put(zp, CODE32_START, 4, a.kernel);
    put(zp, CMD_LINE_PTR, 4, a.cmdline);
    put(zp, EXT_CMD_LINE_PTR, 4, a.cmdline >> 32);
    put(zp, RAMDISK_IMAGE, 4, a.initrd.0);
    put(zp, EXT_RAMDISK_IMAGE, 4, a.initrd.0 >> 32);
    put(zp, RAMDISK_SIZE, 4, a.initrd.1);
    put(zp, EXT_RAMDISK_SIZE, 4, a.initrd.1 >> 32);
    put(zp, SETUP_DATA, 8, a.setup_data);
    put(zp, ACPI_RSDP_ADDR, 8, a.rsdp);
    zp[E820_ENTRIES] = a.e820.len() as u8;
    for (i, e) in a.e820.iter().enumerate() {
        let o = E820_TABLE + 20 * i;
        put(zp, o, 8, e.addr);
        put(zp, o + 8, 8, e.size);
        put(zp, o + 16, 4, e.kind.into());
    }
    Ok(())
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let v = |p: u16| (p >> 8, p & 0xff);
        match *self {
            ImageError::SetupTooShort(n) => {
                write!(f, "setup part of {} bytes has no full setup header", n)
            }
            ImageError::NoSignature => {
                write!(
                    f,
                    "not a bzImage (no \"HdrS\" signature in the setup header)"
                )
            }
            ImageError::BootFlag(b) => write!(f, "boot_flag {:#06x} is not 0xaa55", b),
            ImageError::ProtocolTooOld(p) => write!(
                f,
                "boot protocol {}.{:02} is older than 2.12 (no 64-bit entry)",
                v(p).0,
                v(p).1
            ),
            ImageError::HeaderTooShort(e) => {
                write!(f, "setup header ends at {:#x}, before init_size", e)
            }
            ImageError::NotLoadedHigh => write!(f, "not loaded high (a zImage, not a bzImage)"),
            ImageError::No64BitEntry => {
                write!(f, "no 64-bit entry (XLF_KERNEL_64 clear in xloadflags)")
            }
            ImageError::Alignment(a) => {
                write!(f, "kernel_alignment {:#x} is not a power of two", a)
            }
        }
    }
}

impl core::fmt::Display for PlaceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            PlaceError::KernelLargerThanInitSize { kernel, init_size } => write!(
                f,
                "{} bytes of kernel exceed its init_size {:#x}",
                kernel, init_size
            ),
            PlaceError::NoRoomForKernel { size, from } => write!(
                f,
                "no usable RAM for the kernel's {} MiB (init_size) from {:#x} (give QEMU more memory, -m)",
                size >> 20,
                from
            ),
            PlaceError::NoRoomForInitrd { size, max } => write!(
                f,
                "no usable RAM below {:#x} for the {} KiB initrd outside the kernel",
                u64::from(max) + 1,
                size >> 10
            ),
        }
    }
}

impl core::fmt::Display for ZeroPageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            ZeroPageError::TooManyE820(n) => {
                write!(f, "{} e820 entries, the zero page holds {}", n, E820_MAX)
            }
            ZeroPageError::CmdlineTooLong { len, max } => write!(
                f,
                "command line of {} bytes exceeds the kernel's cmdline_size {}",
                len, max
            ),
        }
    }
}
