//! SMI feature negotiation state (QEMU keeps it in ICH9-LPC): the host's supported mask,
//! the negotiated set and the features-ok verdict (see
//! `docs/protocol.md#smi-feature-negotiation`).
//!
//! The guest-visible bytes live in the fw_cfg files `etc/smi/requested-features` and
//! `etc/smi/features-ok`; [`crate::fw_cfg`] calls [`SmiNegotiation::features_ok_selected`]
//! when `features-ok` is selected, exactly like QEMU's `smi_features_ok_callback`.

/// Feature bit 0 (`ICH9_LPC_SMI_F_BROADCAST_BIT`): APMC SMIs go to every CPU.
pub const BROADCAST: u64 = 1 << 0;
/// Feature bit 1 (`ICH9_LPC_SMI_F_CPU_HOTPLUG_BIT`): CPU hot-add allowed with SMM.
pub const CPU_HOTPLUG: u64 = 1 << 1;
/// Feature bit 2 (`ICH9_LPC_SMI_F_CPU_HOT_UNPLUG_BIT`): CPU hot-unplug allowed with SMM.
pub const CPU_HOT_UNPLUG: u64 = 1 << 2;

/// fw_cfg file with the supported mask (u64 little-endian, read-only).
pub const FILE_SUPPORTED: &str = "etc/smi/supported-features";
/// fw_cfg file the guest writes its request to (u64 little-endian).
pub const FILE_REQUESTED: &str = "etc/smi/requested-features";
/// fw_cfg file whose selection validates the request; reads 1 once negotiation locked.
pub const FILE_FEATURES_OK: &str = "etc/smi/features-ok";

/// QEMU's negotiation state, reset by a platform reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SmiNegotiation {
    supported: u64,
    negotiated: u64,
    ok: bool,
}

/// Why QEMU leaves features-ok at 0 for a requested mask (`smi_features_ok_callback`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// Bits outside the supported mask.
    NotSupported,
    /// CPU_HOTPLUG or CPU_HOT_UNPLUG without BROADCAST.
    HotplugWithoutBroadcast,
    /// CPU_HOT_UNPLUG without CPU_HOTPLUG.
    UnplugWithoutHotplug,
}

/// QEMU's validation of a requested mask against `supported`.
pub fn validate(requested: u64, supported: u64) -> Result<(), Rejection> {
    if requested & !supported != 0 {
        return Err(Rejection::NotSupported);
    }
    let hotplug = requested & (CPU_HOTPLUG | CPU_HOT_UNPLUG);
    if requested & BROADCAST == 0 && hotplug != 0 {
        return Err(Rejection::HotplugWithoutBroadcast);
    }
    if hotplug == CPU_HOT_UNPLUG {
        return Err(Rejection::UnplugWithoutHotplug);
    }
    Ok(())
}

impl SmiNegotiation {
    /// Open negotiation with `supported` on offer.
    pub fn new(supported: u64) -> Self {
        Self {
            supported,
            negotiated: 0,
            ok: false,
        }
    }

    /// Platform reset: negotiation opens again (the fw_cfg side clears the file bytes).
    pub fn reset(&mut self) {
        self.negotiated = 0;
        self.ok = false;
    }

    /// Select callback of `features-ok`: validate `requested` unless negotiation is
    /// already locked. Returns the byte features-ok must read.
    pub fn features_ok_selected(&mut self, requested: u64) -> u8 {
        if self.ok {
            // Locked: later requests are ignored.
            return 1;
        }
        if validate(requested, self.supported).is_ok() {
            self.negotiated = requested;
            self.ok = true;
        }
        u8::from(self.ok)
    }

    /// The supported mask.
    pub fn supported(&self) -> u64 {
        self.supported
    }

    /// The accepted request (0 until features-ok read 1).
    pub fn negotiated(&self) -> u64 {
        self.negotiated
    }

    /// Whether features-ok read 1: the request is locked until platform reset.
    pub fn is_locked(&self) -> bool {
        self.ok
    }
}
