/* SPDX-License-Identifier: GPL-2.0-only */
/* The C ABI of the Rust CPU hotplug object (coreboot-smm crate). */

#ifndef RUST_CPU_HOTPLUG_H
#define RUST_CPU_HOTPLUG_H

#include <stddef.h>
#include <stdint.h>

#define APM_CNT_CPU_HOTPLUG 0x04
#define RUST_CPU_HOTPLUG_ENV_VERSION 2

typedef void (*rust_console_write_fn)(const uint8_t *buf, size_t len);

/* Mirrors coreboot_smm::Env. */
struct rust_cpu_hotplug_env {
	uint32_t version;
	uint32_t slot_count;
	uint32_t log_level;
	uint32_t pad;
	const uint32_t *slot_smbase;
	rust_console_write_fn console_write;
};

/* qemu-q35 MP init hooks (ramstage.c), declared again in the qemu-q35 cpu.c patch. */
void cpu_hotplug_pre_mp_init(void);
int cpu_hotplug_present_cpus(void);
int cpu_hotplug_possible_cpus(void);
void cpu_hotplug_post_mp_init(void);

/* Rust, ramstage */
int rust_cpu_hotplug_pre_mp_init(uint32_t max_cpus, rust_console_write_fn console);
int rust_cpu_hotplug_present_cpus(void);
int rust_cpu_hotplug_possible_cpus(void);
int rust_cpu_hotplug_post_mp_init(uint16_t *apic_id_to_cpu, rust_console_write_fn console);
int rust_cpu_hotplug_smram_locked(void);

/* Rust, smm */
void rust_cpu_hotplug_apmc(const struct rust_cpu_hotplug_env *env);
int rust_cpu_hotplug_smi_entry(uint32_t cpu, uint32_t smbase);

#endif
