/* The host ROM's boot relocation stub: what a present CPU runs at the default SMBASE when
   the boot CPU relocates it, before the window is locked. It looks up its new SMBASE by
   APIC ID in the boot mailbox (layout.rs BootMailbox), writes it into the save state,
   marks itself done and returns. A CPU with no entry records its APIC ID and the boot
   stops. Assembled by global_asm! in boot_reloc.rs. */
    .section .rodata.boot_reloc_stub, "a"
    .code16
    .global boot_reloc_stub_start
boot_reloc_stub_start:
    xorl %edi, %edi                      /* absolute addressing, as in first_smi.S */
    CPUID_APIC_ID
    cmpl ${entries}, %esi
    jae 3f
    movl {mb_new_smbase}(%edi,%esi,4), %eax
    testl %eax, %eax
    jz 3f
    movl {ss_revision}(%edi), %edx       /* revision bits 15:0 = 0: legacy 32-bit map */
    testw %dx, %dx
    jz 2f
    movl %eax, {ss_smbase}(%edi)
    movb $1, {mb_done}(%edi,%esi,1)
    rsm
2:  movl %eax, {ss_legacy_smbase}(%edi)
    movb $1, {mb_done}(%edi,%esi,1)
    rsm
3:  movl %esi, {mb_unknown_apic}(%edi)
    movb $1, {mb_unknown}(%edi)
    rsm
    .global boot_reloc_stub_end
boot_reloc_stub_end:
    .code64
