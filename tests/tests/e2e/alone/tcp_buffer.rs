//! End to end: the built-in tcp-buffer policy against buffer sysctls set far
//! too low in a namespace the test made — growth in bounded steps, logging,
//! rollback on exit, dry-run, and offline rollback after a crash. Throughput
//! before and after is measured and recorded, not asserted: it is a finding.

use std::time::Duration;

use serde_json::json;
use wasmtune_tests::harness::{self, BufferBed, Daemon, LogLine, READY_TIMEOUT, Requirement, Side};

/// Receiver maximum far below what a veth link needs (96 KiB).
const BAD_RMEM: &str = "4096 131072 98304";
/// Sender maximum far below what a veth link needs (64 KiB).
const BAD_WMEM: &str = "4096 16384 65536";
/// Traffic while the daemon tunes.
const TUNING_SECONDS: u32 = 6;
/// Baseline and after-tuning measurements.
const MEASURE_SECONDS: u32 = 3;
/// No new change for this long after the traffic stops: tuning has settled.
const SETTLE_QUIET: Duration = Duration::from_millis(1500);
const SETTLE_LIMIT: Duration = Duration::from_secs(20);
/// Fields every change line carries (contract: log lines).
const CHANGE_FIELDS: [&str; 7] = ["policy", "tunable", "netns", "old", "new", "scenario", "reason"];

fn fields(name: &str, value: &str) -> Vec<u64> {
    harness::parse_fields(name, value).unwrap_or_else(|err| panic!("{err}"))
}

/// Every line has the contract's fields, non-empty; each raises the maximum
/// (field 2) by at most a quarter (+1 for rounding) and leaves the minimum
/// alone; each starts where the previous one ended, the first at `original`.
fn assert_quarter_steps(tunable: &str, original: &str, changes: &[LogLine]) {
    let mut expected_old = harness::normalize(original);
    for line in changes {
        for field in CHANGE_FIELDS {
            let value = line.field(field).unwrap_or_default();
            assert!(!value.trim().is_empty(), "`{field}` missing or empty in {}", line.raw);
        }
        let old = harness::normalize(&line.field("old").unwrap_or_default());
        let new = harness::normalize(&line.field("new").unwrap_or_default());
        assert_eq!(old, expected_old, "change does not start where the last ended: {}", line.raw);
        let (old_f, new_f) = (fields(tunable, &old), fields(tunable, &new));
        assert_eq!(old_f.len(), 3, "{tunable} has three fields: {}", line.raw);
        assert_eq!(new_f.len(), 3, "{tunable} has three fields: {}", line.raw);
        assert_eq!(new_f[0], old_f[0], "the minimum changed: {}", line.raw);
        assert!(new_f[2] > old_f[2], "the maximum did not grow: {}", line.raw);
        assert!(
            4 * new_f[2] <= 5 * old_f[2] + 4,
            "step larger than 25 % (+1): {} -> {} in {}",
            old_f[2],
            new_f[2],
            line.raw
        );
        expected_old = new;
    }
}

fn start_daemon(bed: &BufferBed, extra: &[&str], state_dir: Option<&std::path::Path>) -> Daemon {
    let mut builder = Daemon::builder().netns(bed.tuned_netns());
    for arg in extra {
        builder = builder.arg(arg);
    }
    if let Some(dir) = state_dir {
        builder = builder.state_dir(dir);
    }
    let daemon = builder.start().expect("spawn wasmtune run");
    let ready = daemon.wait_for_event("ready", READY_TIMEOUT).expect("daemon ready");
    println!("daemon ready {:.2} s after spawn", ready.at.as_secs_f64());
    let netns = ready.field("netns").unwrap_or_default();
    assert!(
        netns.split(',').any(|n| n.trim() == bed.tuned_netns().name()),
        "ready line does not list {}: {}",
        bed.tuned_netns().name(),
        ready.raw
    );
    let policies = ready.field("policies").unwrap_or_default();
    assert!(
        policies.split(',').any(|p| p.trim() == "tcp-buffer"),
        "tcp-buffer not among the ready policies: {}",
        ready.raw
    );
    daemon
}

/// Runs traffic so the daemon tunes, waits until the changes settle, and
/// returns the change lines (of `event`) about the bed's tunable.
fn tune(bed: &BufferBed, daemon: &Daemon, event: &'static str) -> (harness::Throughput, Vec<LogLine>) {
    let during = bed.transfer(TUNING_SECONDS).expect("bulk transfer while tuning");
    daemon
        .wait_quiet(&format!("{event} lines"), SETTLE_QUIET, SETTLE_LIMIT, bed.matcher(event))
        .expect("tuning settles once the traffic stops");
    (during, bed.lines_about(&daemon.lines(), event))
}

