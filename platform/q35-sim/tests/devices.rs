//! Device behaviour that the `q35` drivers do not exercise, driven through raw ports.

use q35::PortIo;
use q35_sim::cpuhp::{BASE, CMD_OST_EVENT, CMD_OST_STATUS, OFF_COMMAND, OFF_DATA};
use q35_sim::fw_cfg::{
    DMA_CTL_ERROR, DMA_CTL_READ, DMA_CTL_SELECT, DMA_CTL_SKIP, DMA_CTL_WRITE, PORT_DATA, PORT_DMA,
    PORT_DMA_LOW, PORT_SELECTOR,
};
use q35_sim::smi::{self, Rejection};
use q35_sim::{CpuHpMode, CpuHpModel, Q35Sim};

const FILE: &str = "opt/test/file";
const DATA: &[u8] = b"0123456789";

/// The fw_cfg DMA descriptor, fields big-endian.
#[repr(C, align(16))]
struct Desc {
    control: u32,
    length: u32,
    address: u64,
}

/// Run one DMA transfer into/from `buf` and return the control word QEMU wrote back.
fn dma(sim: &Q35Sim, control: u32, buf: &mut [u8]) -> u32 {
    let address = buf.as_mut_ptr().expose_provenance() as u64;
    dma_at(sim, control, address, buf.len() as u32)
}

fn dma_at(sim: &Q35Sim, control: u32, address: u64, length: u32) -> u32 {
    let mut desc = Desc {
        control: control.to_be(),
        length: length.to_be(),
        address: address.to_be(),
    };
    let at = (&raw mut desc).expose_provenance() as u64;
    sim.outl(PORT_DMA, ((at >> 32) as u32).swap_bytes());
    sim.outl(PORT_DMA_LOW, (at as u32).swap_bytes());
    u32::from_be(desc.control)
}

fn sim() -> Q35Sim {
    Q35Sim::builder()
        .file(FILE, DATA)
        .writable_file("opt/test/rw", b"abcdefgh")
        .build()
}

fn select_ctl(sim: &Q35Sim, name: &str) -> u32 {
    (u32::from(sim.fw_cfg_file_key(name).unwrap()) << 16) | DMA_CTL_SELECT
}

#[test]
fn dma_skip_moves_the_offset_for_the_next_transfer() {
    let sim = sim();
    let mut skip = [0u8; 6];
    assert_eq!(
        dma(&sim, select_ctl(&sim, FILE) | DMA_CTL_SKIP, &mut skip),
        0
    );
    assert_eq!(skip, [0; 6], "skip does not touch memory");
    let mut buf = [0u8; 4];
    assert_eq!(dma(&sim, DMA_CTL_READ, &mut buf), 0);
    assert_eq!(&buf, b"6789");
}

#[test]
fn dma_reads_past_the_end_fill_zeros_without_an_error() {
    let sim = sim();
    let mut buf = [0xAAu8; 14];
    assert_eq!(
        dma(&sim, select_ctl(&sim, FILE) | DMA_CTL_READ, &mut buf),
        0
    );
    assert_eq!(&buf[..10], DATA);
    assert_eq!(&buf[10..], [0; 4]);
}

#[test]
fn dma_without_an_operation_bit_only_selects() {
    let sim = sim();
    let mut buf = [0xAAu8; 4];
    assert_eq!(dma(&sim, select_ctl(&sim, FILE), &mut buf), 0);
    assert_eq!(buf, [0xAA; 4]);
    assert_eq!(sim.inb(PORT_DATA), b'0');
}

#[test]
fn dma_writes_may_be_shorter_than_the_rest_of_the_file_but_not_longer() {
    let sim = sim();
    let mut skip = [0u8; 2];
    dma(
        &sim,
        select_ctl(&sim, "opt/test/rw") | DMA_CTL_SKIP,
        &mut skip,
    );
    let mut data = *b"XYZ";
    assert_eq!(dma(&sim, DMA_CTL_WRITE, &mut data), 0);
    assert_eq!(sim.fw_cfg_file("opt/test/rw").unwrap(), b"abXYZfgh");

    // Offset is now 5: four bytes do not fit the remaining three.
    let mut data = *b"1234";
    assert_eq!(dma(&sim, DMA_CTL_WRITE, &mut data), DMA_CTL_ERROR);
    assert_eq!(sim.fw_cfg_file("opt/test/rw").unwrap(), b"abXYZfgh");
}

#[test]
fn dma_on_a_missing_item_reads_zeros_and_fails_writes() {
    let sim = sim();
    let mut buf = [0xAAu8; 4];
    assert_eq!(
        dma(
            &sim,
            (0x7FFF << 16) | DMA_CTL_SELECT | DMA_CTL_READ,
            &mut buf
        ),
        0
    );
    assert_eq!(buf, [0; 4]);
    assert_eq!(
        dma(
            &sim,
            (0x0002 << 16) | DMA_CTL_SELECT | DMA_CTL_WRITE,
            &mut buf
        ),
        DMA_CTL_ERROR
    );
}

