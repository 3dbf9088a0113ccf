//! CPU hot-remove over QMP, shared by `tests/tests/unplug.rs`, the unplug benchmark and
//! the demo: the fw_cfg files of the payload's unplug phase (`payload/src/unplug.rs`),
//! `device_del` with QEMU's `DEVICE_DELETED` event, which QEMU re-plugs (`docs/qemu.md#q-replug`),
//! and the SMM slot states replayed from the host ROM's SMM log.

use crate::qmp::Qmp;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitStatus;
use std::time::{Duration, SystemTime};

/// Removals the harness will request with `device_del` (the payload's unplug phase).
pub const FW_UNPLUG: &str = "opt/payload/unplug";
/// CPUs the harness will add during the unplug phase (re-plugs or new sockets).
pub const FW_REPLUG: &str = "opt/payload/replug";
/// The unplug variant (`batch`, `add-pending`, `self-eject`, `fw-remove-boot`,
/// `fw-remove-online`, `attack`, `skip-smi`).
pub const FW_VARIANT: &str = "opt/payload/unplug-variant";
/// What the payload prints once it waits for eject requests.
pub const READY: &str = "payload: ready for unplug";

/// (major, minor, micro) of `bin --version`.
pub fn qemu_version_of(bin: &Path) -> Option<(u32, u32, u32)> {
    let v = crate::check_qemu(bin).ok()?;
    let num = v.split("version ").nth(1)?.split_whitespace().next()?;
    let mut p = num.split('.').map(|x| x.parse::<u32>().ok());
    Some((p.next()??, p.next()??, p.next().flatten().unwrap_or(0)))
}

/// Whether `bin` plugs a CPU into a place that was ejected before without dying: 10.0.2
/// does (until the vCPUs ever created reach `maxcpus`), Debian's 7.2.22 aborts
/// (`docs/qemu.md#q-replug`). Known-good: 10.0 and later.
pub fn qemu_replugs(bin: &Path) -> bool {
    qemu_version_of(bin).is_some_and(|(major, _, _)| major >= 10)
}

/// Whether QEMU lists a CPU with device id `id` (`query-hotpluggable-cpus`).
pub fn plugged(q: &mut Qmp, id: &str) -> Result<bool, String> {
    let path = format!("/machine/peripheral/{id}");
    let list = q.execute("query-hotpluggable-cpus", json!({}))?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["qom-path"] == path.as_str()))
}

/// The QOM path of the CPU QEMU lists with these `props` (a cold-plugged CPU has no id).
pub fn qom_path_of(q: &mut Qmp, props: &Value) -> Result<Option<String>, String> {
    let list = q.execute("query-hotpluggable-cpus", json!({}))?;
    Ok(list.as_array().into_iter().flatten().find_map(|c| {
        (c["props"] == *props)
            .then(|| c["qom-path"].as_str().map(String::from))
            .flatten()
    }))
}

/// CPUs QEMU runs (`query-cpus-fast`).
pub fn cpu_count(q: &mut Qmp) -> Result<usize, String> {
    Ok(q.execute("query-cpus-fast", json!({}))?
        .as_array()
        .map_or(0, Vec::len))
}

/// `device_del` of `id` (a device id or a QOM path); returns when it was sent.
pub fn device_del(q: &mut Qmp, id: &str) -> Result<SystemTime, String> {
    let sent = SystemTime::now();
    q.execute("device_del", json!({ "id": id }))?;
    Ok(sent)
}

/// Whether `DEVICE_DELETED` data `d` is about the CPU `id` (device id, or QOM path for a
/// CPU without one) or a child of it. Under TCG QEMU (7.2.22 and 10.0.2) never finalizes
/// an ejected vCPU object (`docs/qemu.md#q-replug`), so its own `DEVICE_DELETED` never
/// comes: the event QEMU sends at the eject is its LAPIC child's
/// (`/machine/peripheral/<id>/lapic`).
pub fn deleted_event_of(d: &Value, id: &str) -> bool {
    let path = if id.starts_with('/') {
        id.to_string()
    } else {
        format!("/machine/peripheral/{id}")
    };
    let p = d["path"].as_str().unwrap_or("");
    d["device"] == id || p == path || p.starts_with(&format!("{path}/"))
}

/// Wait for QEMU's `DEVICE_DELETED` of the CPU `id` or its LAPIC ([`deleted_event_of`]);
/// returns the time from `sent` to the event's own timestamp.
pub fn wait_deleted(
    q: &mut Qmp,
    id: &str,
    sent: SystemTime,
    timeout: Duration,
) -> Result<Duration, String> {
    let ev = q.wait_event("DEVICE_DELETED", |d| deleted_event_of(d, id), timeout)?;
    let at = Qmp::event_time(&ev).unwrap_or_else(SystemTime::now);
    Ok(at.duration_since(sent).unwrap_or_default())
}

