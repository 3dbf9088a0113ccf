/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * SMM side of CPU hotplug with SMM on QEMU q35. APMC 4 goes through the free
 * northbridge_smi_handler() hook (run by the CPU holding the SMI lock), and every CPU
 * asks smm_cpu_must_return_early() before taking the lock; there, with
 * CPU_HOTPLUG_RUST_DIAG_QUERY, the Rust side also answers the diagnostic query.
 * The SMI lock hooks of patch 0006 go to Rust too: a waiter takes the lock over from an
 * owner that stopped reporting progress (INIT'd in SMM, ejected) or gives up after a
 * bound, and the new owner finishes the interrupted relocation before the handlers.
 */

#include <console/cbmem_console.h>
#include <console/console.h>
#include <device/mmio.h>
#include <cpu/amd/amd64_save_state.h>
#include <cpu/x86/smm.h>
#include "rust_cpu_hotplug.h"

/* Each slot's SMBASE, built once by the first lock holder: SMM's layout is fixed at boot. */
static uint32_t slot_smbase[CONFIG_MAX_CPUS];
static uint32_t slot_count;

/*
 * The CBMEM console's format (what `cbmem -c` and payloads read through the coreboot
 * table's LB_TAG_CBMEM_CONSOLE): a ring of `size` bytes after this header; the low 28
 * bits of `cursor` are the next write position, bit 31 says the ring wrapped.
 */
struct cbmem_console_ring {
	uint32_t size;
	uint32_t cursor;
	uint8_t body[];
};
#define CBMEM_RING_CURSOR_MASK ((1u << 28) - 1)
#define CBMEM_RING_OVERFLOW (1u << 31)

/*
 * Append to the CBMEM console from SMM without DEBUG_SMI (which would also reinitialise
 * the serial port the OS owns by now). The buffer is OS-writable RAM: only its address
 * and size, which coreboot's loader put into SMRAM, are trusted; the header's size must
 * match them and the cursor is bounded by that size before each byte.
 */
static void cbmem_console_write(const uint8_t *buf, size_t len)
{
	void *base;
	size_t total;

	smm_get_cbmemc_buffer(&base, &total);
	struct cbmem_console_ring *ring = base;
	if (!ring || total <= sizeof(*ring))
		return;
	const uint32_t size = total - sizeof(*ring);
	if (read32(&ring->size) != size)
		return;
	for (size_t i = 0; i < len; i++) {
		uint32_t cursor = read32(&ring->cursor);
		uint32_t flags = cursor & ~CBMEM_RING_CURSOR_MASK;
		cursor &= CBMEM_RING_CURSOR_MASK;
		if (cursor >= size)
			return;
		ring->body[cursor++] = buf[i];
		if (cursor == size) {
			cursor = 0;
			flags |= CBMEM_RING_OVERFLOW;
		}
		write32(&ring->cursor, flags | cursor);
	}
}

static void console_write(uint32_t level, const uint8_t *buf, size_t len)
{
	if (CONFIG(DEBUG_SMI))
		printk(rust_cpu_hotplug_bios_level(level), "%.*s", (int)len, (const char *)buf);
	else if (CONFIG(CPU_HOTPLUG_RUST_LOG_CBMEM))
		cbmem_console_write(buf, len);
}

/*
 * Each slot's save state ends at its SMBASE + 64 KiB. The AMD64 save-state type on this
 * Intel-chipset board is not a mistake: QEMU writes the AMD64-style map (revision
 * 0x00020064) for every x86_64 CPU model, and qemu-q35's SMM code sizes save states
 * with amd64_smm_state_save_area_t, so smm_get_save_state() points at that layout.
 */
static uint32_t slot_smbase_of(int cpu)
{
	const uint8_t *ss = smm_get_save_state(cpu);
	if (!ss)
		return 0;
	return (uintptr_t)ss + sizeof(amd64_smm_state_save_area_t) - SMM_DEFAULT_SIZE;
}

int smm_cpu_must_return_early(int cpu)
{
	const uint32_t diag_query = CONFIG(CPU_HOTPLUG_RUST_DIAG_QUERY) ?
		RUST_CPU_HOTPLUG_DIAG_QUERY_ON : 0;

	return rust_cpu_hotplug_smi_entry(cpu, slot_smbase_of(cpu), diag_query);
}

/* Called on the CPU holding the SMI lock. */
static void fill_env(struct rust_cpu_hotplug_env *env)
{
	if (!slot_count) {
		uint32_t n = 0;
		while (n < CONFIG_MAX_CPUS && slot_smbase_of(n)) {
			slot_smbase[n] = slot_smbase_of(n);
			n++;
		}
		slot_count = n;
	}

	*env = (struct rust_cpu_hotplug_env){
		.version = RUST_CPU_HOTPLUG_ENV_VERSION,
		.slot_count = slot_count,
		.log_level = RUST_LOG_INFO,
		.cpu = smm_lock_owner(),
		.slot_smbase = slot_smbase,
		.console_write = console_write,
		.lock_owner = smm_lock_owner,
	};
}

int smm_lock_wait(int owner_cpu, int cpu, unsigned long spins)
{
	return rust_cpu_hotplug_lock_wait(owner_cpu, cpu, spins);
}

void smm_lock_recovered(int previous_owner)
{
	struct rust_cpu_hotplug_env env;

	fill_env(&env);
	rust_cpu_hotplug_lock_recovered(&env, previous_owner);
}

void northbridge_smi_handler(void)
{
	struct rust_cpu_hotplug_env env;

	if (apm_get_apmc() != APM_CNT_CPU_HOTPLUG)
		return;

	fill_env(&env);
	rust_cpu_hotplug_apmc(&env);
}
