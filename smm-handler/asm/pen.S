/* The post-SMM pen: where a relocated CPU returns from SMM (real mode, CS base = the pen
   page, IP 0). It says it ran by setting the page's signal byte, then halts for good
   with interrupts off until the OS starts it with INIT-SIPI-SIPI. */
    .section .rodata.post_smm_pen, "a"
    .code16
    .global post_smm_pen_start
post_smm_pen_start:
    cli
    movw %cs, %ax
    movw %ax, %ds
    movb $1, ({pen_signal})
1:  hlt
    jmp 1b
    .global post_smm_pen_end
post_smm_pen_end:
    .code64
