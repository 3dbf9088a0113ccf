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

    /// Wait (bounded) for the asynchronous event `name` whose `data` satisfies `pred`, and
    /// take it out of [`Self::events`]. Polls with `query-status` (every reply loop keeps
    /// the events that arrive before it).
    pub fn wait_event(
        &mut self,
        name: &str,
        pred: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value, String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(i) = self
                .events
                .iter()
                .position(|e| e["event"] == name && pred(&e["data"]))
            {
                return Ok(self.events.remove(i));
            }
            if Instant::now() > end {
                return Err(format!(
                    "no {name} event within {timeout:?}; events so far: {:?}",
                    self.events
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
            self.execute("query-status", json!({}))?;
        }
    }

    /// When QEMU emitted `event` (its `timestamp`, host wall clock).
    pub fn event_time(event: &Value) -> Option<std::time::SystemTime> {
        let t = &event["timestamp"];
        let d = Duration::from_secs(t["seconds"].as_u64()?)
            + Duration::from_micros(t["microseconds"].as_u64()?);
        Some(std::time::UNIX_EPOCH + d)
    }

    /// `device_add` of one entry of [`Self::free_cpus`] with device id `id`.
    pub fn device_add_cpu(&mut self, cpu: &Value, id: &str) -> Result<Value, String> {
        let mut args = cpu["props"].clone();
        args["driver"] = cpu["type"].clone();
        args["id"] = json!(id);
        self.execute("device_add", args)
    }
}
