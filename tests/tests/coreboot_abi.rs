//! The C glue in coreboot-config and the Rust object (crate `coreboot-smm`) agree on the
//! constants of their ABI that no compiler checks across the language boundary.

use qemu_tests::{coreboot_max_cpus, workspace_root};

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_root().join(rel)).expect(rel)
}

/// The integer after `key` in `text` (hex with `0x`, `_` separators allowed).
fn value_after(text: &str, key: &str) -> u64 {
    let rest = text
        .split(key)
        .nth(1)
        .unwrap_or_else(|| panic!("{key} not found"));
    let tok: String = rest
        .trim_start_matches([' ', '=', ':'])
        .trim_start_matches("u32 =")
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .filter(|&c| c != '_')
        .collect();
    match tok.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => tok.parse(),
    }
    .unwrap_or_else(|e| panic!("{key}: {tok:?}: {e}"))
}

#[test]
fn the_c_glue_and_the_rust_object_agree_on_the_diag_query_value_and_the_env_version() {
    let h = read("coreboot-config/site-local/cpu-hotplug/rust_cpu_hotplug.h");
    let rs = read("smm-handler/hosts/coreboot/src/lib.rs");
    assert_eq!(
        value_after(&h, "#define RUST_CPU_HOTPLUG_DIAG_QUERY_ON"),
        value_after(&rs, "pub const DIAG_QUERY_ON: u32"),
    );
    assert_eq!(
        value_after(&h, "#define RUST_CPU_HOTPLUG_ENV_VERSION"),
        value_after(&rs, "pub const ENV_VERSION: u32"),
    );
    // "DIAG", read as a big-endian u32, as the header says.
    assert_eq!(
        value_after(&h, "#define RUST_CPU_HOTPLUG_DIAG_QUERY_ON"),
        u64::from(u32::from_be_bytes(*b"DIAG"))
    );
}

#[test]
fn the_c_glue_caps_max_cpus_at_the_rust_slot_table() {
    let h = read("coreboot-config/site-local/cpu-hotplug/rust_cpu_hotplug.h");
    let slots = smm_handler::slots::MAX_SLOTS as u64;
    // The header's compile-time check uses this bound ...
    assert_eq!(value_after(&h, "#define RUST_CPU_HOTPLUG_MAX_SLOTS"), slots);
    // ... and the Kconfig default for MAX_CPUS while the option is on stays within it.
    let max_cpus = coreboot_max_cpus();
    assert!(u64::from(max_cpus) <= slots, "MAX_CPUS default {max_cpus}");
}

#[test]
fn configure_linux_test_bakes_in_the_command_line_the_linux_guest_tests_use() {
    let configure = read("coreboot-config/configure");
    let baked = configure
        .split("test_cmdline=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("test_cmdline in coreboot-config/configure");
    use qemu_tests::linux::{BASE_CMDLINE, GUEST_TIMEOUT_S};
    assert_eq!(
        baked,
        format!("{BASE_CMDLINE} guest.timeout={GUEST_TIMEOUT_S}")
    );
}
