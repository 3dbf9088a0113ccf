/* An AP's first 64-bit steps in the two boot images: macro AP_ENTRY64. Shared file in
   platform/asm/, included through global_asm! by host-rom/src/mp.rs (expanded in
   host-rom/asm/mp.S) and payload/src/entry.rs (expanded in payload/asm/entry32.S). Each
   image's entry64 counts arriving CPUs; the first is the boot CPU, every later one runs
   this with its 1-based arrival index. */
/* Guarded: may be included by several global_asm! blocks of one assembly unit. */
.ifndef PLATFORM_AP_ENTRY64_S
.set PLATFORM_AP_ENTRY64_S, 1

/* AP_ENTRY64 max, stack_size, stacks, main: 64-bit code, EAX = the AP's 1-based index.
   stacks (a symbol, addressed RIP-relative) holds at least max - 1 stacks of
   stack_size bytes; main is the Rust entry, extern "sysv64" fn(index: u32), which
   should not return. */
.macro AP_ENTRY64 max:req, stack_size:req, stacks:req, main:req
    /* 1. An index past the stacks halts. */
    cmpl $(\max), %eax
    jae .Lap_entry64_halt\@
    /* 2. Stack top of AP `index` = stacks + index * stack_size (AP 1 gets the first). */
    movl %eax, %edi
    movl %eax, %ecx
    imulq $(\stack_size), %rcx
    leaq \stacks(%rip), %rsp
    addq %rcx, %rsp
    /* 3. main(index); should it return, halt. */
    call \main
.Lap_entry64_halt\@:
    cli
    hlt
    jmp .Lap_entry64_halt\@
.endm

.endif