#[test]
fn dma_to_a_null_buffer_reports_an_error() {
    let sim = sim();
    assert_eq!(
        dma_at(&sim, select_ctl(&sim, FILE) | DMA_CTL_READ, 0, 4),
        DMA_CTL_ERROR
    );
}

#[test]
fn the_fw_cfg_ports_accept_only_their_documented_widths() {
    let sim = sim();
    sim.outb(PORT_SELECTOR, 0x00); // byte writes do not select
    sim.outw(PORT_SELECTOR, 0x0000);
    assert_eq!(sim.inw(PORT_DATA), 0xFFFF, "word reads are invalid");
    assert_eq!(
        sim.inb(PORT_SELECTOR),
        b'Q',
        "byte reads of 0x510 read data too"
    );
    assert_eq!(sim.inb(PORT_DATA), b'E');
}

#[test]
fn the_legacy_switch_reacts_to_any_write_whose_byte_at_offset_0_is_zero() {
    // QEMU splits wider writes into bytes (`impl.max_access_size = 1`).
    let sim = Q35Sim::builder().smp(1, 4).build();
    sim.outb(BASE + 1, 0);
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Legacy);
    sim.outb(BASE, 1);
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Legacy);
    sim.outl(BASE, 0x0000_0100);
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Modern);
}

#[test]
fn the_byte_only_legacy_block_still_switches_on_a_byte_write() {
    let sim = Q35Sim::builder()
        .cpu_hotplug(CpuHpModel::LegacyByteOnly)
        .build();
    assert_eq!(sim.inl(BASE), 0, "too-wide reads return 0");
    assert_eq!(sim.inb(BASE), 0x01);
    sim.outl(BASE, 0);
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Legacy);
    sim.outb(BASE, 0);
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Modern);
}

#[test]
fn ost_event_and_status_are_recorded_through_command_data() {
    let sim = Q35Sim::builder().smp(2, 2).build();
    sim.outl(BASE, 0);
    sim.outl(BASE, 1);
    sim.outb(BASE + OFF_COMMAND, CMD_OST_EVENT);
    sim.outl(BASE + OFF_DATA, 0x103);
    sim.outb(BASE + OFF_COMMAND, CMD_OST_STATUS);
    sim.outl(BASE + OFF_DATA, 0x80);
    let cpu = sim.cpu_slot(1).unwrap();
    assert_eq!((cpu.ost_event, cpu.ost_status), (0x103, 0x80));
    assert_eq!(
        sim.inl(BASE + OFF_DATA),
        0,
        "Command data reads 0 for OST commands"
    );
}

#[test]
fn platform_reset_keeps_the_hotplug_block_and_hot_added_cpus() {
    let sim = Q35Sim::builder().smp(1, 4).build();
    sim.outl(BASE, 0);
    sim.plug_cpu(2).unwrap();
    sim.reset();
    assert_eq!(sim.cpuhp_mode(), CpuHpMode::Modern);
    assert_eq!(sim.present_cpus(), 2);
    assert!(
        sim.cpu_slot(2).unwrap().inserting,
        "stale insert event survives"
    );
    assert_eq!(sim.fw_cfg_item(0x05).unwrap(), 2u16.to_le_bytes());
}

#[test]
fn a_word_write_to_apm_cnt_sets_both_apm_registers() {
    let sim = Q35Sim::new();
    sim.outw(0xB2, 0x5A04);
    assert_eq!(sim.inb(0xB2), 0x04);
    assert_eq!(sim.inb(0xB3), 0x5A);
    assert_eq!(sim.inw(0xB2), 0x5A04);
    assert_eq!(sim.apm_writes().len(), 1, "only APM_CNT writes are logged");
}

#[test]
fn qemu_validation_rejects_exactly_the_invalid_feature_sets() {
    let all = smi::BROADCAST | smi::CPU_HOTPLUG | smi::CPU_HOT_UNPLUG;
    for requested in 0..8u64 {
        let expected = match requested {
            0 | 1 | 3 | 7 => Ok(()),
            2 | 4 | 6 => Err(Rejection::HotplugWithoutBroadcast),
            _ => Err(Rejection::UnplugWithoutHotplug),
        };
        assert_eq!(smi::validate(requested, all), expected, "{requested:#x}");
    }
    assert_eq!(smi::validate(0x3, 0x1), Err(Rejection::NotSupported));
    assert_eq!(smi::validate(0x8, all), Err(Rejection::NotSupported));
}
