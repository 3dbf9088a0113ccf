//! The file area of the host ROM ("HRFS", written by `fwtool mkrom`): the SMM module and
//! the built-in payload live there, like files in coreboot's CBFS.

/// The ROM is 1 MiB, mapped just below 4 GiB.
pub const ROM_SIZE: u32 = 0x10_0000;
pub const ROM_BASE: u32 = 0u32.wrapping_sub(ROM_SIZE);

fn rom() -> &'static [u8] {
    // SAFETY: QEMU maps the -bios image read-only at ROM_BASE..4 GiB for the whole run.
    unsafe { core::slice::from_raw_parts(ROM_BASE as *const u8, ROM_SIZE as usize) }
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Find file `name`; `None` if the directory or the file is missing or malformed.
pub fn find(name: &str) -> Option<&'static [u8]> {
    let r = rom();
    if r.get(0..4)? != b"HRFS" || le32(r, 4)? != 1 {
        return None;
    }
    let count = le32(r, 8)?.min(64) as usize;
    for i in 0..count {
        let e = 16 + 32 * i;
        let n = r.get(e..e + 24)?;
        let len = n.iter().position(|&c| c == 0).unwrap_or(24);
        if &n[..len] == name.as_bytes() {
            let (off, size) = (le32(r, e + 24)? as usize, le32(r, e + 28)? as usize);
            return r.get(off..off.checked_add(size)?);
        }
    }
    None
}
