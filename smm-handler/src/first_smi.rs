//! The first-SMI handler that runs at the default SMBASE (entry 0x38000), its context at
//! 0x30000, and the post-SMM pen (spec 6.4).
//!
//! Both blobs are position-dependent 16-bit code copied to fixed addresses. The handler
//! uses no stack and no instruction that can fault (SS:SP and IDTR are still the
//! interrupted context's), reads nothing outside 0x30000-0x4FFFF except CPUID, and loops
//! only on the gate. Its code is CS-independent (relative jumps, absolute DS addressing
//! with DS base 0), so the self-SIPI restart at 0x3800:0000 simply runs it again.

/// Where the context lives (inside the locked window, so SMRAM after the lock).
pub const CONTEXT_BASE: u32 = 0x30000;
/// Entry of a CPU whose SMBASE is still the default 0x30000.
pub const HANDLER_BASE: u32 = 0x38000;
/// The pen page: directly above the lockable window, reserved in the memory map.
pub const PEN_BASE: u32 = 0x50000;
/// Offset of the pen's "I ran" byte in its page.
pub const PEN_SIGNAL: u32 = 0xFFF;

/// Context field offsets (from `CONTEXT_BASE`).
pub const CTX_GATE: u32 = 0x00;
pub const CTX_NEW_SMBASE: u32 = 0x08;
pub const CTX_PEN_BASE: u32 = 0x0C;
pub const CTX_ABOUT_TO_LEAVE: u32 = 0x19;
pub const CTX_VERSION: u32 = 0x1A;
pub const CTX_ROUND: u32 = 0x1C;
/// `arrived[apic_id]` (u32 each, the round in which the CPU arrived) for IDs < 256.
pub const CTX_ARRIVED: u32 = 0x100;
pub const ARRIVED_ENTRIES: u32 = 256;
pub const CONTEXT_SIZE: u32 = CTX_ARRIVED + 4 * ARRIVED_ENTRIES;
pub const CONTEXT_VERSION: u8 = 1;
pub const GATE_CLOSED: u64 = u64::MAX;

/// Real-mode reset value of CR0 written into the return context (never derived from the
/// saved CR0, R16).
pub const PEN_CR0: u32 = 0x6000_0010;

