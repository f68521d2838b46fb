//! Self-test of the end-to-end harness: namespaces, veth links, sysctls,
//! iperf3 traffic, log capture and the results file, without the daemon.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmtune_tests::harness::{
    self, BackgroundTransfer, GlobalSysctlGuard, HarnessError, IperfServer, LogCapture, Netns, Requirement,
    SysctlSampler, VethOptions, VethPair,
};

const TCP_RMEM: &str = "net.ipv4.tcp_rmem";

fn ip_netns_list() -> String {
    let out = Command::new("ip").args(["netns", "list"]).output().expect("run ip netns list");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn two_namespaces_over_veth_carry_iperf3_traffic_and_vanish_on_drop() {
    if harness::skip_without(&Requirement::NETWORK_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let a = Netns::new("self-a").expect("create namespace a");
    let b = Netns::new("self-b").expect("create namespace b");
    let link = VethPair::with_options(&a, &b, VethOptions { offloads_off: true }).expect("veth a <-> b");
    let offloads = b.run("ethtool", &["-k", link.dev_b()]).expect("ethtool -k");
    assert!(offloads.contains("tcp-segmentation-offload: off"), "offloads still on:\n{offloads}");
    let server = IperfServer::start(&b, link.addr_b()).expect("iperf3 server in b");
    let throughput = harness::run_client(&a, &server, 2).expect("iperf3 a -> b");
    println!(
        "a -> b over veth (offloads off): {:.2} Gbit/s, {} retransmits",
        throughput.gbit_per_s(),
        throughput.retransmits
    );
    harness::record(
        "harness::two_namespaces_over_veth",
        json!({ "offloads": "off", "throughput": throughput.to_json() }),
    )
    .expect("record figures");
    assert!(throughput.received_bps > 0.0, "nothing arrived: {throughput:?}");
    assert!(throughput.seconds >= 1.5, "the run was cut short: {throughput:?}");

    let names = [a.name().to_string(), b.name().to_string()];
    let server_pid = server.pid();
    drop(server);
    drop(link);
    drop(a);
    drop(b);
    let listed = ip_netns_list();
    for name in &names {
        assert!(!Path::new("/run/netns").join(name).exists(), "{name} still in /run/netns");
        assert!(!listed.contains(name.as_str()), "{name} still listed:\n{listed}");
    }
    assert!(!Path::new("/proc").join(server_pid.to_string()).exists(), "iperf3 server {server_pid} still running");
}

#[test]
fn namespaces_are_deleted_and_their_processes_killed_when_a_test_panics() {
    if harness::skip_without(&Requirement::NETWORK_E2E) {
        return;
    }
    let (names_tx, names_rx) = std::sync::mpsc::channel();
    let failing_test = thread::spawn(move || {
        let netns = Netns::new("self-panic").expect("create namespace");
        let mut sleeper = netns.command("sleep");
        let child = sleeper.arg("600").spawn().expect("spawn a process inside");
        names_tx.send((netns.name().to_string(), child.id())).expect("send name");
        // The child handle is leaked on purpose: only the guard can stop it.
        std::mem::forget(child);
        panic!("a failing test");
    });
    assert!(failing_test.join().is_err(), "the test thread should have panicked");
    let (name, pid) = names_rx.recv().expect("the namespace was created");
    assert!(!Path::new("/run/netns").join(&name).exists(), "{name} survived the panic");
    // The killed process is our zombie child until reaped; it must not be running.
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = state.rsplit(')').next().unwrap_or("").split_whitespace().next().unwrap_or("gone");
    assert!(matches!(state, "gone" | "Z" | "X"), "process {pid} inside {name} still running ({state})");
}

#[test]
fn sysctls_are_per_namespace_and_global_ones_are_restored() {
    if harness::skip_without(&[Requirement::Root, Requirement::Tool("ip")]) {
        return;
    }
    let init_before = harness::sysctl_init(TCP_RMEM).expect("read init tcp_rmem");
    let a = Netns::new("self-sys-a").expect("create namespace a");
    let b = Netns::new("self-sys-b").expect("create namespace b");
    let b_before = harness::sysctl_in(&b, TCP_RMEM).expect("read b");

    harness::set_sysctl_in(&a, TCP_RMEM, "4096 131072 98304").expect("write a");
    assert_eq!(harness::sysctl_in(&a, TCP_RMEM).expect("read a"), "4096 131072 98304");
    assert_eq!(harness::sysctl_fields_in(&a, TCP_RMEM).expect("fields"), vec![4096, 131072, 98304]);
    // The same value as `ip netns exec` sees it: the per-thread entry is sound.
    let via_exec = a.run("cat", &["/proc/sys/net/ipv4/tcp_rmem"]).expect("cat in a");
    assert_eq!(harness::normalize(&via_exec), "4096 131072 98304");
    assert_eq!(harness::sysctl_in(&b, TCP_RMEM).expect("read b"), b_before);
    assert_eq!(harness::sysctl_init(TCP_RMEM).expect("read init"), init_before);

    // somaxconn: a global value no other test reads (new namespaces do not
    // inherit it), so changing it briefly disturbs nobody.
    let somaxconn = "net.core.somaxconn";
    let original = harness::sysctl_init(somaxconn).expect("read somaxconn");
    let bumped = (original.parse::<u64>().expect("a number") + 1).to_string();
    {
        let guard = GlobalSysctlGuard::set(somaxconn, &bumped).expect("set somaxconn");
        assert_eq!(guard.original(), original);
        assert_eq!(harness::sysctl_init(somaxconn).expect("read"), bumped);
    }
    assert_eq!(harness::sysctl_init(somaxconn).expect("read"), original, "not restored");
}

#[test]
fn sampler_sees_each_value_written_while_it_runs() {
    if harness::skip_without(&[Requirement::Root, Requirement::Tool("ip")]) {
        return;
    }
    let netns = Netns::new("self-sample").expect("create namespace");
    harness::set_sysctl_in(&netns, TCP_RMEM, "4096 131072 100000").expect("write");
    let sampler = SysctlSampler::start(&netns, &[TCP_RMEM], Duration::from_millis(5)).expect("start sampler");
    for max in ["200000", "300000"] {
        thread::sleep(Duration::from_millis(60));
        harness::set_sysctl_in(&netns, TCP_RMEM, &format!("4096 131072 {max}")).expect("write");
    }
    let seen = sampler.stop().expect("stop sampler");
    assert_eq!(seen[TCP_RMEM], vec!["4096 131072 100000", "4096 131072 200000", "4096 131072 300000"]);
}

#[test]
fn background_transfers_run_until_dropped_and_the_server_serves_again() {
    if harness::skip_without(&Requirement::NETWORK_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let a = Netns::new("self-bg-a").expect("create namespace a");
    let b = Netns::new("self-bg-b").expect("create namespace b");
    let link = VethPair::new(&a, &b).expect("veth a <-> b");
    let server = IperfServer::start(&b, link.addr_b()).expect("iperf3 server in b");

    let mut long = BackgroundTransfer::start(&a, &server, 30).expect("start a long transfer");
    thread::sleep(Duration::from_millis(800));
    assert!(long.is_running(), "the 30 s transfer ended early");
    drop(long);

    let short = BackgroundTransfer::start(&a, &server, 1).expect("start a short transfer");
    let throughput = short.wait().expect("short transfer result");
    assert!(throughput.received_bps > 0.0, "nothing arrived: {throughput:?}");
}

#[test]
fn log_capture_waits_for_json_events_and_notices_exit() {
    let script = r#"echo 'plain text'; echo '{"event":"ready","policies":"a,b","faults":2}' >&2; sleep 0.3; echo '{"event":"later"}'; exec sleep 30"#;
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    let mut capture = LogCapture::spawn("sh", cmd).expect("spawn sh");
    let ready = capture.wait_for_event("ready", Duration::from_secs(5)).expect("ready line");
    assert_eq!(ready.field("policies").as_deref(), Some("a,b"));
    assert_eq!(ready.field("faults").as_deref(), Some("2"));
    capture.wait_for_event("later", Duration::from_secs(5)).expect("later line");
    assert!(capture.lines().iter().any(|l| l.raw == "plain text" && l.json.is_none()));
    assert!(capture.is_running());
    let status = capture.terminate(Duration::from_secs(5)).expect("terminate");
    assert!(!status.success(), "sleep killed by SIGTERM should not report success");
    assert!(!capture.is_running());

    let mut quick = Command::new("sh");
    quick.args(["-c", "echo '{\"event\":\"bye\"}'"]);
    let capture = LogCapture::spawn("quick", quick).expect("spawn sh");
    let started = Instant::now();
    let err = capture.wait_for_event("never", Duration::from_secs(20)).expect_err("the process exits without the line");
    assert!(matches!(err, HarnessError::ProcessExited { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5), "exit was not noticed early");
    assert_eq!(capture.events("bye").len(), 1);
}

#[test]
fn results_are_appended_as_json_lines() {
    let marker = format!("marker-{}", std::process::id());
    harness::record("harness::results", json!({ "marker": marker, "bps": 1.5e9 })).expect("record");
    let text = std::fs::read_to_string(harness::results_file()).expect("read results file");
    let line = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["marker"] == marker.as_str())
        .expect("the recorded line");
    assert_eq!(line["test"], "harness::results");
    assert_eq!(line["bps"], 1.5e9);
}
