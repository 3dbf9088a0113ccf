//! PCI config access, the MCH SMRAM registers (SMRAMC, ESMRAMC and 0x9C, see
//! `docs/protocol.md#the-default-smbase-window`) and the ICH9 PM block.

use q35::ich9;
use q35::mch::{
    Mch, ESMRAMC_H_SMRAME, ESMRAMC_TSEG_1M, ESMRAMC_T_EN, REG_SMBASE_SMRAM, SMRAMC_C_BASE_SEG,
    SMRAMC_D_CLS, SMRAMC_D_LCK, SMRAMC_D_OPEN, SMRAMC_G_SMRAME,
};
use q35::pci::{Bdf, PciConfig, LPC, MCH};
use q35::PortIo;
use q35_sim::{Q35Sim, SmbaseSmram, SmiTarget};

/// A plain read/write register in the LPC's device-specific space (PIRQ routing).
const LPC_SCRATCH: u8 = 0x60;

#[test]
fn the_mch_answers_with_the_q35_host_bridge_ids() {
    let sim = Q35Sim::new();
    let pci = PciConfig::new(&sim);
    assert_eq!(pci.ids(MCH), Some((0x8086, 0x29C0)));
}

#[test]
fn the_lpc_bridge_answers_with_the_ich9_ids() {
    let sim = Q35Sim::new();
    let pci = PciConfig::new(&sim);
    assert_eq!(pci.ids(LPC), Some((0x8086, 0x2918)));
    assert_eq!(pci.read8(LPC, 0x0E) & 0x80, 0x80, "multi-function");
}

#[test]
fn absent_functions_read_all_ones_at_every_width() {
    let sim = Q35Sim::new();
    let pci = PciConfig::new(&sim);
    for bdf in [
        Bdf {
            bus: 0,
            dev: 1,
            func: 0,
        },
        Bdf {
            bus: 0,
            dev: 0,
            func: 1,
        },
        Bdf {
            bus: 1,
            dev: 0,
            func: 0,
        },
        Bdf {
            bus: 0,
            dev: 31,
            func: 7,
        },
    ] {
        assert_eq!(pci.ids(bdf), None);
        assert_eq!(pci.read32(bdf, 0), 0xFFFF_FFFF);
        assert_eq!(pci.read16(bdf, 2), 0xFFFF);
        assert_eq!(pci.read8(bdf, 3), 0xFF);
        pci.write32(bdf, 0x40, 0);
        assert_eq!(pci.read32(bdf, 0x40), 0xFFFF_FFFF);
    }
}

#[test]
fn byte_word_and_dword_reads_see_the_same_little_endian_bytes() {
    let sim = Q35Sim::new();
    let pci = PciConfig::new(&sim);
    assert_eq!(pci.read32(MCH, 0), 0x29C0_8086);
    assert_eq!(pci.read16(MCH, 0), 0x8086);
    assert_eq!(pci.read16(MCH, 2), 0x29C0);
    assert_eq!(pci.read8(MCH, 0), 0x86);
    assert_eq!(pci.read8(MCH, 1), 0x80);
    assert_eq!(pci.read8(MCH, 2), 0xC0);
    assert_eq!(pci.read8(MCH, 3), 0x29);
    // Class code 06/00 (host bridge) in the upper half of dword 0x08.
    assert_eq!(pci.read16(MCH, 0x0A), 0x0600);
}

#[test]
fn byte_word_and_dword_writes_land_in_the_addressed_bytes() {
    let sim = Q35Sim::new();
    let pci = PciConfig::new(&sim);
    pci.write32(LPC, LPC_SCRATCH, 0x1122_3344);
    assert_eq!(pci.read32(LPC, LPC_SCRATCH), 0x1122_3344);
    assert_eq!(pci.read8(LPC, LPC_SCRATCH + 2), 0x22);
    pci.write8(LPC, LPC_SCRATCH + 1, 0xAA);
    assert_eq!(pci.read32(LPC, LPC_SCRATCH), 0x1122_AA44);
    pci.write16(LPC, LPC_SCRATCH + 2, 0xBEEF);
    assert_eq!(pci.read32(LPC, LPC_SCRATCH), 0xBEEF_AA44);
    assert_eq!(pci.read16(LPC, LPC_SCRATCH + 2), 0xBEEF);
}

