//! Test knobs: fw_cfg files with which the host (never the guest) asks the ROM to be
//! unsafe on purpose, for one test and one benchmark. They exist only in the test image
//! (`build/host-rom-test.rom`, cargo feature `test-knobs`); the production ROM
//! (`build/host-rom.rom`) does not contain their names and never looks for them.
//!
//! In the test image a knob acts only when its file holds exactly its value (no newline,
//! no NUL: `-fw_cfg name=…,string=…`); any other value is ignored with a warning that
//! names the value expected. What each knob does, and what the ROM still refuses:
//!
//! | file | value | effect |
//! | --- | --- | --- |
//! | `opt/host-rom/insecure-open-default-smbase` | `leave-window-open` | the negative control of the attack test: the first-SMI handler is not installed and 0x30000-0x4FFFF stays open RAM; no SMI feature is negotiated at all, so CPU hotplug is never negotiated with the window open |
//! | `opt/host-rom/baseline-no-smm` | `no-smm-baseline` | the hot-add benchmark's baseline: no SMM is set up; only on a machine without SMM (QEMU 10.0.2 with `smm=off`), checked at boot, else the boot stops |
//! | `opt/host-rom/stack-pool` | `one-stack` | SMM's stack pool holds 1 stack instead of one per slot (up to 64), so that a test with more CPUs in SMM at once than stacks shows the wait for a free stack: slower, not weaker |

/// What the host asked for.
#[derive(Clone, Copy, Debug, Default)]
pub struct Knobs {
    /// Leave the default-SMBASE window open and negotiate nothing (negative control).
    pub leave_window_open: bool,
    /// Set up no SMM (benchmark baseline, machines without SMM only).
    pub no_smm_baseline: bool,
    /// Lay out a stack pool of 1 stack.
    pub one_stack: bool,
}

#[cfg(feature = "test-knobs")]
mod test_image {
    use q35::fw_cfg::FwCfg;
    use q35::io::HwPorts;

    /// The negative control's file and the one value it acts on.
    pub const INSECURE: (&str, &str) = (
        "opt/host-rom/insecure-open-default-smbase",
        "leave-window-open",
    );
    /// The benchmark baseline's file and the one value it acts on.
    pub const NO_SMM: (&str, &str) = ("opt/host-rom/baseline-no-smm", "no-smm-baseline");
    /// The small stack pool's file and the one value it acts on.
    pub const ONE_STACK: (&str, &str) = ("opt/host-rom/stack-pool", "one-stack");

    /// Whether `knob`'s file holds exactly its value; a warning when it holds another.
    pub fn set(cfg: &FwCfg<'_, HwPorts>, (file, value): (&str, &str)) -> bool {
        let Some(f) = cfg.find_file(file) else {
            return false;
        };
        let mut b = [0u8; 32];
        let exact = f.size as usize == value.len()
            && cfg.read_file(f, &mut b[..value.len()]).is_ok()
            && &b[..value.len()] == value.as_bytes();
        if !exact {
            log::warn!(
                "{} ignored: this knob acts only on the exact value \"{}\"",
                file,
                value
            );
        }
        exact
    }
}

#[cfg(feature = "test-knobs")]
pub use test_image::{INSECURE, NO_SMM, ONE_STACK};

impl Knobs {
    /// Read the knobs from fw_cfg (test image).
    #[cfg(feature = "test-knobs")]
    pub fn read(cfg: &q35::fw_cfg::FwCfg<'_, q35::io::HwPorts>) -> Knobs {
        log::warn!(
            "TEST IMAGE: built with test knobs (fw_cfg opt/host-rom/...); not for production"
        );
        Knobs {
            leave_window_open: test_image::set(cfg, INSECURE),
            no_smm_baseline: test_image::set(cfg, NO_SMM),
            one_stack: test_image::set(cfg, ONE_STACK),
        }
    }

    /// The production ROM has no knobs: it does not look at fw_cfg.
    #[cfg(not(feature = "test-knobs"))]
    pub fn read(_cfg: &q35::fw_cfg::FwCfg<'_, q35::io::HwPorts>) -> Knobs {
        Knobs::default()
    }
}
