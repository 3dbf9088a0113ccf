/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The fields of libpayload's lib_sysinfo that the checker payload reads, as functions:
 * Rust never depends on the layout of struct sysinfo_t, which changes with libpayload's
 * configuration. Compiled with the install's lpgcc by scripts/payload-on-libpayload.
 */
#include <libpayload.h>
#include <sysinfo.h>

int lp_sysinfo_memranges(void)
{
	return lib_sysinfo.n_memranges;
}

int lp_sysinfo_memrange(int i, uint64_t *base, uint64_t *size, uint32_t *type)
{
	if (i < 0 || i >= lib_sysinfo.n_memranges || i >= SYSINFO_MAX_MEM_RANGES)
		return -1;
	*base = lib_sysinfo.memrange[i].base;
	*size = lib_sysinfo.memrange[i].size;
	*type = lib_sysinfo.memrange[i].type;
	return 0;
}

uint32_t lp_sysinfo_serial_ioport(void)
{
	return lib_sysinfo.ser_ioport;
}

uint64_t lp_sysinfo_acpi_rsdp(void)
{
	return lib_sysinfo.acpi_rsdp;
}

uint64_t lp_sysinfo_cbmem_console(void)
{
	return lib_sysinfo.cbmem_cons;
}

uint64_t lp_sysinfo_cb_header(void)
{
	return lib_sysinfo.cb_header;
}
