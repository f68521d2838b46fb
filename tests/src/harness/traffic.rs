//! Traffic between a test's namespaces with iperf3: a server guard, a
//! blocking client run that returns a `Throughput`, and a background
//! transfer guard for load that runs while the test does something else.

use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::command::describe;
use super::{HarnessError, Netns};

/// iperf3's default port; each server lives in its own namespace, so tests
/// running at the same time do not collide on it.
pub const DEFAULT_PORT: u16 = 5201;
/// How long a server may take to start listening.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a client retries a server that is still busy with the previous run.
const BUSY_RETRIES: u32 = 10;
/// How long past its `-t` a client may run before it is taken for hung.
const CLIENT_GRACE: Duration = Duration::from_secs(30);
/// Hung clients killed and tried again before the run fails.
const HANG_RETRIES: u32 = 1;

/// An `iperf3 -s` bound to one address inside a namespace; killed on drop.
#[derive(Debug)]
pub struct IperfServer {
    child: Child,
    addr: Ipv4Addr,
    port: u16,
}

impl IperfServer {
    /// Starts a server on `addr:5201` inside `netns` and waits until it listens.
    pub fn start(netns: &Netns, addr: Ipv4Addr) -> Result<IperfServer, HarnessError> {
        IperfServer::start_on(netns, addr, DEFAULT_PORT)
    }