/// The rmem and wmem tests: baseline, tune, check the steps, measure after.
fn grows_buffer_max_in_bounded_steps(test: &str, side: Side, bad: &str) {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new(test, side, bad).expect("build the test bed");
    let tunable = bed.tunable();
    let init_before = harness::sysctl_init(tunable).expect("read init netns value");

    let baseline = bed.transfer(MEASURE_SECONDS).expect("baseline transfer");
    let mut daemon = start_daemon(&bed, &[], None);
    let (during, changes) = tune(&bed, &daemon, "sysctl-change");

    let tuned = bed.current().expect("read tuned value");
    let tuned_fields = fields(tunable, &tuned);
    assert!(
        tuned_fields[2] > fields(tunable, bad)[2],
        "{tunable} in {} not raised: still {tuned}",
        bed.tuned_netns().name()
    );
    assert!(!changes.is_empty(), "no sysctl-change line for {tunable} although the kernel value changed");
    assert_quarter_steps(tunable, bad, &changes);
    let last_new = changes.last().and_then(|l| l.field("new")).unwrap_or_default();
    assert_eq!(harness::normalize(&last_new), tuned, "the last change logged is not what the kernel holds");
    assert_eq!(harness::sysctl_init(tunable).expect("read init"), init_before, "init netns was touched");

    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    assert_eq!(bed.current().expect("read"), tuned, "without --rollback the tuned value stays");
    let after = bed.transfer(MEASURE_SECONDS).expect("transfer after tuning");

    println!(
        "{test}: {tunable} {bad} -> {tuned} in {} steps; throughput {:.2} Gbit/s before, {:.2} while tuning, {:.2} after",
        changes.len(),
        baseline.gbit_per_s(),
        during.gbit_per_s(),
        after.gbit_per_s()
    );
    harness::record(
        &format!("tcp_buffer::{test}"),
        json!({
            "tunable": tunable,
            "netns_value_before": bad,
            "netns_value_after": tuned,
            "changes": changes.len(),
            "throughput_before": baseline.to_json(),
            "throughput_while_tuning": during.to_json(),
            "throughput_after": after.to_json(),
        }),
    )
    .expect("record figures");
}

#[test]
fn receive_buffer_max_grows_in_quarter_steps_under_bulk_receive() {
    grows_buffer_max_in_bounded_steps("rmem", Side::Receiver, BAD_RMEM);
}

#[test]
fn send_buffer_max_grows_in_quarter_steps_under_bulk_send() {
    grows_buffer_max_in_bounded_steps("wmem", Side::Sender, BAD_WMEM);
}

#[test]
fn rollback_on_sigterm_restores_the_original_value() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new("rollback", Side::Receiver, BAD_RMEM).expect("build the test bed");
    let mut daemon = start_daemon(&bed, &["--rollback"], None);
    let (_, changes) = tune(&bed, &daemon, "sysctl-change");
    let tuned = bed.current().expect("read tuned value");
    assert_ne!(tuned, BAD_RMEM, "nothing was tuned, so there is nothing to roll back");
    assert!(!changes.is_empty(), "kernel value changed without a sysctl-change line");

    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    assert_eq!(bed.current().expect("read"), BAD_RMEM, "--rollback did not restore the original value");
    let rollbacks = bed.lines_about(&daemon.lines(), "rollback");
    assert!(!rollbacks.is_empty(), "no rollback line for {} in {}", bed.tunable(), bed.rx().name());
    for line in &rollbacks {
        assert_eq!(harness::normalize(&line.field("to").unwrap_or_default()), BAD_RMEM, "{}", line.raw);
        assert!(line.field("from").is_some_and(|f| !f.is_empty()), "no `from`: {}", line.raw);
    }
    assert_eq!(
        rollbacks.last().and_then(|l| l.field("from")).map(|f| harness::normalize(&f)),
        Some(tuned.clone()),
        "rolled back from a value the kernel did not hold"
    );
    assert!(!daemon.events("summary").is_empty(), "no summary line on exit");
    harness::record(
        "tcp_buffer::rollback",
        json!({ "tuned": tuned, "restored": BAD_RMEM, "changes": changes.len(), "rollback_lines": rollbacks.len() }),
    )
    .expect("record figures");
}

