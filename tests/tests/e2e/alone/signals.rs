//! Every kernel signal of the host, provoked for real in namespaces the test
//! makes, and its decoded event checked field by field. The BPF side runs as
//! a `KernelSource` inside the test process (the /proc side as
//! `ProcSignals`), so each event can be matched to the namespace cookie the
//! test knows. Tests that change global sysctls (tcp_mem, gc_thresh*,
//! netdev_max_backlog, netdev_budget) restore them through
//! `GlobalSysctlGuard` and run in the `serial` group.
//!
//! `cargo nextest run --release -p wasmtune-tests --test signals`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtune::bpf::{BpfConfig, HookState, KernelSource};
use wasmtune::netns::NetnsRegistry;
use wasmtune::signals::{ProcSignals, ProcSignalsConfig};
use wasmtune::wit::{AddressFamily, Event, IpAddr, MemoryLevel, Protocol, SynOverflow, UdpDropCause};
use wasmtune_tests::harness::{
    GlobalSysctlGuard, Netns, Requirement, VethOptions, VethPair, record, set_sysctl_in, skip_without,
};

/// How long a test waits for its event before failing.
const WAIT: Duration = Duration::from_secs(20);

fn skip() -> bool {
    skip_without(&[Requirement::Root, Requirement::Tool("ip")])
}

fn start_bpf() -> KernelSource {
    start_bpf_with(BpfConfig::default())
}

fn start_bpf_with(config: BpfConfig) -> KernelSource {
    let source = KernelSource::start(config).expect("BPF programs load");
    for hook in source.hooks() {
        assert_eq!(hook.state, HookState::Attached, "{hook:?}");
    }
    source
}

fn cookie_of(netns: &Netns) -> u64 {
    netns
        .run_in("netns cookie", || Ok(wasmtune::netns::current_cookie().expect("SO_NETNS_COOKIE")))
        .expect("cookie thread")
}

/// Reads batches until `wanted` accepts an event (returned) or `WAIT` passes.
fn wait_for<T>(
    events: &crossbeam_channel::Receiver<Vec<Event>>,
    what: &str,
    wanted: impl FnMut(&Event) -> Option<T>,
) -> T {
    match try_wait_for(events, WAIT, wanted) {
        Ok(found) => found,
        Err(seen) => panic!("no {what} event within {WAIT:?} ({seen} other events seen)"),
    }
}

/// Like [`wait_for`] within `wait`; on timeout, how many other events came.
fn try_wait_for<T>(
    events: &crossbeam_channel::Receiver<Vec<Event>>,
    wait: Duration,
    mut wanted: impl FnMut(&Event) -> Option<T>,
) -> Result<T, usize> {
    let deadline = Instant::now() + wait;
    let mut seen = 0usize;
    while Instant::now() < deadline {
        if let Ok(batch) = events.recv_timeout(Duration::from_millis(100)) {
            seen += batch.len();
            if let Some(found) = batch.iter().find_map(&mut wanted) {
                return Ok(found);
            }
        }
    }
    Err(seen)
}

