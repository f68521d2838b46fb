//! The built-in policies' own unit tests: their decisions, natively, among
//! them every tuner with a tunable this kernel may lack. The policies are a
//! wasm32-wasip2 workspace of their own, so the suite runs their tests here.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use wasmtune_tests::harness;

#[test]
fn the_built_in_policies_pass_their_native_unit_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let out = Command::new(cargo)
        .args(["test", "--manifest-path"])
        .arg(root.join("policies/Cargo.toml"))
        // A target directory of its own: no wait on the suite's build lock.
        .env("CARGO_TARGET_DIR", root.join("target/policies-native"))
        .output()
        .expect("run cargo test on the policies workspace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "the policies' unit tests failed:\n{stdout}\n{stderr}");
    let passed: u64 = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(passed > 0, "no policy unit test ran:\n{stdout}");
    harness::record("policy_units::native", json!({ "passed": passed })).expect("record figures");
}
