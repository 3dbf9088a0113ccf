//! A small QMP client over a unix socket: greeting, capabilities, commands with
//! replies, and asynchronous events kept for the caller.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A QMP connection.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// Asynchronous events received so far.
    pub events: Vec<Value>,
}

impl Qmp {
    /// Connect (retrying until QEMU has created the socket) and leave negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, String> {
        let end = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > end => {
                    return Err(format!("QMP connect {}: {e}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let writer = stream.try_clone().map_err(|e| e.to_string())?;
        let mut q = Qmp {
            reader: BufReader::new(stream),
            writer,
            events: Vec::new(),
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("unexpected QMP greeting {greeting}"));
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        let n = self
            .reader
            .read_line(&mut line)
            .map_err(|e| format!("QMP read: {e}"))?;
        if n == 0 {
            return Err("QMP connection closed".into());
        }
        serde_json::from_str(&line).map_err(|e| format!("QMP parse {line:?}: {e}"))
    }

    /// Run a command; `Ok(return value)` or `Err(QEMU's error description)`.
    pub fn execute(&mut self, cmd: &str, args: Value) -> Result<Value, String> {
        let msg = json!({"execute": cmd, "arguments": args});
        writeln!(self.writer, "{msg}").map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                self.events.push(v);
                continue;
            }
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown QMP error")
                    .to_string());
            }
        }
    }

    /// HMP command through QMP (e.g. `info registers -a`).
    pub fn hmp(&mut self, line: &str) -> Result<String, String> {
        let r = self.execute("human-monitor-command", json!({"command-line": line}))?;
        Ok(r.as_str().unwrap_or("").to_string())
    }
}

impl Qmp {
    /// Free hotpluggable CPU slots (entries without a qom-path), lowest first.
    pub fn free_cpus(&mut self) -> Result<Vec<Value>, String> {
        let list = self.execute("query-hotpluggable-cpus", json!({}))?;
        let mut v: Vec<Value> = list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c.get("qom-path").is_none())
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        // QEMU lists them highest first.
        v.reverse();
        Ok(v)
    }

    /// `device_add` of one entry of [`Self::free_cpus`] with device id `id`.
    pub fn device_add_cpu(&mut self, cpu: &Value, id: &str) -> Result<Value, String> {
        let mut args = cpu["props"].clone();
        args["driver"] = cpu["type"].clone();
        args["id"] = json!(id);
        self.execute("device_add", args)
    }
}

impl Qmp {
    /// `device_del` of the device with id `id`. QEMU only asks the guest to eject it: for a
    /// CPU, wait for [`Self::wait_cpu_deleted`] before relying on it being gone.
    pub fn device_del(&mut self, id: &str) -> Result<Value, String> {
        self.execute("device_del", json!({ "id": id }))
    }

    /// Wait (bounded) for an event named `name` for which `pick` holds, among the events
    /// received so far and those that come; returns it and removes it from [`Self::events`].
    /// Events arrive only while a command runs, so this polls with `query-status`.
    pub fn wait_event(
        &mut self,
        name: &str,
        pick: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| e["event"] == name && pick(e))
            {
                return Ok(self.events.remove(i));
            }
            if Instant::now() > end {
                return Err(format!(
                    "no {name} event within {timeout:?}; events so far: {:?}",
                    self.events
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
            self.execute("query-status", json!({}))?;
        }
    }

    /// Wait until the CPU plugged as device `id` is gone: QEMU's `DEVICE_DELETED` for it
    /// or for its APIC child, then `query-cpus-fast` no longer lists it. QEMU sends a
    /// device's event when the object is finalized; for a CPU, 7.2.22 and 10.0.2 send
    /// only the APIC's (`/machine/peripheral/<id>/lapic`) as the guest ejects it: the
    /// CPU object itself outlives the unplug.
    pub fn wait_cpu_deleted(&mut self, id: &str, timeout: Duration) -> Result<Value, String> {
        let path = format!("/machine/peripheral/{id}");
        let child = format!("{path}/");
        let ev = self.wait_event(
            "DEVICE_DELETED",
            |e| {
                e["data"]["device"] == id
                    || e["data"]["path"]
                        .as_str()
                        .is_some_and(|p| p == path || p.starts_with(&child))
            },
            timeout,
        )?;
        if self.cpu_paths()?.contains(&path) {
            return Err(format!("{ev} came, but query-cpus-fast still lists {path}"));
        }
        Ok(ev)
    }

    /// The QOM paths of the CPUs QEMU has (`query-cpus-fast`).
    pub fn cpu_paths(&mut self) -> Result<Vec<String>, String> {
        let r = self.execute("query-cpus-fast", json!({}))?;
        Ok(r.as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["qom-path"].as_str().map(String::from))
            .collect())
    }
}