core::arch::global_asm!(
    r#"
    .section .rodata.first_smi_handler, "a"
    .code16
    .global first_smi_handler_start
first_smi_handler_start:
    /* EDI stays 0: a 32-bit base register forces 32-bit addressing (DS base is 0 and
       its limit 4 GiB at SMM entry); LLVM would truncate bare absolute addresses. */
    xorl %edi, %edi
    /* Step 0: SIPI to self (ICR high := 0, low := 0x44638: self, assert, STARTUP 0x38)
       so that wait-for-SIPI is used up inside SMM on QEMU builds that deliver SIPIs to
       CPUs in SMM; ignored where that bug is fixed (spec 9, review note). */
    xorl %eax, %eax
    movl %eax, 0xFEE00310(%edi)
    movl $0x00044638, %eax
    movl %eax, 0xFEE00300(%edi)
    movw $256, %cx
1:  pause
    loop 1b

    /* Step 1: initial APIC ID from CPUID into ESI. */
    xorl %eax, %eax
    cpuid
    cmpl $0xB, %eax
    jb 2f
    movl $0xB, %eax
    xorl %ecx, %ecx
    cpuid
    testw %bx, %bx
    jz 2f
    movl %edx, %esi
    jmp 3f
2:  movl $1, %eax
    cpuid
    shrl $24, %ebx
    movl %ebx, %esi
3:
    /* Step 2: announce arrival (round number) for IDs < 256. */
    cmpl ${entries}, %esi
    jae 4f
    movl ({ctx} + {round})(%edi), %eax
    movl %eax, ({ctx} + {arrived})(%edi,%esi,4)
4:
    /* Step 3: knock until the gate holds our APIC ID; the CAS closes it again. */
5:  movl %esi, %eax
    xorl %edx, %edx
    movl $0xFFFFFFFF, %ebx
    movl $0xFFFFFFFF, %ecx
    lock cmpxchg8b ({ctx} + {gate})(%edi)
    je 6f
    pause
    jmp 5b
6:
    /* Step 4: new SMBASE, 64-bit save-state map only (qemu-system-x86_64). A legacy map
       (qemu-system-i386) is not supported: stay here rather than RSM into the reset
       vector. */
    movl 0x3FEFC(%edi), %eax
    testw %ax, %ax
    jnz 7f
8:  hlt
    jmp 8b
7:  movl ({ctx} + {new_smbase})(%edi), %eax
    movl %eax, 0x3FF00(%edi)

    /* Step 5: canonical real-mode return context at the pen. */
    movl ({ctx} + {pen})(%edi), %eax
    movl %eax, %edx
    shrl $4, %edx
    movw %dx, 0x3FE10(%edi)          /* CS selector */
    movw $0x009B, 0x3FE12(%edi)      /* CS attributes */
    movl $0xFFFF, 0x3FE14(%edi)      /* CS limit */
    movl %eax, 0x3FE18(%edi)         /* CS base, low */
    movl $0, 0x3FE1C(%edi)           /* CS base, high */
    movl $0x3FE00, %ebx               /* ES, SS, DS, FS, GS */
    movw $5, %cx
9:  movw $0, (%ebx)
    movw $0x0093, 2(%ebx)
    movl $0xFFFF, 4(%ebx)
    movl $0, 8(%ebx)
    movl $0, 12(%ebx)
    addl $0x10, %ebx
    cmpl $0x3FE10, %ebx
    jne 10f
    addl $0x10, %ebx                  /* skip CS */
10: loop 9b
    movl $0, 0x3FF78(%edi)           /* RIP */
    movl $0, 0x3FF7C(%edi)
    movl $2, 0x3FF70(%edi)           /* RFLAGS */
    movl $0, 0x3FF74(%edi)
    movl ${cr0}, 0x3FF58(%edi)       /* CR0 */
    movl $0, 0x3FF50(%edi)           /* CR3 */
    movl $0, 0x3FF54(%edi)
    movl $0, 0x3FF48(%edi)           /* CR4 */
    movl $0, 0x3FED0(%edi)           /* EFER */
    movl $0, 0x3FED4(%edi)
    movl $0x3FF, 0x3FE84(%edi)       /* IDTR limit */
    movl $0, 0x3FE88(%edi)           /* IDTR base */
    movl $0, 0x3FE8C(%edi)
    movl $0x400, 0x3FF60(%edi)       /* DR7 */

    /* Step 7: tell the monarch, then leave. */
    movb $1, ({ctx} + {leave})(%edi)
    rsm
    .global first_smi_handler_end
first_smi_handler_end:

    .section .rodata.post_smm_pen, "a"
    .code16
    .global post_smm_pen_start
post_smm_pen_start:
    cli
    movw %cs, %ax
    movw %ax, %ds
    movb $1, ({signal})
11: hlt
    jmp 11b
    .global post_smm_pen_end
post_smm_pen_end:
    .code64
"#,
    ctx = const CONTEXT_BASE,
    gate = const CTX_GATE,
    new_smbase = const CTX_NEW_SMBASE,
    pen = const CTX_PEN_BASE,
    leave = const CTX_ABOUT_TO_LEAVE,
    round = const CTX_ROUND,
    arrived = const CTX_ARRIVED,
    entries = const ARRIVED_ENTRIES,
    cr0 = const PEN_CR0,
    signal = const PEN_SIGNAL,
    options(att_syntax)
);

extern "C" {
    static first_smi_handler_start: u8;
    static first_smi_handler_end: u8;
    static post_smm_pen_start: u8;
    static post_smm_pen_end: u8;
}

fn blob(start: *const u8, end: *const u8) -> &'static [u8] {
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: `start`/`end` bracket one assembled blob in .rodata, which lives for the
    // whole program and is never written.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// The assembled first-SMI handler, to be copied to `HANDLER_BASE`.
pub fn handler_code() -> &'static [u8] {
    // SAFETY: taking the address of extern statics defined in global_asm above.
    unsafe {
        blob(
            &first_smi_handler_start as *const u8,
            &first_smi_handler_end as *const u8,
        )
    }
}

/// The assembled post-SMM pen, to be copied to the pen page.
pub fn pen_code() -> &'static [u8] {
    // SAFETY: as for `handler_code`.
    unsafe {
        blob(
            &post_smm_pen_start as *const u8,
            &post_smm_pen_end as *const u8,
        )
    }
}

