//! Kernel signals that no tracepoint carries, polled from /proc on a timer
//! thread of their own: `softnet-squeeze` (`/proc/net/softnet_stat`, global,
//! reported for the daemon's own namespace), and per tuned namespace
//! `route-table` (`rt6_stats` against `net.ipv6.route.max_size`) and
//! `fragment-memory` (`sockstat`/`sockstat6` FRAG memory against
//! `ipfrag_high_thresh`/`ip6frag_high_thresh`, with reassembly requests and
//! failures from `snmp`/`snmp6`) and `syn-overflow` (listen drops and
//! SYN-queue cookies in `netstat`, then the full listeners from a sock_diag
//! dump, see [`listeners`]).
//!
//! Every per-namespace file is opened once from inside its namespace (a
//! /proc/net file and a /proc/sys/net file stay bound to the namespace they
//! were opened in) and re-read from the start on every poll, so a poll never
//! enters a namespace. Events go into the same channel as the BPF events.

pub mod listeners;
mod parse;

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use crate::netns::NetnsRegistry;
use crate::probe::ProbeLine;
use crate::wit::{AddressFamily, Event, FragmentMemory, RouteTable, SoftnetSqueeze, SynOverflow};

use listeners::{DiagSocket, ListenerQueues};
pub use parse::{ListenCounters, SoftnetCpu};

/// At most this many `syn-overflow` events per namespace and poll (the
/// fullest listeners first).
const MAX_OVERFLOWING_LISTENERS: usize = 8;

/// How often and how close to a limit.
#[derive(Debug, Clone)]
pub struct ProcSignalsConfig {
    /// Time between polls. At least 10 ms.
    pub interval: Duration,
    /// "Near" a limit means within `limit >> near_limit_shift` of it. 1..=30.
    pub near_limit_shift: u32,
}

impl Default for ProcSignalsConfig {
    fn default() -> Self {
        Self { interval: Duration::from_secs(1), near_limit_shift: 2 }
    }
}

/// Why the poller could not start.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ProcSignalsError {
    /// A [`ProcSignalsConfig`] field is out of range.
    #[error("/proc signal config: {field} must be {requirement}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// The poller thread could not be spawned.
    #[error("spawning the /proc signal thread failed: {source}")]
    SpawnThread {
        /// The system error.
        source: std::io::Error,
    },
}

/// Shared between the poller and its handle.
#[derive(Debug, Default)]
struct Shared {
    /// Events dropped because the channel was full.
    dropped: AtomicU64,
}

/// The running poller; dropping it stops the thread.
pub struct ProcSignals {
    shared: Arc<Shared>,
    /// Dropped to stop the thread, which sleeps until its next poll or this.
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ProcSignals {
    /// Starts polling every namespace `registry` lists as tuned, posting
    /// batches into `events` (never blocking: a full channel drops the
    /// batch and counts it in [`Self::dropped_events`]).
    pub fn start(
        config: ProcSignalsConfig,
        registry: Arc<NetnsRegistry>,
        events: Sender<Vec<Event>>,
    ) -> Result<ProcSignals, ProcSignalsError> {
        if config.interval < Duration::from_millis(10) {
            return Err(ProcSignalsError::InvalidConfig { field: "interval", requirement: "at least 10 ms" });
        }
        if !(1..=30).contains(&config.near_limit_shift) {
            return Err(ProcSignalsError::InvalidConfig { field: "near_limit_shift", requirement: "between 1 and 30" });
        }
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let (stop, stopping) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("wasmtune-proc".to_string())
            .spawn(move || run(config, registry, events, (thread_shared, stopping)))
            .map_err(|source| ProcSignalsError::SpawnThread { source })?;
        Ok(ProcSignals { shared, stop: Some(stop), thread: Some(thread) })
    }

    /// Events dropped because the channel was full. Never decreases.
    pub fn dropped_events(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Stops and joins the thread (also done on drop).
    pub fn stop(self) {}
}

impl Drop for ProcSignals {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread's wait.
        self.stop.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the /proc signal thread panicked while stopping");
        }
    }
}