#[test]
fn dry_run_decides_and_logs_but_writes_nothing() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new("dryrun", Side::Receiver, BAD_RMEM).expect("build the test bed");
    let sampler = harness::SysctlSampler::start(bed.rx(), &[bed.tunable()], Duration::from_millis(20))
        .expect("watch rx tcp_rmem");
    let mut daemon = start_daemon(&bed, &["--dry-run"], None);
    let (_, would) = tune(&bed, &daemon, "sysctl-would-change");
    let seen = sampler.stop().expect("sampler result");

    assert_eq!(bed.current().expect("read"), BAD_RMEM, "--dry-run wrote to the kernel");
    assert_eq!(seen[bed.tunable()], vec![BAD_RMEM.to_string()], "a value reached the kernel meanwhile");
    assert!(!would.is_empty(), "no sysctl-would-change line for {}", bed.tunable());
    for line in &would {
        for field in CHANGE_FIELDS {
            assert!(line.field(field).is_some_and(|v| !v.is_empty()), "`{field}` missing: {}", line.raw);
        }
    }
    let writes = daemon.events("sysctl-change");
    assert!(writes.is_empty(), "sysctl-change under --dry-run: {}", writes[0].raw);
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    harness::record("tcp_buffer::dry_run", json!({ "would_change_lines": would.len() })).expect("record figures");
}

#[test]
fn offline_rollback_after_a_crash_restores_the_original_value() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new("crash", Side::Receiver, BAD_RMEM).expect("build the test bed");
    let state = harness::private_dir("crash-state").expect("state dir");
    let mut daemon = start_daemon(&bed, &[], Some(state.path()));
    let (_, changes) = tune(&bed, &daemon, "sysctl-change");
    let tuned = bed.current().expect("read tuned value");
    assert_ne!(tuned, BAD_RMEM, "nothing was tuned, so there is nothing to roll back");
    assert!(!changes.is_empty(), "kernel value changed without a sysctl-change line");

    daemon.kill().expect("SIGKILL the daemon");
    assert_eq!(bed.current().expect("read"), tuned, "a killed daemon cannot have restored anything");

    let output = harness::wasmtune_command()
        .expect("wasmtune binary")
        .args(["rollback", "--state-dir"])
        .arg(state.path())
        .output()
        .expect("run wasmtune rollback");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("wasmtune rollback:\n{text}");
    assert!(output.status.success(), "wasmtune rollback failed ({}):\n{text}", output.status);
    assert_eq!(bed.current().expect("read"), BAD_RMEM, "offline rollback did not restore the original value");
    harness::record(
        "tcp_buffer::offline_rollback",
        json!({ "tuned": tuned, "restored": BAD_RMEM, "changes": changes.len() }),
    )
    .expect("record figures");
}

/// A change line as the daemon would print it, for checking the checker.
fn change_line(old: &str, new: &str) -> LogLine {
    let raw = json!({
        "event": "sysctl-change", "policy": "tcp-buffer", "tunable": "net.ipv4.tcp_rmem", "netns": "rx",
        "old": old, "new": new, "scenario": "need-more-buffer", "reason": "buffer nearly full",
    });
    LogLine {
        stream: harness::Stream::Stderr,
        raw: raw.to_string(),
        json: raw.as_object().cloned(),
        at: Duration::ZERO,
    }
}

#[test]
fn step_check_accepts_a_chain_of_quarter_steps() {
    let changes = [
        change_line("4096 131072 98304", "4096 131072 122880"),
        change_line("4096 131072 122880", "4096 131072 153601"),
    ];
    assert_quarter_steps("net.ipv4.tcp_rmem", BAD_RMEM, &changes);
}

#[test]
#[should_panic(expected = "step larger than 25 %")]
fn step_check_rejects_a_step_above_a_quarter() {
    assert_quarter_steps("net.ipv4.tcp_rmem", BAD_RMEM, &[change_line("4096 131072 98304", "4096 131072 131072")]);
}

#[test]
#[should_panic(expected = "does not start where the last ended")]
fn step_check_rejects_a_gap_in_the_chain() {
    let changes = [
        change_line("4096 131072 98304", "4096 131072 122880"),
        change_line("4096 131072 100000", "4096 131072 110000"),
    ];
    assert_quarter_steps("net.ipv4.tcp_rmem", BAD_RMEM, &changes);
}
