//! The kernel side for real: attaches the BPF hooks, pushes TCP traffic over
//! loopback inside a network namespace made for the test (with small
//! `tcp_rmem`/`tcp_wmem` maxima, so buffers hit them quickly), and checks the
//! `tcp-buffer-limit` events that come out: the right namespace cookie, the
//! namespace's limit, the peer, both directions, both address families, and
//! nothing from sockets whose application locked its buffer size.
//!
//! Prints events per second, per-hook cost (kernel run-time accounting) and
//! how long `stop` takes. Needs root (see `harness::skip_without`).
//!
//! `cargo test --release -p wasmtune --test bpf_events -- --nocapture`

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::socket::{setsockopt, sockopt};
use wasmtune::bpf::{BpfConfig, HookRunStats, HookState, KernelSource, RunTimeAccounting};
use wasmtune::wit::{BufferDirection, Event, IpAddr, TcpBufferLimit};
use wasmtune_tests::harness::{self, Netns, Requirement};

/// The namespace-wide maxima the test sets: small, so buffers reach them.
const LIMIT: u32 = 65536;
const SYSCTL_VALUE: &str = "4096 16384 65536";
/// "Near" with the default shift of 2: within a quarter of the limit.
const NEAR: u32 = LIMIT - (LIMIT >> 2);

const MIB: usize = 1 << 20;

/// A namespace of the test's own, with loopback up and the TCP buffer
/// limits the events are judged against.
fn test_namespace(label: &str) -> Netns {
    let ns = Netns::new(label).expect("create the test namespace");
    for sysctl in ["net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"] {
        ns.run("sysctl", &["-q", "-w", &format!("{sysctl}={SYSCTL_VALUE}")]).expect("set the buffer limits");
    }
    ns
}

/// Runs `f` on a thread that has entered `ns`.
fn spawn_in<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    let handle = ns.spawn_in("a transfer end", move || Ok(f())).expect("thread in the test namespace");
    thread::spawn(move || match handle.join() {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{error}"),
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// Whether `::1` works inside the namespace.
fn has_ipv6_loopback(ns: &Netns) -> bool {
    ns.run_in("ipv6 probe", || Ok(TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok())).expect("ipv6 probe")
}

/// How a transfer's sockets are set up.
#[derive(Clone, Copy)]
enum Buffers {
    /// Left to the kernel's auto-tuning, which grows them to the limits.
    AutoTuned,
    /// Fixed by the application (SO_RCVBUF on the receiver, SO_SNDBUF on the
    /// sender), which the BPF side must ignore.
    Locked,
}

/// The two ends of one finished transfer.
#[derive(Debug)]
struct Transfer {
    /// The receiver's (server's) port: the remote port the sender reports.
    server_port: u16,
    /// The sender's (client's) port: the remote port the receiver reports.
    client_port: u16,
    bytes: usize,
    elapsed: Duration,
}

/// Sends `bytes` from a client to a server over `bind` inside the namespace.
fn transfer(ns: &Netns, bind: SocketAddr, bytes: usize, buffers: Buffers) -> Transfer {
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let server = spawn_in(ns, move || {
        let listener = TcpListener::bind(bind).expect("bind server");
        if let Buffers::Locked = buffers {
            // Accepted sockets inherit the size and the lock from the listener.
            setsockopt(&listener, sockopt::RcvBuf, &(LIMIT as usize)).expect("SO_RCVBUF");
        }
        port_tx.send(listener.local_addr().expect("server address").port()).expect("send port");
        let (mut stream, peer) = listener.accept().expect("accept");
        if let Buffers::Locked = buffers {
            // Twice the limit (the kernel doubles SO_RCVBUF): far past the
            // threshold, so only the lock keeps this socket quiet.
            let size = nix::sys::socket::getsockopt(&stream, sockopt::RcvBuf).expect("SO_RCVBUF");
            assert!(size >= NEAR as usize, "locked receive buffer {size} is below the threshold");
        }
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("server read: {e}"),
            }
        }
        (received, peer.port())
    });
    let server_port = port_rx.recv().expect("server port");
    let client = spawn_in(ns, move || {
        let target = SocketAddr::new(bind.ip(), server_port);
        let mut stream = TcpStream::connect(target).expect("connect");
        if let Buffers::Locked = buffers {
            setsockopt(&stream, sockopt::SndBuf, &(LIMIT as usize)).expect("SO_SNDBUF");
            let size = nix::sys::socket::getsockopt(&stream, sockopt::SndBuf).expect("SO_SNDBUF");
            assert!(size >= NEAR as usize, "locked send buffer {size} is below the threshold");
        }
        let chunk = vec![0x5au8; 256 * 1024];
        let started = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            stream.write_all(&chunk[..n]).expect("client write");
            sent += n;
        }
        stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        (stream.local_addr().expect("client address").port(), started.elapsed())
    });
    let (client_port, elapsed) = client.join().expect("client thread");
    let (received, peer_port) = server.join().expect("server thread");
    assert_eq!(received, bytes, "server received everything");
    assert_eq!(peer_port, client_port);
    Transfer { server_port, client_port, bytes, elapsed }
}