/// Whether each file the poller reads exists here, for `wasmtune support`.
pub fn probe_lines() -> Vec<ProbeLine> {
    [
        ("/proc/net/softnet_stat", "softnet-squeeze"),
        ("/proc/net/rt6_stats", "route-table"),
        ("/proc/sys/net/ipv6/route/max_size", "route-table"),
        ("/proc/net/sockstat", "fragment-memory (ipv4), memory-pressure relieved"),
        ("/proc/net/snmp", "fragment-memory (ipv4)"),
        ("/proc/sys/net/ipv4/ipfrag_high_thresh", "fragment-memory (ipv4)"),
        ("/proc/net/sockstat6", "fragment-memory (ipv6)"),
        ("/proc/net/snmp6", "fragment-memory (ipv6)"),
        ("/proc/sys/net/ipv6/ip6frag_high_thresh", "fragment-memory (ipv6)"),
        ("/proc/net/netstat", "syn-overflow"),
    ]
    .into_iter()
    .map(|(path, feeds)| match std::fs::read_to_string(path) {
        Ok(_) => ProbeLine { feature: path.to_string(), ok: true, detail: format!("polled; feeds {feeds}") },
        Err(e) => ProbeLine { feature: path.to_string(), ok: false, detail: format!("because reading it failed: {e}") },
    })
    .chain(std::iter::once(probe_sock_diag()))
    .collect()
}

fn probe_sock_diag() -> ProbeLine {
    let feature = "netlink sock_diag (TCP listeners)".to_string();
    match DiagSocket::open().and_then(|mut socket| socket.listeners()) {
        Ok(_) => ProbeLine { feature, ok: true, detail: "dumped; feeds syn-overflow (port and queues)".to_string() },
        Err(e) => ProbeLine { feature, ok: false, detail: format!("because {e}; syn-overflow comes without a port") },
    }
}

/// The files of one namespace, opened inside it; `None` where the kernel
/// lacks one (no IPv6 in this namespace, say).
struct NamespaceFiles {
    rt6_stats: Option<File>,
    route_max_size: Option<File>,
    families: [FamilyFiles; 2],
    listen: ListenFiles,
}

/// What `syn-overflow` reads in one namespace.
struct ListenFiles {
    netstat: Option<File>,
    diag: Option<DiagSocket>,
    /// The counters at the previous poll.
    previous: Option<ListenCounters>,
}

struct FamilyFiles {
    family: AddressFamily,
    sockstat_label: &'static str,
    sockstat: Option<File>,
    snmp: Option<File>,
    high_thresh: Option<File>,
    /// Reassembly (requests, failures) at the previous poll.
    previous: Option<(u64, u64)>,
}

impl NamespaceFiles {
    /// Opens every file from inside the namespace; the thread leaves it again
    /// before returning.
    fn open(registry: &NetnsRegistry, cookie: u64) -> Option<NamespaceFiles> {
        let _inside = match registry.enter(cookie) {
            Ok(guard) => guard,
            Err(error) => {
                tracing::debug!(%error, cookie, "cannot enter a namespace to open its /proc files");
                return None;
            }
        };
        let open = |path: &str| File::open(path).ok();
        Some(NamespaceFiles {
            rt6_stats: open("/proc/thread-self/net/rt6_stats"),
            route_max_size: open("/proc/sys/net/ipv6/route/max_size"),
            families: [
                FamilyFiles {
                    family: AddressFamily::Ipv4,
                    sockstat_label: "FRAG:",
                    sockstat: open("/proc/thread-self/net/sockstat"),
                    snmp: open("/proc/thread-self/net/snmp"),
                    high_thresh: open("/proc/sys/net/ipv4/ipfrag_high_thresh"),
                    previous: None,
                },
                FamilyFiles {
                    family: AddressFamily::Ipv6,
                    sockstat_label: "FRAG6:",
                    sockstat: open("/proc/thread-self/net/sockstat6"),
                    snmp: open("/proc/thread-self/net/snmp6"),
                    high_thresh: open("/proc/sys/net/ipv6/ip6frag_high_thresh"),
                    previous: None,
                },
            ],
            listen: ListenFiles {
                netstat: open("/proc/thread-self/net/netstat"),
                diag: DiagSocket::open()
                    .map_err(|error| tracing::debug!(%error, cookie, "syn-overflow will come without listener details"))
                    .ok(),
                previous: None,
            },
        })
    }
}

/// Reads an open /proc file again from its start.
fn reread(file: &mut Option<File>) -> Option<String> {
    let file = file.as_mut()?;
    file.seek(SeekFrom::Start(0)).ok()?;
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    Some(text)
}

