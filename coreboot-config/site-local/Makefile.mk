## SPDX-License-Identifier: GPL-2.0-only
# Builds the CPU hotplug glue and links the prebuilt Rust object into ramstage and smm.
# Everything lands under $(obj): coreboot maps only src/, 3rdparty/ and $(obj)/ sources to
# per-stage object paths, so each C file here is compiled through a one-line wrapper in
# $(obj)/cpu-hotplug/ that includes it (errors and dependencies name the real file).

ifeq ($(CONFIG_CPU_HOTPLUG_RUST_SMM),y)

cpu-hotplug-dir := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))/cpu-hotplug
cpu-hotplug-rust-obj := $(call strip_quotes,$(CONFIG_CPU_HOTPLUG_RUST_OBJECT))

$(obj)/cpu-hotplug/%.c: $(cpu-hotplug-dir)/%.c
	@printf "    GEN        $(subst $(obj)/,,$(@))\n"
	mkdir -p $(dir $@)
	printf '#include "%s"\n' $< > $@

# coreboot's make marks every file .SECONDARY, so an archive already built would not notice
# that the object it was made from is gone: a phony order-only check runs on every build
# without making the archives out of date.
.PHONY: cpu-hotplug-rust-object-check
cpu-hotplug-rust-object-check:
	@if [ -z "$(cpu-hotplug-rust-obj)" ]; then \
		echo "CPU_HOTPLUG_RUST_SMM: CONFIG_CPU_HOTPLUG_RUST_OBJECT is empty: set it to your project checkout's build/smm-handler-coreboot.o (made by its scripts/build; coreboot-config/configure sets it)" >&2; \
		exit 1; \
	fi
	@if [ ! -f "$(cpu-hotplug-rust-obj)" ]; then \
		echo "CPU_HOTPLUG_RUST_SMM: the Rust object $(abspath $(cpu-hotplug-rust-obj)) (CONFIG_CPU_HOTPLUG_RUST_OBJECT) is missing: run scripts/build in the project checkout, or set the option to where it built the object" >&2; \
		exit 1; \
	fi

# The pre-linked Rust object (ld -r) in an archive of its own per stage, made with that
# stage's archiver; coreboot links each stage's objects and archives whole.
define cpu-hotplug-rust-lib
$(obj)/cpu-hotplug/$(1)/librust_cpu_hotplug.a: $(wildcard $(cpu-hotplug-rust-obj)) | cpu-hotplug-rust-object-check
	@printf "    AR         $$(subst $(obj)/,,$$(@))\n"
	mkdir -p $$(dir $$@)
	rm -f $$@
	$$(AR_$(1)) rcsD $$@ $(cpu-hotplug-rust-obj)
$(1)-srcs += $(obj)/cpu-hotplug/$(1)/librust_cpu_hotplug.a
endef
$(foreach stage,ramstage smm,$(eval $(call cpu-hotplug-rust-lib,$(stage))))

ramstage-srcs += $(obj)/cpu-hotplug/ramstage.c $(obj)/cpu-hotplug/bcmp.c
smm-srcs += $(obj)/cpu-hotplug/smm.c $(obj)/cpu-hotplug/bcmp.c

endif
