/* The identity map of the low 4 GiB that the two boot images run on: macro
   IDENTITY_MAP_4GIB. Shared file in platform/asm/, included through global_asm! by
   host-rom/src/entry.rs (expanded in host-rom/asm/reset.S, tables at BOOT_PAGE_TABLES)
   and payload/src/entry.rs (expanded in payload/asm/entry32.S, tables in .bss).
   Layout at pt (4 KiB aligned, IDENTITY_MAP_SIZE bytes):
     pt + 0x0000          PML4; entry 0 -> PDPT
     pt + 0x1000          PDPT; entries 0..3 -> the four page directories
     pt + 0x2000..0x5FFF  four page directories, 2048 entries of 2 MiB pages in all */
/* Guarded: may be included by several global_asm! blocks of one assembly unit. */
.ifndef PLATFORM_PAGE_TABLES_S
.set PLATFORM_PAGE_TABLES_S, 1

.set PTE_P, 1 << 0                     /* present */
.set PTE_RW, 1 << 1                    /* writable */
.set PTE_PS, 1 << 7                    /* page size: a page-directory entry maps 2 MiB */
.set IDENTITY_MAP_SIZE, 6 * 4096       /* PML4, PDPT, four page directories */

/* IDENTITY_MAP_4GIB pt: build the tables at pt (an assemble-time constant or symbol)
   from 32-bit protected mode, paging off, flat DS/ES, DF = 0. Clobbers EAX, ECX, EDX,
   ESI, EDI. */
.macro IDENTITY_MAP_4GIB pt:req
    /* 1. Clear the six pages. */
    movl $(\pt), %edi
    movl $(IDENTITY_MAP_SIZE / 4), %ecx
    xorl %eax, %eax
    rep stosl
    /* 2. PML4[0] = PDPT | P | RW (EDI = PML4 from here on). */
    movl $(\pt), %edi
    leal (0x1000 | PTE_P | PTE_RW)(%edi), %eax
    movl %eax, (%edi)
    /* 3. PDPT[0..3] = page directory i | P | RW (each covers 1 GiB). */
    leal 0x1000(%edi), %edx
    leal (0x2000 | PTE_P | PTE_RW)(%edi), %eax
    movl $4, %ecx
.Lidmap_pdpt\@:
    movl %eax, (%edx)
    addl $0x1000, %eax
    addl $8, %edx
    loop .Lidmap_pdpt\@
    /* 4. PD entry j = (j * 2 MiB) | P | RW | PS for j = 0..2047; the upper half of the
          64-bit entry (ESI) takes the carry above 4 GiB (0 for all of the low 4 GiB). */
    leal 0x2000(%edi), %edx
    movl $(PTE_P | PTE_RW | PTE_PS), %eax
    xorl %esi, %esi
    movl $2048, %ecx
.Lidmap_pd\@:
    movl %eax, (%edx)
    movl %esi, 4(%edx)
    addl $0x200000, %eax
    adcl $0, %esi
    addl $8, %edx
    loop .Lidmap_pd\@
.endm

.endif
