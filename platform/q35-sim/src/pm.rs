//! The ICH9 power-management I/O block at PMBASE (128 bytes): PM1 event/control, the
//! PM timer, GPE0 and SMI_EN / SMI_STS.
//!
//! Registers are modelled byte by byte, so any access size works (QEMU is stricter about
//! sizes on some of them; the firmware uses the natural ones). Offsets inside the block
//! that hold no register read all-ones, like unassigned ports.

/// Bytes of I/O space the block decodes at PMBASE.
pub const LEN: u16 = 0x80;

/// Offset of PM1_STS (word, write 1 to clear).
pub const PM1_STS: u16 = 0x00;
/// Offset of PM1_EN (word).
pub const PM1_EN: u16 = 0x02;
/// Offset of PM1_CNT (dword).
pub const PM1_CNT: u16 = 0x04;
/// Offset of PM_TMR (dword, read-only): the 24-bit 3.579545 MHz PM timer.
pub const PM_TMR: u16 = 0x08;
/// Offset of GPE0_STS (8 bytes, write 1 to clear).
pub const GPE0_STS: u16 = 0x20;
/// Offset of GPE0_EN (8 bytes).
pub const GPE0_EN: u16 = 0x28;
/// Bytes in each half of GPE0 (STS, EN).
pub const GPE0_HALF_LEN: u16 = 8;
/// Offset of SMI_EN (dword).
pub const SMI_EN: u16 = 0x30;
/// Offset of SMI_STS (dword, read-only here).
pub const SMI_STS: u16 = 0x34;

/// PM1_CNT bit 0 (SCI_EN): ACPI events raise SCIs instead of SMIs.
pub const PM1_CNT_SCI_EN: u32 = 1 << 0;
/// PM1_CNT bit 13 (SLP_EN): write-only (it triggers the sleep transition), always reads 0.
pub const PM1_CNT_SLP_EN: u32 = 1 << 13;
/// SMI_EN bit 5 (APMC_EN): APM_CNT writes raise an SMI.
pub const SMI_EN_APMC_EN: u32 = 1 << 5;
/// GPE0 bit 2: CPU hotplug (`\_GPE._E02`).
pub const GPE0_CPU_HOTPLUG: u8 = 1 << 2;

/// The PM timer's 24 valid bits.
pub const PM_TIMER_MASK: u32 = 0x00FF_FFFF;

/// The PM I/O block's registers.
pub struct PmIo {
    pm1_sts: u16,
    pm1_en: u16,
    pm1_cnt: u32,
    timer: u32,
    timer_step: u32,
    gpe0_sts: [u8; GPE0_HALF_LEN as usize],
    gpe0_en: [u8; GPE0_HALF_LEN as usize],
    smi_en: u32,
    smi_sts: u32,
}

fn get_byte(v: u32, i: u16) -> u8 {
    (v >> (8 * u32::from(i))) as u8
}

fn set_byte(v: &mut u32, i: u16, b: u8) {
    let shift = 8 * u32::from(i);
    *v = (*v & !(0xFF << shift)) | (u32::from(b) << shift);
}

impl PmIo {
    /// Every register 0, timer at 0 advancing 1 tick per PM_TMR read.
    pub fn new() -> Self {
        Self {
            pm1_sts: 0,
            pm1_en: 0,
            pm1_cnt: 0,
            timer: 0,
            timer_step: 1,
            gpe0_sts: [0; GPE0_HALF_LEN as usize],
            gpe0_en: [0; GPE0_HALF_LEN as usize],
            smi_en: 0,
            smi_sts: 0,
        }
    }

    /// Platform reset (QEMU `ich9_pm_reset` with SMM enabled: SMI_EN = 0). The timer is a
    /// free-running clock and keeps its value.
    pub fn reset(&mut self) {
        let (timer, timer_step) = (self.timer, self.timer_step);
        *self = Self::new();
        self.timer = timer;
        self.timer_step = timer_step;
    }

