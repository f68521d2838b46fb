//! What the per-tuner end-to-end tests share: starting the daemon on the
//! namespaces a test built, matching a policy's change lines, reading values
//! of the initial namespace, and iperf3 transfers that retry while the
//! server finishes its previous run.

use std::path::PathBuf;
use std::time::Duration;

use wasmtune_tests::harness::{self, Daemon, DaemonBuilder, HarnessError, IperfServer, LogLine, Netns, Throughput};

/// How long a scenario may take from provocation to the change line.
pub const CHANGE_TIMEOUT: Duration = Duration::from_secs(20);

/// Starts the daemon tuning `netns` (and the initial namespace if
/// `with_init`) and waits until it is ready.
pub fn start(netns: &[&Netns], with_init: bool) -> Daemon {
    ready(builder_for(netns, with_init))
}

/// Like [`start`], under the administrator configuration `config`.
pub fn start_with(netns: &[&Netns], with_init: bool, config: &str) -> Daemon {
    ready(builder_for(netns, with_init).config(config))
}

/// Like [`start`], with every `bpf(2)` call of the daemon refused (EPERM),
/// so that no BPF hook can load.
pub fn start_without_bpf(netns: &[&Netns], with_init: bool) -> Daemon {
    ready(builder_for(netns, with_init).without_bpf())
}

fn builder_for(netns: &[&Netns], with_init: bool) -> DaemonBuilder {
    let mut builder = Daemon::builder();
    for ns in netns {
        builder = builder.netns(ns);
    }
    if with_init {
        builder = builder.netns_named("init");
    }
    builder
}

