//! End to end: hostile policies loaded next to the built-in tcp-buffer, under
//! load. The daemon must stay up, keep tuning, fault and quarantine the
//! misbehaving guests, deny what was not granted, rate-limit a log flood —
//! and no value outside the grants may reach the kernel.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::json;
use wasmtune_tests::guests::guest_wasm;
use wasmtune_tests::harness::{self, BufferBed, LogLine, Requirement, Side, SysctlSampler};

const BAD_RMEM: &str = "4096 131072 98304";
const TCP_RMEM: &str = "net.ipv4.tcp_rmem";
const SOMAXCONN: &str = "net.core.somaxconn";
/// The highest tcp_rmem maximum any grant allows (the contract's example
/// grant; bpftune's cap for buffers).
const RMEM_CEILING: u64 = 256 * 1024 * 1024;
const TRANSFER_SECONDS: u32 = 8;
/// Far fewer than a flooding guest tries to write in a run.
const LOG_FLOOD_CEILING: usize = 1000;

/// The hostile fixtures, with the fault kinds that may stop each (empty:
/// it is not expected to fault).
const FIXTURES: [(&str, &[&str]); 6] = [
    ("hostile-loop", &["fuel", "deadline"]),
    ("hostile-memory", &["memory"]),
    ("hostile-trap", &["trap"]),
    ("hostile-ungranted", &[]),
    ("hostile-bounds", &[]),
    ("hostile-log-flood", &[]),
];

/// Copies each fixture into `dir` as `<fixture>.wasm` and returns
/// fixture → policy name (from its embedded manifest).
fn install_fixtures(dir: &Path) -> BTreeMap<&'static str, String> {
    let mut names = BTreeMap::new();
    for (fixture, _) in FIXTURES {
        let source = guest_wasm(fixture);
        let target = dir.join(format!("{fixture}.wasm"));
        fs::copy(&source, &target).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", source.display(), target.display()));
        let manifest = harness::embedded_manifest(&target)
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{fixture} has no wasmtune-manifest section"));
        let name = manifest.name.unwrap_or_else(|| panic!("{fixture}'s manifest has no [policy] name"));
        names.insert(fixture, name);
    }
    names
}

fn by_policy<'a>(lines: &'a [LogLine], event: &str, policy: &str) -> Vec<&'a LogLine> {
    lines.iter().filter(|l| l.is_event(event) && l.field_is("policy", policy)).collect()
}

