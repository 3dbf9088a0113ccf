/* The first-SMI handler: what a CPU whose SMBASE is still the default runs on SMM entry
   (docs/protocol.md#relocation-step-by-step). Copied to the entry of the default-SMBASE
   window; assembled by global_asm! in first_smi.rs, where every name in braces is a constant from
   layout.rs, save_state.rs or q35::lapic.

   Rules (R16): no stack (SS:SP and IDTR are still the interrupted context's), no
   instruction that can fault, nothing read outside the window except CPUID, and the only
   loop is the one on the gate. Addressing is absolute through EDI = 0 with DS base 0
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

    /* Step 2: announce arrival: arrived[id] := round, for IDs that have an entry. */
    cmpl ${arrived_entries}, %esi
    jae 2f
    movl {ctx_round}(%edi), %eax
    movl %eax, {ctx_arrived}(%edi,%esi,4)
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
    pause
    jmp 3b
4:
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

    /* Step 5: a canonical real-mode return context at the pen (R16): CS = pen >> 4 with
       base = pen, attributes 0x009B (bits 7:0 present, DPL 0, code, readable, accessed),
       limit 0xFFFF; the five data segments selector 0, base 0, attributes 0x0093 (present,
       DPL 0, data, writable, accessed), limit 0xFFFF. 64-bit fields as two dwords. */
    movw ${pen_segment}, {ss_cs_selector}(%edi)
    movw $0x009B, {ss_cs_attributes}(%edi)
    movl $0xFFFF, {ss_cs_limit}(%edi)
    movl ${pen}, {ss_cs_base}(%edi)
    movl $0, ({ss_cs_base} + 4)(%edi)
    movl ${ss_es}, %ebx                /* ES, then SS, DS, FS, GS (CS skipped) */
    movw $5, %cx
7:  movw $0, {seg_selector}(%ebx)
    movw $0x0093, {seg_attributes}(%ebx)
    movl $0xFFFF, {seg_limit}(%ebx)
    movl $0, {seg_base}(%ebx)
    movl $0, ({seg_base} + 4)(%ebx)
    addl ${seg_size}, %ebx
    cmpl ${ss_cs}, %ebx
    jne 8f
    addl ${seg_size}, %ebx
8:  loop 7b
    movl $0, {ss_rip}(%edi)              /* RIP = 0: the pen's first byte */
    movl $0, ({ss_rip} + 4)(%edi)
    movl $2, {ss_rflags}(%edi)           /* RFLAGS: only the reserved bit 1 */
    movl $0, ({ss_rflags} + 4)(%edi)
    movl ${cr0}, {ss_cr0}(%edi)          /* CR0: the reset value, never the saved one */
    movl $0, {ss_cr3}(%edi)
    movl $0, ({ss_cr3} + 4)(%edi)
    movl $0, {ss_cr4}(%edi)
    movl $0, {ss_efer}(%edi)             /* EFER: no long mode */
    movl $0, ({ss_efer} + 4)(%edi)
    movl $0x3FF, {ss_idtr_limit}(%edi)   /* IDTR: the real-mode vector table */
    movl $0, {ss_idtr_base}(%edi)
    movl $0, ({ss_idtr_base} + 4)(%edi)
    movl $0x400, {ss_dr7}(%edi)          /* DR7: reset value, no breakpoints */

    /* Step 6: tell the monarch, then leave. */
    movb $1, {ctx_about_to_leave}(%edi)
    rsm
    .global first_smi_handler_end
first_smi_handler_end:
    .code64
