//! Boot-time preparation in coreboot's ramstage (spec 7.3 items 1, 8, 9), called from
//! qemu-q35's MP init hooks on the BSP only:
//! - `pre_mp_init`: query MCH 0x9C, switch and count the CPU hotplug register block,
//!   negotiate QEMU's SMI features over fw_cfg DMA (before MP init, so before coreboot
//!   reads QEMU's ACPI tables);
//! - `get_cpu_count` / SMM layout: present CPUs to start, possible CPUs to lay out;
//! - `post_mp_init`: calibrate the TSC, record the boot-info block, install the
//!   first-SMI handler and the pen, lock the default-SMBASE window and verify it.

use core::ptr::addr_of_mut;

use q35::cpuhp::CpuHp;
use q35::fw_cfg::{self, FwCfg, Negotiation};
use q35::io::HwPorts;
use q35::mch::Mch;
use q35::pmtimer::PmTimer;
use smm_handler::first_smi;
use smm_handler::log::{Console, Level, Part};
use smm_handler::params::MAX_SLOTS;

use crate::bootinfo::{BootInfo, BOOTINFO_BASE, BOOTINFO_MAGIC};
use crate::CConsole;

/// Ramstage log lines: coreboot's printk adds the level, so no "[SMM ...]" tag here.
struct RamConsole(CConsole);

impl Console for RamConsole {
    fn write(&self, bytes: &[u8]) {
        self.0.write(bytes)
    }

    fn line(&self, _level: Level, parts: &[Part<'_>]) {
        self.write(b"cpu hotplug: ");
        self.parts(parts);
        self.write(b"\n");
    }
}

type ConsoleFn = Option<extern "C" fn(buf: *const u8, len: usize)>;

/// Results of `pre_mp_init`, kept for the later hooks.
struct State {
    present: u32,
    possible: u32,
    features: u64,
    default_smram: bool,
    hotplug: bool,
    apic_ids: [u32; MAX_SLOTS],
}

static mut TOPOLOGY: q35::cpuhp::CpuTopology = q35::cpuhp::CpuTopology::EMPTY;

static mut STATE: State = State {
    present: 0,
    possible: 0,
    features: 0,
    default_smram: false,
    hotplug: false,
    apic_ids: [u32::MAX; MAX_SLOTS],
};

fn state() -> &'static mut State {
    // SAFETY: ramstage calls these hooks on the BSP only, one at a time (MP init's
    // pre/post hooks and the CPU-count callback run before/after the APs work).
    unsafe { &mut *addr_of_mut!(STATE) }
}

pub const ERR_NO_FW_CFG: i32 = -1;
pub const ERR_NEGOTIATION: i32 = -2;
pub const ERR_CPUHP: i32 = -3;
pub const ERR_LOCK: i32 = -4;
pub const ERR_NOT_PREPARED: i32 = -5;

/// Returns 1 when CPU hotplug was negotiated, 0 when only broadcast was (QEMU will
/// refuse CPU device_add), or a negative error (the caller stops the boot).
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_pre_mp_init(max_cpus: u32, console: ConsoleFn) -> i32 {
    let c = RamConsole(CConsole(console));
    let ports = HwPorts;
    let Ok(cfg) = FwCfg::detect(&ports) else {
        c.line(Level::Error, &[Part::Str(b"no fw_cfg")]);
        return ERR_NO_FW_CFG;
    };
    let st = state();
    let hp = CpuHp::new(&ports);
    // SAFETY: BSP only, see `state()`; the topology is kept out of the small stack.
    let topo = unsafe { &mut *addr_of_mut!(TOPOLOGY) };
    match hp.switch_to_modern().and_then(|_| hp.count_into(topo)) {
        Ok(()) => {}
        Err(_) => {
            c.line(
                Level::Error,
                &[Part::Str(b"register block has no working modern interface")],
            );
            return ERR_CPUHP;
        }
    };
    st.present = topo.present;
    st.possible = topo.possible;
    for (dst, sel) in st.apic_ids.iter_mut().zip(0..topo.possible) {
        *dst = topo.apic_id(sel).unwrap_or(u32::MAX);
    }
    st.default_smram = Mch::new(&ports).query_default_smbase_smram();
    let fits = topo.possible as usize <= MAX_SLOTS && topo.possible <= max_cpus;
    let ids_ok = topo.max_apic_id() < 256;
    let want_hotplug = st.default_smram && fits && ids_ok;
    c.line(
        Level::Info,
        &[
            Part::Str(b"present "),
            Part::Dec(topo.present.into()),
            Part::Str(b", possible "),
            Part::Dec(topo.possible.into()),
            Part::Str(b", SMRAM at default SMBASE "),
            Part::Str(if st.default_smram { b"yes" } else { b"no" }),
        ],
    );
    if !fits {
        c.line(
            Level::Warn,
            &[Part::Str(
                b"more possible CPUs than SMM slots (MAX_CPUS): not offered",
            )],
        );
    }
    let wanted = fw_cfg::SMI_FEATURE_BROADCAST
        | if want_hotplug {
            fw_cfg::SMI_FEATURE_CPU_HOTPLUG | fw_cfg::SMI_FEATURE_CPU_HOT_UNPLUG
        } else {
            0
        };
    match fw_cfg::negotiate_smi_features(&cfg, wanted) {
        Ok(Negotiation::Granted {
            supported,
            requested,
        }) => {
            st.features = requested;
            c.line(
                Level::Info,
                &[
                    Part::Str(b"SMI features supported "),
                    Part::Hex(supported),
                    Part::Str(b", requested and granted "),
                    Part::Hex(requested),
                ],
            );
        }
        Ok(Negotiation::Unsupported) => {
            c.line(
                Level::Warn,
                &[Part::Str(b"QEMU has no SMI feature negotiation")],
            );
            st.features = 0;
        }
        Err(_) => {
            c.line(
                Level::Error,
                &[Part::Str(b"SMI feature negotiation refused")],
            );
            return ERR_NEGOTIATION;
        }
    }
    st.hotplug = st.features & fw_cfg::SMI_FEATURE_CPU_HOTPLUG != 0;
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
    if st.hotplug {
        st.possible as i32
    } else {
        st.present as i32
    }
}