#[test]
fn hostile_policies_are_contained_while_tcp_buffer_keeps_tuning() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new("hostile", Side::Receiver, BAD_RMEM).expect("build the test bed");
    let rx = bed.rx();
    let policy_dir = harness::scratch_dir("hostile-policies").expect("policy dir");
    let names = install_fixtures(policy_dir.path());
    let somaxconn_before = harness::sysctl_in(rx, SOMAXCONN).expect("read somaxconn");
    let sampler = SysctlSampler::start(rx, &[TCP_RMEM, SOMAXCONN], Duration::from_millis(10)).expect("watch rx");

    let mut daemon = harness::Daemon::builder()
        .netns(rx)
        .policy_dir(policy_dir.path())
        .enable_policy_files()
        .start_ready()
        .expect("daemon ready");
    let lines_at_start = daemon.line_count();
    let during = bed.transfer(TRANSFER_SECONDS).expect("bulk transfer into rx");
    daemon
        .wait_quiet(
            "tcp_rmem changes",
            Duration::from_millis(1500),
            Duration::from_secs(20),
            bed.matcher("sysctl-change"),
        )
        .expect("tuning settles once the traffic stops");
    let seen = sampler.stop().expect("sampler result");

    // The daemon survived and kept working.
    assert!(daemon.is_running(), "the daemon died under hostile policies");
    assert!(daemon.line_count() > lines_at_start, "the daemon stopped logging under load");
    let lines = daemon.lines();
    let tuned = bed.current_fields().expect("read rx tcp_rmem");
    assert!(tuned[2] > 98304, "tcp-buffer did not raise rx tcp_rmem: {tuned:?}");
    let rx_changes = bed.lines_about(&lines, "sysctl-change");
    assert!(
        rx_changes.iter().any(|l| l.field_is("policy", "tcp-buffer")),
        "no sysctl-change from tcp-buffer for rx tcp_rmem"
    );

    // Faults were caught and attributed.
    let mut figures = serde_json::Map::new();
    for (fixture, fault_kinds) in FIXTURES.iter().filter(|(_, kinds)| !kinds.is_empty()) {
        let policy = &names[fixture];
        let faults = by_policy(&lines, "policy-fault", policy);
        let quarantined = by_policy(&lines, "policy-quarantined", policy);
        assert!(!faults.is_empty(), "no policy-fault line for {policy} ({fixture})");
        for line in &faults {
            let kind = line.field("fault").unwrap_or_default();
            assert!(
                fault_kinds.contains(&kind.as_str()),
                "{fixture}: fault `{kind}`, expected one of {fault_kinds:?}: {}",
                line.raw
            );
        }
        figures.insert(
            fixture.to_string(),
            json!({ "policy_fault_lines": faults.len(), "quarantined_lines": quarantined.len() }),
        );
    }

    // Actions outside the grants were denied, and said so.
    for (fixture, denial) in [("hostile-ungranted", "not-granted"), ("hostile-bounds", "out-of-bounds")] {
        let policy = &names[fixture];
        let denied = by_policy(&lines, "denied", policy);
        assert!(
            denied.iter().any(|l| l.field_is("denial", denial)),
            "no `denied` line with denial {denial} for {policy} ({fixture}); its denied lines: {:?}",
            denied.iter().map(|l| &l.raw).collect::<Vec<_>>()
        );
        figures.insert(fixture.to_string(), json!({ "denied_lines": denied.len() }));
    }
    let ungranted_writes = by_policy(&lines, "sysctl-change", &names["hostile-ungranted"]);
    assert!(ungranted_writes.is_empty(), "ungranted policy changed a sysctl: {}", ungranted_writes[0].raw);

    // Nothing outside the grants reached the kernel: neither in the log ...
    for line in lines.iter().filter(|l| l.is_event("sysctl-change")) {
        assert!(!line.field_is("tunable", SOMAXCONN), "somaxconn was written: {}", line.raw);
        if line.field_is("tunable", TCP_RMEM) {
            let new = harness::parse_fields(TCP_RMEM, &line.field("new").unwrap_or_default()).expect("new value");
            assert_eq!(new[0], 4096, "tcp_rmem[0] changed: {}", line.raw);
            assert!(new[2] <= RMEM_CEILING, "tcp_rmem[2] above 256 MiB: {}", line.raw);
        }
    }
    // ... nor in the kernel, sampled every 10 ms throughout.
    assert_eq!(seen[SOMAXCONN], vec![somaxconn_before.clone()], "rx somaxconn changed");
    assert_eq!(harness::sysctl_in(rx, SOMAXCONN).expect("read somaxconn"), somaxconn_before);
    for value in &seen[TCP_RMEM] {
        let f = harness::parse_fields(TCP_RMEM, value).expect("tcp_rmem fields");
        assert_eq!(f[0], 4096, "rx tcp_rmem[0] changed: {value}");
        assert!(f[2] <= RMEM_CEILING, "rx tcp_rmem[2] above 256 MiB: {value}");
    }

    // The log flood was rate-limited.
    let flood = by_policy(&lines, "policy-log", &names["hostile-log-flood"]).len();
    assert!(flood >= 1, "no policy-log line from the log-flood policy: did it run?");
    assert!(flood < LOG_FLOOD_CEILING, "{flood} policy-log lines from the log-flood policy: not rate-limited");
    figures.insert("hostile-log-flood".to_string(), json!({ "policy_log_lines": flood }));

    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    figures.insert("tcp_rmem_after".to_string(), json!(harness::normalize(&bed.current().expect("read"))));
    figures.insert("tcp_rmem_values_seen".to_string(), json!(seen[TCP_RMEM].len()));
    figures.insert("throughput_under_hostile_policies".to_string(), during.to_json());
    figures.insert("log_lines".to_string(), json!(lines.len()));
    println!("hostile: {}", serde_json::Value::Object(figures.clone()));
    harness::record("hostile::contained", serde_json::Value::Object(figures)).expect("record figures");
}

/// A policy that reads sysctls of namespaces that do not exist, a thousand
/// times a second, must not make the host rescan namespaces from its
/// capability-less thread: a long-lived namespace known only through a
/// process (`pid:N`, not in /run/netns) is seen appearing once and never
/// going away while the policy runs.
#[test]
fn a_policy_probing_unknown_namespaces_does_not_make_others_flap() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let mut holder = std::process::Command::new("unshare")
        .args(["--net", "sleep", "120"])
        .spawn()
        .expect("a process in a namespace of its own");
    let name = format!("pid:{}", holder.id());
    let dir = harness::scratch_dir("probe-policies").expect("policy dir");
    let target = dir.path().join("hostile-netns-probe.wasm");
    fs::copy(guest_wasm("hostile-netns-probe"), &target).expect("install the fixture");
    // Every namespace (a `pid:` one cannot be named with --netns):
    // "appeared" is logged for tuned ones only.
    let mut daemon =
        harness::Daemon::builder().policy_dir(dir.path()).enable_policy_files().start_ready().expect("daemon ready");
    // A while of probing: the namespace watcher rescans every 2 s.
    std::thread::sleep(Duration::from_secs(8));
    let lines = daemon.lines();
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(status.success(), "daemon exit status {status}");

    let about: Vec<&LogLine> =
        lines.iter().filter(|l| l.is_event("namespace-change") && l.field_is("netns", &name)).collect();
    let gone = about.iter().filter(|l| l.field_is("created", "false")).count();
    let appeared = about.iter().filter(|l| l.field_is("created", "true")).count();
    let probed = by_policy(&lines, "policy-fault", "hostile-netns-probe").len();
    println!("{name}: appeared {appeared}, went away {gone}; probe faults {probed}");
    assert_eq!(
        gone,
        0,
        "{name} seen going away while it lived: {:?}",
        about.iter().map(|l| &l.raw).collect::<Vec<_>>()
    );
    assert!(appeared <= 1, "{name} appeared {appeared} times");
    assert_eq!(probed, 0, "reading an unknown namespace is a denial, not a fault");
    harness::record("hostile::netns_probe", json!({ "netns": name, "appeared": appeared, "went_away": gone }))
        .expect("record figures");
}
