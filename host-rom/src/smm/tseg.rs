//! TSEG laid out for its slots (every possible CPU with hotplug, else every present one),
//! the way coreboot's x86_64 TSEG build does it (`smm_handler::layout::tseg`): identity
//! page tables, the GDT, the relocated SMM module with its parameter block, the stack
//! pool with a canary per stack, and one entry stub per slot with its own parameters.

use core::ptr::{write_bytes, write_volatile};

use smm_handler::boot_info::{SmmParams, PARAMS_MAGIC};
use smm_handler::layout::tseg::{self, Tseg};
use smm_handler::layout::{window, SMM_ENTRY_OFFSET, STACK_CANARY};
use smm_handler::slots::MAX_SLOTS;

use super::rmod::Rmod;
use super::SmmError;
use crate::smm_stub;

/// What the SMM setup produced, for the log and the benchmark.
pub struct SmmLayout {
    /// Slots laid out.
    pub slots: u32,
    /// Bytes of the SMM module image.
    pub module_size: u32,
    /// Stacks in the pool (each `tseg::STACK_SIZE` bytes, part of the fixed SMRAM).
    pub stacks: u32,
    /// SMRAM bytes in use.
    pub total_bytes: u32,
}

fn at(t: u32, off: u32) -> *mut u8 {
    (t + off) as usize as *mut u8
}

/// Lay out `t` at `tseg_base`, load the module and the stubs, and let `fill` complete
/// the parameter block (the slot fields are filled here). TSEG is still plain RAM.
///
/// # Safety
/// `tseg_base..+t.size` must be RAM that nothing else uses, with TSEG not enabled yet.
pub unsafe fn load(
    t: Tseg,
    tseg_base: u32,
    module: &Rmod<'_>,
    fill: impl FnOnce(&mut SmmParams),
) -> Result<SmmLayout, SmmError> {
    let slots = t.slots;
    if module.image_size > tseg::MODULE.size {
        return Err(SmmError::ModuleTooLarge(module.image_size));
    }
    if slots as usize > MAX_SLOTS || !t.fits() {
        return Err(SmmError::TooManySlots(slots));
    }
    if smm_stub::smm_stub().code.len() > smm_stub::P_GDT {
        return Err(SmmError::BadModule(
            "the SMM entry stub overlaps its parameters",
        ));
    }
    // SAFETY: TSEG is ours (caller contract); the layout keeps every part apart
    // (asserted in smm_handler::layout::tseg).
    unsafe {
        write_bytes(at(tseg_base, 0), 0, t.size as usize);
        write_page_tables(tseg_base);
        write_gdt(tseg_base);
    }
    // SAFETY: as above; the module fits its region (checked above).
    let mbase = unsafe { load_module(tseg_base, module)? };
    // SAFETY: the parameter block lies inside the loaded image (checked by Rmod::parse).
    let p = unsafe { &mut *(at(tseg_base, tseg::MODULE.base + module.params) as *mut SmmParams) };
    *p = SmmParams::empty();
    p.magic = PARAMS_MAGIC;
    p.tseg_base = tseg_base;
    p.slot_count = slots;
    p.stack_count = t.stacks;
    for (i, s) in p.slot_smbase.iter_mut().enumerate().take(slots as usize) {
        *s = t.slot_smbase(tseg_base, i as u32);
    }
    fill(p);
    let entry = mbase + u64::from(module.entry);
    for i in 0..slots {
        // SAFETY: slot i's stub lies inside TSEG (i < t.slots, which fits).
        unsafe { install_stub(t, tseg_base, i, entry) };
    }
    for i in 0..t.stacks {
        // SAFETY: pool stack i lies inside TSEG's stack pool (i < its count, which fits).
        unsafe {
            write_volatile(
                tseg::pool_stack(tseg_base, i) as usize as *mut u64,
                STACK_CANARY,
            )
        };
    }
    Ok(SmmLayout {
        slots,
        module_size: module.image_size,
        stacks: t.stacks,
        total_bytes: t.slot_area().size
            + t.stack_area().size
            + tseg::MODULE.base
            + module.image_size,
    })
}