/// QEMU died of the re-plug defect (`docs/qemu.md#q-replug`): killed by a signal, or
/// glibc's heap-corruption messages, or TCG's context assertion. The reason, if so.
pub fn replug_abort(status: Option<ExitStatus>, stderr: &str) -> Option<String> {
    use std::os::unix::process::ExitStatusExt;
    // SIGKILL is the harness's own kill at a deadline, not QEMU dying.
    let signal = status.and_then(|s| s.signal()).filter(|&s| s != 9);
    let known = [
        "corrupted double-linked list",
        "unsorted double linked list corrupted",
        "malloc(",
        "free(",
        "tcg_register_thread",
        "Aborted",
        "Segmentation fault",
    ];
    let msg = known.iter().find(|k| stderr.contains(*k));
    match (signal, msg) {
        (None, None) => None,
        (s, m) => Some(format!(
            "QEMU died{}{}",
            s.map(|s| format!(" with signal {s}")).unwrap_or_default(),
            m.map(|m| format!(" ({m}…)")).unwrap_or_default()
        )),
    }
}

/// One slot as the SMM log leaves it: its state and APIC ID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotState {
    /// ACTIVE, REMOVING, GONE, FREE or QUARANTINED.
    pub state: &'static str,
    /// The APIC ID it serves or keeps.
    pub apic: u32,
}

/// The number after `key` in `line`.
fn num_after(line: &str, key: &str) -> Option<u32> {
    let rest = line.split(key).nth(1)?;
    let d: String = rest.chars().take_while(char::is_ascii_digit).collect();
    d.parse().ok()
}

/// The host ROM's SMM slot table replayed from its log (boot slot checks, relocations,
/// eject plans, ejects, CPUs found gone, re-plugs, quarantines), by slot. Slots the log
/// never names are FREE.
pub fn slot_states(console: &str) -> BTreeMap<u32, SlotState> {
    let mut m = BTreeMap::new();
    let mut set = |slot: Option<u32>, state, apic: Option<u32>| {
        if let (Some(s), Some(a)) = (slot, apic) {
            m.insert(s, SlotState { state, apic: a });
        }
    };
    for l in console.lines() {
        if l.contains("SMI served by slot") {
            set(num_after(l, "slot "), "ACTIVE", num_after(l, "CPU APIC "));
        } else if l.contains("relocated APIC ID") {
            set(
                num_after(l, " to slot "),
                "ACTIVE",
                num_after(l, "APIC ID "),
            );
        } else if l.contains(") to be ejected") {
            set(num_after(l, "(slot "), "REMOVING", num_after(l, "APIC ID "));
        } else if l.contains("kept for it until it is plugged again") {
            set(num_after(l, "slot "), "GONE", num_after(l, "APIC ID "));
        } else if l.contains("its old slot") && l.contains("freed") {
            set(num_after(l, "old slot "), "FREE", num_after(l, "APIC ID "));
        } else if l.contains("did not take the gate; slot") {
            set(num_after(l, "; slot "), "FREE", num_after(l, "APIC ID "));
        } else if l.contains("quarantined") && l.contains("APIC ID") {
            set(
                num_after(l, "slot "),
                "QUARANTINED",
                num_after(l, "APIC ID "),
            );
        }
    }
    m
}

/// [`slot_states`] as one line: `slot 0 ACTIVE apic 0, slot 1 GONE apic 1`.
pub fn slot_states_line(states: &BTreeMap<u32, SlotState>) -> String {
    states
        .iter()
        .map(|(n, s)| format!("slot {n} {} apic {}", s.state, s.apic))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_states_follow_the_smm_log() {
        let log = "\
[INFO ] host-rom: CPU APIC 0: SMI served by slot 0 at SMBASE 0xfff0000
[SMM INFO ] relocated APIC ID 1 to slot 1 SMBASE 0xffefc00 in 1671 us
[SMM INFO ] relocated APIC ID 2 to slot 2 SMBASE 0xffef800 in 61 us
[SMM INFO ] APMC 4: APIC ID 1 (slot 1) to be ejected
[SMM INFO ] ejected APIC ID 1; slot 1 kept for it until it is plugged again
[SMM INFO ] APIC ID 2 is gone (ejected by the OS); slot 2 kept for it until it is plugged again
[SMM INFO ] APIC ID 2 is back at the default SMBASE: its old slot 2 freed
";
        let s = slot_states(log);
        assert_eq!(
            slot_states_line(&s),
            "slot 0 ACTIVE apic 0, slot 1 GONE apic 1, slot 2 FREE apic 2"
        );
    }
}
