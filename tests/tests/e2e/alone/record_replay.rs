//! Record and replay, end to end: a daemon records (`--record`) what
//! tcp-buffer receives and reads while it tunes a namespace the test made
//! with real traffic; the recording then replays, with no root or BPF
//! needed, through tcp-buffer and through a variant of it built from its
//! source (it raises by two steps instead of one), and the two are
//! compared side by side. Replaying the policy that ran live must reach
//! the value it reached live.

use crate::lifecycle;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use wasmtune_tests::harness::{self, BufferBed, Daemon, READY_TIMEOUT, Requirement, Side};

/// Receiver maximum far below what a veth link needs (96 KiB).
const BAD_RMEM: &str = "4096 131072 98304";
fn run(what: &str, command: &mut Command) -> String {
    harness::run_command(command).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn a_live_recording_replays_through_tcp_buffer_and_a_variant() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let bin = harness::wasmtune_bin().expect("the wasmtune binary");
    let work = tempfile::tempdir().expect("a work directory");
    let recording = work.path().join("live.jsonl");

    let bed = BufferBed::new("record", Side::Receiver, BAD_RMEM).expect("build the test bed");
    let netns = bed.tuned_netns().name().to_string();
    let mut daemon = Daemon::builder()
        .netns(bed.tuned_netns())
        .arg("--record")
        .arg(&recording.to_string_lossy())
        .start()
        .expect("spawn the daemon");
    daemon.wait_for_event("ready", READY_TIMEOUT).expect("daemon ready");
    let is_change = bed.matcher("sysctl-change");
    std::thread::scope(|scope| {
        let traffic = scope.spawn(|| bed.transfer(6));
        let change = daemon.wait_for("a change by tcp-buffer", Duration::from_secs(15), &is_change);
        traffic.join().expect("traffic thread").expect("transfer");
        change.expect("tcp-buffer raises tcp_rmem");
    });
    assert!(daemon.terminate().expect("daemon exits").success());
    let live: Vec<_> = bed
        .lines_about(&daemon.lines(), "sysctl-change")
        .into_iter()
        .filter(|l| l.field("tunable").as_deref() == Some("net.ipv4.tcp_rmem"))
        .collect();
    let live_final = bed.current().expect("read tcp_rmem");
    assert!(!live.is_empty(), "no live change to compare with");

    let text = std::fs::read_to_string(&recording).expect("the recording");
    let lines = text.lines().count();
    let size = text.len();
    let header: serde_json::Value =
        serde_json::from_str(text.lines().next().unwrap_or_default()).expect("a JSON header");
    assert_eq!(header["recording"], 1, "a versioned header first: {header}");
    assert!(
        text.contains("\"tcp-buffer-limit\"") && text.contains(&format!("\"netns\":\"{netns}\"")),
        "events by netns name"
    );
    assert!(text.contains("\"value\":[4096,131072,98304]"), "the value read before the first raise");

    let variant = lifecycle::build_tcp_buffer_variant(&work.path().join("variant"));
    let replay = |json: bool| {
        let mut command = Command::new(&bin);
        command.arg("replay").arg(&recording).args(["--policy", "builtin:tcp-buffer", "--policy"]).arg(&variant);
        if json {
            command.arg("--json");
        }
        run("wasmtune replay", &mut command)
    };
    let shown = replay(false);
    println!("{shown}");
    let answer: serde_json::Value = serde_json::from_str(&replay(true)).expect("replay --json is JSON");
    let final_of = |side: &str| {
        answer[side]["final_values"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["netns"] == netns.as_str() && v["tunable"] == "net.ipv4.tcp_rmem")
            .and_then(|v| v["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        final_of("a").as_deref(),
        Some(live_final.as_str()),
        "replayed, the live policy reaches the value it reached live"
    );
    let changes_a = answer["a"]["changes"].as_u64().unwrap_or(0);
    let changes_b = answer["b"]["changes"].as_u64().unwrap_or(0);
    let differing = answer["comparison"]["rows_differing"].as_u64().unwrap_or(0);
    assert!(changes_b >= 1 && differing >= 1, "the variant decides differently:\n{shown}");
    let first_b = answer["b"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["happened"].as_array().into_iter().flatten())
        .find(|h| h["kind"] == "change")
        .and_then(|h| h["to"].as_str())
        .map(str::to_string)
        .unwrap_or_default();
    assert_eq!(first_b, "4096 131072 147456", "two 25 % steps of 98304 at once:\n{shown}");
    assert!(shown.contains("they differ at"), "{shown}");
    println!(
        "recorded {lines} lines ({size} bytes); live {} changes, replayed A {changes_a}, B {changes_b}; \
         inputs differing {differing}",
        live.len()
    );
    harness::record(
        "record_replay::tcp_buffer_and_variant",
        json!({ "recording_lines": lines, "recording_bytes": size, "live_changes": live.len(),
                "replay_a_changes": changes_a, "replay_b_changes": changes_b, "inputs_differing": differing }),
    )
    .expect("record figures");
}
