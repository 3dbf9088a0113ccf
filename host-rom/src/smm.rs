//! SMM setup the way coreboot's SMM stage does it: TSEG layout for every possible CPU,
//! the relocatable SMM module, one entry stub per slot, serialized boot-time SMBASE
//! relocation of every present CPU, then the first-SMI handler at the default SMBASE,
//! and the locks. Every step is checked; the caller stops the boot on any error.

use core::ptr::{read_volatile, write_bytes, write_volatile};
use core::sync::atomic::Ordering;

use q35::io::HwPorts;
use q35::{ich9, lapic, mch::Mch};
use smm_handler::params::{self, SmmParams, MAX_SLOTS, SLOT_STACK_SIZE};

use crate::{mp, smm_stub, timer};

pub const TSEG_SIZE: u32 = 1 << 20;
const PT_OFF: u32 = 0x0;
const GDT_OFF: u32 = 0x6000;
pub const MODULE_OFF: u32 = 0x8000;
const MODULE_MAX: u32 = 0x38000;
const STACKS_OFF: u32 = 0x40000;
/// Slot 0's SMBASE: its save state ends exactly at the top of TSEG.
const TOP_SMBASE_OFF: u32 = TSEG_SIZE - 0x10000;

/// Boot-relocation mailbox inside the (still unlocked) default-SMBASE window.
const RELOC_TABLE: u32 = 0x30100;
const RELOC_DONE: u32 = 0x30500;
const RELOC_UNKNOWN: u32 = 0x30604;
const RELOC_STUB: u32 = 0x38000;

// Fields are read through `Debug` in the fatal message.
#[allow(dead_code)]
#[derive(Debug)]
pub enum SmmError {
    BadModule(&'static str),
    ModuleTooLarge(u32),
    TooManySlots(u32),
    ApicIdTooLarge(u32),
    Ipi(lapic::IpiError),
    RelocationTimeout { apic: u32 },
    UnknownCpuInRelocation,
    QueryFailed { apic: u32 },
    WrongSlot { apic: u32, slot: u32, smbase: u32 },
    TsegNotEnabled,
    DefaultSmramNotLocked(u8),
    DefaultSmramStillVisible(u32),
    NotLocked(u8),
    TsegVisible(u32),
}

/// What the SMM setup produced, for the log, the coreboot tables and the benchmark.
pub struct SmmLayout {
    pub slots: u32,
    pub module_size: u32,
    pub slot_bytes: u32,
    pub total_bytes: u32,
}

/// A parsed "HRMD" relocatable module (see fwtool's rmod format).
pub struct Rmod<'a> {
    image_size: u32,
    image: &'a [u8],
    entry: u32,
    params: u32,
    relocs: &'a [u8],
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> Rmod<'a> {
    pub fn parse(b: &'a [u8]) -> Result<Self, SmmError> {
        if b.get(0..4) != Some(b"HRMD") || le32(b, 4) != Some(1) {
            return Err(SmmError::BadModule("bad magic or version"));
        }
        let f = |o| le32(b, o).ok_or(SmmError::BadModule("truncated header"));
        let (image_size, file_size, entry, params, nrel) = (f(8)?, f(12)?, f(16)?, f(20)?, f(24)?);
        let image = b
            .get(32..32 + file_size as usize)
            .ok_or(SmmError::BadModule("truncated image"))?;
        let rstart = 32 + file_size as usize;
        let relocs = b
            .get(rstart..rstart + 4 * nrel as usize)
            .ok_or(SmmError::BadModule("truncated relocations"))?;
        if file_size > image_size
            || entry >= image_size
            || params as usize + core::mem::size_of::<SmmParams>() > image_size as usize
        {
            return Err(SmmError::BadModule("inconsistent header"));
        }
        Ok(Self {
            image_size,
            image,
            entry,
            params,
            relocs,
        })
    }
}

fn tseg(t: u32, off: u32) -> *mut u8 {
    (t + off) as *mut u8
}

