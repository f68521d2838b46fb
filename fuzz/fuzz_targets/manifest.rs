//! Policy manifests: the text of the `wasmtune-manifest` section
//! (`Manifest::parse`) and whole policy files (`Manifest::from_component`,
//! which finds the section). What parses keeps the promises the rest of the
//! host relies on, and resolves to a grant (or a refusal) without a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasmtune::config::PolicySettings;
use wasmtune::grants::{EffectiveGrant, HostLimits};
use wasmtune::manifest::Manifest;

fn limits() -> &'static HostLimits {
    static LIMITS: OnceLock<HostLimits> = OnceLock::new();
    LIMITS.get_or_init(HostLimits::detect)
}

fn check(manifest: &Manifest) {
    let name = &manifest.policy.name;
    assert!(!name.is_empty() && name.len() <= 64, "{name:?}");
    assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{name:?}");
    assert_eq!(manifest.event_kinds().len(), manifest.events.len(), "an event kind did not resolve");
    for grant in &manifest.sysctls {
        assert!(wasmtune::sysctl::validate_name(&grant.name).is_ok(), "{:?}", grant.name);
    }
    let _ = manifest.to_string();
    let _ = EffectiveGrant::resolve(manifest, &PolicySettings::default(), limits());
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(manifest) = Manifest::parse(text)
    {
        check(&manifest);
    }
    if let Ok(manifest) = Manifest::from_component(data) {
        check(&manifest);
    }
});
