//! End to end: Prometheus metrics. A daemon tunes a namespace with a tiny
//! `tcp_rmem` and serves `GET /metrics`; a real Prometheus server scrapes it
//! every second, and its query API must count the changes the daemon's
//! status counts. The scraped text passes `promtool check metrics`, the
//! tunable's value is exposed per field, `wasmtune metrics` over the
//! control socket has the same families, and the hooks' run counters
//! appear only while the kernel counts BPF run time.

use crate::lifecycle;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use wasmtune_tests::harness::{self, BufferBed, Daemon, READY_TIMEOUT, Requirement, Side};

/// Receiver maximum far below what a veth link needs (96 KiB).
const BAD_RMEM: &str = "4096 131072 98304";
/// How long Prometheus has to start, scrape and answer.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(60);

/// A loopback address no one listens on now.
fn free_loopback() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    probe.local_addr().expect("its address")
}

/// One HTTP/1.0 GET (so the answer is neither chunked nor kept alive):
/// the status line, the headers and the body; `None` when nothing answers.
fn try_http_get(addr: SocketAddr, target: &str, accept: Option<&str>) -> Option<(String, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n{accept}\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer.as_str(), ""));
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    Some((status.to_string(), headers.to_string(), body.to_string()))
}

fn http_get(addr: SocketAddr, target: &str, accept: Option<&str>) -> (String, String, String) {
    try_http_get(addr, target, accept).unwrap_or_else(|| panic!("no answer from http://{addr}{target}"))
}