#[test]
fn id_registers_ignore_writes() {
    let sim = Q35Sim::new();
    let pci = PciConfig::new(&sim);
    pci.write32(MCH, 0, 0x1234_5678);
    pci.write8(MCH, 2, 0);
    assert_eq!(pci.ids(MCH), Some((0x8086, 0x29C0)));
}

#[test]
fn the_address_latch_reads_back_and_gates_the_data_port() {
    let sim = Q35Sim::new();
    sim.outl(0xCF8, 0x8000_F840);
    assert_eq!(sim.inl(0xCF8), 0x8000_F840);
    // Enable bit clear: no function is addressed.
    sim.outl(0xCF8, 0x0000_0000);
    assert_eq!(sim.inl(0xCFC), 0xFFFF_FFFF);
    // Narrow writes to 0xCF8 do not latch.
    sim.outw(0xCF8, 0x1234);
    assert_eq!(sim.inl(0xCF8), 0);
}

#[test]
fn smbase_smram_query_reports_the_feature_on_current_machine_types() {
    let sim = Q35Sim::new();
    let mch = Mch::new(&sim);
    assert_eq!(mch.raw_default_smbase_smram(), 0x00);
    assert!(mch.query_default_smbase_smram());
    assert_eq!(mch.raw_default_smbase_smram(), 0x01);
    assert!(!mch.default_smbase_smram_locked());
    assert_eq!(sim.smbase_smram(), SmbaseSmram::Queried);
}

#[test]
fn smbase_smram_lock_holds_until_platform_reset() {
    let sim = Q35Sim::new();
    let mch = Mch::new(&sim);
    assert!(mch.query_default_smbase_smram());
    assert!(mch.lock_default_smbase_smram());
    assert_eq!(sim.smbase_smram(), SmbaseSmram::Locked);

    // Neither a new query nor any other value gets it out of the locked state.
    assert!(!mch.query_default_smbase_smram());
    for v in [0x00, 0x01, 0xFD, 0xFF] {
        PciConfig::new(&sim).write8(MCH, REG_SMBASE_SMRAM, v);
        assert_eq!(mch.raw_default_smbase_smram(), 0x02);
    }
    assert!(mch.default_smbase_smram_locked());

    sim.reset();
    assert_eq!(mch.raw_default_smbase_smram(), 0x00);
    assert_eq!(sim.smbase_smram(), SmbaseSmram::Reset);
}

#[test]
fn smbase_smram_lock_without_a_query_is_discarded() {
    let sim = Q35Sim::new();
    let mch = Mch::new(&sim);
    assert!(!mch.lock_default_smbase_smram());
    assert_eq!(mch.raw_default_smbase_smram(), 0x00);
    assert_eq!(sim.smbase_smram(), SmbaseSmram::Reset);
}

#[test]
fn smbase_smram_writes_without_the_lock_bit_after_a_query_change_nothing() {
    let sim = Q35Sim::new();
    let mch = Mch::new(&sim);
    let pci = PciConfig::new(&sim);
    assert!(mch.query_default_smbase_smram());
    for v in [0x00, 0x01, 0x04, 0xFD] {
        pci.write8(MCH, REG_SMBASE_SMRAM, v);
        assert_eq!(mch.raw_default_smbase_smram(), 0x01, "after writing {v:#x}");
    }
    // Any value with bit 1 locks, 0xFF included.
    pci.write8(MCH, REG_SMBASE_SMRAM, 0xFF);
    assert_eq!(mch.raw_default_smbase_smram(), 0x02);
}

