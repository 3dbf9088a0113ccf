## SPDX-License-Identifier: GPL-2.0-only
# Builds the CPU hotplug glue and links the prebuilt Rust object into ramstage and smm.

ifeq ($(CONFIG_CPU_HOTPLUG_RUST_SMM),y)

cpu-hotplug-rust-obj := $(call strip_quotes,$(CONFIG_CPU_HOTPLUG_RUST_OBJECT))
cpu-hotplug-rust-lib := $(obj)/site-local/cpu-hotplug/librust_cpu_hotplug.a

# coreboot links stage archives whole; wrap the pre-linked object (ld -r) in one.
$(cpu-hotplug-rust-lib): $(cpu-hotplug-rust-obj)
	@printf "    AR         $(subst $(obj)/,,$(@))\n"
	mkdir -p $(dir $@)
	rm -f $@
	$(AR_ramstage) rcsD $@ $<

$(cpu-hotplug-rust-obj):
	@printf "Rust CPU hotplug object $@ is missing: run scripts/build in the project first\n"
	@false

ramstage-y += cpu-hotplug/ramstage.c
smm-y += cpu-hotplug/smm.c
# One source per stage: objects of sources outside src/ do not get a per-stage path.
ramstage-y += cpu-hotplug/bcmp.c
smm-y += cpu-hotplug/bcmp_smm.c
ramstage-srcs += $(cpu-hotplug-rust-lib)
smm-srcs += $(cpu-hotplug-rust-lib)

endif
