//! Local APIC: APIC ID and IPIs through the ICR, in xAPIC (MMIO) or x2APIC (MSR) mode.

use x86_64::registers::model_specific::Msr;

/// MSR IA32_APIC_BASE: the APIC's mode bits and MMIO base (bits 51:12).
pub const MSR_APIC_BASE: u32 = 0x1B;
/// IA32_APIC_BASE bit 10 (EXTD): x2APIC mode, registers are MSRs.
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
/// IA32_APIC_BASE bit 11 (EN): the local APIC is globally enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// Physical address of the xAPIC register page after reset.
pub const XAPIC_DEFAULT_BASE: u64 = 0xFEE0_0000;
const MSR_X2APIC_ICR: u32 = 0x830;
const MSR_X2APIC_SVR: u32 = 0x80F;
/// CPUID.1:ECX bit 21: the CPU has x2APIC mode.
const CPUID1_ECX_X2APIC: u32 = 1 << 21;
/// xAPIC Interrupt Command Register, low dword (offset from the APIC base): writing it
/// sends the IPI.
pub const XAPIC_ICR_LOW: u64 = 0x300;
/// xAPIC Interrupt Command Register, high dword: destination APIC ID in bits 31:24.
pub const XAPIC_ICR_HIGH: u64 = 0x310;
const XAPIC_SVR: u64 = 0xF0;
/// The xAPIC destination that reaches every CPU: no single CPU can be addressed by it.
pub const XAPIC_BROADCAST: u32 = 0xFF;
const ICR_DELIVERY_PENDING: u32 = 1 << 12;

/// ICR low word for an SMI IPI: delivery mode 010 (SMI, bits 10:8), level assert (bit
/// 14), physical destination, no shorthand.
pub const ICR_SMI: u32 = 0x0000_4200;
/// ICR low word for an INIT IPI: delivery mode 101 (INIT), level assert, physical
/// destination, no shorthand.
pub const ICR_INIT: u32 = 0x0000_4500;
/// ICR low word for a STARTUP IPI (SIPI): delivery mode 110, level assert, physical
/// destination; OR in the start page number (start address / 4 KiB) as the vector.
pub const ICR_STARTUP: u32 = 0x0000_4600;
/// ICR low destination shorthand "self" (bits 19:18 = 01): the IPI goes to the sender.
pub const ICR_SELF: u32 = 1 << 18;

/// Why [`send_ipi`] did not send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpiError {
    /// The APIC is disabled in IA32_APIC_BASE.
    Disabled,
    /// xAPIC mode with the MMIO base moved away from 0xFEE00000.
    MovedBase,
    /// xAPIC mode addresses APIC IDs up to 0xFE only (8 bits, 0xFF is the broadcast).
    DestTooLarge,
    /// The previous IPI never left the ICR.
    Busy,
}

fn apic_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every CPU QEMU models; reading it has no effect.
    unsafe { Msr::new(MSR_APIC_BASE).read() }
}

/// The initial APIC ID from CPUID (leaf 0xB when it exists, else leaf 1), which the OS
/// cannot change.
pub fn cpuid_apic_id() -> u32 {
    // CPUID is safe on x86_64; leaf 0xB is used only when the max leaf says it exists.
    let max = core::arch::x86_64::__cpuid(0).eax;
    if max >= 0xB {
        let l = core::arch::x86_64::__cpuid_count(0xB, 0);
        if l.ebx & 0xFFFF != 0 {
            return l.edx;
        }
    }
    core::arch::x86_64::__cpuid(1).ebx >> 24
}

fn mmio_read(off: u64) -> u32 {
    // SAFETY: the xAPIC register page is identity mapped at its default base (checked by
    // callers through IA32_APIC_BASE); registers are 32-bit aligned.
    unsafe { core::ptr::read_volatile((XAPIC_DEFAULT_BASE + off) as *const u32) }
}

fn mmio_write(off: u64, v: u32) {
    // SAFETY: as for `mmio_read`.
    unsafe { core::ptr::write_volatile((XAPIC_DEFAULT_BASE + off) as *mut u32, v) }
}

/// Software-enable the local APIC (SVR bit 8, spurious vector 0xFF) so it accepts and
/// sends IPIs, in whichever mode it is.
pub fn enable() {
    let base = apic_base();
    if base & APIC_BASE_X2APIC != 0 {
        // SAFETY: x2APIC mode is on, so MSR 0x80F is the SVR; setting its enable bit and
        // spurious vector has no other effect.
        unsafe {
            let mut svr = Msr::new(MSR_X2APIC_SVR);
            let v = svr.read();
            svr.write(v | 0x1FF);
        }
        return;
    }
    mmio_write(XAPIC_SVR, mmio_read(XAPIC_SVR) | 0x1FF);
}

/// Switch this CPU's local APIC to x2APIC mode, as an OS does on a machine with APIC IDs
/// above 254 (its ICR then addresses 32-bit APIC IDs), and software-enable it. `false`
/// when the CPU has no x2APIC mode (CPUID.1:ECX bit 21) or its APIC is disabled.
pub fn enable_x2apic() -> bool {
    if core::arch::x86_64::__cpuid(1).ecx & CPUID1_ECX_X2APIC == 0 {
        return false;
    }
    let base = apic_base();
    if base & APIC_BASE_ENABLE == 0 {
        return false;
    }
    // SAFETY: the CPU has x2APIC mode and its APIC is enabled, so setting EXTD is the
    // architectural xAPIC -> x2APIC transition; the base address bits stay.
    unsafe { Msr::new(MSR_APIC_BASE).write(base | APIC_BASE_X2APIC) };
    enable();
    apic_base() & APIC_BASE_X2APIC != 0
}

fn wait_idle(spins: u32) -> bool {
    for _ in 0..spins {
        if mmio_read(XAPIC_ICR_LOW) & ICR_DELIVERY_PENDING == 0 {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

/// Send `icr_low` to APIC ID `dest` (which the APIC ignores when `icr_low` carries a
/// destination shorthand in bits 19:18). Bounded: gives up with `Busy` rather than
/// spinning forever on a stuck ICR.
pub fn send_ipi(dest: u32, icr_low: u32) -> Result<(), IpiError> {
    let base = apic_base();
    if base & APIC_BASE_ENABLE == 0 {
        return Err(IpiError::Disabled);
    }
    if base & APIC_BASE_X2APIC != 0 {
        let v = (u64::from(dest) << 32) | u64::from(icr_low);
        // SAFETY: x2APIC mode is on (checked above), so MSR 0x830 is the ICR.
        unsafe { Msr::new(MSR_X2APIC_ICR).write(v) };
        return Ok(());
    }
    if base & 0xFFFF_F000 != XAPIC_DEFAULT_BASE {
        return Err(IpiError::MovedBase);
    }
    if dest >= XAPIC_BROADCAST {
        return Err(IpiError::DestTooLarge);
    }
    if !wait_idle(1_000_000) {
        return Err(IpiError::Busy);
    }
    let saved_high = mmio_read(XAPIC_ICR_HIGH);
    mmio_write(XAPIC_ICR_HIGH, dest << 24);
    mmio_write(XAPIC_ICR_LOW, icr_low);
    let idle = wait_idle(1_000_000);
    mmio_write(XAPIC_ICR_HIGH, saved_high);
    if idle {
        Ok(())
    } else {
        Err(IpiError::Busy)
    }
}