#[test]
fn smbase_smram_query_fails_on_machine_types_without_the_feature() {
    let sim = Q35Sim::builder().without_smbase_smram().build();
    let mch = Mch::new(&sim);
    assert!(!mch.query_default_smbase_smram());
    assert_eq!(mch.raw_default_smbase_smram(), 0xFF, "reads back the query");
    assert_eq!(sim.smbase_smram(), SmbaseSmram::Absent);
}

#[test]
fn lock_on_a_machine_without_the_feature_reads_back_locked_so_only_the_query_tells() {
    // The register is plain storage there, so the lock value reads back: callers must
    // decide on the query result (a query that does not read 0x01 means no window).
    let sim = Q35Sim::builder().without_smbase_smram().build();
    let mch = Mch::new(&sim);
    assert!(mch.lock_default_smbase_smram());
    assert_eq!(sim.smbase_smram(), SmbaseSmram::Absent);
}

#[test]
fn smramc_d_lck_clears_d_open_and_freezes_smramc_and_esmramc() {
    let sim = Q35Sim::new();
    let mch = Mch::new(&sim);
    assert_eq!(mch.smramc(), SMRAMC_C_BASE_SEG);
    assert_eq!(mch.esmramc(), 0x38);

    mch.set_esmramc(ESMRAMC_H_SMRAME | ESMRAMC_TSEG_1M | ESMRAMC_T_EN);
    mch.set_smramc(SMRAMC_G_SMRAME | SMRAMC_D_OPEN | SMRAMC_C_BASE_SEG);
    assert_eq!(
        mch.smramc(),
        SMRAMC_G_SMRAME | SMRAMC_D_OPEN | SMRAMC_C_BASE_SEG
    );

    mch.set_smramc(SMRAMC_G_SMRAME | SMRAMC_D_OPEN | SMRAMC_D_LCK | SMRAMC_C_BASE_SEG);
    let locked = SMRAMC_G_SMRAME | SMRAMC_D_LCK | SMRAMC_C_BASE_SEG;
    assert_eq!(mch.smramc(), locked, "D_LCK clears D_OPEN");

    mch.set_smramc(SMRAMC_D_OPEN | SMRAMC_C_BASE_SEG);
    assert_eq!(
        mch.smramc(),
        locked,
        "D_OPEN, G_SMRAME and D_LCK are frozen"
    );
    mch.set_esmramc(0);
    assert_eq!(mch.esmramc(), 0x38 | ESMRAMC_H_SMRAME | ESMRAMC_T_EN);
    assert_eq!(mch.tseg_size(), Some(1 << 20));
    // QEMU leaves D_CLS writable after the lock.
    mch.set_smramc(locked | SMRAMC_D_CLS);
    assert_eq!(mch.smramc(), locked | SMRAMC_D_CLS);

    sim.reset();
    assert_eq!(mch.smramc(), SMRAMC_C_BASE_SEG);
    mch.set_smramc(SMRAMC_D_OPEN | SMRAMC_C_BASE_SEG);
    assert_eq!(mch.smramc(), SMRAMC_D_OPEN | SMRAMC_C_BASE_SEG);
}

#[test]
fn tseg_size_decodes_the_size_field_only_when_tseg_is_enabled() {
    let sim = Q35Sim::new();
    let mch = Mch::new(&sim);
    assert_eq!(mch.tseg_size(), None);
    for (field, size) in [
        (0u8, Some(1 << 20)),
        (1, Some(2 << 20)),
        (2, Some(8 << 20)),
        (3, None),
    ] {
        mch.set_esmramc(ESMRAMC_T_EN | (field << 1));
        assert_eq!(mch.tseg_size(), size, "TSEG_SZ {field}");
    }
}

