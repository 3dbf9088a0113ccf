/* The host ROM's AP entry in long mode: ap_entry64, reached from entry64
   (host-rom/asm/reset.S) by every CPU after the first. Included through global_asm! by
   host-rom/src/mp.rs, after platform/asm/ap_entry64.S; operands max = MAX_CPUS,
   size = AP_STACK_SIZE. */
    .section .text.ap_entry64, "ax"
    .code64
    .global ap_entry64
ap_entry64:
    /* 1. EAX = 1-based AP index: run ap_main(index) on the stack ending at
          AP_STACKS + index * AP_STACK_SIZE (platform/asm/ap_entry64.S). */
    AP_ENTRY64 {max}, {size}, AP_STACKS, ap_main
