//! Where everything lives in physical memory, named once: the default-SMBASE window with
//! the pen page (both hosts), the data structures inside the window, and the host ROM's
//! TSEG layout. The host ROM, coreboot's glue, the payload and the tests use these names;
//! the `const` asserts at the bottom of each part keep the regions apart and aligned.
//!
//! See `docs/protocol.md#the-default-smbase-window` for why each piece is where it is.

use core::mem::{offset_of, size_of};

use crate::slots::{Slots, MAX_SLOTS};

/// A physical address range `[base, base + size)` below 4 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First byte.
    pub base: u32,
    /// Length in bytes.
    pub size: u32,
}

impl Region {
    /// The range `[base, base + size)`.
    pub const fn new(base: u32, size: u32) -> Self {
        Self { base, size }
    }

    /// One past the last byte.
    pub const fn end(self) -> u32 {
        self.base + self.size
    }

    /// Whether `inner` lies entirely inside `self`.
    pub const fn contains(self, inner: Region) -> bool {
        self.base <= inner.base && inner.end() <= self.end()
    }

    /// Whether the two ranges share a byte.
    pub const fn overlaps(self, other: Region) -> bool {
        self.base < other.end() && other.base < self.end()
    }

    /// Whether base and size are multiples of `align` (a power of two).
    pub const fn is_aligned(self, align: u32) -> bool {
        self.base.is_multiple_of(align) && self.size.is_multiple_of(align)
    }

    /// Whether `addr` lies inside the range.
    pub const fn holds(self, addr: u64) -> bool {
        self.base as u64 <= addr && addr < self.end() as u64
    }
}

/// SMBASE of a CPU that has never been relocated (its reset value).
pub const DEFAULT_SMBASE: u32 = 0x3_0000;
/// A CPU enters SMM at SMBASE + this offset, in 16-bit mode with CS base = SMBASE.
pub const SMM_ENTRY_OFFSET: u32 = 0x8000;
/// The address range one SMBASE spans: the entry point at +0x8000, the save state at the
/// top (`crate::save_state::MAP_OFFSET`).
pub const SMBASE_SPAN: u32 = 0x1_0000;

/// The default-SMBASE window and what lives in it (`docs/protocol.md#the-default-smbase-window`).
pub mod window {
    use super::{Region, DEFAULT_SMBASE, SMM_ENTRY_OFFSET};
    use crate::save_state;

    /// The default-SMBASE window: MCH register 0x9C turns these 128 KiB into SMRAM when
    /// it is locked, so only SMM can read or write them afterwards.
    pub const WINDOW: Region = Region::new(DEFAULT_SMBASE, 0x2_0000);
    /// The first-SMI handler's [`super::Context`] (gate, new SMBASE, arrival marks).
    pub const CONTEXT: Region = Region::new(DEFAULT_SMBASE, 0x1000);
    /// The boot info coreboot's ramstage records for SMM ([`crate::boot_info::BootInfo`]).
    pub const BOOT_INFO: Region = Region::new(DEFAULT_SMBASE + 0x1000, 0x1000);
    /// The host ROM's boot mailbox ([`super::BootMailbox`]): used only at boot, before the
    /// lock, while the present CPUs are relocated.
    pub const BOOT_MAILBOX: Region = Region::new(DEFAULT_SMBASE + 0x2000, 0x1000);
    /// The host ROM's AP start-up page (SIPI vector 0x33), used only at boot.
    pub const AP_TRAMPOLINE: Region = Region::new(DEFAULT_SMBASE + 0x3000, 0x1000);
    /// The possible CPUs' APIC IDs by selector, their arrival marks and gate beats
    /// ([`super::PossibleCpus`]): written at boot, read by the first-SMI handler and SMM.
    pub const POSSIBLE: Region = Region::new(DEFAULT_SMBASE + 0x4000, 0x4000);
    /// Where a CPU at the default SMBASE enters SMM: the first-SMI handler after boot, the
    /// boot relocation stub during boot. It ends where the shared save state begins.
    pub const HANDLER: Region = Region::new(
        DEFAULT_SMBASE + SMM_ENTRY_OFFSET,
        save_state::MAP_OFFSET - SMM_ENTRY_OFFSET,
    );
    /// The one save state every CPU at the default SMBASE writes on SMM entry.
    pub const SAVE_STATE: Region = Region::new(
        DEFAULT_SMBASE + save_state::MAP_OFFSET,
        save_state::MAP_SIZE,
    );
    /// The post-SMM pen: one page of ordinary (OS-writable) RAM right above the window,
    /// reserved in the memory map. A relocated CPU returns from SMM here and halts.
    pub const PEN: Region = Region::new(0x5_0000, 0x1000);
    /// Offset in the pen page of the byte the pen code sets when it ran.
    pub const PEN_SIGNAL: u32 = 0xFFF;
    /// What the memory map must reserve: the window and the pen page.
    pub const RESERVED: Region = Region::new(WINDOW.base, PEN.end() - WINDOW.base);