#[test]
fn pmbase_is_none_until_acpi_decode_is_enabled() {
    let sim = Q35Sim::new();
    assert_eq!(ich9::pmbase(&sim), None);
    assert_eq!(
        sim.inl(ich9::PMBASE + ich9::SMI_EN),
        0xFFFF_FFFF,
        "not decoded"
    );
    ich9::enable_pmbase(&sim, ich9::PMBASE);
    assert_eq!(ich9::pmbase(&sim), Some(ich9::PMBASE));
    assert_eq!(sim.pm_io_base(), Some(ich9::PMBASE));
    // Bit 0 of PMBASE is hardwired to 1 (I/O space indicator).
    assert_eq!(
        PciConfig::new(&sim).read32(LPC, ich9::REG_PMBASE),
        u32::from(ich9::PMBASE) | 1
    );
}

#[test]
fn smi_en_is_read_write_at_pmbase_plus_0x30() {
    let sim = Q35Sim::new();
    ich9::enable_pmbase(&sim, ich9::PMBASE);
    assert_eq!(ich9::smi_en(&sim, ich9::PMBASE), 0);
    ich9::set_smi_en(&sim, ich9::PMBASE, ich9::SMI_EN_APMC | ich9::SMI_EN_GBL_SMI);
    assert_eq!(
        ich9::smi_en(&sim, ich9::PMBASE),
        ich9::SMI_EN_APMC | ich9::SMI_EN_GBL_SMI
    );
    assert_eq!(sim.smi_en(), ich9::SMI_EN_APMC | ich9::SMI_EN_GBL_SMI);
}

#[test]
fn the_pm_timer_counts_in_24_bits() {
    let sim = Q35Sim::new();
    ich9::enable_pmbase(&sim, ich9::PMBASE);
    sim.advance_pm_timer(0x00FF_FFF0);
    let a = ich9::pm_timer(&sim, ich9::PMBASE);
    sim.set_pm_timer_step(0x20);
    let b = ich9::pm_timer(&sim, ich9::PMBASE);
    assert!(a >= 0x00FF_FFF0);
    assert!(b < a, "wrapped at 24 bits");
    assert!(b <= 0x00FF_FFFF);
}

#[test]
fn apmc_writes_raise_an_smi_only_with_apmc_en_and_never_for_acpi_enable_or_disable() {
    let sim = Q35Sim::new();
    ich9::enable_pmbase(&sim, ich9::PMBASE);
    sim.outb(ich9::APM_CNT, 0x04);
    ich9::set_smi_en(&sim, ich9::PMBASE, ich9::SMI_EN_APMC);
    sim.outb(ich9::APM_CNT, 0x02);
    assert_eq!(sim.pm1_cnt() & 1, 1, "ACPI enable sets SCI_EN");
    sim.outb(ich9::APM_CNT, 0x03);
    assert_eq!(sim.pm1_cnt() & 1, 0, "ACPI disable clears SCI_EN");
    sim.outb(ich9::APM_CNT, 0x04);
    sim.outb(ich9::APM_STS, 0x5A);

    let log: Vec<(u8, SmiTarget)> = sim.apm_writes().iter().map(|w| (w.value, w.smi)).collect();
    assert_eq!(
        log,
        [
            (0x04, SmiTarget::None),
            (0x02, SmiTarget::None),
            (0x03, SmiTarget::None),
            (0x04, SmiTarget::Current),
        ]
    );
    assert_eq!(sim.smi_count(), 1);
    assert_eq!(sim.inb(ich9::APM_CNT), 0x04, "last value reads back");
    assert_eq!(sim.inb(ich9::APM_STS), 0x5A);
}

#[test]
fn unknown_ports_read_all_ones() {
    let sim = Q35Sim::new();
    assert_eq!(sim.inb(0x80), 0xFF);
    assert_eq!(sim.inw(0x1234), 0xFFFF);
    assert_eq!(sim.inl(0xC000), 0xFFFF_FFFF);
    sim.outl(0xC000, 0);
    assert_eq!(sim.inl(0xC000), 0xFFFF_FFFF);
}
