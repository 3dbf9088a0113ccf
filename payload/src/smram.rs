//! SMRAM checks from outside SMM: D_LCK set and sticky, TSEG and the default-SMBASE
//! window read all-ones and drop writes (`docs/protocol.md#the-default-smbase-window`).

use crate::cbtables::Tables;
use crate::Report;
use q35::io::HwPorts;
use q35::mch::{self, Mch};
use smm_handler::layout::{window, DEFAULT_SMBASE};
use smm_handler::save_state;

/// Write a test pattern to `addr` and return what it read before and after the write.
fn probe(addr: u64) -> (u32, u32) {
    // SAFETY: physical addresses the firmware reserved; from outside SMM the MCH routes
    // them to a blackhole when SMRAM is locked. Writing is the point of the check: a
    // write that lands would be visible in the second read.
    unsafe {
        let p = addr as *mut u32;
        let before = core::ptr::read_volatile(p);
        core::ptr::write_volatile(p, 0x1234_5678);
        (before, core::ptr::read_volatile(p))
    }
}

/// Check that SMRAMC and ESMRAMC are locked, TSEG and the default-SMBASE window are
/// unreadable from outside SMM. Returns TSEG's base when it could be located.
pub fn check(r: &mut Report, _t: &Tables) -> Option<u32> {
    let m = Mch::new(&HwPorts);
    check_smramc(r, &m);
    let tseg = check_esmramc(r, &m);
    let tseg_base = check_tseg(r, tseg);
    check_window(r, &m);
    tseg_base
}

/// D_LCK set, and D_OPEN cannot be set any more.
fn check_smramc(r: &mut Report, m: &Mch<'_, HwPorts>) {
    let s = m.smramc();
    m.set_smramc(mch::SMRAMC_D_OPEN | mch::SMRAMC_G_SMRAME | mch::SMRAMC_C_BASE_SEG);
    let after = m.smramc();
    r.check(
        "smram-d_lck",
        s & mch::SMRAMC_D_LCK != 0 && after == s && after & mch::SMRAMC_D_OPEN == 0,
        format_args!(
            "SMRAMC {:#04x}, after writing D_OPEN without D_LCK {:#04x}",
            s, after
        ),
    );
}

/// TSEG enabled, and ESMRAMC cannot be changed any more. Returns TSEG's size.
fn check_esmramc(r: &mut Report, m: &Mch<'_, HwPorts>) -> Option<u32> {
    let e = m.esmramc();
    m.set_esmramc(0);
    let e2 = m.esmramc();
    let tseg = m.tseg_size();
    r.check(
        "tseg-enabled-and-locked",
        tseg.is_some() && e2 == e,
        format_args!(
            "ESMRAMC {:#04x}, after writing 0 {:#04x}, TSEG {:?} bytes",
            e, e2, tseg
        ),
    );
    tseg
}

/// TSEG reads all-ones and drops writes from outside SMM. Returns its base if found.
fn check_tseg(r: &mut Report, tseg: Option<u32>) -> Option<u32> {
    // TSEG sits at the top of RAM below 4 GiB (QEMU: below_4g_mem_size - size).
    let low_top = q35::fw_cfg::FwCfg::detect(&HwPorts)
        .ok()
        .and_then(|cfg| {
            let f = cfg.find_file("etc/e820")?;
            let mut b = [0u8; 320];
            let n = (f.size as usize).min(320);
            cfg.read_file(f, &mut b[..n]).ok()?;
            b[..n]
                .chunks_exact(20)
                .filter(|e| e[16] == 1)
                .map(|e| {
                    let a = u64::from_le_bytes(e[0..8].try_into().unwrap_or([0; 8]));
                    a + u64::from_le_bytes(e[8..16].try_into().unwrap_or([0; 8]))
                })
                .filter(|&end| end <= 0x1_0000_0000)
                .max()
        })
        .unwrap_or(0);
    let mut tseg_base = None;
    if let (Some(size), true) = (tseg, low_top > 0) {
        let base = low_top - u64::from(size);
        let probes = [base, base + 0x8000, base + u64::from(size) - 4];
        let ok = probes
            .iter()
            .all(|&a| probe(a) == (0xFFFF_FFFF, 0xFFFF_FFFF));
        tseg_base = Some(base as u32);
        r.check(
            "tseg-unreadable",
            ok,
            format_args!(
                "TSEG {:#x}-{:#x} reads all-ones and drops writes",
                base,
                base + u64::from(size) - 1
            ),
        );
    } else {
        r.check("tseg-unreadable", false, format_args!("cannot locate TSEG"));
    }
    tseg_base
}

/// After a hot-add: SMRAM still closed and locked (D_LCK, no D_OPEN), TSEG (at `tseg`,
/// when it was found) still unreadable, and the default-SMBASE window still locked.
pub fn check_still_locked(r: &mut Report, tseg: Option<u32>) {
    check_locked_as(r, tseg, "smram-locked-after-hotplug");
}

/// [`check_still_locked`] reported as check `name` (e.g. after a hot-remove).
pub fn check_locked_as(r: &mut Report, tseg: Option<u32>, name: &'static str) {
    let m = Mch::new(&HwPorts);
    let s = m.smramc();
    let tseg_ok = tseg.map(|b| probe(u64::from(b)) == (0xFFFF_FFFF, 0xFFFF_FFFF));
    let window = m.default_smbase_smram_locked();
    r.check(
        name,
        s & mch::SMRAMC_D_LCK != 0
            && s & mch::SMRAMC_D_OPEN == 0
            && tseg_ok == Some(true)
            && window,
        format_args!(
            "SMRAMC {:#04x}; TSEG reads all-ones: {:?}; MCH {:#X} locked: {}",
            s,
            tseg_ok,
            mch::REG_SMBASE_SMRAM,
            window
        ),
    );
}

/// MCH 0x9C reads locked and the default-SMBASE window reads all-ones and drops writes.
fn check_window(r: &mut Report, m: &Mch<'_, HwPorts>) {
    let locked = m.raw_default_smbase_smram();
    // The window's first dword, the first-SMI handler's entry, the shared save state's
    // SMBASE field and the window's last dword.
    let probes = [
        window::WINDOW.base,
        window::HANDLER.base,
        DEFAULT_SMBASE + save_state::SMBASE,
        window::WINDOW.end() - 4,
    ];
    let ok = probes
        .iter()
        .all(|&a| probe(u64::from(a)) == (0xFFFF_FFFF, 0xFFFF_FFFF));
    r.check(
        "default-smbase-smram-locked",
        locked == mch::SMBASE_SMRAM_LOCK && ok,
        format_args!(
            "MCH {:#X} = {:#04x}; {:#x}-{:#x} reads all-ones and drops writes: {}",
            mch::REG_SMBASE_SMRAM,
            locked,
            window::WINDOW.base,
            window::WINDOW.end() - 1,
            ok
        ),
    );
}