    /// Starts a server on `addr:port` inside `netns` and waits until it listens.
    pub fn start_on(netns: &Netns, addr: Ipv4Addr, port: u16) -> Result<IperfServer, HarnessError> {
        let mut cmd = netns.command("iperf3");
        cmd.args(["-s", "-B", &addr.to_string(), "-p", &port.to_string()]);
        // A run whose client vanished ends after 10 s without data, and a
        // server stuck anyway starts over after 20 s idle: the next client
        // is then served, not told "busy" forever. Older iperf3 builds lack
        // the options; their servers run without.
        if iperf3_knows("--rcv-timeout") && iperf3_knows("--idle-timeout") {
            cmd.args(["--rcv-timeout", "10000", "--idle-timeout", "20"]);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let command = describe(&cmd);
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn { command: command.clone(), source })?;
        let mut server = IperfServer { child, addr, port };
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let mut stderr = String::new();
                if let Some(pipe) = server.child.stderr.as_mut() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return Err(HarnessError::CommandFailed { command, status, stderr: stderr.trim().to_string() });
            }
            if is_listening(netns, port)? {
                return Ok(server);
            }
            if started.elapsed() > LISTEN_TIMEOUT {
                return Err(HarnessError::Timeout {
                    what: format!("iperf3 to listen on {addr}:{port} in {}", netns.name()),
                    waited: LISTEN_TIMEOUT,
                });
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its pid (it is `ip netns exec`'s pid: that execs in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for IperfServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a TCP socket listens on `port` inside `netns`
/// (`/proc/thread-self/net/tcp`, state `0A`).
fn is_listening(netns: &Netns, port: u16) -> Result<bool, HarnessError> {
    netns.run_in("checking for a listener", move || {
        let path = "/proc/thread-self/net/tcp";
        let table = fs::read_to_string(path).map_err(|source| HarnessError::Io {
            action: "read",
            path: path.into(),
            source,
        })?;
        Ok(table.lines().skip(1).any(|line| {
            let mut cols = line.split_whitespace();
            let local = cols.nth(1).unwrap_or_default();
            let state = cols.nth(1).unwrap_or_default();
            let local_port = local.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
            state == "0A" && local_port == Some(port)
        }))
    })
}

/// What one iperf3 run achieved, from its JSON report (`-J`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Length of the measurement, seconds.
    pub seconds: f64,
    /// Sender's rate, bits per second.
    pub sent_bps: f64,
    /// Receiver's rate, bits per second: the figure to compare.
    pub received_bps: f64,
    /// TCP retransmissions seen by the sender.
    pub retransmits: u64,
}

impl Throughput {
    /// The received rate in Gbit/s.
    pub fn gbit_per_s(&self) -> f64 {
        self.received_bps / 1e9
    }

    /// The figures as JSON, for the results file.
    pub fn to_json(&self) -> Value {
        json!({
            "seconds": self.seconds,
            "sent_bps": self.sent_bps,
            "received_bps": self.received_bps,
            "retransmits": self.retransmits,
        })
    }

    /// Parses iperf3's `-J` report.
    pub fn from_report(report: &str) -> Result<Throughput, HarnessError> {
        let unusable = |problem: &str| HarnessError::IperfReport {
            problem: problem.to_string(),
            output: report.chars().take(2000).collect(),
        };
        let doc: Value = serde_json::from_str(report).map_err(|_| unusable("not JSON"))?;
        if let Some(error) = doc.get("error").and_then(Value::as_str) {
            return Err(unusable(&format!("iperf3 reported: {error}")));
        }
        let end = doc.get("end").ok_or_else(|| unusable("no `end` section"))?;
        let number = |section: &str, field: &str| {
            end.get(section)
                .and_then(|s| s.get(field))
                .and_then(Value::as_f64)
                .ok_or_else(|| unusable(&format!("no end.{section}.{field}")))
        };
        Ok(Throughput {
            seconds: number("sum_sent", "seconds")?,
            sent_bps: number("sum_sent", "bits_per_second")?,
            received_bps: number("sum_received", "bits_per_second")?,
            retransmits: number("sum_sent", "retransmits").map(|r| r as u64).unwrap_or(0),
        })
    }
}

/// The client command: `iperf3 -c ADDR -p PORT -t SECS -J` inside `netns`.
fn client_command(netns: &Netns, server: &IperfServer, seconds: u32) -> Command {
    let mut cmd = netns.command("iperf3");
    cmd.args([
        "-c",
        &server.addr().to_string(),
        "-p",
        &server.port().to_string(),
        "-t",
        &seconds.to_string(),
        "--connect-timeout",
        "5000",
        "-J",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Sends to `server` from `netns` for `seconds` and returns what arrived.
/// Retries while the server is still busy finishing a previous run.
pub fn run_client(netns: &Netns, server: &IperfServer, seconds: u32) -> Result<Throughput, HarnessError> {
    let mut attempt = 0;
    let mut hung = 0;
    loop {
        let mut cmd = client_command(netns, server, seconds);
        let command = describe(&cmd);
        let limit = Duration::from_secs(u64::from(seconds)) + CLIENT_GRACE;
        let Some(output) = output_within(&mut cmd, limit, &command)? else {
            // iperf3 can wait forever for the server's results at the end of
            // a run; one such run is killed and tried again, not the test.
            hung += 1;
            eprintln!("`{command}` still running after {limit:?}: killed (hang {hung} of {HANG_RETRIES})");
            if hung > HANG_RETRIES {
                return Err(HarnessError::Timeout { what: command, waited: limit });
            }
            thread::sleep(Duration::from_millis(300));
            continue;
        };
        let report = String::from_utf8_lossy(&output.stdout);
        match Throughput::from_report(&report) {
            Ok(throughput) => return Ok(throughput),
            Err(_) if report.contains("busy") && attempt < BUSY_RETRIES => {
                attempt += 1;
                thread::sleep(Duration::from_millis(300));
            }
            Err(err) if output.status.success() => return Err(err),
            Err(_) => {
                return Err(HarnessError::CommandFailed {
                    command,
                    status: output.status,
                    stderr: format!("{} {}", String::from_utf8_lossy(&output.stderr).trim(), report.trim()),
                });
            }
        }
    }
}

/// Whether this iperf3 takes `option` (its help lists it); asked once.
fn iperf3_knows(option: &str) -> bool {
    static HELP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HELP.get_or_init(|| {
        Command::new("iperf3")
            .arg("--help")
            .output()
            .map(|out| format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
            .unwrap_or_default()
    })
    .contains(option)
}

/// `cmd`'s output, or `None` when it ran past `limit` (it is then killed).
fn output_within(
    cmd: &mut Command,
    limit: Duration,
    command: &str,
) -> Result<Option<std::process::Output>, HarnessError> {
    let mut child = cmd.spawn().map_err(|source| HarnessError::Spawn { command: command.to_string(), source })?;
    // Read while it runs, so that a full pipe never stops it.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (stdout, stderr) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    Ok(status.map(|status| std::process::Output { status, stdout, stderr }))
}

/// A client running in the background (load while the test watches
/// something else); killed on drop unless waited for.
#[derive(Debug)]
pub struct BackgroundTransfer {
    child: Option<Child>,
    command: String,
}

impl BackgroundTransfer {
    /// Starts sending to `server` from `netns` for `seconds`.
    pub fn start(netns: &Netns, server: &IperfServer, seconds: u32) -> Result<BackgroundTransfer, HarnessError> {
        let mut cmd = client_command(netns, server, seconds);
        let command = describe(&cmd);
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn { command: command.clone(), source })?;
        Ok(BackgroundTransfer { child: Some(child), command })
    }

    /// Whether the transfer is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the transfer to end and returns what arrived.
    pub fn wait(mut self) -> Result<Throughput, HarnessError> {
        let Some(child) = self.child.take() else {
            return Err(HarnessError::ProcessExited {
                what: "a background transfer".to_string(),
                status: "already collected".to_string(),
            });
        };
        let output =
            child.wait_with_output().map_err(|source| HarnessError::Spawn { command: self.command.clone(), source })?;
        Throughput::from_report(&String::from_utf8_lossy(&output.stdout))
    }
}

impl Drop for BackgroundTransfer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Throughput;

    #[test]
    fn report_figures_are_read_from_the_end_section() {
        let report = r#"{"start":{},"intervals":[],"end":{
            "sum_sent":{"seconds":2.0,"bits_per_second":2.5e10,"retransmits":3},
            "sum_received":{"seconds":2.0,"bits_per_second":2.4e10}}}"#;
        let t = Throughput::from_report(report).expect("valid report");
        assert_eq!(t.retransmits, 3);
        assert!((t.gbit_per_s() - 24.0).abs() < 1e-9);
    }

    #[test]
    fn iperf_errors_are_reported_not_parsed_as_zero() {
        let report = r#"{"start":{},"intervals":[],"end":{},"error":"unable to connect to server"}"#;
        let err = Throughput::from_report(report).expect_err("an error report");
        assert!(err.to_string().contains("unable to connect"));
    }
}
