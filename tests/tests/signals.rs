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
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtune::bpf::{BpfConfig, HookState, KernelSource};
use wasmtune::netns::NetnsRegistry;
use wasmtune::signals::{ProcSignals, ProcSignalsConfig};
use wasmtune::wit::{AddressFamily, Event, IpAddr, MemoryLevel, Protocol, UdpDropCause};
use wasmtune_tests::harness::{
    GlobalSysctlGuard, Netns, Requirement, VethOptions, VethPair, record, set_sysctl_in, skip_without,
};

/// How long a test waits for its event before failing.
const WAIT: Duration = Duration::from_secs(20);

fn skip() -> bool {
    skip_without(&[Requirement::Root, Requirement::Tool("ip")])
}

fn start_bpf() -> KernelSource {
    let source = KernelSource::start(BpfConfig::default()).expect("BPF programs load");
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

#[test]
#[ignore = "flaky on a loaded machine: the held ACKs overflow the accept queue in some runs only (passes alone: cargo nextest run --run-ignored all -E 'test(accept_queue)')"]
fn accept_queue_overflow_reports_syn_overflow_on_the_listener() {
    if skip() || skip_without(&[Requirement::Tool("nft")]) {
        return;
    }
    let ns = Netns::new("sig-syn").unwrap();
    set_sysctl_in(&ns, "net.ipv4.tcp_syncookies", "0").unwrap();
    let cookie = cookie_of(&ns);
    let source = start_bpf();
    // A listener with a backlog of 1 that never accepts: at most 2 requests
    // in its SYN queue, and its accept queue is full at 2 connections.
    let listener = ns
        .run_in("listener", || {
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            // SAFETY: listen(2) again on a socket this thread owns only
            // changes its backlog.
            let ret = unsafe { libc::listen(listener.as_raw_fd(), 1) };
            assert_eq!(ret, 0, "listen: {}", std::io::Error::last_os_error());
            Ok(listener)
        })
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = SocketAddr::from(([127, 0, 0, 1], port));
    let connect = move || Ok(TcpStream::connect_timeout(&server, Duration::from_secs(2)).expect("connect"));
    // One connection completes: the accept queue holds 1.
    let first = ns.run_in("first client", connect).unwrap();
    // Two more whose final ACK is held back: they wait in the SYN queue.
    // Two more whose final ACK is held back wait in the SYN queue; letting the
    // ACKs through (the listener retransmits its SYN-ACKs after 1, 3, 7, 15 s)
    // fills the accept queue and overflows it. Under load the overflow may
    // only come with a later retransmission, so the wait covers several.
    let ruleset = format!(
        "table inet wtsyn {{\n chain input {{\n  type filter hook input priority 0;\n  tcp dport {port} tcp flags & (syn | ack) == ack drop\n }}\n}}\n"
    );
    let rules = std::env::temp_dir().join(format!("wt-syn-{}.nft", std::process::id()));
    std::fs::write(&rules, ruleset).unwrap();
    ns.run("nft", &["-f", rules.to_str().unwrap()]).unwrap();
    let _ = std::fs::remove_file(&rules);
    let held: Vec<TcpStream> = (0..2).map(|_| ns.run_in("held client", connect).unwrap()).collect();
    ns.run("nft", &["delete", "table", "inet", "wtsyn"]).unwrap();
    let overflow = match try_wait_for(source.events(), Duration::from_secs(40), |e| match e {
        Event::SynOverflow(s) if s.netns == cookie => Some(*s),
        _ => None,
    }) {
        Ok(found) => found,
        Err(seen) => panic!("no syn-overflow event within 40 s ({seen} other events seen)"),
    };
    println!("{overflow:?}");
    assert_eq!(overflow.local_port, port);
    assert_eq!(overflow.max_queued, 1);
    assert!(overflow.established >= 2, "{overflow:?}");
    assert!(overflow.queued >= 1, "{overflow:?}");
    assert!(!overflow.cookie_sent);
    drop((first, held, listener));
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

/// How many events per second the drain carries, and what each hook costs
/// per run, under a flood of short connections (two connection summaries
/// each). Figures go to the results file; nothing here asserts speed.
#[test]
fn measure_drain_rate_and_cost_per_event_under_a_connection_flood() {
    if skip() {
        return;
    }
    let ns = Netns::new("sig-drain").unwrap();
    let cookie = cookie_of(&ns);
    let accounting = wasmtune::bpf::RunTimeAccounting::enable().expect("bpf_enable_stats");
    let source = start_bpf();
    let listener = ns.run_in("listener", || Ok(TcpListener::bind("127.0.0.1:0").expect("bind"))).unwrap();
    let server = listener.local_addr().unwrap();
    let _acceptor = Background::spawn(&ns, 1, move |stop| {
        listener.set_nonblocking(true).expect("nonblocking");
        while !stopped(stop) {
            match listener.accept() {
                Ok((stream, _)) => drop(stream),
                Err(_) => std::thread::yield_now(),
            }
        }
    });
    let before = source.run_stats().unwrap();
    let lost_before = source.lost_events();
    let duration = Duration::from_secs(3);
    let clients = Background::spawn(&ns, 2, move |stop| {
        while !stopped(stop) {
            if let Ok(stream) = TcpStream::connect(server) {
                // Reset on close: no TIME_WAIT to run out of ports with.
                let reset = libc::linger { l_onoff: 1, l_linger: 0 };
                let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::Linger, &reset);
            }
        }
    });
    let start = Instant::now();
    let mut summaries = 0u64;
    let mut all = 0u64;
    while start.elapsed() < duration {
        if let Ok(batch) = source.events().recv_timeout(Duration::from_millis(50)) {
            all += batch.len() as u64;
            summaries +=
                batch.iter().filter(|e| matches!(e, Event::ConnectionSummary(s) if s.netns == cookie)).count() as u64;
        }
    }
    drop(clients);
    let elapsed = start.elapsed().as_secs_f64();
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
    let rate = summaries as f64 / elapsed;
    println!(
        "drain: {summaries} connection summaries in {elapsed:.2} s = {rate:.0} events/s ({all} events in all), {lost} lost"
    );
    drop(accounting);
    assert!(summaries > 0);
    record(
        "signals.drain_rate",
        serde_json::json!({"events_per_s": rate.round(), "events": all, "lost": lost, "hook_cost": costs}),
    )
    .unwrap();
}