/// Lay out TSEG, load the module and the stubs. TSEG is still plain RAM here.
///
/// # Safety
/// `tseg_base..+TSEG_SIZE` must be RAM that nothing else uses, with TSEG not yet enabled.
pub unsafe fn load(
    tseg_base: u32,
    module: &Rmod<'_>,
    slots: u32,
    fill: impl FnOnce(&mut SmmParams),
) -> Result<SmmLayout, SmmError> {
    if module.image_size > MODULE_MAX {
        return Err(SmmError::ModuleTooLarge(module.image_size));
    }
    if slots as usize > MAX_SLOTS {
        return Err(SmmError::TooManySlots(slots));
    }
    let t = tseg_base;
    // SAFETY (whole block): all writes stay inside the TSEG range the caller gave us; the
    // layout constants keep page tables, GDT, module, stacks and slots apart (the slot
    // area starts at TOP_SMBASE_OFF + 0x8000 - 63 * 0x400 > STACKS_OFF + 64 * 0x800).
    unsafe {
        write_bytes(tseg(t, 0), 0, TSEG_SIZE as usize);

        // Identity map of 4 GiB with 2 MiB pages, as coreboot's SMM uses.
        let pt = tseg(t, PT_OFF) as *mut u64;
        let base = u64::from(t + PT_OFF);
        write_volatile(pt, (base + 0x1000) | 3);
        for i in 0..4u64 {
            write_volatile(pt.add(512 + i as usize), (base + 0x2000 + i * 0x1000) | 3);
        }
        for j in 0..2048u64 {
            write_volatile(pt.add(1024 + j as usize), (j << 21) | 0x83);
        }

        // GDT: null, 32-bit code, data, 64-bit code (same selectors as the stub expects).
        let gdt = tseg(t, GDT_OFF) as *mut u64;
        for (i, d) in [
            0,
            0x00CF_9A00_0000_FFFF,
            0x00CF_9200_0000_FFFF,
            0x00AF_9A00_0000_FFFF,
        ]
        .into_iter()
        .enumerate()
        {
            write_volatile(gdt.add(i), d);
        }

        // The module, relocated to its load address.
        let m = tseg(t, MODULE_OFF);
        core::ptr::copy_nonoverlapping(module.image.as_ptr(), m, module.image.len());
        let mbase = u64::from(t + MODULE_OFF);
        for r in module.relocs.chunks_exact(4) {
            let off = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            if off + 8 > module.image_size {
                return Err(SmmError::BadModule("relocation outside the image"));
            }
            let p = m.add(off as usize) as *mut u64;
            p.write_unaligned(p.read_unaligned() + mbase);
        }

        let p = &mut *(m.add(module.params as usize) as *mut SmmParams);
        *p = SmmParams::empty();
        p.magic = params::PARAMS_MAGIC;
        p.version = params::PARAMS_VERSION;
        p.tseg_base = t;
        p.tseg_size = TSEG_SIZE;
        p.num_slots = slots;
        p.stack_size = SLOT_STACK_SIZE;
        p.stack_base = t + STACKS_OFF;
        let top = t + TOP_SMBASE_OFF;
        for i in 0..slots {
            p.slot_smbase[i as usize] = params::slot_smbase(top, i);
        }
        fill(p);

        // One stub copy per slot, each with its own parameters; stack canaries.
        let stub = smm_stub::smm_stub();
        for i in 0..slots {
            let smbase = params::slot_smbase(top, i);
            let s = (smbase + 0x8000) as *mut u8;
            core::ptr::copy_nonoverlapping(stub.code.as_ptr(), s, stub.code.len());
            let w16 = |o: usize, v: u16| (s.add(o) as *mut u16).write_unaligned(v);
            let w32 = |o: usize, v: u32| (s.add(o) as *mut u32).write_unaligned(v);
            let w64 = |o: usize, v: u64| (s.add(o) as *mut u64).write_unaligned(v);
            w16(smm_stub::P_GDT, 31);
            w32(smm_stub::P_GDT + 2, t + GDT_OFF);
            w32(smm_stub::P_SELF, s as u32);
            w32(smm_stub::P_CR3, t + PT_OFF);
            w32(smm_stub::P_FAR32, s as u32 + stub.off32 as u32);
            w16(smm_stub::P_FAR32 + 4, 0x08);
            w32(smm_stub::P_FAR64, s as u32 + stub.off64 as u32);
            w16(smm_stub::P_FAR64 + 4, 0x18);
            w64(smm_stub::P_ENTRY, mbase + u64::from(module.entry));
            let stack_lo = t + STACKS_OFF + i * SLOT_STACK_SIZE;
            w64(smm_stub::P_STACK, u64::from(stack_lo + SLOT_STACK_SIZE));
            w32(smm_stub::P_SLOT, i);
            write_volatile(stack_lo as *mut u64, params::STACK_CANARY);
        }

        let lowest = params::slot_smbase(top, slots.saturating_sub(1)) + 0x8000;
        let slot_bytes = params::SLOT_STRIDE;
        Ok(SmmLayout {
            slots,
            module_size: module.image_size,
            slot_bytes: slot_bytes + SLOT_STACK_SIZE,
            total_bytes: (TSEG_SIZE - (lowest - t))
                + slots * SLOT_STACK_SIZE
                + MODULE_OFF
                + module.image_size,
        })
    }
}

