//! `wasmtune policy test` against hostile and ordinary policies: the real
//! component in the real runtime, a simulated kernel, no root. A fault or a
//! denied change fails the test (exit 1) unless allowed, bad input is
//! placed by file, line and field (exit 2), the budget still stops a
//! runaway policy, and the same input gives the same answer every time.

use std::path::Path;
use std::process::Command;

use wasmtune_tests::guests::guest_wasm;
use wasmtune_tests::harness;

const HIT: &str = r#"{"tcp-buffer-limit": {"netns": "init", "direction": "receive", "buffer-bytes": 98304, "limit-bytes": 98304, "queued-bytes": 50000, "srtt-us": 2000, "remote": "192.0.2.1", "remote-port": 443}}"#;

/// Two hits a second apart, tcp_rmem given.
fn events(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("events.jsonl");
    let text = format!(
        "{{\"at\": 0, \"sysctl\": {{\"netns\": \"init\", \"name\": \"net.ipv4.tcp_rmem\", \"value\": [4096, 131072, 98304]}}}}\n\
         {{\"at\": 1000, \"event\": {HIT}}}\n{{\"at\": 2000, \"event\": {HIT}}}\n"
    );
    std::fs::write(&path, text).expect("write events");
    path
}

fn policy_test(file: &str, events: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let bin = harness::wasmtune_bin().expect("the wasmtune binary");
    let out = Command::new(bin)
        .args(["policy", "test", file, "--events"])
        .arg(events)
        .args(extra)
        .output()
        .expect("run wasmtune policy test");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn guest(name: &str) -> String {
    guest_wasm(name).to_string_lossy().into_owned()
}

#[test]
fn a_runaway_policy_faults_every_call_and_fails_the_test() {
    let dir = tempfile::tempdir().expect("a directory");
    let events = events(dir.path());
    let (code, out, _) = policy_test(&guest("hostile-loop"), &events, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out.matches("FAULT   fuel").count(), 2, "rebuilt after the first fault, stopped again:\n{out}");
    let (code, _, _) = policy_test(&guest("hostile-loop"), &events, &["--allow-faults"]);
    assert_eq!(code, Some(0));
    let (code, out, _) = policy_test(&guest("hostile-sleep"), &events, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAULT   blocked"), "{out}");
}

#[test]
fn requests_past_the_grant_are_denied_as_the_daemon_denies_them() {
    let dir = tempfile::tempdir().expect("a directory");
    let events = events(dir.path());
    let (code, out, _) = policy_test(&guest("hostile-bounds"), &events, &["--json"]);
    assert_eq!(code, Some(1), "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let denials: Vec<&str> = report["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["happened"].as_array().into_iter().flatten())
        .filter(|h| h["kind"] == "denied")
        .filter_map(|h| h["denial"].as_str())
        .collect();
    assert!(denials.contains(&"out-of-bounds") && denials.contains(&"invalid-value"), "{denials:?}");
    assert_eq!(report["changes"], 0, "nothing past the grant reaches the kernel");
    let (code, _, _) = policy_test(&guest("hostile-bounds"), &events, &["--allow-denials"]);
    assert_eq!(code, Some(0));
}

#[test]
fn the_same_input_gives_the_same_answer() {
    let dir = tempfile::tempdir().expect("a directory");
    let events = events(dir.path());
    let runs: Vec<String> = (0..3).map(|_| policy_test("builtin:tcp-buffer", &events, &["--json"]).1).collect();
    assert!(runs.iter().all(|r| r == &runs[0]), "runs differ");
    let report: serde_json::Value = serde_json::from_str(&runs[0]).expect("JSON");
    assert_eq!(report["changes"], 1, "{}", runs[0]);
    let state = policy_test(&guest("state-counter"), &events, &[]).1;
    assert!(state.contains("state quota holds: quota-exceeded"), "the state store and its quota:\n{state}");
}

#[test]
fn bad_input_is_placed_by_file_line_and_field() {
    let dir = tempfile::tempdir().expect("a directory");
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        format!(
            "{{\"at\": 0, \"event\": {HIT}}}\n{{\"at\": 5, \"event\": {}}}\n",
            HIT.replace("98304, \"queued", "\"x\", \"queued")
        ),
    )
    .expect("write");
    let (code, _, err) = policy_test("builtin:tcp-buffer", &bad, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("bad.jsonl line 2") && err.contains("\"limit-bytes\""), "{err}");
    let (code, _, err) = policy_test("builtin:no-such", &bad, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no built-in policy"), "{err}");
    let events = events(dir.path());
    let (code, _, err) = policy_test("builtin:tcp-buffer", &events, &["--sysctl", "init:kernel.panic=1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("kernel.panic"), "{err}");
}