/// Identity map of 4 GiB, as coreboot's SMM uses: PML4[0] → PDPT, PDPT[0..3] → four page
/// directories of 2 MiB pages (present | writable | PS), except that the first 2 MiB go
/// through [`tseg::LOW_PAGE_TABLE`] in 4 KiB pages, of which below 1 MiB only the
/// default-SMBASE window and the pen ([`window::RESERVED`]) are present. Page 0 is not:
/// a SIPI that a QEMU with the SIPI-in-SMM defect delivers to a CPU in SMM in long mode
/// fetches from linear 0 (`docs/qemu.md#q-sipi-in-smm`) and now faults, which the stub's
/// zero-limit IDT turns into a shutdown, instead of running OS code in SMM (R16).
///
/// # Safety
/// TSEG must be ours and zeroed.
unsafe fn write_page_tables(t: u32) {
    let pt = at(t, tseg::PAGE_TABLES.base) as *mut u64;
    let base = u64::from(t + tseg::PAGE_TABLES.base);
    let low = (tseg::LOW_PAGE_TABLE - tseg::PAGE_TABLES.base) as usize / 8;
    // SAFETY: the seven pages of PAGE_TABLES are inside TSEG (caller contract); `low`
    // indexes its last page.
    unsafe {
        write_volatile(pt, (base + 0x1000) | PTE_P | PTE_RW);
        for i in 0..4u64 {
            write_volatile(
                pt.add(512 + i as usize),
                (base + 0x2000 + i * 0x1000) | PTE_P | PTE_RW,
            );
        }
        for j in 0..2048u64 {
            write_volatile(
                pt.add(1024 + j as usize),
                (j << 21) | PTE_P | PTE_RW | PTE_PS,
            );
        }
        // The first 2 MiB through the low page table (entries left 0 are not present).
        write_volatile(
            pt.add(1024),
            u64::from(t + tseg::LOW_PAGE_TABLE) | PTE_P | PTE_RW,
        );
        for k in 0..512u64 {
            if low_page_mapped(k << 12) {
                write_volatile(pt.add(low + k as usize), (k << 12) | PTE_P | PTE_RW);
            }
        }
    }
}

/// Page-table entry bits: present, writable, 2 MiB page (in a page directory).
const PTE_P: u64 = 1 << 0;
const PTE_RW: u64 = 1 << 1;
const PTE_PS: u64 = 1 << 7;

/// Whether SMM maps the 4 KiB page at `addr` (below 2 MiB): the default-SMBASE window
/// and the pen below 1 MiB, everything from 1 MiB on.
fn low_page_mapped(addr: u64) -> bool {
    window::RESERVED.holds(addr) || addr >= 0x10_0000
}

/// The flat GDT the slot stubs load, the same descriptors as the boot code's.
///
/// # Safety
/// TSEG must be ours.
unsafe fn write_gdt(t: u32) {
    let gdt = smm_stub::gdt();
    // SAFETY: the GDT region is inside TSEG and larger than the table.
    unsafe {
        core::ptr::copy_nonoverlapping(gdt.as_ptr(), at(t, tseg::GDT.base), gdt.len());
    }
}

/// Copy the module to its region and apply its relocations; returns its load address.
///
/// # Safety
/// TSEG must be ours and the module must fit its region.
unsafe fn load_module(t: u32, module: &Rmod<'_>) -> Result<u64, SmmError> {
    let m = at(t, tseg::MODULE.base);
    let mbase = u64::from(t + tseg::MODULE.base);
    // SAFETY: the image fits MODULE (caller contract); each relocation is bounds-checked
    // against the image before it is applied.
    unsafe {
        core::ptr::copy_nonoverlapping(module.image.as_ptr(), m, module.image.len());
        for r in module.relocs.chunks_exact(4) {
            let off = u32::from_le_bytes([r[0], r[1], r[2], r[3]]);
            if off + 8 > module.image_size {
                return Err(SmmError::BadModule("relocation outside the image"));
            }
            let p = m.add(off as usize) as *mut u64;
            p.write_unaligned(p.read_unaligned() + mbase);
        }
    }
    Ok(mbase)
}

/// Slot `i`'s entry stub at SMBASE + 0x8000 with its own parameters.
///
/// # Safety
/// TSEG `tseg` at `t` must be ours; `i < tseg.slots`.
unsafe fn install_stub(tseg: Tseg, t: u32, i: u32, entry: u64) {
    let stub = smm_stub::smm_stub();
    let s = (tseg.slot_smbase(t, i) + SMM_ENTRY_OFFSET) as usize as *mut u8;
    // SAFETY: the stub (at most STUB_MAX bytes) and its parameters lie in slot i's stub
    // area inside TSEG.
    unsafe {
        core::ptr::copy_nonoverlapping(stub.code.as_ptr(), s, stub.code.len());
        let w16 = |o: usize, v: u16| (s.add(o) as *mut u16).write_unaligned(v);
        let w32 = |o: usize, v: u32| (s.add(o) as *mut u32).write_unaligned(v);
        let w64 = |o: usize, v: u64| (s.add(o) as *mut u64).write_unaligned(v);
        w16(smm_stub::P_GDT, smm_stub::gdt().len() as u16 - 1);
        w32(smm_stub::P_GDT + 2, t + tseg::GDT.base);
        w32(smm_stub::P_SELF, s as u32);
        w32(smm_stub::P_CR3, t + tseg::PAGE_TABLES.base);
        w32(smm_stub::P_FAR32, s as u32 + stub.off32 as u32);
        w16(smm_stub::P_FAR32 + 4, smm_stub::SEL_CODE32);
        w32(smm_stub::P_FAR64, s as u32 + stub.off64 as u32);
        w16(smm_stub::P_FAR64 + 4, smm_stub::SEL_CODE64);
        w64(smm_stub::P_ENTRY, entry);
        w32(smm_stub::P_SLOT, i);
        // The IDT base: the copy itself, in SMRAM; the limit stays the assembled 0.
        w32(stub.off_idt + 2, s as u32);
    }
}
