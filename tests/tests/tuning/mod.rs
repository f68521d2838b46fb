//! What the per-tuner end-to-end tests share: starting the daemon on the
//! namespaces a test built, matching a policy's change lines, reading values
//! of the initial namespace, and iperf3 transfers that retry while the
//! server finishes its previous run.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use wasmtune_tests::harness::{self, Daemon, HarnessError, IperfServer, LogLine, Netns, READY_TIMEOUT, Throughput};

/// How long a scenario may take from provocation to the change line.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts the daemon tuning `netns` (and the initial namespace if
/// `with_init`) and waits until it is ready.
pub fn start(netns: &[&Netns], with_init: bool) -> Daemon {
    let mut builder = Daemon::builder();
    for ns in netns {
        builder = builder.netns(ns);
    }
    if with_init {
        builder = builder.netns_named("init");
    }
    let daemon = builder.start().expect("spawn wasmtune run");
    daemon.wait_for_event("ready", READY_TIMEOUT).expect("daemon ready");
    daemon
}

/// Matches `policy`'s `sysctl-change` lines about `tunable`.
pub fn change_of<'a>(policy: &'a str, tunable: &'a str) -> impl Fn(&LogLine) -> bool + 'a {
    move |line| line.is_event("sysctl-change") && line.field_is("policy", policy) && line.field_is("tunable", tunable)
}

pub fn io(action: &'static str, source: std::io::Error) -> HarnessError {
    HarnessError::Io { action, path: PathBuf::from("udp socket"), source }
}

/// The first field of `name` in the initial namespace.
pub fn init_value(name: &str) -> u64 {
    let value = harness::sysctl_init(name).expect("read init sysctl");
    harness::parse_fields(name, &value).expect("integer sysctl")[0]
}

/// One iperf3 transfer from `netns` to `server`, with `congestion` set by the
/// application (`-C`) or left to the kernel and the daemon's sockops program.
pub fn transfer(netns: &Netns, server: &IperfServer, seconds: u32, congestion: Option<&str>) -> Throughput {
    let mut last_error = String::new();
    for _ in 0..5 {
        let mut cmd = netns.command("iperf3");
        cmd.args(["-c", &server.addr().to_string(), "-p", &server.port().to_string(), "-t", &seconds.to_string()]);
        cmd.args(["--connect-timeout", "5000", "-J"]);
        if let Some(algorithm) = congestion {
            cmd.args(["-C", algorithm]);
        }
        let output = cmd.output().expect("run iperf3");
        match Throughput::from_report(&String::from_utf8_lossy(&output.stdout)) {
            Ok(throughput) => return throughput,
            Err(err) => last_error = format!("{err}: {}", String::from_utf8_lossy(&output.stderr)),
        }
        // The server is still finishing the previous run.
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("iperf3 to {} failed: {last_error}", server.addr());
}