    const PARTS: [Region; 7] = [
        CONTEXT,
        BOOT_INFO,
        BOOT_MAILBOX,
        AP_TRAMPOLINE,
        POSSIBLE,
        HANDLER,
        SAVE_STATE,
    ];
    const _: () = {
        let mut i = 0;
        while i < PARTS.len() {
            assert!(WINDOW.contains(PARTS[i]));
            let mut j = i + 1;
            while j < PARTS.len() {
                assert!(!PARTS[i].overlaps(PARTS[j]));
                j += 1;
            }
            i += 1;
        }
    };
    // A SIPI vector names a 4 KiB page below 1 MiB.
    const _: () = assert!(PEN.is_aligned(0x1000) && PEN.end() <= 0xA_0000);
    const _: () = assert!(AP_TRAMPOLINE.is_aligned(0x1000) && HANDLER.base.is_multiple_of(0x1000));
    const _: () = assert!(!WINDOW.overlaps(PEN) && WINDOW.end() == PEN.base);
    const _: () = assert!(SAVE_STATE.end() == DEFAULT_SMBASE + super::SMBASE_SPAN);
}

/// Value of [`Context::gate`] when no CPU may pass: all-ones differs from every 32-bit
/// APIC ID, so a closed gate can never match a knocking CPU.
pub const GATE_CLOSED: u64 = u64::MAX;
/// Entries of the host ROM's [`BootMailbox`]: one per xAPIC ID (its boot relocation
/// addresses present CPUs by xAPIC ID).
pub const XAPIC_IDS: usize = 256;

/// The first-SMI handler's context at [`window::CONTEXT`]. The handler (16-bit assembly)
/// reaches every field through the `offset_of!` constants this struct feeds it; SMM
/// reaches them through [`crate::first_smi::FixedWindow`].
#[repr(C)]
pub struct Context {
    /// All-ones = closed ([`GATE_CLOSED`]), else the one APIC ID SMM admits next. Opened
    /// only by SMM, closed by the admitted CPU, both with a compare-and-swap (R8).
    pub gate: u64,
    /// The SMBASE the admitted CPU writes into its save state (chosen by SMM only, R9).
    pub new_smbase: u32,
    /// Reserved (edk2 keeps IA32_FEATURE_CONTROL here; this handler does not).
    pub _reserved0: [u8; 13],
    /// Set to 1 by the admitted CPU right before its RSM.
    pub about_to_leave: u8,
    /// Reserved.
    pub _reserved1: [u8; 2],
    /// The arrival mark the handler stores in [`PossibleCpus::arrived`]: non-zero, so 0
    /// means "not arrived".
    pub round: u32,
    /// The admitted CPU's TSC right after it took the gate (the monarch's hand-off
    /// trace; SMM clears it before each admission and only reads it for its log).
    pub gate_taken_tsc: u64,
}

const _: () = assert!(size_of::<Context>() as u32 <= window::CONTEXT.size);
const _: () = assert!(offset_of!(Context, gate).is_multiple_of(8));
const _: () = assert!(offset_of!(Context, gate_taken_tsc).is_multiple_of(8));

/// The possible CPUs at [`window::POSSIBLE`], by selector (the register block's CPU
/// index, which is also the possible-CPU index): boot code records their APIC IDs before
/// the 0x9C lock (none when CPU hotplug was not negotiated, so SMM acts on no other APIC
/// ID, R6); the first-SMI handler finds its own APIC ID among them and marks its arrival
/// at the same index. Indexing by selector keeps the table bounded by the possible count
/// whatever the APIC IDs are (x2APIC IDs are 32-bit).
#[repr(C)]
pub struct PossibleCpus {
    /// Valid entries of `apic_ids` (at most [`MAX_SLOTS`]).
    pub count: u32,
    /// Reserved.
    pub _reserved: [u32; 3],
    /// APIC ID of each possible CPU, by selector (`u32::MAX` for an arch ID that does not
    /// fit 32 bits: no CPU has it).
    pub apic_ids: [u32; MAX_SLOTS],
    /// `arrived[selector]`: the round in which the CPU with that selector's APIC ID
    /// reached the first-SMI handler (0 = not since the monarch last cleared it).
    pub arrived: [u32; MAX_SLOTS],
    /// `beat[selector]`: counted up by that CPU on every knock at the closed gate, so
    /// the monarch can see which waiting CPU is running right now and open the gate for
    /// it first (a hint for the order only: it decides nothing else).
    pub beat: [u32; MAX_SLOTS],
}

const _: () = assert!(size_of::<PossibleCpus>() as u32 <= window::POSSIBLE.size);

