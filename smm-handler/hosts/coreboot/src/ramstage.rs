//! Boot-time preparation in coreboot's ramstage, called from qemu-q35's MP init hooks on
//! the BSP only:
//! - `pre_mp_init`: query MCH 0x9C, switch and count the CPU hotplug register block,
//!   negotiate QEMU's SMI features over fw_cfg DMA (before MP init, so before coreboot
//!   reads QEMU's ACPI tables);
//! - `get_cpu_count` / SMM layout: present CPUs to start, possible CPUs to lay out;
//! - `post_mp_init`: calibrate the TSC, record the boot info, install the first-SMI
//!   handler and the pen, lock the default-SMBASE window and verify it.
//!
//! The policy, the locking and the checks are `smm_handler::arming`, shared with the
//! host ROM; errors become integers only here, at the C boundary.

use core::ptr::addr_of_mut;

use q35::cpuhp::{CpuHp, CpuTopology};
use q35::fw_cfg::{self, FwCfg, Negotiation};
use q35::io::HwPorts;
use q35::mch::Mch;
use q35::pmtimer::PmTimer;
use smm_handler::arming;
use smm_handler::boot_info::{BootInfo, BOOT_INFO_MAGIC};
use smm_handler::layout::window;
use smm_handler::log::{Console, Level};
use smm_handler::slots::MAX_SLOTS;

use crate::{CConsole, ConsoleFn};

/// Ramstage log lines: coreboot's printk adds the level, so no "[SMM ...]" tag here.
struct RamConsole(ConsoleFn);

impl RamConsole {
    fn line(&self, level: Level, template: &str, args: &[u64]) {
        let c = CConsole(self.0, level);
        c.write(b"cpu hotplug: ");
        c.template(template, args);
        c.write(b"\n");
    }
}

/// Results of `pre_mp_init`, kept for the later hooks.
struct State {
    present: u32,
    possible: u32,
    features: u64,
    default_window: bool,
    hotplug: bool,
    topology: CpuTopology,
}

static mut STATE: State = State {
    present: 0,
    possible: 0,
    features: 0,
    default_window: false,
    hotplug: false,
    topology: CpuTopology::EMPTY,
};

fn state() -> &'static mut State {
    // SAFETY: ramstage calls these hooks on the BSP only, one at a time (MP init's
    // pre/post hooks and the CPU-count callback run before/after the APs work), and each
    // hook takes this reference once; the topology is kept here, out of the small stack.
    unsafe { &mut *addr_of_mut!(STATE) }
}

/// `rust_cpu_hotplug_pre_mp_init`: no fw_cfg.
pub const ERR_NO_FW_CFG: i32 = -1;
/// `rust_cpu_hotplug_pre_mp_init`: QEMU refused the SMI feature negotiation.
pub const ERR_NEGOTIATION: i32 = -2;
/// `rust_cpu_hotplug_pre_mp_init`: the register block has no working modern interface.
pub const ERR_CPUHP: i32 = -3;
/// `rust_cpu_hotplug_post_mp_init` before `pre_mp_init` ran.
pub const ERR_NOT_PREPARED: i32 = -5;

/// Returns 1 when CPU hotplug was negotiated, 0 when only broadcast was (QEMU will
/// refuse CPU device_add), or a negative error (the caller stops the boot).
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_pre_mp_init(max_cpus: u32, console: ConsoleFn) -> i32 {
    let c = RamConsole(console);
    let ports = HwPorts;
    let Ok(cfg) = FwCfg::detect(&ports) else {
        c.line(Level::Error, "no fw_cfg", &[]);
        return ERR_NO_FW_CFG;
    };
    let st = state();
    let hp = CpuHp::new(&ports);
    if hp
        .switch_to_modern()
        .and_then(|_| hp.count_into(&mut st.topology))
        .is_err()
    {
        c.line(
            Level::Error,
            "register block has no working modern interface",
            &[],
        );
        return ERR_CPUHP;
    }
    let topo = &st.topology;
    st.present = topo.present;
    st.possible = topo.possible;
    st.default_window = Mch::new(&ports).query_default_smbase_smram();
    let window_line = if st.default_window {
        "present {}, possible {}, SMRAM at default SMBASE yes"
    } else {
        "present {}, possible {}, SMRAM at default SMBASE no"
    };
    c.line(
        Level::Info,
        window_line,
        &[topo.present.into(), topo.possible.into()],
    );
    if topo.truncated {
        c.line(
            Level::Warn,
            "more than {} possible CPUs; counted the first {}",
            &[topo.possible.into(), topo.possible.into()],
        );
    }
    let slot_limit = max_cpus.min(MAX_SLOTS as u32);
    let policy = arming::feature_policy(
        st.default_window,
        topo.possible,
        slot_limit,
        topo.max_apic_id(),
        smm_handler::host::ROUTED_APIC_ID_MAX,
    );
    for r in &policy.refusals {
        let (t, args) = r.template();
        c.line(Level::Warn, t, &args);
    }
    match fw_cfg::negotiate_smi_features(&cfg, policy.wanted) {
        Ok(Negotiation::Granted {
            supported,
            requested,
        }) => {
            st.features = requested;
            c.line(
                Level::Info,
                "SMI features supported {:#x}, requested and granted {:#x}",
                &[supported, requested],
            );
        }
        Ok(Negotiation::Unsupported) => {
            c.line(Level::Warn, "QEMU has no SMI feature negotiation", &[]);
            st.features = 0;
        }
        Err(_) => {
            c.line(Level::Error, "SMI feature negotiation refused", &[]);
            return ERR_NEGOTIATION;
        }
    }
    st.hotplug = st.features & fw_cfg::SMI_FEATURE_CPU_HOTPLUG != 0;
    if !st.hotplug {
        c.line(Level::Warn, arming::HOTPLUG_NOT_NEGOTIATED, &[]);
    }
    i32::from(st.hotplug)
}