/// Collects every `tcp-buffer-limit` event of one namespace, on a thread.
struct Collector {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Vec<TcpBufferLimit>>,
}

impl Collector {
    fn start(source: &KernelSource, netns: u64) -> Self {
        let events = source.events().clone();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let Ok(batch) = events.recv_timeout(Duration::from_millis(20)) else { continue };
                for event in batch {
                    match event {
                        Event::TcpBufferLimit(limit) if limit.netns == netns => seen.push(limit),
                        _ => {}
                    }
                }
            }
            seen
        });
        Collector { stop, thread }
    }

    /// Waits past a few drain intervals, then returns what arrived.
    fn finish(self) -> Vec<TcpBufferLimit> {
        thread::sleep(Duration::from_millis(150));
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("collector thread")
    }
}

fn is_remote(event: &TcpBufferLimit, ip: std::net::IpAddr) -> bool {
    match (event.remote, ip) {
        (IpAddr::V4((a, b, c, d)), std::net::IpAddr::V4(v4)) => [a, b, c, d] == v4.octets(),
        (IpAddr::V6((hi, lo)), std::net::IpAddr::V6(v6)) => {
            let o = v6.octets();
            hi == u64::from_be_bytes(o[..8].try_into().unwrap()) && lo == u64::from_be_bytes(o[8..].try_into().unwrap())
        }
        _ => false,
    }
}

/// Asserts that `transfer` produced a receive event (from the server's
/// socket, naming the client) and a send event (from the client's socket,
/// naming the server), both at this namespace's limit.
fn assert_both_directions(events: &[TcpBufferLimit], transfer: &Transfer, ip: std::net::IpAddr, netns: u64) {
    let receive = events
        .iter()
        .find(|e| e.direction == BufferDirection::Receive && e.remote_port == transfer.client_port && is_remote(e, ip));
    let receive = receive.unwrap_or_else(|| panic!("no receive event for {transfer:?} among {events:?}"));
    assert_eq!(receive.netns, netns);
    assert_eq!(receive.limit_bytes, LIMIT, "tcp_rmem[2] of the test namespace");
    assert!(receive.buffer_bytes >= NEAR, "{receive:?} is not near the limit");

    let send = events
        .iter()
        .find(|e| e.direction == BufferDirection::Send && e.remote_port == transfer.server_port && is_remote(e, ip));
    let send = send.unwrap_or_else(|| panic!("no send event for {transfer:?} among {events:?}"));
    assert_eq!(send.netns, netns);
    assert_eq!(send.limit_bytes, LIMIT, "tcp_wmem[2] of the test namespace");
    assert!(send.buffer_bytes >= NEAR, "{send:?} is not near the limit");
    assert!(send.srtt_us < 1_000_000, "loopback srtt {} us", send.srtt_us);
}

fn print_rate(label: &str, events: &[TcpBufferLimit], transfer: &Transfer) {
    let secs = transfer.elapsed.as_secs_f64();
    let count = |d: BufferDirection| events.iter().filter(|e| e.direction == d).count();
    println!(
        "{label}: {} MiB in {:.3} s ({:.1} Gbit/s); {} events ({} receive, {} send) = {:.1} events/s",
        transfer.bytes / MIB,
        secs,
        transfer.bytes as f64 * 8.0 / secs / 1e9,
        events.len(),
        count(BufferDirection::Receive),
        count(BufferDirection::Send),
        events.len() as f64 / secs
    );
}

fn print_costs(before: &[HookRunStats], after: &[HookRunStats]) {
    for stats in after {
        let base = before.iter().find(|b| b.hook == stats.hook);
        let runs = stats.run_count - base.map_or(0, |b| b.run_count);
        let ns = stats.run_time_ns - base.map_or(0, |b| b.run_time_ns);
        let per_run = if runs > 0 { ns as f64 / runs as f64 } else { 0.0 };
        println!("hook cost: {:<22} {runs:>9} runs {ns:>12} ns total {per_run:>8.1} ns/run", stats.hook);
    }
}

