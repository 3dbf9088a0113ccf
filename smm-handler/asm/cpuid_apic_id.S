/* The initial APIC ID of the executing CPU into ESI, as the OS cannot change it
   (16-bit code; clobbers EAX, EBX, ECX, EDX). Shared by every piece of code that runs at
   the default SMBASE.
   1. CPUID leaf 0: EAX = the highest standard leaf.
   2. If that is at least 0xB and CPUID(0xB, 0).EBX[15:0] (logical processors at this
      level) is not 0, leaf 0xB exists: EDX = the full 32-bit x2APIC ID.
   3. Otherwise CPUID(1).EBX[31:24] is the 8-bit initial xAPIC ID. */
/* Guarded: several blobs include this file and may end up in one assembly unit. */
.ifndef CPUID_APIC_ID_DEFINED
.set CPUID_APIC_ID_DEFINED, 1
.macro CPUID_APIC_ID
    xorl %eax, %eax
    cpuid
    cmpl $0xB, %eax
    jb .Lleaf1_\@
    movl $0xB, %eax
    xorl %ecx, %ecx
    cpuid
    testw %bx, %bx
    jz .Lleaf1_\@
    movl %edx, %esi
    jmp .Ldone_\@
.Lleaf1_\@:
    movl $1, %eax
    cpuid
    shrl $24, %ebx
    movl %ebx, %esi
.Ldone_\@:
.endm
.endif