fn tsc_per_us() -> u64 {
    let pmbase = q35::ich9::pmbase(&HwPorts).unwrap_or(q35::ich9::PMBASE);
    PmTimer::new(&HwPorts, pmbase).tsc_per_us()
}

/// After MP init and `restore_default_smm_area()`: record the boot-info block, install
/// the first-SMI handler and the pen, and lock the default-SMBASE window. Returns 0, or a
/// negative error (the caller stops the boot).
///
/// # Safety
/// `apic_id_to_cpu` is the live table of coreboot's permanent SMM stub (or NULL when
/// hotplug was not negotiated); 0x30000-0x50FFF is unlocked, unused RAM.
#[no_mangle]
pub unsafe extern "C" fn rust_cpu_hotplug_post_mp_init(
    apic_id_to_cpu: *mut u16,
    console: ConsoleFn,
) -> i32 {
    let c = RamConsole(CConsole(console));
    let st = state();
    if st.present == 0 {
        return ERR_NOT_PREPARED;
    }
    if !st.default_smram {
        // Nothing to protect with: hotplug was not negotiated, QEMU refuses device_add.
        return 0;
    }
    // SAFETY: the window is unlocked firmware RAM now (caller contract); the boot-info
    // block lies after the context (checked at compile time in bootinfo.rs).
    unsafe {
        first_smi::install(first_smi::PEN_BASE);
        let b = &mut *(BOOTINFO_BASE as usize as *mut BootInfo);
        b.possible_count = if st.hotplug {
            st.possible.min(MAX_SLOTS as u32)
        } else {
            0
        };
        b.tsc_per_us = tsc_per_us();
        b.apic_id_to_cpu = apic_id_to_cpu as u64;
        b.pen_base = first_smi::PEN_BASE;
        b.features = st.features as u32;
        b.possible_apic_ids = st.apic_ids;
        core::ptr::write_volatile(&mut b.magic, BOOTINFO_MAGIC);
    }
    let m = Mch::new(&HwPorts);
    if !m.lock_default_smbase_smram() {
        c.line(Level::Error, &[Part::Str(b"MCH 0x9C did not lock")]);
        return ERR_LOCK;
    }
    // SAFETY: reading an ordinary physical address: locked, it reads all-ones.
    let v = unsafe { core::ptr::read_volatile(0x30000 as *const u32) };
    if v != 0xFFFF_FFFF {
        c.line(
            Level::Error,
            &[Part::Str(b"0x30000 still readable after the 0x9C lock")],
        );
        return ERR_LOCK;
    }
    c.line(
        Level::Info,
        &[Part::Str(
            b"first-SMI handler installed, SMRAM at default SMBASE locked",
        )],
    );
    0
}

/// The final fail-closed check before the payload: 1 when SMRAM is closed and locked
/// (D_LCK) and, where QEMU has it, the default-SMBASE window is locked too.
#[no_mangle]
pub extern "C" fn rust_cpu_hotplug_smram_locked() -> i32 {
    let m = Mch::new(&HwPorts);
    let s = m.smramc();
    let d_lck = s & q35::mch::SMRAMC_D_LCK != 0 && s & q35::mch::SMRAMC_D_OPEN == 0;
    let window = !state().default_smram || m.default_smbase_smram_locked();
    i32::from(d_lck && window)
}