    /// Access of `size` bytes at `off` inside the block. A read starting at PM_TMR
    /// advances the timer by the step first, so polling loops make progress.
    pub fn read(&mut self, off: u16, size: u8) -> u32 {
        if off == PM_TMR {
            self.advance_timer(self.timer_step);
        }
        (0..u16::from(size)).rev().fold(0u32, |acc, i| {
            (acc << 8) | u32::from(self.read_byte(off + i))
        })
    }

    /// Write of `size` bytes at `off` inside the block, byte by byte.
    pub fn write(&mut self, off: u16, value: u32, size: u8) {
        for i in 0..u16::from(size) {
            self.write_byte(off + i, get_byte(value, i));
        }
    }

    fn read_byte(&self, off: u16) -> u8 {
        match off {
            0..=1 => get_byte(u32::from(self.pm1_sts), off),
            2..=3 => get_byte(u32::from(self.pm1_en), off - PM1_EN),
            4..=7 => get_byte(self.pm1_cnt, off - PM1_CNT),
            8..=11 => get_byte(self.timer & PM_TIMER_MASK, off - PM_TMR),
            0x20..=0x27 => self.gpe0_sts[usize::from(off - GPE0_STS)],
            0x28..=0x2F => self.gpe0_en[usize::from(off - GPE0_EN)],
            0x30..=0x33 => get_byte(self.smi_en, off - SMI_EN),
            0x34..=0x37 => get_byte(self.smi_sts, off - SMI_STS),
            _ => 0xFF,
        }
    }

    fn write_byte(&mut self, off: u16, b: u8) {
        match off {
            0..=1 => {
                // Write-1-to-clear.
                self.pm1_sts &= !(u16::from(b) << (8 * off));
            }
            2..=3 => {
                let mut v = u32::from(self.pm1_en);
                set_byte(&mut v, off - PM1_EN, b);
                self.pm1_en = v as u16;
            }
            4..=7 => {
                set_byte(&mut self.pm1_cnt, off - PM1_CNT, b);
                self.pm1_cnt &= !PM1_CNT_SLP_EN;
            }
            0x20..=0x27 => self.gpe0_sts[usize::from(off - GPE0_STS)] &= !b,
            0x28..=0x2F => self.gpe0_en[usize::from(off - GPE0_EN)] = b,
            0x30..=0x33 => set_byte(&mut self.smi_en, off - SMI_EN, b),
            // PM_TMR and SMI_STS are read-only; holes ignore writes.
            _ => {}
        }
    }

    /// Current PM1_CNT.
    pub fn pm1_cnt(&self) -> u32 {
        self.pm1_cnt
    }

    /// APMC 0x02 / 0x03 set / clear SCI_EN (QEMU `acpi_pm1_cnt_update`).
    pub fn set_sci_en(&mut self, on: bool) {
        if on {
            self.pm1_cnt |= PM1_CNT_SCI_EN;
        } else {
            self.pm1_cnt &= !PM1_CNT_SCI_EN;
        }
    }

    /// Current SMI_EN.
    pub fn smi_en(&self) -> u32 {
        self.smi_en
    }

    /// First byte of GPE0_STS.
    pub fn gpe0_sts(&self) -> u8 {
        self.gpe0_sts[0]
    }

    /// First byte of GPE0_EN.
    pub fn gpe0_en(&self) -> u8 {
        self.gpe0_en[0]
    }

    /// Latch a GPE0 status bit in the first byte (QEMU `acpi_send_gpe_event`).
    pub fn raise_gpe0(&mut self, bits: u8) {
        self.gpe0_sts[0] |= bits;
    }

    /// Current 24-bit timer value.
    pub fn timer(&self) -> u32 {
        self.timer & PM_TIMER_MASK
    }

    /// Move the timer forward by `ticks`, wrapping at 24 bits.
    pub fn advance_timer(&mut self, ticks: u32) {
        self.timer = self.timer.wrapping_add(ticks) & PM_TIMER_MASK;
    }

    /// Ticks the timer advances on every read of PM_TMR (default 1).
    pub fn set_timer_step(&mut self, ticks: u32) {
        self.timer_step = ticks;
    }
}

impl Default for PmIo {
    fn default() -> Self {
        Self::new()
    }
}