fn near(value: u64, limit: u64, shift: u32) -> bool {
    limit > 0 && value >= limit - (limit >> shift)
}

struct Poller {
    config: ProcSignalsConfig,
    registry: Arc<NetnsRegistry>,
    own_cookie: Option<u64>,
    softnet: Option<File>,
    softnet_previous: HashMap<u32, SoftnetCpu>,
    namespaces: HashMap<u64, NamespaceFiles>,
}

fn run(
    config: ProcSignalsConfig,
    registry: Arc<NetnsRegistry>,
    events: Sender<Vec<Event>>,
    (shared, stopping): (Arc<Shared>, crossbeam_channel::Receiver<()>),
) {
    let mut poller = Poller {
        own_cookie: crate::netns::current_cookie().ok(),
        softnet: File::open("/proc/net/softnet_stat").ok(),
        softnet_previous: HashMap::new(),
        namespaces: HashMap::new(),
        config,
        registry,
    };
    let mut next = Instant::now();
    // One wake-up per poll: the thread sleeps until the next one is due or
    // its handle is dropped (the channel disconnects).
    while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
        stopping.recv_timeout(next.saturating_duration_since(Instant::now()))
    {
        next = Instant::now() + poller.config.interval;
        let batch = poller.poll();
        if batch.is_empty() {
            continue;
        }
        match events.try_send(batch) {
            Ok(()) => {}
            Err(TrySendError::Full(dropped) | TrySendError::Disconnected(dropped)) => {
                shared.dropped.fetch_add(dropped.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

impl Poller {
    fn poll(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        self.poll_softnet(&mut out);
        let tuned = self.registry.list();
        self.namespaces.retain(|cookie, _| tuned.iter().any(|ns| ns.cookie == *cookie));
        for ns in tuned {
            if !self.namespaces.contains_key(&ns.cookie) {
                match NamespaceFiles::open(&self.registry, ns.cookie) {
                    Some(files) => {
                        self.namespaces.insert(ns.cookie, files);
                    }
                    None => continue,
                }
            }
            if let Some(files) = self.namespaces.get_mut(&ns.cookie) {
                poll_namespace(ns.cookie, files, self.config.near_limit_shift, &mut out);
            }
        }
        out
    }

    fn poll_softnet(&mut self, out: &mut Vec<Event>) {
        let Some(own_cookie) = self.own_cookie else { return };
        let Some(text) = reread(&mut self.softnet) else { return };
        for now in parse::softnet_stat(&text) {
            if let Some(before) = self.softnet_previous.insert(now.cpu, now) {
                let squeezes = now.time_squeeze.saturating_sub(before.time_squeeze);
                if squeezes > 0 {
                    out.push(Event::SoftnetSqueeze(SoftnetSqueeze {
                        netns: own_cookie,
                        cpu: now.cpu,
                        squeezes,
                        processed: now.processed.saturating_sub(before.processed),
                    }));
                }
            }
        }
    }
}

fn poll_namespace(cookie: u64, files: &mut NamespaceFiles, shift: u32, out: &mut Vec<Event>) {
    poll_listen_drops(cookie, &mut files.listen, out);
    let entries = reread(&mut files.rt6_stats).and_then(|t| parse::rt6_entries(&t));
    let max_size = reread(&mut files.route_max_size).and_then(|t| parse::first_integer(&t));
    if let (Some(entries), Some(max_size)) = (entries, max_size)
        && near(entries, max_size, shift)
    {
        out.push(Event::RouteTable(RouteTable {
            netns: cookie,
            entries: u32::try_from(entries).unwrap_or(u32::MAX),
            max_size: u32::try_from(max_size).unwrap_or(u32::MAX),
        }));
    }
    for family in &mut files.families {
        let memory = reread(&mut family.sockstat).and_then(|t| parse::frag_memory(&t, family.sockstat_label));
        let high = reread(&mut family.high_thresh).and_then(|t| parse::first_integer(&t));
        let reassembly = reread(&mut family.snmp).and_then(|t| match family.family {
            AddressFamily::Ipv4 => parse::snmp_reassembly(&t),
            AddressFamily::Ipv6 => parse::snmp6_reassembly(&t),
        });
        let (Some(memory), Some(high)) = (memory, high) else { continue };
        let (requests, failures) = match (reassembly, family.previous) {
            (Some(now), Some(before)) => (now.0.saturating_sub(before.0), now.1.saturating_sub(before.1)),
            _ => (0, 0),
        };
        if reassembly.is_some() {
            family.previous = reassembly;
        }
        if near(memory, high, shift) || failures > 0 {
            out.push(Event::FragmentMemory(FragmentMemory {
                netns: cookie,
                family: family.family,
                bytes: memory,
                high_thresh: high,
                reassembly_failures: failures,
                reassembly_requests: requests,
            }));
        }
    }
}

/// `syn-overflow` from the namespace's counters: when listen drops or
/// SYN-queue cookies grew since the previous poll, one event per listener
/// whose queue is full now, or one with port 0 when none is (or the
/// listeners cannot be read).
fn poll_listen_drops(cookie: u64, files: &mut ListenFiles, out: &mut Vec<Event>) {
    let Some(now) = reread(&mut files.netstat).and_then(|t| parse::tcp_ext_listen(&t)) else { return };
    let Some(before) = files.previous.replace(now) else { return };
    let drops = now.listen_drops.saturating_sub(before.listen_drops);
    let queue_full_cookies = now.syn_queue_cookies.saturating_sub(before.syn_queue_cookies);
    if drops == 0 && queue_full_cookies == 0 {
        return;
    }
    let cookie_sent = now.cookies_sent > before.cookies_sent;
    let listeners = match files.diag.as_mut().map(DiagSocket::listeners) {
        Some(Ok(listeners)) => listeners,
        Some(Err(error)) => {
            tracing::debug!(%error, cookie, "reading the listeners of a namespace failed");
            Vec::new()
        }
        None => Vec::new(),
    };
    overflow_events(cookie, cookie_sent, listeners, out);
}

fn overflow_events(netns: u64, cookie_sent: bool, listeners: Vec<ListenerQueues>, out: &mut Vec<Event>) {
    let mut full: Vec<ListenerQueues> = listeners.into_iter().filter(ListenerQueues::full).collect();
    let fill = |l: &ListenerQueues| u64::from(l.established.max(l.syn_queued)) * 1024 / u64::from(l.max_queued.max(1));
    full.sort_by_key(|l| std::cmp::Reverse(fill(l)));
    full.truncate(MAX_OVERFLOWING_LISTENERS);
    if full.is_empty() {
        full.push(ListenerQueues::default());
    }
    out.extend(full.into_iter().map(|l| {
        Event::SynOverflow(SynOverflow {
            netns,
            local_port: l.port,
            queued: l.syn_queued,
            max_queued: l.max_queued,
            cookie_sent,
            established: l.established,
        })
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_events_name_the_full_listeners_fullest_first() {
        let listener =
            |port, syn_queued, established, max_queued| ListenerQueues { port, syn_queued, established, max_queued };
        let mut out = Vec::new();
        overflow_events(9, true, vec![listener(22, 0, 0, 128), listener(80, 2, 3, 2), listener(81, 8, 0, 4)], &mut out);
        let ports: Vec<(u16, bool)> = out
            .iter()
            .map(|e| match e {
                Event::SynOverflow(s) => (s.local_port, s.cookie_sent),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ports, [(81, true), (80, true)]);
        let mut out = Vec::new();
        overflow_events(9, false, vec![listener(22, 0, 0, 128)], &mut out);
        assert!(
            matches!(&out[..], [Event::SynOverflow(s)] if s.local_port == 0 && s.max_queued == 0 && !s.cookie_sent)
        );
    }

    #[test]
    fn near_is_within_the_shifted_fraction() {
        assert!(near(768, 1024, 2));
        assert!(!near(767, 1024, 2));
        assert!(!near(0, 0, 2));
    }

    #[test]
    fn rejects_out_of_range_config() {
        let registry = Arc::new(NetnsRegistry::discover(&[]).expect("discover"));
        let (tx, _rx) = crossbeam_channel::bounded(1);
        let bad = ProcSignalsConfig { interval: Duration::ZERO, ..ProcSignalsConfig::default() };
        assert!(matches!(
            ProcSignals::start(bad, registry.clone(), tx.clone()),
            Err(ProcSignalsError::InvalidConfig { field: "interval", .. })
        ));
        let bad = ProcSignalsConfig { near_limit_shift: 0, ..ProcSignalsConfig::default() };
        assert!(matches!(
            ProcSignals::start(bad, registry, tx),
            Err(ProcSignalsError::InvalidConfig { field: "near_limit_shift", .. })
        ));
    }
}