/// The host ROM's boot mailbox at [`window::BOOT_MAILBOX`]: the boot CPU writes each
/// present CPU's new SMBASE by APIC ID, then sends that CPU an SMI; the boot relocation
/// stub at the default SMBASE copies it into the save state and says it is done.
#[repr(C)]
pub struct BootMailbox {
    /// New SMBASE per APIC ID (0 = this CPU is not to be relocated).
    pub new_smbase: [u32; XAPIC_IDS],
    /// Set to 1 by the stub once `new_smbase[apic_id]` was written into the save state.
    pub done: [u8; XAPIC_IDS],
    /// The APIC ID of a CPU the stub had no SMBASE for.
    pub unknown_apic: u32,
    /// Set to 1 when such a CPU entered the stub (the boot stops: fail closed).
    pub unknown: u8,
}

const _: () = assert!(size_of::<BootMailbox>() as u32 <= window::BOOT_MAILBOX.size);

/// The host ROM's TSEG, laid out like coreboot's x86_64 TSEG build, sized at boot for the
/// slots it holds ([`tseg::Tseg`]). Offsets are from the TSEG base.
pub mod tseg {
    use super::{Region, SMBASE_SPAN, SMM_ENTRY_OFFSET};
    use crate::save_state;
    use crate::slots::MAX_SLOTS;

    /// The TSEG sizes ESMRAMC's TSEG_SZ field selects (values 0, 1, 2). The fourth value
    /// selects QEMU's extended TSEG (`mch.extended-tseg-mbytes`, 16 MiB by default): not
    /// used, because 2 MiB already hold [`MAX_SLOTS`] slots (asserted below) and every
    /// MiB of TSEG is taken from the guest.
    pub const SIZES: [u32; 3] = [1 << 20, 2 << 20, 8 << 20];
    /// Identity map of 4 GiB: PML4, PDPT, four page directories of 2 MiB pages, and one
    /// page table that splits the first 2 MiB into 4 KiB pages so that below 1 MiB only
    /// the default-SMBASE window and the pen are mapped (page 0 is not: R16).
    pub const PAGE_TABLES: Region = Region::new(0, 0x7000);
    /// The page table of the first 2 MiB, the last page of [`PAGE_TABLES`].
    pub const LOW_PAGE_TABLE: u32 = PAGE_TABLES.end() - 0x1000;
    /// The GDT the slot stubs load (null, 32-bit code, data, 64-bit code).
    pub const GDT: Region = Region::new(0x7000, 0x1000);
    /// The relocatable SMM module (the host ROM's SMM entry and the handler with its
    /// slot tables, about 34 KiB for [`MAX_SLOTS`] slots).
    pub const MODULE: Region = Region::new(0x8000, 0x1_0000);
    /// Bytes of one stack of the pool (as coreboot's `SMM_MODULE_STACK_SIZE` with the
    /// option on); its lowest 8 bytes hold [`super::STACK_CANARY`].
    pub const STACK_SIZE: u32 = 0x1000;
    /// Most stacks in the pool. A CPU holds one only while it runs the handler's Rust
    /// code, so the pool is sized by what runs at once, not by possible CPUs: every
    /// present CPU enters SMM on a broadcast SMI, but only the monarch does the work; the
    /// others wait for it. Past this many at once, a CPU waits for a free stack in the
    /// entry code, without one (`docs/protocol.md#smram-per-cpu`).
    pub const MAX_STACKS: u32 = 64;
    /// Where the stack pool begins: stack i is `[STACKS_BASE + i * STACK_SIZE, +
    /// STACK_SIZE)`.
    pub const STACKS_BASE: u32 = MODULE.end();
    /// Distance between the SMBASEs of neighbouring slots: the entry stubs (at most 0x200
    /// bytes at SMBASE + 0x8000) and the save states (SMBASE + 0xFE00) of all slots
    /// interleave without overlap, as in coreboot's SMM layout.
    pub const SLOT_STRIDE: u32 = 0x400;
    /// Most bytes of a slot's entry stub.
    pub const STUB_MAX: u32 = 0x200;