/// Keeps `work` running on a thread inside `netns` until the returned guard drops.
struct Background {
    stop: Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Background {
    fn spawn(
        netns: &Netns,
        copies: usize,
        work: impl Fn(&std::sync::atomic::AtomicBool) + Send + Sync + 'static,
    ) -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let work = Arc::new(work);
        let mut threads = Vec::new();
        for _ in 0..copies {
            let path = netns.path();
            let stop = stop.clone();
            let work = work.clone();
            threads.push(std::thread::spawn(move || {
                let file = std::fs::File::open(path).expect("open netns");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                work(&stop);
            }));
        }
        Background { stop, threads }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn stopped(stop: &std::sync::atomic::AtomicBool) -> bool {
    stop.load(std::sync::atomic::Ordering::Relaxed)
}

/// A TCP sink on `addr` inside `netns` that reads and discards everything.
fn tcp_sink(netns: &Netns, addr: &str) -> (SocketAddr, Background) {
    let listener = {
        let addr = addr.to_string();
        netns.run_in("bind sink", move || Ok(TcpListener::bind(addr).expect("bind sink"))).expect("sink thread")
    };
    let local = listener.local_addr().expect("sink address");
    listener.set_nonblocking(true).expect("nonblocking");
    let bg = Background::spawn(netns, 1, move |stop| {
        let mut readers = Vec::new();
        while !stopped(stop) {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nonblocking(false);
                    readers.push(std::thread::spawn(move || {
                        let mut buf = vec![0u8; 1 << 16];
                        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                    }));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        for r in readers {
            let _ = r.join();
        }
    });
    (local, bg)
}

#[test]
fn connection_summary_at_close_reports_peer_bytes_congestion_and_duration() {
    if skip() {
        return;
    }
    let ns = Netns::new("sig-summary").unwrap();
    let cookie = cookie_of(&ns);
    let source = start_bpf();
    let (server, _sink) = tcp_sink(&ns, "127.0.0.1:0");
    let congestion = wasmtune_tests::harness::sysctl_in(&ns, "net.ipv4.tcp_congestion_control").unwrap();
    let sent = 4 << 20;
    let local_port = ns
        .run_in("client", move || {
            let mut stream = TcpStream::connect(server).expect("connect");
            stream.write_all(&vec![7u8; sent]).expect("send");
            std::thread::sleep(Duration::from_millis(300));
            Ok(stream.local_addr().expect("local").port())
        })
        .unwrap();
    let summary = wait_for(source.events(), "connection-summary (client side)", |e| match e {
        Event::ConnectionSummary(s) if s.netns == cookie && s.local_port == local_port => Some(s.clone()),
        _ => None,
    });
    println!("{summary:?}");
    assert_eq!(summary.remote_port, server.port());
    assert!(matches!(summary.remote, IpAddr::V4((127, 0, 0, 1))), "{:?}", summary.remote);
    assert_eq!(summary.congestion, congestion.trim());
    assert!(summary.bytes_acked >= sent as u64, "{summary:?}");
    assert!(summary.duration_ms >= 300, "{summary:?}");
    assert!(summary.segments_out > 0 && summary.srtt_us > 0 && summary.min_rtt_us > 0, "{summary:?}");
    assert!(summary.max_delivery_rate >= summary.bytes_acked * 1000 / summary.duration_ms.max(1) / 2, "{summary:?}");
    record(
        "signals.connection_summary",
        serde_json::json!({"max_delivery_rate": summary.max_delivery_rate, "duration_ms": summary.duration_ms}),
    )
    .unwrap();
}

#[test]
fn udp_flood_into_a_small_locked_receive_buffer_reports_receive_queue_full() {
    if skip() {
        return;
    }
    let ns = Netns::new("sig-udp").unwrap();
    let cookie = cookie_of(&ns);
    let source = start_bpf();
    let receiver = ns
        .run_in("udp receiver", || {
            let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBuf, &4096).expect("SO_RCVBUF");
            Ok(socket)
        })
        .unwrap();
    let target = receiver.local_addr().unwrap();
    let _flood = Background::spawn(&ns, 1, move |stop| {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
        let payload = [1u8; 1200];
        while !stopped(stop) {
            let _ = socket.send_to(&payload, target);
        }
    });
    let first = wait_for(source.events(), "udp-drop", |e| match e {
        Event::UdpDrop(d) if d.netns == cookie => Some(*d),
        _ => None,
    });
    println!("{first:?}");
    assert!(matches!(first.cause, UdpDropCause::ReceiveQueueFull));
    assert_eq!(first.local_port, target.port());
    assert!(first.locked);
    assert!(first.drops >= 1);
    assert!(first.buffer_bytes <= 16384, "{first:?}");
    // Aggregated: a second record carries many drops, never one per datagram.
    let later = wait_for(source.events(), "a second udp-drop", |e| match e {
        Event::UdpDrop(d) if d.netns == cookie => Some(*d),
        _ => None,
    });
    assert!(later.drops > 1, "{later:?}");
    drop(receiver);
}

/// A listener on 127.0.0.1 inside `ns` with `backlog` that never accepts.
fn stuck_listener(ns: &Netns, backlog: i32) -> TcpListener {
    ns.run_in("listener", move || {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // SAFETY: listen(2) again on a socket this thread owns only
        // changes its backlog.
        let ret = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
        assert_eq!(ret, 0, "listen: {}", std::io::Error::last_os_error());
        Ok(listener)
    })
    .unwrap()
}

/// `count` non-blocking connection attempts to `server` from inside `ns`,
/// kept open (complete, half-open or refused) until dropped.
fn connection_attempts(ns: &Netns, server: SocketAddr, count: usize) -> Vec<OwnedFd> {
    ns.run_in("connection attempts", move || {
        let SocketAddr::V4(v4) = server else { panic!("IPv4 only") };
        // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = v4.port().to_be();
        addr.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let attempts = (0..count)
            .map(|_| {
                // SAFETY: a fresh socket owned at once; connect(2) with a
                // fully initialised sockaddr_in of the length passed. A
                // non-blocking connect returns EINPROGRESS: not an error here.
                unsafe {
                    let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0);
                    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
                    let owned = OwnedFd::from_raw_fd(fd);
                    libc::connect(fd, (&raw const addr).cast(), len);
                    owned
                }
            })
            .collect();
        Ok(attempts)
    })
    .unwrap()
}

/// The /proc poller over every named namespace there is now, every 200 ms.
fn start_poller() -> (ProcSignals, crossbeam_channel::Receiver<Vec<Event>>) {
    let registry = Arc::new(NetnsRegistry::discover(&[]).unwrap());
    let (tx, rx) = crossbeam_channel::bounded(64);
    let config = ProcSignalsConfig { interval: Duration::from_millis(200), ..ProcSignalsConfig::default() };
    (ProcSignals::start(config, registry, tx).unwrap(), rx)
}

/// Bursts of 8 connection attempts (kept open) until the poller reports a
/// syn-overflow for `port` in `cookie`'s namespace. The poller compares
/// counters between polls, so a burst before its first poll of the
/// namespace is only its baseline: the next burst counts. Fails after 5
/// bursts 4 s apart.
fn overflow_after_bursts(
    ns: &Netns,
    cookie: u64,
    port: u16,
    events: &crossbeam_channel::Receiver<Vec<Event>>,
) -> (SynOverflow, Vec<OwnedFd>) {
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let mut kept = Vec::new();
    let mut unnamed = 0;
    for _ in 0..5 {
        kept.extend(connection_attempts(ns, server, 8));
        let found = try_wait_for(events, Duration::from_secs(4), |e| match e {
            Event::SynOverflow(s) if s.netns == cookie && s.local_port == port => Some(*s),
            Event::SynOverflow(s) if s.netns == cookie => {
                unnamed += 1;
                None
            }
            _ => None,
        });
        if let Ok(overflow) = found {
            return (overflow, kept);
        }
    }
    panic!("no syn-overflow for port {port} after 5 bursts ({unnamed} without the listener)");
}

/// A listener with backlog 1 that never accepts: two handshakes complete
/// into its accept queue, every later SYN is dropped (ListenOverflows), and
/// the poller names the listener with its queues.
#[test]
fn accept_queue_overflow_reports_syn_overflow_on_the_listener() {
    if skip() {
        return;
    }
    let ns = Netns::new("sig-syn").unwrap();
    set_sysctl_in(&ns, "net.ipv4.tcp_syncookies", "0").unwrap();
    let cookie = cookie_of(&ns);
    let (_poller, events) = start_poller();
    let listener = stuck_listener(&ns, 1);
    let port = listener.local_addr().unwrap().port();
    let (overflow, attempts) = overflow_after_bursts(&ns, cookie, port, &events);
    println!("{overflow:?}");
    assert_eq!(overflow.max_queued, 1);
    // The accept queue takes one more than the backlog before it drops.
    assert_eq!(overflow.established, 2, "{overflow:?}");
    assert!(overflow.queued as usize <= attempts.len(), "{overflow:?}");
    assert!(!overflow.cookie_sent, "cookies are off: {overflow:?}");
    drop((attempts, listener));
}

/// SYN-ACKs dropped by nftables leave every handshake half-open: the SYN
/// queue of a backlog-2 listener fills, and further SYNs are dropped
/// (cookies off) or answered with a cookie (cookies on), which the event
/// tells. Nothing is established.
#[test]
fn syn_queue_overflow_reports_half_open_requests_with_and_without_cookies() {
    if skip() || skip_without(&[Requirement::Tool("nft")]) {
        return;
    }
    let namespaces = [(false, Netns::new("sig-synq").unwrap()), (true, Netns::new("sig-synq-c").unwrap())];
    let (_poller, events) = start_poller();
    for (cookies, ns) in &namespaces {
        set_sysctl_in(ns, "net.ipv4.tcp_syncookies", if *cookies { "1" } else { "0" }).unwrap();
        let cookie = cookie_of(ns);
        let listener = stuck_listener(ns, 2);
        let port = listener.local_addr().unwrap().port();
        let ruleset = format!(
            "table inet wtsynq {{\n chain output {{\n  type filter hook output priority 0;\n  tcp sport {port} tcp flags & (syn | ack) == syn | ack drop\n }}\n}}\n"
        );
        let rules = std::env::temp_dir().join(format!("wt-synq-{}.nft", std::process::id()));
        std::fs::write(&rules, ruleset).unwrap();
        ns.run("nft", &["-f", rules.to_str().unwrap()]).unwrap();
        let _ = std::fs::remove_file(&rules);
        let (overflow, attempts) = overflow_after_bursts(ns, cookie, port, &events);
        println!("cookies {cookies}: {overflow:?}");
        assert_eq!(overflow.max_queued, 2);
        assert!(overflow.queued >= overflow.max_queued, "{overflow:?}");
        assert_eq!(overflow.established, 0, "{overflow:?}");
        assert_eq!(overflow.cookie_sent, *cookies, "{overflow:?}");
        drop((attempts, listener));
    }
}

#[test]
fn random_loss_on_a_veth_reports_a_retransmit_burst_for_the_peer() {
    if skip() || skip_without(&[Requirement::Tool("nft"), Requirement::Tool("ethtool")]) {
        return;
    }
    let sender = Netns::new("sig-rtx-a").unwrap();
    let receiver = Netns::new("sig-rtx-b").unwrap();
    let veth = VethPair::with_options(&sender, &receiver, VethOptions { offloads_off: true }).unwrap();
    let cookie = cookie_of(&sender);
    let ruleset = "table inet wtloss {\n chain input {\n  type filter hook input priority 0;\n  meta l4proto tcp numgen random mod 100 < 5 drop\n }\n}\n";
    let rules = std::env::temp_dir().join(format!("wt-loss-{}.nft", std::process::id()));
    std::fs::write(&rules, ruleset).unwrap();
    receiver.run("nft", &["-f", rules.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&rules);
    let source = start_bpf();
    let (server, _sink) = tcp_sink(&receiver, &format!("{}:0", veth.addr_b()));
    let _client = Background::spawn(&sender, 1, move |stop| {
        let mut stream = TcpStream::connect(server).expect("connect");
        let chunk = vec![3u8; 1 << 16];
        while !stopped(stop) && stream.write_all(&chunk).is_ok() {}
    });
    let burst = wait_for(source.events(), "retransmit-burst", |e| match e {
        Event::RetransmitBurst(b) if b.netns == cookie => Some(b.clone()),
        _ => None,
    });
    println!("{burst:?}");
    let [a, b, c, d] = veth.addr_b().octets();
    assert!(matches!(burst.remote, IpAddr::V4(addr) if addr == (a, b, c, d)), "{:?}", burst.remote);
    assert_eq!(burst.remote_port, server.port());
    assert!(u64::from(burst.retransmits) * 64 > u64::from(burst.segments_out), "{burst:?}");
    assert!(!burst.congestion.is_empty());
}

#[test]
fn neighbour_entries_near_gc_thresh3_report_the_table_and_falling_back_reports_again() {
    if skip() {
        return;
    }
    // gc_thresh* are global: restored on drop, in reverse order of setting.
    let _t3 = GlobalSysctlGuard::set("net.ipv4.neigh.default.gc_thresh3", "1024").unwrap();
    let _t2 = GlobalSysctlGuard::set("net.ipv4.neigh.default.gc_thresh2", "512").unwrap();
    let _t1 = GlobalSysctlGuard::set("net.ipv4.neigh.default.gc_thresh1", "128").unwrap();
    let a = Netns::new("sig-neigh-a").unwrap();
    let b = Netns::new("sig-neigh-b").unwrap();
    let veth = VethPair::new(&a, &b).unwrap();
    let cookie = cookie_of(&a);
    let ifindex: u32 =
        a.run("cat", &[&format!("/sys/class/net/{}/ifindex", veth.dev_a())]).unwrap().trim().parse().unwrap();
    let source = start_bpf();
    // 1024 - 1024/4 = 768 entries make it "near".
    let batch: String = (0..800)
        .map(|i| {
            format!(
                "neigh add 10.200.{}.{} lladdr 02:00:00:00:{:02x}:{:02x} dev {} nud permanent\n",
                i / 250,
                i % 250 + 1,
                i / 256,
                i % 256,
                veth.dev_a()
            )
        })
        .collect();
    let file = std::env::temp_dir().join(format!("wt-neigh-{}.batch", std::process::id()));
    std::fs::write(&file, batch).unwrap();
    a.run("ip", &["-batch", file.to_str().unwrap()]).unwrap();
    let near = wait_for(source.events(), "neighbour-table near gc_thresh3", |e| match e {
        Event::NeighbourTable(n) if n.netns == cookie => Some(*n),
        _ => None,
    });
    println!("{near:?}");
    assert!(matches!(near.family, AddressFamily::Ipv4));
    assert_eq!(near.limit, 1024);
    assert!(near.entries >= 768, "{near:?}");
    assert_eq!(near.ifindex, ifindex);
    assert_eq!(near.address_space, 256, "a /24 has 256 addresses");
    // Back well below: flush, wait out the rate limit, create one entry.
    a.run("ip", &["neigh", "flush", "dev", veth.dev_a(), "nud", "permanent"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    a.run(
        "ip",
        &["neigh", "add", "10.201.0.1", "lladdr", "02:00:00:00:ff:01", "dev", veth.dev_a(), "nud", "permanent"],
    )
    .unwrap();
    let low = wait_for(source.events(), "neighbour-table well below gc_thresh3", |e| match e {
        Event::NeighbourTable(n) if n.netns == cookie && n.entries <= 256 => Some(*n),
        _ => None,
    });
    println!("{low:?}");
    assert_eq!(low.limit, 1024);
    let _ = std::fs::remove_file(&file);
}

#[test]
fn tiny_tcp_mem_reports_pressure_then_relief_once_restored() {
    if skip() {
        return;
    }
    let ns = Netns::new("sig-mem").unwrap();
    let cookie = cookie_of(&ns);
    let source = start_bpf();
    let (server, _sink) = tcp_sink(&ns, "127.0.0.1:0");
    let limits = {
        // tcp_mem is global: as small as lets the test still run, briefly.
        let tcp_mem = GlobalSysctlGuard::set("net.ipv4.tcp_mem", "32 64 128").unwrap();
        let _flows = Background::spawn(&ns, 8, move |stop| {
            if let Ok(mut stream) = TcpStream::connect(server) {
                let chunk = vec![5u8; 1 << 16];
                while !stopped(stop) && stream.write_all(&chunk).is_ok() {}
            }
        });
        let pressure = wait_for(source.events(), "memory-pressure", |e| match e {
            Event::MemoryPressure(p) if p.netns == cookie && !matches!(p.level, MemoryLevel::Relieved) => Some(*p),
            _ => None,
        });
        println!("{pressure:?}");
        assert!(matches!(pressure.protocol, Protocol::Tcp));
        assert_eq!(pressure.limits, (32, 64, 128));
        assert!(pressure.pages > 64, "{pressure:?}");
        if matches!(pressure.level, MemoryLevel::Exhausted) {
            assert!(pressure.pages >= 128, "{pressure:?}");
        }
        // Restore the limits while the flows still run: relief must then be
        // judged against the restored limits, not because the flows stopped.
        drop(tcp_mem);
        pressure.limits
    };
    // Restored (guard dropped, flows stopped): the host notices on its own.
    let relieved = wait_for(source.events(), "memory-pressure relieved", |e| match e {
        Event::MemoryPressure(p) if p.netns == cookie && matches!(p.level, MemoryLevel::Relieved) => Some(*p),
        _ => None,
    });
    println!("{relieved:?}");
    assert!(relieved.limits.1 > limits.1, "relieved against the restored limits: {relieved:?}");
    assert!(relieved.pages < relieved.limits.1);
}

#[test]
fn small_netdev_max_backlog_reports_backlog_drops_aggregated_per_cpu() {
    if skip() {
        return;
    }
    let a = Netns::new("sig-backlog-a").unwrap();
    let b = Netns::new("sig-backlog-b").unwrap();
    let veth = VethPair::new(&a, &b).unwrap();
    let cookie = cookie_of(&b);
    let source = start_bpf();
    let target = SocketAddr::from((veth.addr_b().octets(), 9));
    // A rate-limiting qdisc on the sender releases packets in bursts from
    // its timer, faster than the receiving CPU's backlog drains them.
    a.run(
        "tc",
        &["qdisc", "add", "dev", veth.dev_a(), "root", "tbf", "rate", "200mbit", "burst", "256kb", "latency", "50ms"],
    )
    .unwrap();
    let _backlog = GlobalSysctlGuard::set("net.core.netdev_max_backlog", "2").unwrap();
    let _flood = Background::spawn(&a, 2, move |stop| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let payload = [0u8; 64];
        while !stopped(stop) {
            let _ = socket.send_to(&payload, target);
        }
    });
    let drops = wait_for(source.events(), "backlog-drops", |e| match e {
        Event::BacklogDrops(d) if d.netns == cookie => Some(*d),
        _ => None,
    });
    println!("{drops:?}");
    assert!(drops.drops >= 1);
    assert_eq!(drops.max_backlog, 2);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    assert!(drops.cpu < cpus.max(64));
}

/// The /proc side: fragment memory and the IPv6 route table, per namespace.
#[test]
fn fragments_against_a_small_ipfrag_high_thresh_and_many_ipv6_routes_are_reported_per_namespace() {
    if skip() {
        return;
    }
    let a = Netns::new("sig-frag-a").unwrap();
    let b = Netns::new("sig-frag-b").unwrap();
    let veth = VethPair::new(&a, &b).unwrap();
    // Per-namespace sysctls: no global change.
    set_sysctl_in(&b, "net.ipv4.ipfrag_low_thresh", "1024").unwrap();
    set_sysctl_in(&b, "net.ipv4.ipfrag_high_thresh", "4096").unwrap();
    set_sysctl_in(&b, "net.ipv6.route.max_size", "256").unwrap();
    let dev = veth.dev_b().to_string();
    let routes: String = (0..230).map(|i| format!("route add 2001:db8:{i:x}::/64 dev {dev}\n")).collect();
    let file = std::env::temp_dir().join(format!("wt-routes-{}.batch", std::process::id()));
    std::fs::write(&file, routes).unwrap();
    b.run("ip", &["-6", "-batch", file.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&file);
    let cookie = cookie_of(&b);

    let registry = Arc::new(NetnsRegistry::discover(&[]).unwrap());
    let (tx, rx) = crossbeam_channel::bounded(64);
    let config = ProcSignalsConfig { interval: Duration::from_millis(200), ..ProcSignalsConfig::default() };
    let _poller = ProcSignals::start(config, registry, tx).unwrap();

    let route = wait_for(&rx, "route-table", |e| match e {
        Event::RouteTable(r) if r.netns == cookie => Some(*r),
        _ => None,
    });
    println!("{route:?}");
    assert_eq!(route.max_size, 256);
    assert!(route.entries >= 230, "{route:?}");

    let target = SocketAddr::from((veth.addr_b().octets(), 9));
    let _sender = Background::spawn(&a, 1, move |stop| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        // 8000 bytes over a 1500-byte MTU: the kernel fragments them.
        let payload = vec![9u8; 8000];
        while !stopped(stop) {
            let _ = socket.send_to(&payload, target);
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let frag = wait_for(&rx, "fragment-memory", |e| match e {
        Event::FragmentMemory(f) if f.netns == cookie && matches!(f.family, AddressFamily::Ipv4) => Some(*f),
        _ => None,
    });
    println!("{frag:?}");
    assert_eq!(frag.high_thresh, 4096);
    assert!(frag.reassembly_failures > 0 || frag.bytes >= 3072, "{frag:?}");
    assert!(frag.reassembly_requests >= frag.reassembly_failures);
}

#[test]
fn a_tiny_napi_budget_reports_softnet_squeezes() {
    if skip() {
        return;
    }
    let a = Netns::new("sig-squeeze-a").unwrap();
    let b = Netns::new("sig-squeeze-b").unwrap();
    let veth = VethPair::new(&a, &b).unwrap();
    let registry = Arc::new(NetnsRegistry::discover(&[]).unwrap());
    let own = wasmtune::netns::current_cookie().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(64);
    let config = ProcSignalsConfig { interval: Duration::from_millis(200), ..ProcSignalsConfig::default() };
    let _poller = ProcSignals::start(config, registry, tx).unwrap();
    let _budget = GlobalSysctlGuard::set("net.core.netdev_budget", "1").unwrap();
    let target = SocketAddr::from((veth.addr_b().octets(), 9));
    let _flood = Background::spawn(&a, 2, move |stop| {
        let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
        let payload = [0u8; 64];
        while !stopped(stop) {
            let _ = socket.send_to(&payload, target);
        }
    });
    let squeeze = wait_for(&rx, "softnet-squeeze", |e| match e {
        Event::SoftnetSqueeze(s) => Some(*s),
        _ => None,
    });
    println!("{squeeze:?}");
    assert_eq!(squeeze.netns, own);
    assert!(squeeze.squeezes > 0);
}

/// A flood of short connections (two connection summaries each) from two
/// threads inside `ns` to an acceptor there, for `duration`, drained from
/// `source`; what came out.
struct FloodOutcome {
    /// Connection summaries of the flood's namespace that came out.
    summaries: u64,
    /// Every event that came out.
    all: u64,
    /// Connections the clients made.
    connections: u64,
    elapsed: f64,
}

fn connection_flood(source: &KernelSource, ns: &Netns, duration: Duration) -> FloodOutcome {
    let cookie = cookie_of(ns);
    let listener = ns.run_in("listener", || Ok(TcpListener::bind("127.0.0.1:0").expect("bind"))).unwrap();
    let server = listener.local_addr().unwrap();
    let _acceptor = Background::spawn(ns, 1, move |stop| {
        listener.set_nonblocking(true).expect("nonblocking");
        while !stopped(stop) {
            match listener.accept() {
                Ok((stream, _)) => drop(stream),
                Err(_) => std::thread::yield_now(),
            }
        }
    });
    let connections = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = connections.clone();
    let clients = Background::spawn(ns, 2, move |stop| {
        while !stopped(stop) {
            if let Ok(stream) = TcpStream::connect(server) {
                counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                // Reset on close: no TIME_WAIT to run out of ports with.
                let reset = libc::linger { l_onoff: 1, l_linger: 0 };
                let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &reset);
            }
        }
    });
    let start = Instant::now();
    let (mut summaries, mut all) = (0u64, 0u64);
    while start.elapsed() < duration {
        if let Ok(batch) = source.events().recv_timeout(Duration::from_millis(50)) {
            all += batch.len() as u64;
            summaries +=
                batch.iter().filter(|e| matches!(e, Event::ConnectionSummary(s) if s.netns == cookie)).count() as u64;
        }
    }
    drop(clients);
    let elapsed = start.elapsed().as_secs_f64();
    // What was posted before the clients stopped is still in the ring.
    while let Ok(batch) = source.events().recv_timeout(Duration::from_millis(200)) {
        all += batch.len() as u64;
        summaries +=
            batch.iter().filter(|e| matches!(e, Event::ConnectionSummary(s) if s.netns == cookie)).count() as u64;
    }
    FloodOutcome { summaries, all, connections: connections.load(std::sync::atomic::Ordering::Relaxed), elapsed }
}

/// How many events per second the drain carries, and what each hook costs
/// per run, under a flood of short connections (two connection summaries
/// each), with the per-netns cap on summaries lifted
/// (`connection_summaries_per_second: 0`) so the drain, not the cap, is
/// measured. Figures go to the results file; nothing here asserts speed.
#[test]
fn measure_drain_rate_and_cost_per_event_under_a_connection_flood() {
    if skip() {
        return;
    }
    let ns = Netns::new("sig-drain").unwrap();
    let accounting = wasmtune::bpf::RunTimeAccounting::enable().expect("bpf_enable_stats");
    let source = start_bpf_with(BpfConfig { connection_summaries_per_second: 0, ..BpfConfig::default() });
    let before = source.run_stats().unwrap();
    let lost_before = source.lost_events();
    let flood = connection_flood(&source, &ns, Duration::from_secs(3));
    let lost = source.lost_events() - lost_before;
    let after = source.run_stats().unwrap();
    let mut costs = serde_json::Map::new();
    for (b, a) in before.iter().zip(&after) {
        let runs = a.run_count - b.run_count;
        let ns_total = a.run_time_ns - b.run_time_ns;
        if runs > 0 {
            let per_run = ns_total as f64 / runs as f64;
            println!("hook {:<24} {runs:>10} runs  {per_run:>7.0} ns/run", a.hook);
            costs.insert(a.hook.to_string(), serde_json::json!({"runs": runs, "ns_per_run": per_run.round()}));
        }
    }
    let rate = flood.summaries as f64 / flood.elapsed;
    println!(
        "drain: {} connection summaries in {:.2} s = {rate:.0} events/s ({} events in all, {} connections), {lost} lost",
        flood.summaries, flood.elapsed, flood.all, flood.connections
    );
    drop(accounting);
    assert!(flood.summaries > 0);
    assert_eq!(source.suppressed_summaries(), 0, "no cap, nothing suppressed");
    record(
        "signals.drain_rate",
        serde_json::json!({"events_per_s": rate.round(), "events": flood.all, "lost": lost, "hook_cost": costs}),
    )
    .unwrap();
}

/// The same flood under the default cap: at most 500 summaries per second
/// leave the kernel for the namespace; the rest are counted as suppressed
/// and reported as lost.
#[test]
fn a_connection_flood_is_capped_per_namespace_and_the_rest_counted_as_lost() {
    if skip() {
        return;
    }
    let ns = Netns::new("sig-cap").unwrap();
    let config = BpfConfig::default();
    let cap = u64::from(config.connection_summaries_per_second);
    let source = start_bpf_with(config);
    let (lost_before, suppressed_before) = (source.lost_events(), source.suppressed_summaries());
    let flood = connection_flood(&source, &ns, Duration::from_secs(3));
    let suppressed = source.suppressed_summaries() - suppressed_before;
    let lost = source.lost_events() - lost_before;
    println!(
        "cap {cap}/s: {} connections ({} summaries at close, two per connection) in {:.2} s -> {} posted, {suppressed} suppressed, {lost} lost",
        flood.connections,
        flood.connections * 2,
        flood.elapsed,
        flood.summaries
    );
    // The flood spans at most ceil(elapsed) + 1 one-second windows (plus the
    // drain after it); CPUs racing on a window's count let a few more by.
    let windows = flood.elapsed.ceil() as u64 + 2;
    assert!(flood.summaries <= cap * windows + 16, "{} summaries over {windows} windows", flood.summaries);
    assert!(lost >= suppressed, "suppressed summaries count as lost: {lost} < {suppressed}");
    if flood.connections * 2 > cap * windows + 16 {
        assert!(suppressed > 0, "{} connections and nothing suppressed", flood.connections);
    }
    record(
        "signals.summary_cap",
        serde_json::json!({"cap_per_s": cap, "connections": flood.connections, "posted": flood.summaries,
            "suppressed": suppressed, "seconds": flood.elapsed}),
    )
    .unwrap();
}
