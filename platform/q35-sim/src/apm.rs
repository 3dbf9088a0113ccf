//! APM ports: APM_CNT (0xB2) and APM_STS (0xB3) are byte scratch registers (the last value
//! written reads back). Every write to 0xB2 is recorded with the SMI it would raise, so tests
//! can count SMI requests.

pub const APM_CNT: u16 = 0xB2;
pub const APM_STS: u16 = 0xB3;

/// APMC values QEMU consumes itself (set / clear SCI_EN); they never raise an SMI.
pub const APMC_ACPI_ENABLE: u8 = 0x02;
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
    pub value: u8,
    pub smi: SmiTarget,
}

#[derive(Default)]
pub struct Apm {
    apmc: u8,
    apms: u8,
    log: Vec<ApmWrite>,
}

impl Apm {
    pub fn new() -> Self {
        Self::default()
    }

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

    pub fn write_sts(&mut self, value: u8) {
        self.apms = value;
    }

    pub fn log(&self) -> &[ApmWrite] {
        &self.log
    }

    pub fn clear_log(&mut self) {
        self.log.clear();
    }
}
