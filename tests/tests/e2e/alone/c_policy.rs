//! A policy written in C (`policies/c/grow-rmem-c`): the scaffold's
//! `grow-rmem` again, built with wit-bindgen's C bindings, clang and
//! wasm-component-ld by its own build script. The component is accepted by
//! `policy info` with the manifest it embeds (the scaffold's grants under
//! another name), and, loaded from a policy directory into a daemon, raises
//! a namespace's `tcp_rmem[2]` when real traffic fills receive buffers.

use crate::lifecycle;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use wasmtune_tests::harness::{self, Requirement};

const BAD_MAX: u64 = 98304;
const NAME: &str = "grow-rmem-c";

fn run(what: &str, command: &mut Command) -> String {
    harness::run_command(command).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn toml_file(path: &Path) -> toml::Table {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.parse().unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_policy_written_in_c_builds_from_its_script_and_tunes() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = root.join("policies/c/grow-rmem-c");
    let bin = harness::wasmtune_bin().expect("the wasmtune binary");

    // The same grants as the scaffold's Rust example, apart from the name.
    let manifest = toml_file(&source.join("policy.toml"));
    let scaffold = toml_file(&root.join("host/templates/new/policy.toml.in"));
    for key in ["events", "sysctl"] {
        assert_eq!(manifest.get(key), scaffold.get(key), "policy.toml `{key}` differs from the scaffold's");
    }

    let wasm = harness::target_dir().join("c-policy").join(format!("{NAME}.wasm"));
    let started = Instant::now();
    let said = run("build.sh", Command::new("bash").arg(source.join("build.sh")).arg(&wasm));
    let built = started.elapsed();
    println!("{said}");
    let passed: u64 = said
        .lines()
        .filter_map(|line| line.strip_prefix("decision tests: "))
        .filter_map(|rest| rest.strip_suffix(" passed")?.parse::<u64>().ok())
        .sum();
    assert!(passed >= 1, "the decision's native tests did not run:\n{said}");

    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let info = run("wasmtune policy info", Command::new(&bin).args(["policy", "info"]).arg(&wasm).arg("--json"));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_else(|e| panic!("not JSON ({e}): {info}"));
    assert_eq!(info["manifest"]["policy"]["name"], NAME, "{info}");
    assert_eq!(info["contract"], "wasmtune:policy/handler@0.1.0", "{info}");

    // Loaded from a policy directory, with the built-in that owns tcp_rmem
    // off: the policy alone tunes the receiver.
    let (_policies, bed, mut daemon) = lifecycle::tune_with_policy_file(&wasm, NAME, "c-policy");
    let changes = bed.lines_about(&daemon.lines(), "sysctl-change");
    assert!(changes.iter().all(|l| l.field_is("policy", NAME)), "a change by another policy: {changes:?}");
    let last = changes.last().and_then(|l| l.field("new")).unwrap_or_default();
    assert_eq!(harness::normalize(&last), bed.current().expect("read tcp_rmem"), "the kernel holds the last change");
    let fields = bed.current_fields().expect("tcp_rmem fields");
    assert_eq!(fields[..2], [4096, 131072], "only tcp_rmem[2] may change");
    assert!(fields[2] > BAD_MAX, "tcp_rmem[2] did not rise above {BAD_MAX}: {fields:?}");
    let faults = daemon.lines().iter().filter(|l| l.is_event("policy-fault") && l.field_is("policy", NAME)).count();
    assert!(daemon.terminate().expect("daemon exits").success());
    assert_eq!(faults, 0, "the C policy faulted");
    println!(
        "C policy built in {} ms, {passed} native checks passed, component {size} bytes, {} changes, tcp_rmem[2] {BAD_MAX} -> {}",
        built.as_millis(),
        changes.len(),
        fields[2]
    );
    harness::record(
        "c_policy::grow_rmem_c",
        json!({ "build_ms": built.as_millis() as u64, "native_checks": passed, "component_bytes": size,
                "changes": changes.len(), "rmem_max": fields[2] }),
    )
    .expect("record figures");
}