#[test]
fn tcp_buffer_limit_events_carry_the_namespace_its_limits_and_the_peer() {
    if harness::skip_without(&[Requirement::Root, Requirement::Tool("ip")]) {
        return;
    }
    let ns = test_namespace("events");
    let cookie = ns.cookie().expect("the test namespace's cookie");
    println!("test namespace {} has cookie {cookie}", ns.name());

    let accounting = RunTimeAccounting::enable().expect("enable BPF run-time accounting");
    let source = KernelSource::start(BpfConfig::default()).expect("start the kernel source");
    for hook in source.hooks() {
        println!("hook {:<22} {:<30} {:?}", hook.name, hook.attach_point, hook.state);
        assert_eq!(hook.state, HookState::Attached, "{} should attach on this kernel", hook.name);
    }

    // Locked buffers first: sk_rcvbuf/sk_sndbuf end up at twice the limit,
    // so only the lock filter keeps these sockets out.
    let collector = Collector::start(&source, cookie);
    let v4 = std::net::IpAddr::from([127, 0, 0, 1]);
    let locked = transfer(&ns, SocketAddr::new(v4, 0), 64 * MIB, Buffers::Locked);
    let events = collector.finish();
    print_rate("IPv4, buffers locked by the application", &events, &locked);
    let leaked: Vec<_> = events
        .iter()
        .filter(|e| {
            (e.direction == BufferDirection::Receive && e.remote_port == locked.client_port)
                || (e.direction == BufferDirection::Send && e.remote_port == locked.server_port)
        })
        .collect();
    assert!(leaked.is_empty(), "events from sockets with locked buffers: {leaked:?}");

    let collector = Collector::start(&source, cookie);
    let stats_before = source.run_stats().expect("run stats");
    let auto = transfer(&ns, SocketAddr::new(v4, 0), 200 * MIB, Buffers::AutoTuned);
    let stats_after = source.run_stats().expect("run stats");
    let events = collector.finish();
    print_rate("IPv4, auto-tuned buffers", &events, &auto);
    print_costs(&stats_before, &stats_after);
    assert_both_directions(&events, &auto, v4, cookie);
    for e in &events {
        assert!(e.buffer_bytes >= NEAR, "an event below the near-limit threshold: {e:?}");
    }
    // One record per direction and 25 ms at most (a race between CPUs may
    // let one extra through).
    let max_per_direction = (auto.elapsed.as_millis() / 25 + 2) as usize * 2;
    for d in [BufferDirection::Receive, BufferDirection::Send] {
        let n = events.iter().filter(|e| e.direction == d).count();
        assert!(n <= max_per_direction, "{n} {d:?} events in {:?} exceed the rate limit", auto.elapsed);
    }

    if has_ipv6_loopback(&ns) {
        let collector = Collector::start(&source, cookie);
        let v6 = std::net::IpAddr::from(Ipv6Addr::LOCALHOST);
        let over_v6 = transfer(&ns, SocketAddr::new(v6, 0), 64 * MIB, Buffers::AutoTuned);
        let events = collector.finish();
        print_rate("IPv6, auto-tuned buffers", &events, &over_v6);
        assert_both_directions(&events, &over_v6, v6, cookie);
    } else {
        println!("skipped the IPv6 transfer: ::1 is not available in the test namespace");
    }

    println!("lost events: {}", source.lost_events());
    let program_ids: Vec<u32> = stats_after.iter().map(|s| s.program_id).collect();
    let stopping = Instant::now();
    source.stop();
    let stop_took = stopping.elapsed();
    println!("stop took {stop_took:?}");
    assert!(stop_took < Duration::from_millis(500), "stop took {stop_took:?}");
    drop(accounting);

    // Nothing stays loaded: the programs go once their last reference does
    // (the kernel frees them after an RCU grace period, hence the wait).
    let deadline = Instant::now() + Duration::from_secs(2);
    for id in program_ids {
        while libbpf_rs::Program::fd_from_id(id).is_ok() {
            assert!(Instant::now() < deadline, "program {id} is still loaded after stop");
            thread::sleep(Duration::from_millis(10));
        }
    }
}

#[test]
fn batches_that_find_the_channel_full_count_as_lost() {
    if harness::skip_without(&[Requirement::Root, Requirement::Tool("ip")]) {
        return;
    }
    let ns = test_namespace("lost");
    // One batch fits; nobody reads, so every later batch is dropped.
    let config = BpfConfig { channel_capacity: 1, ..BpfConfig::default() };
    let source = KernelSource::start(config).expect("start the kernel source");
    assert_eq!(source.lost_events(), 0);
    let v4 = std::net::IpAddr::from([127, 0, 0, 1]);
    let mut transfers = 0;
    // Events are rate-limited to one per 25 ms and direction, and drained
    // every 10 ms: a few transfers give several batches.
    while source.lost_events() == 0 && transfers < 20 {
        transfer(&ns, SocketAddr::new(v4, 0), 64 * MIB, Buffers::AutoTuned);
        thread::sleep(Duration::from_millis(30));
        transfers += 1;
    }
    let lost = source.lost_events();
    println!("{lost} events lost to a full channel after {transfers} transfers");
    assert!(lost > 0, "no batch was dropped although the channel holds one and nobody reads");
    let held: usize = source.events().try_iter().map(|batch| batch.len()).sum();
    assert!(held > 0, "the one batch the channel holds is there");
    assert!(source.lost_events() >= lost, "the lost count never decreases");
}
