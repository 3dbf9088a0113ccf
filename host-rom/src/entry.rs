//! Reset vector → 32-bit protected mode → copy the image to RAM → long mode → Rust.
//!
//! The code is `host-rom/asm/reset.S` on the shared boot pieces in `platform/asm/`
//! (GDT, page-table builder, long-mode entry). It runs from flash until the far jump
//! into `entry64`. The page tables identity-map the low 4 GiB with 2 MiB pages at
//! [`BOOT_PAGE_TABLES`] (inside the firmware's reserved window, so parked APs keep valid
//! tables after the payload starts).

/// PML4 at +0, PDPT at +0x1000, four page directories at +0x2000..+0x5FFF.
pub const BOOT_PAGE_TABLES: u32 = 0x10_0000;

core::arch::global_asm!(
    concat!(
        include_str!("../../platform/asm/gdt.S"),
        include_str!("../../platform/asm/long_mode.S"),
        include_str!("../../platform/asm/page_tables.S"),
        include_str!("../asm/reset.S")
    ),
    pt = const BOOT_PAGE_TABLES,
    options(att_syntax)
);