/// Install the context (gate closed, round 0, nothing arrived), the handler and the pen.
///
/// # Safety
/// `0x30000..0x50000` and the pen page must be writable RAM that nothing else uses, and
/// the default-SMBASE window must not be locked yet (the host ROM and coreboot call this
/// in the boot phase, right before locking MCH 0x9C).
pub unsafe fn install(pen_base: u32) {
    let ctx = CONTEXT_BASE as *mut u8;
    // SAFETY: the caller guarantees the window is ours; sizes are compile-time bounded.
    unsafe {
        core::ptr::write_bytes(ctx, 0, CONTEXT_SIZE as usize);
        core::ptr::write_volatile((CONTEXT_BASE + CTX_GATE) as *mut u64, GATE_CLOSED);
        core::ptr::write_volatile((CONTEXT_BASE + CTX_PEN_BASE) as *mut u32, pen_base);
        core::ptr::write_volatile((CONTEXT_BASE + CTX_VERSION) as *mut u8, CONTEXT_VERSION);
        // The arrival mark the handler stores; non-zero so that 0 means "not arrived".
        core::ptr::write_volatile((CONTEXT_BASE + CTX_ROUND) as *mut u32, 1);
        let h = handler_code();
        core::ptr::copy_nonoverlapping(h.as_ptr(), HANDLER_BASE as *mut u8, h.len());
        install_pen(pen_base);
    }
}

/// (Re-)install the pen code and clear its signal byte.
///
/// # Safety
/// `pen_base` must be the reserved pen page.
pub unsafe fn install_pen(pen_base: u32) {
    let p = pen_code();
    // SAFETY: the caller guarantees the pen page is ours; the blob is far below 4 KiB.
    unsafe {
        core::ptr::copy_nonoverlapping(p.as_ptr(), pen_base as *mut u8, p.len());
        core::ptr::write_volatile((pen_base + PEN_SIGNAL) as *mut u8, 0);
    }
}

/// The real default-SMBASE window and pen page, for the monarch in SMM. Only valid in
/// SMM after the window was installed and locked.
pub struct FixedWindow {
    pub pen_base: u32,
}

fn ctx<T>(off: u32) -> *mut T {
    (CONTEXT_BASE + off) as *mut T
}

impl crate::hotplug::Window for FixedWindow {
    fn gate_cas(&self, old: u64, new: u64) -> bool {
        // SAFETY: the gate is an 8-byte aligned u64 in SMRAM at 0x30000, shared only with
        // the first-SMI handler's `lock cmpxchg8b`.
        let gate = unsafe { core::sync::atomic::AtomicU64::from_ptr(ctx(CTX_GATE)) };
        gate.compare_exchange(
            old,
            new,
            core::sync::atomic::Ordering::SeqCst,
            core::sync::atomic::Ordering::SeqCst,
        )
        .is_ok()
    }
    fn set_new_smbase(&self, smbase: u32) {
        // SAFETY: context field in SMRAM; written only while the gate is closed (R8).
        unsafe { core::ptr::write_volatile(ctx(CTX_NEW_SMBASE), smbase) }
    }
    fn about_to_leave(&self) -> u8 {
        // SAFETY: context field in SMRAM written by the admitted CPU.
        unsafe { core::ptr::read_volatile(ctx(CTX_ABOUT_TO_LEAVE)) }
    }
    fn clear_about_to_leave(&self) {
        // SAFETY: context field in SMRAM.
        unsafe { core::ptr::write_volatile(ctx::<u8>(CTX_ABOUT_TO_LEAVE), 0) }
    }
    fn arrived(&self, apic: u32) -> u32 {
        if apic >= ARRIVED_ENTRIES {
            return 0;
        }
        // SAFETY: `arrived[apic]` for apic < 256 lies inside the context in SMRAM.
        unsafe { core::ptr::read_volatile(ctx(CTX_ARRIVED + 4 * apic)) }
    }
    fn clear_arrived(&self, apic: u32) {
        if apic < ARRIVED_ENTRIES {
            // SAFETY: as for `arrived`.
            unsafe { core::ptr::write_volatile(ctx::<u32>(CTX_ARRIVED + 4 * apic), 0) }
        }
    }
    fn reset_pen(&self) {
        // SAFETY: the pen page is reserved for this in the memory map; SMM re-installs
        // it because the OS can write it (R4).
        unsafe { install_pen(self.pen_base) }
    }
    fn pen_signal(&self) -> u8 {
        // SAFETY: reading one byte of the reserved pen page (OS-writable: a hint only).
        unsafe { core::ptr::read_volatile((self.pen_base + PEN_SIGNAL) as *const u8) }
    }
    fn pen_base(&self) -> u32 {
        self.pen_base
    }
}