fn ready(builder: DaemonBuilder) -> Daemon {
    builder.start_ready().expect("daemon ready")
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
/// application (`-C`) or left to the kernel and the daemon's sockops
/// program; the client pinned to CPU 0 and the server to CPU 1 (`-A 0,1`)
/// when the machine has two: placement of the two ends otherwise swings the
/// throughput of one run two- or threefold.
pub fn pinned_transfer(netns: &Netns, server: &IperfServer, seconds: u32, congestion: Option<&str>) -> Throughput {
    let pin = std::thread::available_parallelism().is_ok_and(|cpus| cpus.get() >= 2);
    iperf_client(netns, server, seconds, congestion, pin)
}

fn iperf_client(netns: &Netns, server: &IperfServer, seconds: u32, congestion: Option<&str>, pin: bool) -> Throughput {
    let mut last_error = String::new();
    for _ in 0..5 {
        let mut cmd = netns.command("iperf3");
        cmd.args(["-c", &server.addr().to_string(), "-p", &server.port().to_string(), "-t", &seconds.to_string()]);
        cmd.args(["--connect-timeout", "5000", "-J"]);
        if pin {
            cmd.args(["-A", "0,1"]);
        }
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

/// A UDP flood from a namespace in GSO sends of `segments` 64-byte datagrams
/// (UDP_SEGMENT): the sender's stack splits each send and, with the link's
/// UDP segmentation offload off, hands every datagram of it to the receiving
/// veth's per-CPU input backlog before that CPU can drain any. One send is
/// thus a burst of `segments` packets, which overflows a smaller
/// `netdev_max_backlog` and runs a NAPI poll out of `netdev_budget`.
pub struct GsoFlood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sends: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GsoFlood {
    /// UDP payload of each datagram of a burst.
    pub const DATAGRAM: usize = 64;
    /// Pause between sends: keeps the flood from taking a whole CPU of a
    /// machine that runs other tests.
    const PAUSE: Duration = Duration::from_micros(200);

    /// Starts flooding `target` from `netns` with bursts of `segments`
    /// (at most 128, the kernel's UDP_MAX_SEGMENTS).
    pub fn start(netns: &Netns, target: std::net::SocketAddr, segments: u16) -> GsoFlood {
        use std::os::fd::AsRawFd;
        let socket = netns
            .run_in("flood socket", || std::net::UdpSocket::bind("0.0.0.0:0").map_err(|e| io("bind", e)))
            .expect("flood socket in its netns");
        let gso_size = Self::DATAGRAM as libc::c_int;
        // SAFETY: a valid socket, an int option of the right size.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&gso_size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(set, 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sends = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (stopping, counting) = (stop.clone(), sends.clone());
        let payload = vec![7u8; Self::DATAGRAM * usize::from(segments)];
        let thread = std::thread::spawn(move || {
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                if socket.send_to(&payload, target).is_ok() {
                    counting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                std::thread::sleep(Self::PAUSE);
            }
        });
        GsoFlood { stop, sends, thread: Some(thread) }
    }

    /// Bursts sent so far.
    pub fn sends(&self) -> u64 {
        self.sends.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for GsoFlood {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Turns UDP segmentation offload off on `dev` in `netns`, so that a GSO
/// send is split on the sender's side of the veth (see [`GsoFlood`]).
pub fn udp_segmentation_off(netns: &Netns, dev: &str) {
    netns.run("ethtool", &["-K", dev, "tx-udp-segmentation", "off"]).expect("ethtool -K tx-udp-segmentation off");
}

/// Machine-wide totals of `/proc/net/softnet_stat`: packets dropped at a
/// full input backlog (column 2) and NAPI runs out of budget or time
/// (column 3), summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SoftnetTotals {
    pub dropped: u64,
    pub squeezed: u64,
}

pub fn softnet_totals() -> SoftnetTotals {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").expect("read /proc/net/softnet_stat");
    let column = |line: &str, i: usize| {
        line.split_whitespace().nth(i).and_then(|hex| u64::from_str_radix(hex, 16).ok()).unwrap_or(0)
    };
    text.lines().fold(SoftnetTotals::default(), |sum, line| SoftnetTotals {
        dropped: sum.dropped + column(line, 1),
        squeezed: sum.squeezed + column(line, 2),
    })
}

/// `Udp: NoPorts` of `netns`: datagrams that reached UDP there with no
/// socket to take them (what a flood to a closed port delivered).
pub fn udp_no_ports(netns: &Netns) -> u64 {
    let snmp = netns.run("cat", &["/proc/net/snmp"]).expect("read /proc/net/snmp");
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else { panic!("no Udp lines in {snmp}") };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "NoPorts")
        .and_then(|(_, value)| value.parse().ok())
        .expect("Udp NoPorts")
}

/// What a [`GsoFlood`] achieved over one window, per second.
#[derive(Debug, Clone, Copy)]
pub struct FloodRates {
    pub sent_per_s: f64,
    pub delivered_per_s: f64,
    pub backlog_drops_per_s: f64,
    pub squeezes_per_s: f64,
}

impl FloodRates {
    /// Measures `flood` (bursts of `segments`) into `rx` over `window`.
    pub fn measure(flood: &GsoFlood, segments: u16, rx: &Netns, window: Duration) -> FloodRates {
        let (sends, delivered, softnet) = (flood.sends(), udp_no_ports(rx), softnet_totals());
        let started = std::time::Instant::now();
        std::thread::sleep(window);
        let (sends_after, delivered_after, softnet_after) = (flood.sends(), udp_no_ports(rx), softnet_totals());
        let seconds = started.elapsed().as_secs_f64();
        let per_s = |n: u64| n as f64 / seconds;
        FloodRates {
            sent_per_s: per_s((sends_after - sends) * u64::from(segments)),
            delivered_per_s: per_s(delivered_after.saturating_sub(delivered)),
            backlog_drops_per_s: per_s(softnet_after.dropped.saturating_sub(softnet.dropped)),
            squeezes_per_s: per_s(softnet_after.squeezed.saturating_sub(softnet.squeezed)),
        }
    }

    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "sent_per_s": self.sent_per_s.round(),
            "delivered_per_s": self.delivered_per_s.round(),
            "backlog_drops_per_s": self.backlog_drops_per_s.round(),
            "squeezes_per_s": self.squeezes_per_s.round(),
        })
    }
}

impl std::fmt::Display for FloodRates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} packets/s sent, {:.0} delivered, {:.0} backlog drops/s, {:.0} squeezes/s",
            self.sent_per_s, self.delivered_per_s, self.backlog_drops_per_s, self.squeezes_per_s
        )
    }
}

/// The built-in policies.
pub const BUILTIN: [&str; 7] = ["tcp-buffer", "tcp-cong", "net-buffer", "udp-buffer", "ip-frag", "neigh", "route"];

/// A configuration under which `policy` is the only built-in that runs.
pub fn only(policy: &str) -> String {
    BUILTIN.iter().filter(|p| **p != policy).map(|p| format!("[policies.{p}]\nenabled = false\n")).collect()
}

/// Drops 2 % of the TCP segments arriving at `port` in `netns` (nftables,
/// in the namespace: gone with it).
pub fn random_loss(netns: &Netns, port: u16) {
    let port = port.to_string();
    netns.run("nft", &["add", "table", "inet", "wtloss"]).expect("nft table");
    netns
        .run("nft", &["add", "chain", "inet", "wtloss", "input", "{ type filter hook input priority 0 ; }"])
        .expect("nft chain");
    netns
        .run(
            "nft",
            &[
                "add", "rule", "inet", "wtloss", "input", "tcp", "dport", &port, "numgen", "random", "mod", "1000",
                "<", "20", "drop",
            ],
        )
        .expect("nft random drop");
}
