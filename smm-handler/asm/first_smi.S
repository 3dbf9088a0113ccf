/* The first-SMI handler: what a CPU whose SMBASE is still the default runs on SMM entry
   (docs/protocol.md#relocation-step-by-step). Copied to the entry of the default-SMBASE
   window; assembled by global_asm! in first_smi.rs, where every name in braces is a constant from
   layout.rs, save_state.rs or q35::lapic.

   Rules (R16): no stack (SS:SP and IDTR are still the interrupted context's), no
   instruction that can fault, nothing read outside the window except CPUID, and two
   loops only: the search of the possible-CPU table (bounded by its size) and the gate.
   EBP keeps this CPU's index in that table from step 2 to step 3 (all-ones: none). Addressing is absolute through EDI = 0 with DS base 0
   (the SMM entry state), so the code does not depend on CS and the self-SIPI restart at
   CS = 0x3800 simply runs it again. */
    .section .rodata.first_smi_handler, "a"
    .code16
    .global first_smi_handler_start
first_smi_handler_start:
    /* EDI stays 0: a 32-bit base register forces 32-bit addressing (DS base is 0 and its
       limit 4 GiB at SMM entry); LLVM would truncate bare absolute addresses. */
    xorl %edi, %edi

    /* Step 0: SIPI to self, so that wait-for-SIPI is used up inside SMM on QEMU builds
       that deliver SIPIs to CPUs in SMM (docs/security.md#platform-precondition). ICR
       high := 0 (no destination with a shorthand); ICR low := {self_sipi}:
       bits 19:18 = 01 shorthand self, bit 14 level assert, bits 10:8 = 110 STARTUP,
       bits 7:0 = the page of this handler. Then let the SIPI land. */
    xorl %eax, %eax
    movl %eax, {icr_high}(%edi)
    movl ${self_sipi}, %eax
    movl %eax, {icr_low}(%edi)
    movw $256, %cx
1:  pause
    loop 1b

    /* Step 1: the initial APIC ID into ESI. */
    CPUID_APIC_ID

    /* Step 2: announce arrival: find our APIC ID among the possible CPUs (the table boot
       code wrote before the lock; its count clamped to the table's size) and store the
       round at the same index. A CPU that is not a possible one leaves no mark. */
    movl $0xFFFFFFFF, %ebp
    movl {pos_count}(%edi), %ecx
    cmpl ${max_possible}, %ecx
    jbe 7f
    movl ${max_possible}, %ecx
7:  xorl %ebx, %ebx
8:  cmpl %ecx, %ebx
    jae 2f
    cmpl %esi, {pos_apic_ids}(%edi,%ebx,4)
    je 9f
    incl %ebx
    jmp 8b
9:  movl %ebx, %ebp
    movl {ctx_round}(%edi), %eax
    movl %eax, {pos_arrived}(%edi,%ebx,4)
2:
    /* Step 3: knock until the gate holds our APIC ID: cmpxchg8b compares EDX:EAX =
       (0, id) with the gate and on a match stores ECX:EBX = all-ones, closing it again
       atomically. */
3:  movl %esi, %eax
    xorl %edx, %edx
    movl $0xFFFFFFFF, %ebx
    movl $0xFFFFFFFF, %ecx
    lock cmpxchg8b {ctx_gate}(%edi)
    je 4f
    /* Not yet: count a beat at our index, so that the monarch sees this CPU running. */
    cmpl $0xFFFFFFFF, %ebp
    je 10f
    incl {pos_beat}(%edi,%ebp,4)
10: pause
    jmp 3b
4:
    /* The hand-off trace: this CPU's TSC as it took the gate (RDTSC cannot fault at CPL 0). */
    rdtsc
    movl %eax, {ctx_gate_taken_tsc}(%edi)
    movl %edx, ({ctx_gate_taken_tsc} + 4)(%edi)
    /* Step 4: the new SMBASE, 64-bit save-state map only (qemu-system-x86_64: revision
       bits 15:0 non-zero). With the legacy map (qemu-system-i386) stay here rather than
       RSM into the reset vector. */
    movl {ss_revision}(%edi), %eax
    testw %ax, %ax
    jnz 5f
6:  hlt
    jmp 6b
5:  movl {ctx_new_smbase}(%edi), %eax
    movl %eax, {ss_smbase}(%edi)

    /* Step 5: a canonical real-mode return context at the pen (R16), the same one the
       host ROM's slot stub writes for a CPU in the INIT reset state (pen_context.S). */
    PEN_RETURN_CONTEXT %edi, {default_smbase}

    /* Step 6: tell the monarch, then leave. */
    movb $1, {ctx_about_to_leave}(%edi)
    rsm
    .global first_smi_handler_end
first_smi_handler_end:
    .code64