/// Enable TSEG (H_SMRAME, T_EN, 1 MiB) and compatible SMRAM, still unlocked.
pub fn enable_tseg() -> Result<(), SmmError> {
    let m = Mch::new(&HwPorts);
    m.set_esmramc(q35::mch::ESMRAMC_H_SMRAME | q35::mch::ESMRAMC_TSEG_1M | q35::mch::ESMRAMC_T_EN);
    m.set_smramc(q35::mch::SMRAMC_G_SMRAME | q35::mch::SMRAMC_C_BASE_SEG);
    if m.tseg_size() != Some(TSEG_SIZE) {
        return Err(SmmError::TsegNotEnabled);
    }
    Ok(())
}

/// Relocate each present CPU, one at a time, with a directed SMI IPI into the boot
/// relocation stub at 0x38000. `cpus` pairs (APIC ID, slot SMBASE).
pub fn relocate_all(cpus: &[(u32, u32)], bsp_apic: u32) -> Result<(), SmmError> {
    // SAFETY: the default-SMBASE window is unlocked RAM owned by firmware until the lock;
    // the AP trampoline that was there has been left by every AP (they all checked in).
    unsafe {
        write_bytes(0x30000 as *mut u8, 0, 0x1000);
        let code = smm_stub::reloc_stub();
        core::ptr::copy_nonoverlapping(code.as_ptr(), RELOC_STUB as *mut u8, code.len());
        for &(apic, smbase) in cpus {
            if apic >= 256 {
                return Err(SmmError::ApicIdTooLarge(apic));
            }
            write_volatile((RELOC_TABLE + 4 * apic) as *mut u32, smbase);
        }
    }
    // APs first, the BSP last (its relocation IPI goes to itself).
    let order = cpus
        .iter()
        .filter(|c| c.0 != bsp_apic)
        .chain(cpus.iter().filter(|c| c.0 == bsp_apic));
    for &(apic, smbase) in order {
        let done = (RELOC_DONE + apic) as *const u8;
        lapic::send_ipi(apic, lapic::ICR_SMI).map_err(SmmError::Ipi)?;
        // SAFETY: reading the mailbox byte the relocation stub writes from SMM.
        let ok = timer::wait_until(1_000_000, || unsafe { read_volatile(done) } == 1);
        // SAFETY: as above.
        if unsafe { read_volatile(RELOC_UNKNOWN as *const u8) } != 0 {
            return Err(SmmError::UnknownCpuInRelocation);
        }
        if !ok {
            return Err(SmmError::RelocationTimeout { apic });
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

/// Install the first-SMI handler, then lock the default-SMBASE window, close and lock
/// SMRAM (D_LCK), and check all three from outside SMM.
pub fn install_and_lock(default_smram: bool, tseg_base: u32) -> Result<(), SmmError> {
    let m = Mch::new(&HwPorts);
    if default_smram {
        // SAFETY: 0x30000-0x4FFFF is still unlocked firmware RAM, and the pen page is
        // reserved for this purpose.
        unsafe { smm_handler::first_smi::install(smm_handler::first_smi::PEN_BASE) };
        if !m.lock_default_smbase_smram() {
            return Err(SmmError::DefaultSmramNotLocked(
                m.raw_default_smbase_smram(),
            ));
        }
        // SAFETY: reading ordinary physical addresses; after the lock they must read
        // all-ones from outside SMM.
        let v = unsafe { read_volatile(0x30000 as *const u32) };
        if v != 0xFFFF_FFFF {
            return Err(SmmError::DefaultSmramStillVisible(v));
        }
    }
    m.set_smramc(q35::mch::SMRAMC_G_SMRAME | q35::mch::SMRAMC_C_BASE_SEG | q35::mch::SMRAMC_D_LCK);
    let s = m.smramc();
    if s & q35::mch::SMRAMC_D_LCK == 0 || s & q35::mch::SMRAMC_D_OPEN != 0 {
        return Err(SmmError::NotLocked(s));
    }
    // SAFETY: reading TSEG from outside SMM; the MCH must return all-ones.
    let v = unsafe { read_volatile(tseg_base as *const u32) };
    if v != 0xFFFF_FFFF {
        return Err(SmmError::TsegVisible(v));
    }
    Ok(())
}
