//! Linux from QEMU's `-kernel`, `-initrd` and `-append`. With a `-bios` of its own QEMU
//! runs no boot-loader option ROM; it hands the image over in fw_cfg: the setup sectors
//! (header fields patched by QEMU), the protected-mode code, the initrd and the command
//! line. The ROM puts kernel and initrd into RAM of the memory map (`linux_boot::place`),
//! writes the zero page with that same map as its e820 table, and enters the kernel's
//! 64-bit entry. Linux is just another payload: it runs only after SMM is set up and
//! locked, like the ELF payload.

use core::fmt;

use linux_boot::{
    parse_header, place, write_zero_page, BootArgs, E820Entry, ImageError, PlaceError,
    ZeroPageError, E820_RAM, ENTRY64_OFFSET, SETUP_HEADER_LIMIT, ZERO_PAGE_SIZE,
};
use q35::fw_cfg::{self, FwCfg, FwCfgError, FwCfgFile};
use q35::io::HwPorts;

use crate::memmap::{self, Map};

/// Room for the command line with its NUL (x86 kernels take at most 2 KiB).
const CMDLINE_MAX: usize = 4096;
/// The kernel is entered on the firmware's identity map of the low 4 GiB.
const MAPPED: u64 = 0x1_0000_0000;

/// The zero page and the command line. They live in the ROM's image, inside the reserved
/// firmware window: the kernel reads them after it has taken every RAM range of its e820
/// table for itself.
#[repr(C, align(4096))]
struct BootPages {
    zero_page: [u8; ZERO_PAGE_SIZE],
    cmdline: [u8; CMDLINE_MAX],
}

static BOOT: spin::Mutex<BootPages> = spin::Mutex::new(BootPages {
    zero_page: [0; ZERO_PAGE_SIZE],
    cmdline: [0; CMDLINE_MAX],
});

/// Why the kernel QEMU handed over is not started.
pub enum LinuxError {
    Image(ImageError),
    Place(PlaceError),
    ZeroPage(ZeroPageError),
    /// QEMU's command line does not fit [`CMDLINE_MAX`].
    Cmdline(u32),
    /// An fw_cfg read failed.
    Read(&'static str, FwCfgError),
}

impl fmt::Display for LinuxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinuxError::Image(e) => write!(f, "-kernel image rejected: {}", e),
            LinuxError::Place(e) => write!(f, "cannot place the kernel: {}", e),
            LinuxError::ZeroPage(e) => write!(f, "zero page: {}", e),
            LinuxError::Cmdline(n) => write!(
                f,
                "command line of {} bytes exceeds the ROM's {} bytes",
                n, CMDLINE_MAX
            ),
            LinuxError::Read(what, e) => write!(f, "reading the {} from fw_cfg: {:?}", what, e),
        }
    }
}

/// A loaded kernel, ready to enter.
pub struct Kernel {
    entry: u64,
    zero_page: u64,
}

/// Whether QEMU was started with `-kernel` (a bzImage or anything else).
pub fn requested(cfg: &FwCfg<'_, HwPorts>) -> bool {
    cfg.read_key_u32(fw_cfg::KEY_KERNEL_SIZE) != 0
}

/// The fixed fw_cfg item `key` of `size` bytes, read like a file.
fn item(key: u16, size: u32) -> FwCfgFile {
    FwCfgFile { key, size }
}

