//! The SMM entry stub copied to every slot at SMBASE+0x8000, imitating coreboot's
//! x86_64 smm_stub.S: real mode → protected mode → long mode with an identity map of
//! 4 GiB, CR4 = PAE only (SSE stays off), a small stack per slot, then the module's
//! Rust entry, then RSM. Each copy carries its own parameters at offset 0x100,
//! reached through CS (whose base is the slot's SMBASE) in real mode and through EBX
//! (the copy's absolute address) afterwards.

/// Per-copy parameters (offsets from the stub start).
pub const P_GDT: usize = 0x100; // u16 limit, u32 base
pub const P_SELF: usize = 0x108; // u32 absolute address of this copy
pub const P_CR3: usize = 0x10C;
pub const P_FAR32: usize = 0x110; // m16:32 to the 32-bit part
pub const P_FAR64: usize = 0x118; // m16:32 to the 64-bit part
pub const P_ENTRY: usize = 0x120; // u64
pub const P_STACK: usize = 0x128; // u64 stack top
pub const P_SLOT: usize = 0x130; // u32

core::arch::global_asm!(
    r#"
    .section .rodata.smm_stub, "a"
    .code16
    .global smm_stub_start
smm_stub_start:
    movl %cs:(0x8000 + {self_}), %ebx
    lgdtl %cs:(0x8000 + {gdt})
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl *%cs:(0x8000 + {far32})
    .code32
    .global smm_stub32
smm_stub32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl {cr3}(%ebx), %eax
    movl %eax, %cr3
    movl $0x20, %eax
    movl %eax, %cr4
    movl $0xC0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $0x9FFFFFFF, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    ljmpl *{far64}(%ebx)
    .code64
    .global smm_stub64
smm_stub64:
    movq {stack}(%rbx), %rsp
    movl {slot}(%rbx), %edi
    movq {entry}(%rbx), %rax
    call *%rax
    rsm
    .global smm_stub_end
smm_stub_end:
    .code64

"#,
    self_ = const P_SELF,
    gdt = const P_GDT,
    far32 = const P_FAR32,
    far64 = const P_FAR64,
    cr3 = const P_CR3,
    stack = const P_STACK,
    slot = const P_SLOT,
    entry = const P_ENTRY,
    options(att_syntax)
);

extern "C" {
    static smm_stub_start: u8;
    static smm_stub32: u8;
    static smm_stub64: u8;
    static smm_stub_end: u8;
    static rom_gdt: u8;
    static rom_gdt_end: u8;
}

fn span(a: *const u8, b: *const u8) -> &'static [u8] {
    // SAFETY: `a`..`b` bracket one assembled blob in .rodata, alive for the program.
    unsafe { core::slice::from_raw_parts(a, b as usize - a as usize) }
}

pub struct StubCode {
    pub code: &'static [u8],
    pub off32: usize,
    pub off64: usize,
}

pub fn smm_stub() -> StubCode {
    // SAFETY: addresses of symbols defined in the global_asm above.
    let (s, s32, s64, e) = unsafe {
        (
            &smm_stub_start as *const u8,
            &smm_stub32 as *const u8,
            &smm_stub64 as *const u8,
            &smm_stub_end as *const u8,
        )
    };
    StubCode {
        code: span(s, e),
        off32: s32 as usize - s as usize,
        off64: s64 as usize - s as usize,
    }
}

/// The flat GDT of the boot code (null, 32-bit code, data, 64-bit code), which the slot
/// stubs load too.
pub fn gdt() -> &'static [u8] {
    span(
        core::ptr::addr_of!(rom_gdt),
        core::ptr::addr_of!(rom_gdt_end),
    )
}

/// GDT selector of the flat 32-bit code segment.
pub const SEL_CODE32: u16 = 0x08;
/// GDT selector of the 64-bit code segment.
pub const SEL_CODE64: u16 = 0x18;
