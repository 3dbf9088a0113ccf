/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Ramstage side of CPU hotplug with SMM on QEMU q35: the qemu-q35 MP init hooks call
 * into the Rust object; the memory map reserves the default-SMBASE window and the
 * post-SMM pen; and coreboot refuses to start the payload with SMRAM open or unlocked.
 */

#include <bootmem.h>
#include <bootstate.h>
#include <console/console.h>
#include <cpu/x86/smm.h>
#include <device/fw_cfg.h>
#include <mainboard/emulation/qemu-q35/q35.h>
#include "rust_cpu_hotplug.h"

static void console_write(uint32_t level, const uint8_t *buf, size_t len)
{
	printk(rust_cpu_hotplug_bios_level(level), "%.*s", (int)len, (const char *)buf);
}

#if !CONFIG(CPU_HOTPLUG_RUST_TEST_OPEN_WINDOW)

void qemu_cpu_hotplug_pre_mp_init(void)
{
	int ret = rust_cpu_hotplug_pre_mp_init(CONFIG_MAX_CPUS, console_write);
	if (ret < 0)
		die("CPU hotplug: boot preparation failed (%d)\n", ret);
}

int qemu_cpu_hotplug_present_cpus(void)
{
	return rust_cpu_hotplug_present_cpus();
}

int qemu_cpu_hotplug_possible_cpus(void)
{
	return rust_cpu_hotplug_possible_cpus();
}

void qemu_cpu_hotplug_post_mp_init(void)
{
	uint16_t *table = smm_stub_live_params ? smm_stub_live_params->apic_id_to_cpu : NULL;
	int ret = rust_cpu_hotplug_post_mp_init(table, RUST_LOG_INFO, console_write);
	if (ret < 0)
		die("CPU hotplug: locking SMRAM at the default SMBASE failed (%d)\n", ret);
}

#else

/*
 * The negative-control test build (CPU_HOTPLUG_RUST_TEST_OPEN_WINDOW, never production):
 * no SMI feature is negotiated at all and SMRAM at the default SMBASE stays open, so a
 * CPU that QEMU still lets the OS plug runs OS code there in SMM. The attack test must
 * then see TSEG leak; that it does not on the real build proves the lock is what stops it.
 */
void qemu_cpu_hotplug_pre_mp_init(void)
{
	printk(BIOS_WARNING, "INSECURE: SMI features not negotiated at all: the default-SMBASE "
	       "window stays open (CPU_HOTPLUG_RUST_TEST_OPEN_WINDOW, a negative-control test build)\n");
}

int qemu_cpu_hotplug_present_cpus(void)
{
	return fw_cfg_boot_cpus();
}

int qemu_cpu_hotplug_possible_cpus(void)
{
	return fw_cfg_boot_cpus();
}

void qemu_cpu_hotplug_post_mp_init(void)
{
}

#endif

/* The default-SMBASE window and the pen page, as the Rust layout defines them. */
void bootmem_platform_add_ranges(void)
{
	uint32_t base, size;

	rust_cpu_hotplug_reserved_range(&base, &size);
	bootmem_add_range(base, size, BM_MEM_RESERVED);
}

/*
 * Fail closed, whatever MP init did: before the payload, try to open SMRAM and to turn
 * TSEG off, read TSEG and the default-SMBASE window from outside SMM, and compare QEMU's
 * view of the SMI features; a machine without SMM (QEMU smm=off) keeps the registers and
 * their lock bits, so reading them back proves nothing.
 */
static void cpu_hotplug_check_smram_locked(void *unused)
{
	uintptr_t tseg_base;
	size_t tseg_size;
	int ret;

	smm_region(&tseg_base, &tseg_size);
	ret = rust_cpu_hotplug_check_locks(tseg_base, console_write);
	if (ret != 0)
		die("CPU hotplug: SMRAM is not locked (%d); not starting the payload\n", ret);
	printk(BIOS_INFO, "CPU hotplug: SMRAM tested closed and locked, default SMBASE locked\n");
}

BOOT_STATE_INIT_ENTRY(BS_PAYLOAD_LOAD, BS_ON_ENTRY, cpu_hotplug_check_smram_locked, NULL);
