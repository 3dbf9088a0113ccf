//! The relocatable SMM module ("HRMD", written by `fwtool rmod`): parsed and bounds-checked
//! before anything is copied into TSEG, like coreboot's rmodules.

use smm_handler::boot_info::SmmParams;

use super::SmmError;

/// A parsed "HRMD" relocatable module (see fwtool's rmod format).
pub struct Rmod<'a> {
    /// Bytes the module occupies once loaded (.bss included).
    pub image_size: u32,
    /// The file part of the image.
    pub image: &'a [u8],
    /// Offset of the entry point (`smm_entry`).
    pub entry: u32,
    /// Offset of the parameter block (`SMM_PARAMS`).
    pub params: u32,
    /// 32-bit offsets of the 64-bit words to relocate by the load address.
    pub relocs: &'a [u8],
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl<'a> Rmod<'a> {
    /// Parse and check a module file.
    pub fn parse(b: &'a [u8]) -> Result<Self, SmmError> {
        if b.get(0..4) != Some(b"HRMD") || le32(b, 4) != Some(1) {
            return Err(SmmError::BadModule("bad magic or version"));
        }
        let f = |o| le32(b, o).ok_or(SmmError::BadModule("truncated header"));
        let (image_size, file_size, entry, params, nrel) = (f(8)?, f(12)?, f(16)?, f(20)?, f(24)?);
        let image = b
            .get(32..32 + file_size as usize)
            .ok_or(SmmError::BadModule("truncated image"))?;
        let rstart = 32 + file_size as usize;
        let relocs = b
            .get(rstart..rstart + 4 * nrel as usize)
            .ok_or(SmmError::BadModule("truncated relocations"))?;
        if file_size > image_size
            || entry >= image_size
            || params as usize + core::mem::size_of::<SmmParams>() > image_size as usize
        {
            return Err(SmmError::BadModule("inconsistent header"));
        }
        Ok(Self {
            image_size,
            image,
            entry,
            params,
            relocs,
        })
    }
}
