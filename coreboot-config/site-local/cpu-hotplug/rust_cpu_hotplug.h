/* SPDX-License-Identifier: GPL-2.0-only */
/* The C ABI of the Rust CPU hotplug object (the coreboot-smm crate). */

#ifndef RUST_CPU_HOTPLUG_H
#define RUST_CPU_HOTPLUG_H

#include <console/console.h>
#include <stddef.h>
#include <stdint.h>

#define APM_CNT_CPU_HOTPLUG 0x04
#define RUST_CPU_HOTPLUG_ENV_VERSION 4
/* diag_query of rust_cpu_hotplug_smi_entry() that answers the diagnostic query ("DIAG"). */
#define RUST_CPU_HOTPLUG_DIAG_QUERY_ON 0x44494147
/* SMM slots the Rust handler tracks (smm_handler::slots::MAX_SLOTS): one per possible CPU. */
#define RUST_CPU_HOTPLUG_MAX_SLOTS 1024
/* The Rust handler's deepest path plus coreboot's SMI entry need more than 2 KiB of stack. */
#define RUST_CPU_HOTPLUG_MIN_SMM_STACK 0x1000

/*
 * site-local/Kconfig sets these two as defaults; it is sourced before src/cpu/ (coreboot's
 * src/Kconfig loads it for user defaults and overrides). Should another default win, stop
 * here rather than lay out SMM for CPUs the handler cannot track or overflow SMM stacks.
 */
_Static_assert(CONFIG_MAX_CPUS <= RUST_CPU_HOTPLUG_MAX_SLOTS,
	       "CPU_HOTPLUG_RUST_SMM: MAX_CPUS is larger than the Rust handler's slot table");
_Static_assert(CONFIG_SMM_MODULE_STACK_SIZE >= RUST_CPU_HOTPLUG_MIN_SMM_STACK,
	       "CPU_HOTPLUG_RUST_SMM: SMM_MODULE_STACK_SIZE must be 0x1000 or more");

/* Rust log levels (smm_handler::log::Level). */
#define RUST_LOG_ERROR 1
#define RUST_LOG_WARN 2
#define RUST_LOG_INFO 3
#define RUST_LOG_DEBUG 4

typedef void (*rust_console_write_fn)(uint32_t level, const uint8_t *buf, size_t len);
typedef int (*rust_lock_owner_fn)(void);

/* Mirrors coreboot_smm::Env, whose size and offsets are asserted on the Rust side too. */
struct rust_cpu_hotplug_env {
	uint32_t version;
	uint32_t slot_count;
	uint32_t log_level;
	uint32_t cpu;			/* the CPU holding the SMI lock (the caller) */
	const uint32_t *slot_smbase;
	rust_console_write_fn console_write;
	rust_lock_owner_fn lock_owner;	/* smm_lock_owner() (patch 0006) */
};

_Static_assert(sizeof(struct rust_cpu_hotplug_env) == 40, "rust_cpu_hotplug_env size");
_Static_assert(offsetof(struct rust_cpu_hotplug_env, slot_count) == 4, "slot_count offset");
_Static_assert(offsetof(struct rust_cpu_hotplug_env, log_level) == 8, "log_level offset");
_Static_assert(offsetof(struct rust_cpu_hotplug_env, cpu) == 12, "cpu offset");
_Static_assert(offsetof(struct rust_cpu_hotplug_env, slot_smbase) == 16, "slot_smbase offset");
_Static_assert(offsetof(struct rust_cpu_hotplug_env, console_write) == 24, "console_write offset");
_Static_assert(offsetof(struct rust_cpu_hotplug_env, lock_owner) == 32, "lock_owner offset");

/* coreboot's printk level for a Rust log level. */
static inline int rust_cpu_hotplug_bios_level(uint32_t level)
{
	switch (level) {
	case RUST_LOG_ERROR:
		return BIOS_ERR;
	case RUST_LOG_WARN:
		return BIOS_WARNING;
	case RUST_LOG_INFO:
		return BIOS_INFO;
	default:
		return BIOS_DEBUG;
	}
}

/* Rust, ramstage */
int rust_cpu_hotplug_pre_mp_init(uint32_t max_cpus, rust_console_write_fn console);
int rust_cpu_hotplug_present_cpus(void);
int rust_cpu_hotplug_possible_cpus(void);
int rust_cpu_hotplug_post_mp_init(uint16_t *apic_id_to_cpu, uint32_t log_level,
				  rust_console_write_fn console);
int rust_cpu_hotplug_check_locks(uint32_t tseg_base, rust_console_write_fn console);
void rust_cpu_hotplug_reserved_range(uint32_t *base, uint32_t *size);

/* Rust, smm */
void rust_cpu_hotplug_apmc(const struct rust_cpu_hotplug_env *env);
int rust_cpu_hotplug_smi_entry(uint32_t cpu, uint32_t smbase, uint32_t diag_query);
/* smm_lock_wait() and smm_lock_recovered() of patch 0006 */
int rust_cpu_hotplug_lock_wait(int owner, int cpu, unsigned long spins);
void rust_cpu_hotplug_lock_recovered(const struct rust_cpu_hotplug_env *env, int previous_owner);

#endif
