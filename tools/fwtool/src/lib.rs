//! `fwtool`: host-side helpers for the firmware build.
//!
//! * [`rmod`]: convert an ELF executable linked at 0 with `ld -q` into a
//!   relocatable module blob (`HRMD`), and read such blobs back.
//! * [`rom`]: assemble a ROM image: a file directory (`HRFS`) at the bottom,
//!   the boot block right-aligned at the top.
//! * [`smmcheck`]: mechanical checks that an SMM object obeys coreboot's rules
//!   (no FP/vector instructions, no panic/fmt/float symbols, only rmodtool
//!   relocation types, small stack frames).
//! * [`elf`]: the ELF reading shared by the above.

pub mod elf;
pub mod rmod;
pub mod rom;
pub mod smmcheck;

pub use rmod::{elf_to_rmod, Rmod, RmodError};
pub use rom::{build_rom, read_directory, RomEntry, RomError, RomFile};
pub use smmcheck::{check_smm, check_smm_file, SmmCheckOptions, SmmReport};

/// Parse a number given as `0x`-prefixed hexadecimal or as decimal
/// (`_` separators allowed).
pub fn parse_number(s: &str) -> Result<u64, String> {
    let t = s.trim().replace('_', "");
    let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse::<u64>(),
    };
    parsed.map_err(|_| format!("{s:?} is not a number (use decimal or 0x-prefixed hex)"))
}

#[cfg(test)]
mod tests {
    use super::parse_number;

    #[test]
    fn numbers() {
        assert_eq!(parse_number("0x10000"), Ok(0x10000));
        assert_eq!(parse_number("0X1_0000"), Ok(0x10000));
        assert_eq!(parse_number("65536"), Ok(65536));
        assert!(parse_number("64k").is_err());
        assert!(parse_number("").is_err());
        assert!(parse_number("0x").is_err());
        assert!(parse_number("-1").is_err());
    }
}
