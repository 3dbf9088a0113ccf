//! ELF payload loading and the hand-off exactly as coreboot does it on x86: 32-bit
//! protected mode, paging off, flat segments, the coreboot table pointer at [esp+4].

use crate::memmap::{self, Map};

// Fields are read through `Debug` in the fatal message.
#[allow(dead_code)]
#[derive(Debug)]
pub enum PayloadError {
    NotElf,
    UnsupportedClass(u8),
    NotX86,
    NoLoadSegments,
    Truncated,
    SegmentNotInRam { start: u64, end: u64 },
    SegmentOverlapsImage { start: u64, end: u64 },
    EntryOutsideSegments(u64),
    TooManySegments,
}

#[derive(Clone, Copy)]
struct Segment {
    offset: u64,
    paddr: u64,
    filesz: u64,
    memsz: u64,
}

fn le(b: &[u8], off: usize, n: usize) -> Result<u64, PayloadError> {
    let s = b.get(off..off + n).ok_or(PayloadError::Truncated)?;
    Ok(s.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

/// Validate `elf` and copy its PT_LOAD segments into RAM. `image` is where the ELF itself
/// sits (flash or a staging buffer): segments must not overlap it. Returns the entry.
pub fn load(elf: &[u8], map: &Map, image: (u64, u64)) -> Result<u32, PayloadError> {
    if elf.get(0..4) != Some(b"\x7fELF") {
        return Err(PayloadError::NotElf);
    }
    let class = *elf.get(4).ok_or(PayloadError::Truncated)?;
    let is64 = match class {
        1 => false,
        2 => true,
        c => return Err(PayloadError::UnsupportedClass(c)),
    };
    let machine = le(elf, 18, 2)?;
    if elf.get(5) != Some(&1) || !(machine == 3 || machine == 62) {
        return Err(PayloadError::NotX86);
    }
    let (entry, phoff, phentsize, phnum) = if is64 {
        (
            le(elf, 24, 8)?,
            le(elf, 32, 8)?,
            le(elf, 54, 2)?,
            le(elf, 56, 2)?,
        )
    } else {
        (
            le(elf, 24, 4)?,
            le(elf, 28, 4)?,
            le(elf, 42, 2)?,
            le(elf, 44, 2)?,
        )
    };
    let mut segs: heapless::Vec<Segment, 16> = heapless::Vec::new();
    for i in 0..phnum {
        let ph = (phoff + i * phentsize) as usize;
        if le(elf, ph, 4)? != 1 {
            continue; // not PT_LOAD
        }
        let s = if is64 {
            Segment {
                offset: le(elf, ph + 8, 8)?,
                paddr: le(elf, ph + 24, 8)?,
                filesz: le(elf, ph + 32, 8)?,
                memsz: le(elf, ph + 40, 8)?,
            }
        } else {
            Segment {
                offset: le(elf, ph + 4, 4)?,
                paddr: le(elf, ph + 12, 4)?,
                filesz: le(elf, ph + 16, 4)?,
                memsz: le(elf, ph + 20, 4)?,
            }
        };
        if s.memsz == 0 {
            continue;
        }
        let (start, end) = (
            s.paddr,
            s.paddr
                .checked_add(s.memsz)
                .ok_or(PayloadError::Truncated)?,
        );
        if s.filesz > s.memsz || end > 0x1_0000_0000 || !memmap::is_usable(map, start, end) {
            return Err(PayloadError::SegmentNotInRam { start, end });
        }
        if start < image.1 && image.0 < end {
            return Err(PayloadError::SegmentOverlapsImage { start, end });
        }
        if s.offset
            .checked_add(s.filesz)
            .is_none_or(|e| e > elf.len() as u64)
        {
            return Err(PayloadError::Truncated);
        }
        segs.push(s).map_err(|_| PayloadError::TooManySegments)?;
    }
    if segs.is_empty() {
        return Err(PayloadError::NoLoadSegments);
    }
    if !segs
        .iter()
        .any(|s| s.paddr <= entry && entry < s.paddr + s.memsz)
    {
        return Err(PayloadError::EntryOutsideSegments(entry));
    }
    for s in &segs {
        let src = &elf[s.offset as usize..(s.offset + s.filesz) as usize];
        // SAFETY: the destination range was checked to be RAM the memory map gives to the
        // payload, below 4 GiB (identity mapped), and not overlapping the ELF image.
        unsafe {
            core::ptr::copy(src.as_ptr(), s.paddr as *mut u8, src.len());
            core::ptr::write_bytes(
                (s.paddr + s.filesz) as *mut u8,
                0,
                (s.memsz - s.filesz) as usize,
            );
        }
    }
    Ok(entry as u32)
}

core::arch::global_asm!(
    r#"
    .section .text.handoff, "ax"
    .code64
    .global payload_handoff
    /* payload_handoff(entry: edi, table: esi, stack: edx): leave long mode through a
       32-bit code segment, turn paging off, and call the payload like coreboot. */
payload_handoff:
    cli
    movl %edx, %ebp                   /* rdmsr below clobbers EDX */
    leaq 1f(%rip), %rax
    pushq $0x08
    pushq %rax
    lretq
    .code32
1:  movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %cr0, %eax
    andl $0x7FFFFFFF, %eax
    movl %eax, %cr0
    movl $0xC0000080, %ecx
    rdmsr
    andl $0xFFFFFEFF, %eax
    wrmsr
    movl %cr4, %eax
    andl $0xFFFFFFDF, %eax
    movl %eax, %cr4
    movl %ebp, %esp
    pushl %esi
    pushl $0
    jmp *%edi
    .code64
"#,
    options(att_syntax)
);

extern "sysv64" {
    fn payload_handoff(entry: u32, table: u32, stack: u32) -> !;
}

/// Enter the payload. Never returns.
pub fn enter(entry: u32, table: u64, stack_top: u32) -> ! {
    // SAFETY: the entry was validated by `load`, the table is below 4 GiB, the stack
    // is in the firmware's reserved window, and the code runs from identity-mapped RAM.
    unsafe { payload_handoff(entry, table as u32, stack_top) }
}
