//! `log` backend on COM1 with a level filter: `[LEVEL] message`.

use core::fmt::Write;
use q35::io::HwPorts;
use q35::serial::{Serial, COM1};

static LOCK: spin::Mutex<()> = spin::Mutex::new(());

pub struct SerialWriter;

impl Write for SerialWriter {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        Serial::new(&HwPorts, COM1).write_bytes(s.as_bytes());
        Ok(())
    }
}

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let _g = LOCK.lock();
        let _ = writeln!(SerialWriter, "[{:<5}] host-rom: {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

static LOGGER: Logger = Logger;

struct SerialConsole;

impl smm_handler::log::Console for SerialConsole {
    fn write(&self, bytes: &[u8]) {
        Serial::new(&HwPorts, COM1).write_bytes(bytes);
    }
}

/// A line from an SMM-style template (`smm_handler::log`, shared with the coreboot glue),
/// with this logger's prefix and level filter.
pub fn line(level: log::Level, template: &str, args: &[u64]) {
    use smm_handler::log::Console;
    if level > log::max_level() {
        return;
    }
    let _g = LOCK.lock();
    let _ = write!(SerialWriter, "[{:<5}] host-rom: ", level);
    SerialConsole.template(template, args);
    SerialConsole.write(b"\n");
}

pub fn init(level: log::LevelFilter) {
    Serial::new(&HwPorts, COM1).init();
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// Parse a level name as given in the fw_cfg file `opt/host-rom/loglevel`.
pub fn parse_level(s: &[u8]) -> Option<log::LevelFilter> {
    let s = core::str::from_utf8(s)
        .ok()?
        .trim_matches(|c: char| c.is_whitespace() || c == '\0');
    Some(match s {
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "info" => log::LevelFilter::Info,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => return None,
    })
}