/// Check the image QEMU handed over, load kernel and initrd, and write the zero page with
/// the memory map `map` (the one the coreboot tables carry) and the ACPI RSDP.
pub fn load(cfg: &FwCfg<'_, HwPorts>, map: &Map, rsdp: Option<u64>) -> Result<Kernel, LinuxError> {
    let size = |key| cfg.read_key_u32(key);
    let (kernel_size, setup_size) = (size(fw_cfg::KEY_KERNEL_SIZE), size(fw_cfg::KEY_SETUP_SIZE));
    let (initrd_size, cmdline_size) = (
        size(fw_cfg::KEY_INITRD_SIZE),
        size(fw_cfg::KEY_CMDLINE_SIZE),
    );

    let mut setup = [0u8; SETUP_HEADER_LIMIT];
    let n = (setup_size as usize).min(SETUP_HEADER_LIMIT);
    cfg.read_file(item(fw_cfg::KEY_SETUP_DATA, setup_size), &mut setup[..n])
        .map_err(|e| LinuxError::Read("setup header", e))?;
    let setup = &setup[..n];
    let h = parse_header(setup).map_err(LinuxError::Image)?;

    let e820 = memmap::e820(map);
    // Only identity-mapped RAM for kernel and initrd.
    let low: heapless::Vec<E820Entry, 32> = e820
        .iter()
        .filter(|e| e.kind == E820_RAM && e.addr < MAPPED)
        .map(|e| E820Entry {
            size: e.size.min(MAPPED - e.addr),
            ..*e
        })
        .collect();
    let p = place(&h, kernel_size.into(), initrd_size.into(), &low).map_err(LinuxError::Place)?;
    log::info!(
        "Linux: bzImage protocol {}.{:02}, {} KiB at {:#x} (init_size {} MiB), initrd {} KiB at {:#x}",
        h.version >> 8,
        h.version & 0xff,
        kernel_size >> 10,
        p.kernel,
        h.init_size >> 20,
        initrd_size >> 10,
        p.initrd
    );
    if h.setup_data != 0 {
        // It points into QEMU's own layout of the kernel or command line, not this ROM's.
        log::warn!(
            "Linux: setup_data {:#x} from QEMU not handed over",
            h.setup_data
        );
    }

    // SAFETY: `place` put the kernel's whole init_size range inside one RAM entry of the
    // map below 4 GiB: RAM no firmware data lives in, identity mapped.
    let kernel =
        unsafe { core::slice::from_raw_parts_mut(p.kernel as *mut u8, kernel_size as usize) };
    cfg.read_file(item(fw_cfg::KEY_KERNEL_DATA, kernel_size), kernel)
        .map_err(|e| LinuxError::Read("kernel", e))?;
    if initrd_size > 0 {
        // SAFETY: as for the kernel; `place` keeps the initrd out of the kernel's range.
        let initrd =
            unsafe { core::slice::from_raw_parts_mut(p.initrd as *mut u8, initrd_size as usize) };
        cfg.read_file(item(fw_cfg::KEY_INITRD_DATA, initrd_size), initrd)
            .map_err(|e| LinuxError::Read("initrd", e))?;
    }

    let mut boot = BOOT.lock();
    let boot = &mut *boot;
    let clen = cmdline_size as usize;
    let cmd = boot
        .cmdline
        .get_mut(..clen)
        .ok_or(LinuxError::Cmdline(cmdline_size))?;
    cfg.read_file(item(fw_cfg::KEY_CMDLINE_DATA, cmdline_size), cmd)
        .map_err(|e| LinuxError::Read("command line", e))?;
    // QEMU's string ends in a NUL; make sure of it.
    if let Some(last) = cmd.last_mut() {
        *last = 0;
    }
    let cmdline_len = cmd.iter().position(|&c| c == 0).unwrap_or(0);
    let args = BootArgs {
        kernel: p.kernel,
        cmdline: boot.cmdline.as_ptr() as u64,
        cmdline_len,
        initrd: (p.initrd, initrd_size.into()),
        rsdp: rsdp.unwrap_or(0),
        setup_data: 0,
        e820: &e820,
    };
    write_zero_page(&mut boot.zero_page, setup, &h, &args).map_err(LinuxError::ZeroPage)?;
    for e in &e820 {
        log::debug!(
            "Linux: e820 {:#011x}-{:#011x} type {}",
            e.addr,
            e.addr + e.size - 1,
            e.kind
        );
    }
    Ok(Kernel {
        entry: p.kernel + ENTRY64_OFFSET,
        zero_page: boot.zero_page.as_ptr() as u64,
    })
}

core::arch::global_asm!(
    concat!(
        include_str!("../../platform/asm/gdt.S"),
        include_str!("../asm/linux.S")
    ),
    options(att_syntax)
);

extern "sysv64" {
    fn linux_handoff(entry: u64, zero_page: u64) -> !;
}

impl Kernel {
    /// Where the kernel is entered.
    pub fn entry(&self) -> u64 {
        self.entry
    }

    /// The zero page's address.
    pub fn zero_page(&self) -> u64 {
        self.zero_page
    }

    /// Enter the kernel. Never returns.
    pub fn enter(self) -> ! {
        // SAFETY: `load` checked the image for the 64-bit entry and loaded it where the
        // map gives it RAM; the zero page and the GDT and stack `linux_handoff` uses lie
        // in the reserved firmware window, on the identity map the code runs on.
        unsafe { linux_handoff(self.entry, self.zero_page) }
    }
}