    /// A TSEG of one of the [`SIZES`] holding `slots` slots: slot 0's SMBASE is the
    /// highest (its save state ends exactly at the top of TSEG), each next one a
    /// [`SLOT_STRIDE`] lower; the stack pool grows up from [`STACKS_BASE`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Tseg {
        /// Bytes of TSEG.
        pub size: u32,
        /// Slots laid out.
        pub slots: u32,
        /// Stacks in the pool: one per slot up to [`MAX_STACKS`] (fewer only in the host
        /// ROM's test image, to exercise the wait for a stack).
        pub stacks: u32,
    }

    impl Tseg {
        /// The smallest TSEG that holds `slots` slots (`None` beyond [`MAX_SLOTS`] or
        /// when even the largest size is too small).
        pub const fn for_slots(slots: u32) -> Option<Tseg> {
            if slots as usize > MAX_SLOTS {
                return None;
            }
            let stacks = if slots < MAX_STACKS {
                slots
            } else {
                MAX_STACKS
            };
            let mut i = 0;
            while i < SIZES.len() {
                let t = Tseg {
                    size: SIZES[i],
                    slots,
                    stacks,
                };
                if t.fits() {
                    return Some(t);
                }
                i += 1;
            }
            None
        }

        /// ESMRAMC's TSEG_SZ field value (bits 2:1) for this size.
        pub const fn size_field(self) -> u8 {
            let mut i = 0;
            while i < SIZES.len() {
                if SIZES[i] == self.size {
                    return i as u8;
                }
                i += 1;
            }
            0
        }

        /// Slot 0's SMBASE offset.
        pub const fn top_smbase(self) -> u32 {
            self.size - SMBASE_SPAN
        }

        /// SMBASE of slot `i` in this TSEG at `tseg_base`.
        pub const fn slot_smbase(self, tseg_base: u32, i: u32) -> u32 {
            tseg_base + self.top_smbase() - i * SLOT_STRIDE
        }

        /// The same TSEG with a pool of `n` stacks (at least 1, at most the current pool).
        pub const fn with_stacks(self, n: u32) -> Tseg {
            let n = if n == 0 { 1 } else { n };
            Tseg {
                stacks: if n < self.stacks { n } else { self.stacks },
                ..self
            }
        }

        /// The stack pool.
        pub const fn stack_area(self) -> Region {
            Region::new(STACKS_BASE, self.stacks * STACK_SIZE)
        }

        /// The slots' entry stubs and save states, from the lowest slot's stub to the top.
        pub const fn slot_area(self) -> Region {
            let lowest = self
                .top_smbase()
                .saturating_sub(self.slots.saturating_sub(1) * SLOT_STRIDE);
            Region::new(
                lowest + SMM_ENTRY_OFFSET,
                self.size - (lowest + SMM_ENTRY_OFFSET),
            )
        }

        /// Whether every part fits and no two overlap.
        pub const fn fits(self) -> bool {
            if self.slots.saturating_sub(1) * SLOT_STRIDE > self.top_smbase() {
                return false;
            }
            let parts = [
                PAGE_TABLES,
                GDT,
                MODULE,
                self.stack_area(),
                self.slot_area(),
            ];
            let all = Region::new(0, self.size);
            let mut i = 0;
            while i < parts.len() {
                if !all.contains(parts[i]) {
                    return false;
                }
                let mut j = i + 1;
                while j < parts.len() {
                    if parts[i].overlaps(parts[j]) {
                        return false;
                    }
                    j += 1;
                }
                i += 1;
            }
            true
        }
    }

    /// Pool stack i's bottom (lowest address, where the canary lives), in a TSEG at
    /// `tseg_base` of any size.
    pub const fn pool_stack(tseg_base: u32, i: u32) -> u32 {
        tseg_base + STACKS_BASE + i * STACK_SIZE
    }

    // Every slot count up to MAX_SLOTS has a TSEG; a small guest keeps the 1 MiB one.
    const _: () = assert!(matches!(
        Tseg::for_slots(MAX_SLOTS as u32),
        Some(Tseg {
            size: 0x20_0000,
            ..
        })
    ));
    // 1 MiB holds 641 slots (README).
    const _: () = assert!(matches!(
        Tseg::for_slots(641),
        Some(Tseg {
            size: 0x10_0000,
            ..
        })
    ));
    const _: () = assert!(matches!(
        Tseg::for_slots(642),
        Some(Tseg {
            size: 0x20_0000,
            ..
        })
    ));
    const _: () = assert!(matches!(
        Tseg::for_slots(64),
        Some(Tseg {
            size: 0x10_0000,
            ..
        })
    ));
    // A stub never reaches the next slot's save state, and the stride keeps both apart.
    const _: () = assert!(STUB_MAX <= SLOT_STRIDE && save_state::MAP_SIZE <= SLOT_STRIDE);
    const _: () = assert!(SMM_ENTRY_OFFSET + STUB_MAX <= save_state::MAP_OFFSET);
    const _: () = assert!(PAGE_TABLES.is_aligned(0x1000) && STACKS_BASE.is_multiple_of(16));
    // PML4, PDPT, four page directories, then the low page table.
    const _: () = assert!(LOW_PAGE_TABLE == PAGE_TABLES.base + 6 * 0x1000);
}

/// The value the lowest qword of every slot stack holds; SMM checks it on the way out.
pub const STACK_CANARY: u64 = 0x5AFE_57AC_C0DE_CAFE;

const _: () = assert!(size_of::<Slots>() <= 2 * 4 * MAX_SLOTS + 16);
