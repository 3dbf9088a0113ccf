//! R1 from the OS side (`docs/security.md#r1`): once the firmware has closed SMI feature
//! negotiation (selected `etc/smi/features-ok`), the OS tries to negotiate again, as the
//! very first thing it does with the SMI files: it writes `etc/smi/requested-features`
//! over fw_cfg DMA with each value of `opt/payload/renegotiate` (e.g. `0:0x1`: no
//! broadcast at all, broadcast without CPU hotplug) and selects `features-ok` after each.
//!
//! QEMU keeps the write in the file's bytes but not in effect: what it negotiated stays
//! locked until the next platform reset. The payload cannot read QEMU's negotiated
//! features (that is QOM's `x-smi-negotiated-features`, which the QEMU test compares over
//! QMP before and after, together with a CPU `device_add` that QEMU allows only while CPU
//! hotplug stays negotiated). What the payload can see is checked here: the firmware's
//! request as the file held it, each DMA write, each `features-ok` verdict, and the
//! file's bytes, which it writes back afterwards so that the later checks read the
//! firmware's request again. Had the firmware left negotiation open, the first selection
//! here would have locked the OS's value, which the QMP comparison reports.

use crate::{println, Report};
use q35::fw_cfg::{self, FwCfg, FwCfgFile};
use q35::io::HwPorts;

/// The fw_cfg file that asks for the attempt: a list of feature masks (decimal or `0x`
/// hex) separated by `:` or `,` (on QEMU's command line `,,`), at most [`MAX_VALUES`].
const FILE: &str = "opt/payload/renegotiate";
/// Most values tried.
const MAX_VALUES: usize = 4;

fn parse(v: &str) -> Option<u64> {
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

/// Select `features-ok` (the plain selection QEMU documents) and return its byte.
fn select_features_ok(cfg: &FwCfg<'_, HwPorts>, ok: FwCfgFile) -> u8 {
    let mut b = [0u8; 1];
    cfg.read_key(ok.key, &mut b);
    b[0]
}

/// A read that may have failed, as `0x..` or `unreadable`.
struct Hex(Option<u64>);

impl core::fmt::Display for Hex {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{:#x}", v),
            None => f.write_str("unreadable"),
        }
    }
}

/// Feature masks as `[0x0, 0x1]`.
struct HexList<'a>(&'a [u64]);

impl core::fmt::Display for HexList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("[")?;
        for (i, v) in self.0.iter().enumerate() {
            write!(f, "{}{:#x}", if i == 0 { "" } else { ", " }, v)?;
        }
        f.write_str("]")
    }
}

fn read_u64(cfg: &FwCfg<'_, HwPorts>, f: FwCfgFile) -> Option<u64> {
    let mut b = [0u8; 8];
    cfg.read_file(f, &mut b).ok()?;
    Some(u64::from_le_bytes(b))
}

/// The attempt, when `opt/payload/renegotiate` asks for it; call it before anything else
/// touches the SMI files. Prints one `CHECK smi-renegotiation` line.
pub fn attempt(r: &mut Report) {
    let Ok(cfg) = FwCfg::detect(&HwPorts) else {
        return;
    };
    let mut raw = [0u8; 32];
    let Some(text) = crate::fw_cfg_text(&cfg, FILE, &mut raw) else {
        return;
    };
    let mut values: heapless::Vec<u64, MAX_VALUES> = heapless::Vec::new();
    for v in text.split([',', ':']).filter_map(parse) {
        let _ = values.push(v);
    }
    let (Some(req), Some(ok)) = (
        cfg.find_file(fw_cfg::FILE_SMI_REQUESTED),
        cfg.find_file(fw_cfg::FILE_SMI_FEATURES_OK),
    ) else {
        r.check(
            "smi-renegotiation",
            false,
            format_args!("fw_cfg has no SMI feature files"),
        );
        return;
    };
    // Reading requested-features selects only that file (no callback in QEMU).
    let before = read_u64(&cfg, req);
    println!(
        "payload: renegotiation: the firmware's request reads {}; now requesting {}",
        Hex(before),
        HexList(&values)
    );
    let mut all_closed = true;
    for &v in &values {
        let wrote = cfg.write_file(req, &v.to_le_bytes());
        let verdict = select_features_ok(&cfg, ok);
        let now = read_u64(&cfg, req);
        println!(
            "payload: renegotiation: requested-features := {:#x} (DMA write {}), features-ok selected: {}, requested-features reads {}",
            v,
            if wrote.is_ok() { "accepted" } else { "refused" },
            verdict,
            Hex(now)
        );
        all_closed &= verdict == 1;
    }
    // Put the firmware's request back into the file, so later checks read it again.
    let restored = before.is_some_and(|b| cfg.write_file(req, &b.to_le_bytes()).is_ok());
    let after = select_features_ok(&cfg, ok);
    r.check(
        "smi-renegotiation",
        before.is_some() && !values.is_empty() && all_closed && after == 1,
        format_args!(
            "after the firmware's lock the OS requested {}: features-ok stayed 1: {}; firmware's request {} written back: {}; QEMU's negotiated features are compared over QMP",
            HexList(&values),
            all_closed && after == 1,
            Hex(before),
            restored
        ),
    );
}
