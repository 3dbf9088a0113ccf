//! Boot-time SMBASE relocation of every present CPU, one at a time, through the boot
//! relocation stub and the boot mailbox in the (still unlocked) default-SMBASE window;
//! then every CPU is asked which slot serves its SMIs.

use core::ptr::{addr_of, read_volatile, write_bytes, write_volatile};
use core::sync::atomic::Ordering;

use q35::io::HwPorts;
use q35::{ich9, lapic};
use smm_handler::boot_reloc;
use smm_handler::layout::window;

use super::SmmError;
use crate::{mp, timer};

/// Relocate each present CPU, one at a time, with a directed SMI IPI into the boot
/// relocation stub at the default-SMBASE entry point (`smm_handler::boot_reloc`). `cpus` pairs (APIC ID, slot SMBASE).
pub fn relocate_all(cpus: &[(u32, u32)], bsp_apic: u32) -> Result<(), SmmError> {
    let mb = boot_reloc::mailbox();
    // SAFETY: the default-SMBASE window is unlocked RAM owned by firmware until the lock;
    // the boot mailbox and the entry point are regions of their own (layout.rs), and no
    // CPU runs there yet.
    unsafe {
        write_bytes(mb, 0, 1);
        let code = boot_reloc::stub_code();
        let len = code.len().min(window::HANDLER.size as usize);
        core::ptr::copy_nonoverlapping(
            code.as_ptr(),
            window::HANDLER.base as usize as *mut u8,
            len,
        );
        for &(apic, smbase) in cpus {
            let Some(slot) = (*mb).new_smbase.get_mut(apic as usize) else {
                return Err(SmmError::ApicIdTooLarge(apic));
            };
            write_volatile(slot, smbase);
        }
    }
    // APs first, the BSP last (its relocation IPI goes to itself).
    let order = cpus
        .iter()
        .filter(|c| c.0 != bsp_apic)
        .chain(cpus.iter().filter(|c| c.0 == bsp_apic));
    for &(apic, smbase) in order {
        // SAFETY: the mailbox byte of `apic` (< 256, checked above), written from SMM.
        let done = unsafe { addr_of!((*mb).done).cast::<u8>().add(apic as usize) };
        lapic::send_ipi(apic, lapic::ICR_SMI).map_err(SmmError::Ipi)?;
        // SAFETY: reading the mailbox byte the relocation stub writes from SMM.
        let ok = timer::wait_until(1_000_000, || unsafe { read_volatile(done) } == 1);
        // SAFETY: as above.
        if unsafe { read_volatile(addr_of!((*mb).unknown)) } != 0 {
            return Err(SmmError::UnknownCpuInRelocation);
        }
        if !ok {
            return Err(SmmError::RelocationTimeout { apic });
        }
        // `done` is written right before the stub's RSM: until that RSM, the CPU still
        // reads the one save state at the default SMBASE, which the next CPU's SMM entry
        // would overwrite (its context, and the SMBASE meant for the next one). So an AP
        // answers a ping from outside SMM before the next relocation (found in a loaded
        // test run: the AP got the boot CPU's SMBASE).
        if apic != bsp_apic {
            let ap = mp::ap_by_apic(apic).ok_or(SmmError::RelocationTimeout { apic })?;
            if !mp::run_on_ap(ap, mp::CMD_PING) {
                return Err(SmmError::RelocationTimeout { apic });
            }
        }
        log::debug!("relocated APIC {} to SMBASE {:#x}", apic, smbase);
    }
    Ok(())
}

/// Ask every present CPU which slot serves its SMIs; all must match the layout.
pub fn verify_slots(cpus: &[(u32, u32)], bsp_apic: u32) -> Result<(), SmmError> {
    let pmbase = ich9::PMBASE;
    let en = ich9::smi_en(&HwPorts, pmbase);
    ich9::set_smi_en(
        &HwPorts,
        pmbase,
        en | ich9::SMI_EN_APMC | ich9::SMI_EN_GBL_SMI,
    );
    for (slot, &(apic, smbase)) in cpus.iter().enumerate() {
        let got = if apic == bsp_apic {
            smm_handler::diag::query()
        } else {
            let ap = mp::ap_by_apic(apic).ok_or(SmmError::QueryFailed { apic })?;
            if !mp::run_on_ap(ap, mp::CMD_SMM_QUERY) {
                return Err(SmmError::QueryFailed { apic });
            }
            let s = ap.result_slot.load(Ordering::SeqCst);
            if s == u64::MAX {
                None
            } else {
                Some((s, ap.result_count.load(Ordering::SeqCst)))
            }
        };
        let (s, count) = got.ok_or(SmmError::QueryFailed { apic })?;
        let (gslot, gbase) = (s as u32, (s >> 32) as u32);
        if gslot as usize != slot || gbase != smbase || count == 0 {
            return Err(SmmError::WrongSlot {
                apic,
                slot: gslot,
                smbase: gbase,
            });
        }
        log::info!(
            "CPU APIC {}: SMI served by slot {} at SMBASE {:#x}",
            apic,
            gslot,
            gbase
        );
    }
    Ok(())
}