/// Percent-encodes a query parameter's value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The family names of a text exposition (its `# TYPE` lines).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The value of the one sample whose line starts with `series` (name and
/// labels, in the order the encoder writes them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A Prometheus server of the test's own, killed and its files removed on
/// drop, whether the test passed or not.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("prometheus directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: wasmtune\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the prometheus config");
        let addr = free_loopback();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).expect("log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, addr, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The API's answer to an instant query, `None` until it answers.
    fn query(&self, promql: &str) -> Option<Json> {
        let target = format!("/api/v1/query?query={}", encode(promql));
        let (status, _, body) = try_http_get(self.addr, &target, None)?;
        if !status.contains(" 200 ") {
            return None;
        }
        serde_json::from_str(&body).ok()
    }

    /// The single value of an instant query's vector result.
    fn value(&self, promql: &str) -> Option<f64> {
        let answer = self.query(promql)?;
        let result = answer["data"]["result"].as_array()?;
        let [one] = result.as_slice() else { return None };
        one["value"][1].as_str()?.parse().ok()
    }

    /// Polls `promql` until `check` holds of its value.
    fn wait_value(&self, promql: &str, check: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + PROMETHEUS_TIMEOUT;
        loop {
            let value = self.value(promql);
            if let Some(v) = value.filter(|v| check(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus: {promql} is {value:?} after {PROMETHEUS_TIMEOUT:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `promtool check metrics` of `text`: its exit status and what it said.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    let output = child.wait_with_output().expect("promtool ends");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// Sum of the `changes` of every tunable `wasmtune status` lists.
fn changes_in_status(socket: &Path) -> u64 {
    let status = lifecycle::result(socket, &wasmtune::control::Request::Status);
    status["tunables"].as_array().into_iter().flatten().filter_map(|t| t["changes"].as_u64()).sum()
}

#[test]
fn e2e_metrics_scraped_by_prometheus() {
    let mut needs = Requirement::DAEMON_E2E.to_vec();
    needs.extend([Requirement::Tool("prometheus"), Requirement::Tool("promtool")]);
    if harness::skip_without(&needs) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new("metrics", Side::Receiver, BAD_RMEM).expect("build the test bed");
    let (_sock_dir, socket) = lifecycle::socket_in("metrics-sock");
    let metrics = free_loopback();
    let mut daemon = Daemon::builder()
        .netns(bed.tuned_netns())
        .control_socket(&socket)
        .arg("--metrics")
        .arg(&metrics.to_string())
        .start()
        .expect("spawn the daemon");
    daemon.wait_for_event("ready", READY_TIMEOUT).expect("daemon ready");
    daemon.wait_for_event("metrics", Duration::from_secs(5)).expect("the metrics endpoint is announced");

    // A change: tcp-buffer raises the tiny tcp_rmem while traffic runs;
    // then no new change for a while, so the counts hold still.
    let is_change = bed.matcher("sysctl-change");
    let during = bed.transfer(6).expect("bulk transfer while tuning");
    daemon.wait_for("a change of tcp_rmem", Duration::from_secs(15), &is_change).expect("tcp-buffer changes tcp_rmem");
    daemon
        .wait_quiet("sysctl-change lines", Duration::from_millis(1500), Duration::from_secs(20), &is_change)
        .expect("tuning settles once the traffic stops");
    let in_status = changes_in_status(&socket);
    let logged = bed.lines_about(&daemon.lines(), "sysctl-change").len() as u64;
    assert!(in_status >= 1 && in_status == logged, "status counts {in_status} changes, the log {logged}");

    // The endpoint: OpenMetrics when asked for, the text format otherwise.
    let (status, headers, open_metrics) =
        http_get(metrics, "/metrics", Some("application/openmetrics-text;version=1.0.0"));
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8"), "{headers}");
    assert!(open_metrics.ends_with("# EOF\n"), "{open_metrics}");
    let (status, headers, scraped) = http_get(metrics, "/metrics", None);
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"), "{headers}");
    assert_eq!(http_get(metrics, "/", None).0, "HTTP/1.1 404 Not Found");

    println!("scraped exposition:\n{scraped}");
    let (clean, said) = promtool_check(&scraped);
    println!("promtool check metrics: exit {}, output {said:?}", if clean { 0 } else { 1 });
    assert!(clean && said.trim().is_empty(), "promtool check metrics: {said}\n{scraped}");

    let ns = bed.tuned_netns().name();
    let changes_total = sample(&scraped, "wasmtune_changes_total{policy=\"tcp-buffer\",tunable=\"net.ipv4.tcp_rmem\"}");
    assert_eq!(changes_total, Some(in_status as f64), "{scraped}");
    let tuned = harness::parse_fields("net.ipv4.tcp_rmem", &bed.current().expect("read")).expect("three fields");
    for (field, value) in ["min", "default", "max"].iter().zip(&tuned) {
        let series =
            format!("wasmtune_tunable_value{{tunable=\"net.ipv4.tcp_rmem\",netns=\"{ns}\",field=\"{field}\"}}");
        assert_eq!(sample(&scraped, &series), Some(*value as f64), "{series} in\n{scraped}");
    }
    let events = sample(&scraped, "wasmtune_events_total{kind=\"tcp-buffer-limit\"}").unwrap_or(0.0);
    assert!(events >= 1.0, "no tcp-buffer-limit event counted:\n{scraped}");
    let decisions = sample(&scraped, "wasmtune_decisions_total{policy=\"tcp-buffer\",tunable=\"net.ipv4.tcp_rmem\"}");
    assert!(decisions.is_some_and(|d| d >= in_status as f64), "decisions {decisions:?} < changes {in_status}");

    // The same families over the control socket.
    let (ok, by_socket, stderr) = harness::cli(&["metrics", "--socket", &socket.to_string_lossy()]);
    assert!(ok, "wasmtune metrics: {stderr}");
    assert_eq!(families(&by_socket), families(&scraped));
    assert!(families(&scraped).contains("wasmtune_changes_total"), "{scraped}");

    // A real Prometheus scrapes the endpoint; its query API answers the
    // count the daemon's status gives.
    let prometheus = Prometheus::start(metrics);
    let started = Instant::now();
    prometheus.wait_value("up{job=\"wasmtune\"}", |up| up == 1.0);
    let query = "sum(wasmtune_changes_total)";
    let answered = prometheus.wait_value(query, |v| v >= 1.0);
    let scraped_after = started.elapsed();
    assert_eq!(answered, in_status as f64, "prometheus says {answered}, status {in_status}");
    let max = prometheus.wait_value(
        &format!("wasmtune_tunable_value{{tunable=\"net.ipv4.tcp_rmem\",netns=\"{ns}\",field=\"max\"}}"),
        |_| true,
    );
    assert_eq!(max, tuned[2] as f64);
    println!("prometheus: {query} = {answered} ({scraped_after:?} after it started); status says {in_status}");
    drop(prometheus);

    // The hooks' run counters: absent while the kernel does not count, and
    // present while a descriptor of this test keeps the counting on (no
    // sysctl is written; the kernel restores its state when it closes).
    // Last, as its traffic may make more changes.
    let counting_before = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|t| t.trim() == "1");
    if !counting_before {
        assert!(!families(&scraped).contains("wasmtune_hook_runs_total"), "hook counters while the kernel counts none");
    }
    let hooks_seen = match wasmtune::bpf::RunTimeAccounting::enable() {
        Ok(_counting) => {
            bed.transfer(1).expect("traffic while counting");
            let (_, _, counted) = http_get(metrics, "/metrics", None);
            assert!(families(&counted).contains("wasmtune_hook_runs_total"), "{counted}");
            assert!(families(&counted).contains("wasmtune_hook_run_time_seconds_total"), "{counted}");
            let runs: f64 = counted
                .lines()
                .filter(|l| l.starts_with("wasmtune_hook_runs_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            assert!(runs > 0.0, "the hooks ran under traffic, yet no run was counted:\n{counted}");
            let hook_lines: Vec<&str> = counted.lines().filter(|l| l.contains("wasmtune_hook_run")).collect();
            println!("while the kernel counts:\n{}", hook_lines.join("\n"));
            Some(runs)
        }
        Err(error) => {
            harness::skip_part("e2e_metrics_scraped_by_prometheus", "hook run counters", &error.to_string());
            None
        }
    };

    let stopping = Instant::now();
    let exit = daemon.terminate().expect("daemon exits on SIGTERM");
    let stop_time = stopping.elapsed();
    assert!(exit.success(), "daemon exit status {exit}");
    assert!(TcpStream::connect_timeout(&metrics, Duration::from_secs(1)).is_err(), "the endpoint outlived the daemon");

    harness::record(
        "e2e_metrics_scraped_by_prometheus",
        json!({
            "changes": in_status,
            "prometheus_sum_changes_total": answered,
            "prometheus_first_answer_ms": scraped_after.as_millis() as u64,
            "tcp_rmem_tuned": tuned,
            "families": families(&scraped).len(),
            "exposition_bytes": scraped.len(),
            "hook_runs_counted": hooks_seen,
            "daemon_stop_ms": stop_time.as_millis() as u64,
            "throughput_while_tuning_gbit_s": during.gbit_per_s(),
        }),
    )
    .expect("record the figures");
}
