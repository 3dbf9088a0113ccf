//! QEMU's ACPI tables: run its `etc/table-loader` script (`q35::table_loader`, checked
//! whole before anything is written) into an area right below the coreboot tables, which
//! the memory map then reserves as ACPI. The payload learns the RSDP's address from the
//! coreboot tables (`LB_TAG_ACPI_RSDP`), Linux from its zero page.
//!
//! Runs in `hand_off`, long after the SMI feature negotiation: QEMU generates its DSDT,
//! the CPU hotplug AML included, from the features negotiated when the tables are first
//! selected (`docs/protocol.md#ordering-rules`).
//!
//! A malformed script is logged and the boot goes on without ACPI tables: they are the
//! OS's business, SMM is locked by now, and a payload that needs them reports it.

use q35::fw_cfg::FwCfg;
use q35::io::HwPorts;
use q35::table_loader::{self, Plan, ENTRY_LEN, FILE_TABLE_LOADER, MAX_ENTRIES};

/// The script, read whole before it is checked.
static SCRIPT: spin::Mutex<[u8; MAX_ENTRIES * ENTRY_LEN]> =
    spin::Mutex::new([0; MAX_ENTRIES * ENTRY_LEN]);

/// RAM the tables took: `base..end` must be reserved. `rsdp` is set when the tables are
/// complete and the RSDP checks out.
pub struct Tables {
    pub base: u64,
    pub end: u64,
    pub rsdp: Option<u64>,
}

/// Load the tables into RAM ending at `top` and starting no lower than `floor`.
/// `None`: no tables, nothing written, nothing to reserve.
pub fn load(cfg: &FwCfg<'_, HwPorts>, top: u64, floor: u64) -> Option<Tables> {
    let Some(f) = cfg.find_file(FILE_TABLE_LOADER) else {
        log::info!(
            "ACPI: QEMU offers no {} (-machine acpi=off?): no ACPI tables",
            FILE_TABLE_LOADER
        );
        return None;
    };
    // The first selection of an ACPI file makes QEMU build the tables, which may resize
    // its files: read the directory again afterwards.
    cfg.select(f.key);
    let Some(f) = cfg.find_file(FILE_TABLE_LOADER) else {
        log::error!(
            "ACPI: {} vanished from fw_cfg; no ACPI tables",
            FILE_TABLE_LOADER
        );
        return None;
    };
    let mut script = SCRIPT.lock();
    let len = f.size as usize;
    let Some(buf) = script.get_mut(..len).filter(|_| len > 0) else {
        log::error!(
            "ACPI: {} of {} bytes is empty or longer than {} entries; booting without ACPI tables",
            FILE_TABLE_LOADER,
            len,
            MAX_ENTRIES
        );
        return None;
    };
    if let Err(e) = cfg.read_file(f, buf) {
        log::error!(
            "ACPI: reading {}: {:?}; booting without ACPI tables",
            FILE_TABLE_LOADER,
            e
        );
        return None;
    }
    let script = &*buf;

    let max = crate::memmap::ACPI_MAX.min(top.saturating_sub(floor));
    let plan = match table_loader::plan(cfg, script, max) {
        Ok(p) => p,
        Err(e) => {
            log::error!(
                "ACPI: {} rejected ({}): {:?}; booting without ACPI tables",
                FILE_TABLE_LOADER,
                Where(e.entry),
                e.kind
            );
            return None;
        }
    };
    if plan.unknown > 0 {
        log::warn!(
            "ACPI: {} of {} script entries have unknown commands; skipped (as SeaBIOS and edk2 do)",
            plan.unknown,
            plan.entries
        );
    }
    let base = (top - plan.size) & !0xFFF;
    // SAFETY: `base..top` lies below the coreboot tables and above `floor` (the plan's
    // size is at most `top - floor`), in RAM the firmware keeps for itself: the memory
    // map reserves it from here on. Nothing else uses it.
    let area = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, (top - base) as usize) };
    let tables = Tables {
        base,
        end: top,
        rsdp: run(cfg, script, &plan, area, base),
    };
    if tables.rsdp.is_none() {
        // No OS should find half-linked tables; the area stays reserved all the same,
        // since a WRITE_POINTER may already have told QEMU an address in it.
        area.fill(0);
    }
    Some(tables)
}

/// Which entry of the script an error is about.
struct Where(Option<usize>);

impl core::fmt::Display for Where {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(i) => write!(f, "entry {}", i),
            None => write!(f, "whole script"),
        }
    }
}

/// Run the checked script; the RSDP's address if everything succeeded.
fn run(
    cfg: &FwCfg<'_, HwPorts>,
    script: &[u8],
    plan: &Plan,
    area: &mut [u8],
    base: u64,
) -> Option<u64> {
    if let Err(e) = table_loader::run(cfg, script, plan, area, base) {
        log::error!(
            "ACPI: {} failed ({}): {:?}; booting without ACPI tables, the area stays reserved",
            FILE_TABLE_LOADER,
            Where(e.entry),
            e.kind
        );
        return None;
    }
    for a in plan.allocations() {
        log::debug!(
            "ACPI: {:?} ({} bytes, align {}, zone {}) at {:#x}",
            a.name,
            a.file.size,
            a.align,
            a.zone,
            base + a.offset
        );
    }
    match table_loader::rsdp(plan, area, base) {
        Ok(rsdp) => {
            log::info!(
                "ACPI: {} files from QEMU's {} ({} entries) at {:#x}-{:#x}, RSDP at {:#x}",
                plan.allocations().count(),
                FILE_TABLE_LOADER,
                plan.entries - plan.padding,
                base,
                base + plan.size - 1,
                rsdp
            );
            Some(rsdp)
        }
        Err(e) => {
            log::error!(
                "ACPI: no usable RSDP after the script: {:?}; booting without ACPI tables",
                e
            );
            None
        }
    }
}
