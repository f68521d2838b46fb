//! The administrator's `config.toml` through `AdminConfig::parse`; what
//! parses is applied to every built-in policy's manifest (the grant
//! narrowing the daemon does at load), without a panic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wasmtune::config::{AdminConfig, Origin};
use wasmtune::grants::{EffectiveGrant, HostLimits};
use wasmtune::manifest::Manifest;

fn limits() -> &'static HostLimits {
    static LIMITS: OnceLock<HostLimits> = OnceLock::new();
    LIMITS.get_or_init(HostLimits::detect)
}

fn builtin_manifests() -> &'static [Manifest] {
    static MANIFESTS: OnceLock<Vec<Manifest>> = OnceLock::new();
    MANIFESTS.get_or_init(|| {
        wasmtune::builtin::BUILTIN_POLICIES
            .iter()
            .map(|(file, bytes)| Manifest::from_component(bytes).unwrap_or_else(|e| panic!("{file}: {e}")))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = AdminConfig::parse(text, Path::new("/etc/wasmtune/config.toml")) else { return };
    if let Some(rate) = config.learning_rate {
        assert!(rate.near_limit_shift() <= 6);
    }
    for manifest in builtin_manifests() {
        let name = &manifest.policy.name;
        for origin in [Origin::Builtin, Origin::Replacement, Origin::File] {
            let settings = config.settings_for(name, origin);
            assert!(settings.enabled.is_some(), "whether {name} runs is decided");
            let _ = EffectiveGrant::resolve(manifest, &settings, limits());
        }
        let _ = config.replaces_builtin(name);
    }
    for name in config.policies.keys() {
        let _ = config.settings_for(name, Origin::File);
    }
});
