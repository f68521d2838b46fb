//! End to end: a policy that blocks inside a host call. Fuel and the epoch
//! deadline only interrupt guest code, so a guest that sleeps (Rust's
//! `std::thread::sleep` waits in `wasi:io/poll`) used to stall its thread
//! for good — and with it `policy disable`, hot-reload and SIGTERM, which
//! waited for that thread. The host must refuse the wait (a `blocked`
//! fault), and stopping a policy must never wait on its thread unbounded.
//!
//! Every bound is measured and reported even when an earlier one failed, so
//! one run shows each stall.

use crate::lifecycle;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use lifecycle::{find_policy, install};
use serde_json::{Value as Json, json};
use wasmtune_tests::guests::guest_wasm;
use wasmtune_tests::harness::{self, BufferBed, Daemon, LogCapture, LogLine, Requirement, Side};

const BAD_RMEM: &str = "4096 131072 98304";
const POLICY: &str = "hostile-sleep";
/// The bounds the finding states: the sleeping call fails within 1 s, a
/// disable answers within 2 s, the daemon stops within 5 s of SIGTERM.
const FAULT_BOUND: Duration = Duration::from_secs(1);
const DISABLE_BOUND: Duration = Duration::from_secs(2);
const STOP_BOUND: Duration = Duration::from_secs(5);
/// How long to wait past a bound before calling it missed, so that a miss
/// is measured rather than waited out forever.
const GRACE: Duration = Duration::from_secs(5);
/// The policy gets its events from this transfer.
const TRANSFER_SECONDS: u32 = 30;
/// How long the first batch may take to reach the policy once traffic runs.
const FIRST_EVENT_TIMEOUT: Duration = Duration::from_secs(30);

fn is_about_policy(line: &LogLine, event: &str) -> bool {
    line.is_event(event) && line.field_is("policy", POLICY)
}

/// Runs `wasmtune ARGS`, killing it after `limit`: its output (None when
/// killed) and how long it took.
fn cli_within(args: &[&str], limit: Duration) -> (Option<Output>, Duration) {
    let started = Instant::now();
    let mut child = harness::wasmtune_command()
        .expect("wasmtune")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run wasmtune");
    loop {
        match child.try_wait().expect("wait for wasmtune") {
            Some(_) => {
                let elapsed = started.elapsed();
                return (Some(child.wait_with_output().expect("wasmtune output")), elapsed);
            }
            None if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                return (None, started.elapsed());
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The policy's first `on-events` call (it logs before sleeping) and the
/// fault that ended it: how long the call lasted, and the fault's kind.
fn time_the_sleeping_call(daemon: &Daemon, problems: &mut Vec<String>) -> Json {
    let slept = daemon
        .wait_for("hostile-sleep's first batch", FIRST_EVENT_TIMEOUT, |l| is_about_policy(l, "policy-log"))
        .expect("the sleeping policy got no tcp-buffer-limit event under traffic");
    let fault = daemon.wait_for("a fault of the sleeping call", FAULT_BOUND + GRACE, |l| {
        is_about_policy(l, "policy-fault") && l.at >= slept.at
    });
    match fault {
        Ok(fault) => {
            let lasted = fault.at.saturating_sub(slept.at);
            let kind = fault.field("fault").unwrap_or_default();
            let detail = fault.field("detail").unwrap_or_default();
            if lasted > FAULT_BOUND {
                problems.push(format!("the sleeping call faulted after {lasted:?}, more than {FAULT_BOUND:?}"));
            }
            if kind != "blocked" || !detail.contains("may not block") {
                problems.push(format!("fault `{kind}` ({detail}), expected `blocked`: {}", fault.raw));
            }
            json!({ "call_to_fault_ms": lasted.as_secs_f64() * 1000.0, "fault": kind })
        }
        Err(e) => {
            problems.push(format!("the sleeping call did not fault within {:?} ({e})", FAULT_BOUND + GRACE));
            json!({ "call_to_fault_ms": Json::Null })
        }
    }
}

/// `status` names the kind of the policy's last fault.
fn check_status_names_the_fault(socket: &Path, problems: &mut Vec<String>) -> Json {
    let entry = find_policy(socket, POLICY).unwrap_or(Json::Null);
    if entry["last-fault"] != "blocked" {
        problems.push(format!("status does not show the `blocked` fault: {entry}"));
    }
    entry["last-fault"].clone()
}

/// `wasmtune policy disable` answers, and promptly.
fn time_disable(socket: &Path, problems: &mut Vec<String>) -> Json {
    let sock = socket.to_string_lossy();
    let (output, took) = cli_within(&["policy", "disable", POLICY, "--json", "--socket", &sock], DISABLE_BOUND + GRACE);
    match &output {
        Some(out) if out.status.success() => {
            if took > DISABLE_BOUND {
                problems.push(format!("`policy disable` answered after {took:?}, more than {DISABLE_BOUND:?}"));
            }
        }
        Some(out) => problems.push(format!(
            "`policy disable` failed after {took:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        None => problems.push(format!("`policy disable` did not answer within {took:?}")),
    }
    json!({ "disable_ms": took.as_secs_f64() * 1000.0, "disable_answered": output.is_some() })
}

/// SIGTERM stops the daemon cleanly (exit 0, summary printed), and promptly.
fn time_sigterm(daemon: &mut Daemon, problems: &mut Vec<String>) -> Json {
    let started = Instant::now();
    let exit = LogCapture::terminate(daemon, STOP_BOUND + GRACE);
    let took = started.elapsed();
    match &exit {
        Ok(status) if status.success() => {
            if took > STOP_BOUND {
                problems.push(format!("the daemon stopped {took:?} after SIGTERM, more than {STOP_BOUND:?}"));
            }
            if daemon.events("summary").is_empty() {
                problems.push("the daemon printed no exit summary".to_string());
            }
        }
        Ok(status) => problems.push(format!("the daemon exited with {status} after SIGTERM")),
        Err(e) => problems.push(format!("the daemon did not stop after SIGTERM: {e}")),
    }
    json!({ "sigterm_to_exit_ms": took.as_secs_f64() * 1000.0, "clean_exit": exit.is_ok_and(|s| s.success()) })
}

#[test]
fn a_policy_that_sleeps_faults_and_cannot_stall_disable_or_stop() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new("sleep", Side::Receiver, BAD_RMEM).expect("build the test bed");
    let dir = harness::scratch_dir("sleep-policies").expect("policy dir");
    let (_sock_dir, socket) = lifecycle::socket_in("sleep-sock");
    let bytes = std::fs::read(guest_wasm(POLICY)).expect("fixture");
    install(dir.path(), "hostile-sleep.wasm", &bytes);
    let mut daemon = lifecycle::start_daemon(Daemon::builder().netns(bed.tuned_netns()), dir.path(), &socket, &[]);
    let _transfer = bed.background_transfer(TRANSFER_SECONDS).expect("transfer");

    let mut problems = Vec::new();
    let mut figures = serde_json::Map::new();
    for part in [
        time_the_sleeping_call(&daemon, &mut problems),
        json!({ "status_last_fault": check_status_names_the_fault(&socket, &mut problems) }),
        time_disable(&socket, &mut problems),
        time_sigterm(&mut daemon, &mut problems),
    ] {
        figures.extend(part.as_object().cloned().unwrap_or_default());
    }
    let figures = Json::Object(figures);
    println!("hostile_blocking: {figures}");
    harness::record("hostile_blocking::sleep", figures).expect("record figures");
    assert!(problems.is_empty(), "a sleeping policy stalled the host:\n  {}", problems.join("\n  "));
}
