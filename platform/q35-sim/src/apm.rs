//! APM ports: APM_CNT (0xB2) and APM_STS (0xB3) are byte scratch registers (the last value
//! written reads back). Every write to 0xB2 is recorded with the SMI it would raise, so tests
//! can count SMI requests.

/// I/O port APM_CNT: a write may raise an SMI (see [`SmiTarget`]).
pub const APM_CNT: u16 = 0xB2;
/// I/O port APM_STS: a scratch byte.
pub const APM_STS: u16 = 0xB3;

/// APMC value QEMU consumes itself (`ICH9_APM_ACPI_ENABLE`): sets SCI_EN, never raises
/// an SMI.
pub const APMC_ACPI_ENABLE: u8 = 0x02;
/// APMC value QEMU consumes itself (`ICH9_APM_ACPI_DISABLE`): clears SCI_EN, never
/// raises an SMI.
pub const APMC_ACPI_DISABLE: u8 = 0x03;

/// Which CPUs an APMC write sends an SMI to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmiTarget {
    /// SMI_EN.APMC_EN clear, or the value was 0x02 / 0x03: no SMI.
    None,
    /// Only the CPU that wrote the port (BROADCAST not negotiated).
    Current,
    /// Every CPU (BROADCAST negotiated).
    Broadcast,
}

/// One write to APM_CNT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApmWrite {
    /// The byte written.
    pub value: u8,
    /// The SMI the write raised.
    pub smi: SmiTarget,
}

/// The two APM registers and the log of APM_CNT writes.
#[derive(Default)]
pub struct Apm {
    apmc: u8,
    apms: u8,
    log: Vec<ApmWrite>,
}

impl Apm {
    /// Both registers 0, empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read APM_CNT when `port` is [`APM_CNT`], else APM_STS.
    pub fn read_byte(&self, port: u16) -> u8 {
        if port == APM_CNT {
            self.apmc
        } else {
            self.apms
        }
    }

    /// Store APM_CNT and log the write; the caller decided the SMI target.
    pub fn write_cnt(&mut self, value: u8, smi: SmiTarget) {
        self.apmc = value;
        self.log.push(ApmWrite { value, smi });
    }

    /// Store APM_STS.
    pub fn write_sts(&mut self, value: u8) {
        self.apms = value;
    }

    /// Every APM_CNT write since construction or [`Self::clear_log`].
    pub fn log(&self) -> &[ApmWrite] {
        &self.log
    }

    /// Forget the logged writes.
    pub fn clear_log(&mut self) {
        self.log.clear();
    }
}
