//! A policy author's first hour, end to end: `wasmtune new` writes a crate
//! in a directory outside this repository; it builds for wasm32-wasip2
//! against the SDK source alone, passes its native tests (the SDK's fake
//! host, no root or kernel), is accepted by `policy info`, and, loaded from
//! a policy directory into a daemon, tunes a namespace the test made.

use crate::lifecycle;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::json;
use wasmtune_tests::harness::{self, Requirement};

const NAME: &str = "grow-rmem";

fn run(what: &str, command: &mut Command) -> String {
    harness::run_command(command).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn cargo(crate_dir: &Path, target_dir: &Path) -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()));
    // A target directory kept between runs (the SDK's dependencies compile
    // once), inside this repository's, so nothing is left outside it.
    command.current_dir(crate_dir).env("CARGO_TARGET_DIR", target_dir);
    command
}

#[test]
fn a_scaffolded_policy_builds_outside_the_repository_passes_its_tests_and_tunes() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sdk = root.join("sdk");
    let target_dir = root.join("target/scaffold");
    let outside = tempfile::tempdir().expect("a directory outside the repository");
    let bin = harness::wasmtune_bin().expect("the wasmtune binary");

    let started = Instant::now();
    let said =
        run("wasmtune new", Command::new(&bin).args(["new", NAME, "--dir"]).arg(outside.path()).arg("--sdk").arg(&sdk));
    println!("{said}");
    let crate_dir = outside.path().join(NAME);
    assert!(crate_dir.join("policy.toml").is_file() && crate_dir.join("tests/decide.rs").is_file());

    run(
        "cargo build --release --target wasm32-wasip2",
        cargo(&crate_dir, &target_dir).args(["build", "--release", "--target", "wasm32-wasip2"]),
    );
    let built = started.elapsed();
    let tests = run("cargo test (native)", cargo(&crate_dir, &target_dir).arg("test"));
    let passed: u64 = tests
        .lines()
        .filter_map(|line| line.strip_prefix("test result: ok. "))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    assert!(passed >= 2, "the scaffold's native tests did not run:\n{tests}");

    let wasm = target_dir.join("wasm32-wasip2/release").join(format!("{}.wasm", NAME.replace('-', "_")));
    let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or_else(|e| panic!("{}: {e}", wasm.display()));
    let info = run("wasmtune policy info", Command::new(&bin).args(["policy", "info"]).arg(&wasm).arg("--json"));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap_or_else(|e| panic!("not JSON ({e}): {info}"));
    assert_eq!(info["manifest"]["policy"]["name"], NAME, "{info}");

    // The real component against a simulated kernel, on the scaffold's own
    // events: no root, no BPF; the same run twice gives the same answer.
    let events = crate_dir.join("events.jsonl");
    let test = |extra: &[&str]| {
        let out = Command::new(&bin)
            .args(["policy", "test"])
            .arg(&wasm)
            .arg("--events")
            .arg(&events)
            .args(extra)
            .output()
            .expect("run wasmtune policy test");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, simulated) = test(&[]);
    println!("{simulated}");
    assert_eq!(code, Some(0), "policy test failed:\n{simulated}");
    assert!(
        simulated.contains("change  init net.ipv4.tcp_rmem: 4096 131072 6291456 -> 4096 131072 7864320")
            && simulated.contains("init net.ipv4.tcp_rmem = 4096 131072 9830400"),
        "two raises by 25 %:\n{simulated}"
    );
    assert_eq!(test(&[]).1, simulated, "a simulated run is the same every time");
    // Narrowed by the administrator, the second raise is out of bounds:
    // shown, and the test fails.
    let config = outside.path().join("narrow.toml");
    std::fs::write(&config, format!("[policies.{NAME}.sysctl.\"net.ipv4.tcp_rmem\"]\nmax = 8000000\n"))
        .expect("write config");
    let (code, narrowed) = test(&["--config", &config.to_string_lossy()]);
    assert_eq!(code, Some(1), "a denied change fails the test:\n{narrowed}");
    assert!(narrowed.contains("DENIED  init net.ipv4.tcp_rmem: out-of-bounds"), "{narrowed}");

    // Loaded from a policy directory, with the built-in that owns tcp_rmem
    // off: the policy alone tunes the receiver.
    let (_policies, bed, mut daemon) = lifecycle::tune_with_policy_file(&wasm, NAME, "scaffold");
    let changes = bed.lines_about(&daemon.lines(), "sysctl-change");
    let last = changes.last().and_then(|l| l.field("new")).unwrap_or_default();
    assert_eq!(harness::normalize(&last), bed.current().expect("read tcp_rmem"), "the kernel holds the last change");
    assert!(daemon.terminate().expect("daemon exits").success());
    println!(
        "scaffolded, built in {} ms, {passed} native tests passed, component {size} bytes, {} changes",
        built.as_millis(),
        changes.len()
    );
    harness::record(
        "scaffold::outside_the_repository",
        json!({ "build_ms": built.as_millis() as u64, "native_tests": passed, "component_bytes": size,
                "changes": changes.len() }),
    )
    .expect("record figures");
}