/// CPUs MP init starts (present ones), not QEMU's APIC-ID limit.
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_present_cpus() -> i32 {
    state().present as i32
}

/// SMM slots to lay out: every possible CPU when hotplug was negotiated.
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_possible_cpus() -> i32 {
    let st = state();
    arming::slots_to_lay_out(st.hotplug, st.present, st.possible) as i32
}

fn tsc_per_us() -> u64 {
    let pmbase = q35::ich9::pmbase(&HwPorts).unwrap_or(q35::ich9::PMBASE);
    PmTimer::new(&HwPorts, pmbase).tsc_per_us()
}

/// After MP init and `restore_default_smm_area()`: record the boot info, install the
/// first-SMI handler and the pen, and lock the default-SMBASE window. Returns 0, or a
/// negative error (the caller stops the boot).
///
/// # Safety
/// `apic_id_to_cpu` is the live table of coreboot's permanent SMM stub (or NULL when
/// hotplug was not negotiated); the default-SMBASE window and the pen page are unlocked,
/// unused RAM.
#[no_mangle]
pub unsafe extern "C" fn rust_cpu_hotplug_post_mp_init(
    apic_id_to_cpu: *mut u16,
    log_level: u32,
    console: ConsoleFn,
) -> i32 {
    let c = RamConsole(console);
    let st = state();
    if st.present == 0 {
        return ERR_NOT_PREPARED;
    }
    if !st.default_window {
        // Nothing to protect with: hotplug was not negotiated, QEMU refuses device_add.
        return 0;
    }
    let b = window::BOOT_INFO.base as usize as *mut BootInfo;
    // SAFETY: the window is unlocked firmware RAM now (caller contract) and the boot info
    // region is reserved for this block (layout.rs).
    unsafe {
        b.write(BootInfo::empty());
        let b = &mut *b;
        b.tsc_per_us = tsc_per_us();
        b.log_level = log_level;
        b.route_table = apic_id_to_cpu as u64;
        core::ptr::write_volatile(&mut b.magic, BOOT_INFO_MAGIC);
    }
    // Only with hotplug negotiated does SMM ever act on other APIC IDs (R6).
    let topo = &st.topology;
    let possible = (0..topo.possible)
        .take(if st.hotplug { usize::MAX } else { 0 })
        .map(|s| topo.apic_id(s).unwrap_or(u32::MAX));
    // SAFETY: as above; every AP has left the window (MP init is done).
    if let Err(e) = unsafe { arming::install_and_lock_window(&HwPorts, possible) } {
        c.line(Level::Error, "default-SMBASE window did not lock", &[]);
        return e.code();
    }
    c.line(
        Level::Info,
        "first-SMI handler installed, SMRAM at default SMBASE locked, {} SMM slot(s)",
        &[rust_cpu_hotplug_possible_cpus() as u64],
    );
    0
}

/// The fail-closed gate before the payload (`smm_handler::arming::check_locked` and
/// `check_features`): it tries to open SMRAM and to turn TSEG off, reads TSEG at
/// `tseg_base` and, where QEMU has it, the default-SMBASE window from outside SMM, and
/// compares QEMU's view of the SMI features with what was negotiated. 0 when all holds,
/// else the negative `ArmError` code after logging why (the caller stops the boot).
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_check_locks(tseg_base: u32, console: ConsoleFn) -> i32 {
    let c = RamConsole(console);
    let st = state();
    let tseg = (tseg_base != 0).then_some(tseg_base);
    let mut result = arming::check_locked(&HwPorts, tseg, st.default_window);
    if result.is_ok() && st.features != 0 {
        result = match FwCfg::detect(&HwPorts) {
            Ok(cfg) => arming::check_features(&cfg, st.features),
            Err(_) => Err(arming::ArmError::FeaturesChanged(u64::MAX)),
        };
    }
    match result {
        Ok(()) => 0,
        Err(e) => {
            let (what, args) = e.template();
            c.line(Level::Error, what, &args);
            e.code()
        }
    }
}

/// The range the memory map must reserve: the default-SMBASE window and the pen page
/// (`smm_handler::layout::window::RESERVED`).
///
/// # Safety
/// `base` and `size` are NULL or point to writable `uint32_t`s.
#[no_mangle]
pub unsafe extern "C" fn rust_cpu_hotplug_reserved_range(base: *mut u32, size: *mut u32) {
    // SAFETY: the caller passes valid pointers or NULL (`as_mut` handles NULL).
    unsafe {
        if let Some(b) = base.as_mut() {
            *b = window::RESERVED.base;
        }
        if let Some(s) = size.as_mut() {
            *s = window::RESERVED.size;
        }
    }
}
