//! The SMM save-state map QEMU's qemu-system-x86_64 writes (the AMD64-style map, revision
//! 0x00020064): offsets relative to SMBASE, named after the manuals' fields, with their
//! widths. See `docs/protocol.md#save-state-map`.
//!
//! QEMU stores and reloads only the low dword of CR0, CR4, RFLAGS, DR6 and DR7; every
//! other field is as wide as its name says. 64-bit fields written from 16-bit code must be
//! written as two dwords.

/// Offset of the map from SMBASE.
pub const MAP_OFFSET: u32 = 0xFE00;
/// Size of the map (it ends at SMBASE + 64 KiB).
pub const MAP_SIZE: u32 = 0x200;

/// ES descriptor cache: selector u16, attributes u16, limit u32, base u64 (16 bytes).
pub const ES: u32 = 0xFE00;
/// CS descriptor cache (layout as [`ES`]).
pub const CS: u32 = 0xFE10;
/// SS descriptor cache (layout as [`ES`]).
pub const SS: u32 = 0xFE20;
/// DS descriptor cache (layout as [`ES`]).
pub const DS: u32 = 0xFE30;
/// FS descriptor cache (layout as [`ES`]).
pub const FS: u32 = 0xFE40;
/// GS descriptor cache (layout as [`ES`]).
pub const GS: u32 = 0xFE50;
/// Size of one descriptor cache entry.
pub const SEGMENT_SIZE: u32 = 0x10;
/// Offset of the selector (u16) inside a descriptor cache entry.
pub const SEG_SELECTOR: u32 = 0x0;
/// Offset of the attributes (u16: access byte in bits 7:0, flags nibble in bits 15:12).
pub const SEG_ATTRIBUTES: u32 = 0x2;
/// Offset of the limit (u32, byte-granular).
pub const SEG_LIMIT: u32 = 0x4;
/// Offset of the base (u64).
pub const SEG_BASE: u32 = 0x8;

/// GDTR limit (u32).
pub const GDTR_LIMIT: u32 = 0xFE64;
/// GDTR base (u64).
pub const GDTR_BASE: u32 = 0xFE68;
/// IDTR limit (u32).
pub const IDTR_LIMIT: u32 = 0xFE84;
/// IDTR base (u64).
pub const IDTR_BASE: u32 = 0xFE88;
/// IA32_EFER (u64).
pub const EFER: u32 = 0xFED0;
/// SMM revision identifier (u32): 0x00020064 for this map, 0x00020000 for the legacy
/// 32-bit map of qemu-system-i386 (low 16 bits 0). Bit 17: SMBASE relocation supported.
pub const REVISION: u32 = 0xFEFC;
/// SMBASE (u32): RSM reloads it, so writing it relocates the CPU.
pub const SMBASE: u32 = 0xFF00;
/// CR4 (low dword).
pub const CR4: u32 = 0xFF48;
/// CR3 (u64).
pub const CR3: u32 = 0xFF50;
/// CR0 (low dword).
pub const CR0: u32 = 0xFF58;
/// DR7 (low dword).
pub const DR7: u32 = 0xFF60;
/// RFLAGS (low dword).
pub const RFLAGS: u32 = 0xFF70;
/// RIP (u64).
pub const RIP: u32 = 0xFF78;
/// RDI (u64).
pub const RDI: u32 = 0xFFC0;
/// RSI (u64).
pub const RSI: u32 = 0xFFC8;
/// RAX (u64).
pub const RAX: u32 = 0xFFF8;

/// SMBASE (u32) in the legacy 32-bit map (revision 0x00020000, qemu-system-i386).
pub const LEGACY_SMBASE: u32 = 0xFEF8;

const _: () = assert!(MAP_OFFSET + MAP_SIZE == crate::layout::SMBASE_SPAN);
const _: () = assert!(ES < CS && GS + SEGMENT_SIZE <= GDTR_LIMIT && RAX + 8 <= 0x1_0000);
const _: () =
    assert!(CS == ES + SEGMENT_SIZE && SS == CS + SEGMENT_SIZE && DS == SS + SEGMENT_SIZE);
const _: () = assert!(FS == DS + SEGMENT_SIZE && GS == FS + SEGMENT_SIZE);
