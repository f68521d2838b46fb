//! The tcp-buffer policy: reads the limit an event is about, asks
//! [`crate::tuner`] what to do, and carries it out through a [`Host`] —
//! requesting the change, retrying once at a narrower cap, turning receive
//! buffer auto-tuning on after an rmem raise. The SDK's [`Tunables`] keeps
//! the administrator's overrides and says each problem once.
//!
//! Each tunable is read on its own ([`Tunables::read`]): one this kernel
//! lacks, or the host refuses, disables only the decisions that need it
//! (see [`crate::memory`] and [`crate::syn`]).

use std::collections::BTreeMap;

use wasmtune_sdk::{
    BufferDirection, Change, Denial, Event, InstantMs, Level, MemoryLevel, MemoryPressure, NamespaceChange, NetnsId,
    Protocol, SynOverflow, TcpBufferLimit, Tunables,
};

use crate::memory::{self, MemoryState, Snapshot};
use crate::syn::{self, SynState};
use crate::tuner::{self, BufferLimits, Decision, Lane};

/// The sysctl that lets the kernel grow receive buffers toward `tcp_rmem[2]`.
pub const MODERATE_RCVBUF: &str = "net.ipv4.tcp_moderate_rcvbuf";
/// Scenario of turning receive buffer auto-tuning back on.
pub const SCENARIO_AUTOTUNING: &str = "receive buffer auto-tuning is off";

/// Every sysctl the policy changes (its manifest's).
pub const TUNABLES: [&str; 9] = [
    memory::TCP_MEM,
    memory::TCP_RMEM,
    memory::TCP_WMEM,
    MODERATE_RCVBUF,
    memory::NO_METRICS_SAVE,
    memory::NO_SSTHRESH_METRICS_SAVE,
    memory::HIGH_ORDER_ALLOC_DISABLE,
    syn::MAX_SYN_BACKLOG,
    syn::SYNCOOKIES,
];

/// What the policy needs from the host beyond sysctls, logs, the clock and
/// the state store: the SDK's imports in the component, the SDK's fake in
/// unit tests.
pub trait Host: wasmtune_sdk::Host {
    /// A quarter of RAM in pages: the most `tcp_mem` may reach.
    fn memory_cap_pages(&mut self) -> u64;

    /// The host's state store, kept across instance rebuilds: what `key`
    /// holds.
    fn load(&mut self, key: &str) -> Option<Vec<u8>> {
        self.state_get(key)
    }

    /// Sets (`Some`) or removes (`None`) `key` in the state store. A full
    /// store costs only the memory of a rebuild, so it is said, not fatal.
    fn store(&mut self, key: &str, value: Option<&[u8]>) {
        match value {
            Some(value) => {
                if let Err(denial) = self.state_set(key, value) {
                    self.log(Level::Warn, &format!("cannot keep {key} across restarts: {}", denial.explain()));
                }
            }
            None => self.state_delete(key),
        }
    }
}

/// State-store key of a namespace's low-memory mode.
fn low_memory_key(netns: NetnsId) -> String {
    format!("low-memory/{netns}")
}

/// The policy's state: the learning rate and one [`Lane`] per namespace and
/// direction it has seen.
pub struct TcpBuffer<H> {
    learning_rate: u8,
    // Ordered collections rather than hash maps: no random seed to ask the
    // host for, and a policy that replays identically.
    lanes: BTreeMap<(NetnsId, BufferDirection), Lane>,
    memory: BTreeMap<NetnsId, MemoryState>,
    /// The highest `tcp_mem` value the host accepted, once a raise past it
    /// was refused as out of bounds (the administrator's narrower grant).
    tcp_mem_cap: Option<u64>,
    syn: BTreeMap<NetnsId, SynState>,
    tunables: Tunables<H>,
}

impl<H: Host> TcpBuffer<H> {
    pub fn new(host: H, learning_rate: u8) -> TcpBuffer<H> {
        TcpBuffer {
            learning_rate,
            lanes: BTreeMap::new(),
            memory: BTreeMap::new(),
            tcp_mem_cap: None,
            syn: BTreeMap::new(),
            tunables: Tunables::with_host(host, &TUNABLES),
        }
    }

    pub fn handle(&mut self, event: &Event) {
        match event {
            Event::TcpBufferLimit(hit) => self.on_limit(hit),
            Event::MemoryPressure(pressure) => self.on_memory(pressure),
            Event::SynOverflow(overflow) => self.on_syn(overflow),
            Event::NamespaceChange(change) => {
                self.on_namespace(change);
                self.tunables.observe(event);
            }
            // Overrides; lost events need no catching up: the kernel reports
            // sockets again while they stay at the limit.
            other => self.tunables.observe(other),
        }
    }

    /// Forgets a namespace that went away, here and in the state store.
    fn on_namespace(&mut self, change: &NamespaceChange) {
        if !change.created {
            self.lanes.retain(|(lane_netns, _), _| *lane_netns != change.netns);
            self.memory.remove(&change.netns);
            self.tunables.host().store(&low_memory_key(change.netns), None);
        }
    }

    /// `netns`'s memory state, read back from the state store after an
    /// instance rebuild so that a low-memory mode entered before is undone.
    fn memory_state(&mut self, netns: NetnsId) -> &mut MemoryState {
        if !self.memory.contains_key(&netns) {
            let stored = self.tunables.host().load(&low_memory_key(netns));
            let state = stored
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| MemoryState::decode(&text))
                .unwrap_or_default();
            self.memory.insert(netns, state);
        }
        self.memory.entry(netns).or_default()
    }

    /// `name` in `netns` as exactly `N` integers, or `None` when there is
    /// none to decide with (said once by [`Tunables::read`]).
    fn read_fields<const N: usize>(&mut self, netns: NetnsId, name: &str) -> Option<[i64; N]> {
        self.tunables.read(netns, name, N).and_then(|fields| <[i64; N]>::try_from(fields).ok())
    }

    fn on_memory(&mut self, pressure: &MemoryPressure) {
        if pressure.protocol != Protocol::Tcp {
            return;
        }
        let netns = pressure.netns;
        // tcp_mem and high_order_alloc_disable exist only in the initial namespace.
        let global = wasmtune_sdk::init_netns().unwrap_or(netns);
        let snapshot = Snapshot {
            tcp_mem: self.read_fields(global, memory::TCP_MEM),
            rmem: self.read_fields(netns, memory::TCP_RMEM),
            wmem: self.read_fields(netns, memory::TCP_WMEM),
            no_metrics_save: self.tunables.read_one(netns, memory::NO_METRICS_SAVE),
            no_ssthresh_metrics_save: self.tunables.read_one(netns, memory::NO_SSTHRESH_METRICS_SAVE),
            high_order_alloc_disable: self.tunables.read_one(global, memory::HIGH_ORDER_ALLOC_DISABLE),
            max_syn_backlog: self.tunables.read_one(netns, memory::MAX_SYN_BACKLOG),
        };
        let mut cap = self.tunables.host().memory_cap_pages().min(self.tcp_mem_cap.unwrap_or(u64::MAX));
        // A tcp_mem raise refused as out of bounds reveals the administrator's
        // narrower cap: decide once more under it, so that exhaustion at that
        // cap enters low-memory mode as it would at a quarter of RAM.
        for _ in 0..2 {
            let rate = self.learning_rate;
            let state = self.memory_state(netns);
            let was_low = state.in_low_memory();
            let changes = state.decide(pressure, &snapshot, rate, cap);
            if state.in_low_memory() != was_low {
                let encoded = state.encode();
                self.tunables.host().store(&low_memory_key(netns), encoded.as_deref().map(str::as_bytes));
            }
            if changes.is_empty() && pressure.level != MemoryLevel::Relieved && snapshot.tcp_mem.is_some() {
                let message = format!(
                    "tcp_mem is at its cap of {cap} pages (a quarter of RAM, or the administrator's limit) and TCP memory in netns {netns} is still short"
                );
                self.tunables.say_once(&format!("{netns}/tcp_mem cap"), Level::Info, &message);
            }
            let (refused_bound, settled) = self.request_memory(netns, global, &changes);
            if pressure.level == MemoryLevel::Relieved && !settled.is_empty() {
                let state = self.memory_state(netns);
                for name in &settled {
                    state.restored(name);
                }
                let encoded = state.encode();
                self.tunables.host().store(&low_memory_key(netns), encoded.as_deref().map(str::as_bytes));
            }
            match refused_bound {
                Some(narrower) if narrower < cap => {
                    cap = narrower;
                    self.tcp_mem_cap = Some(narrower);
                }
                _ => return,
            }
        }
    }

    /// Requests `changes`, the global tunables in `global` and the others in
    /// `netns`; returns the bound that refused a `tcp_mem` change, if any,
    /// and the tunables settled: accepted, or the administrator's now.
    fn request_memory(&mut self, netns: NetnsId, global: NetnsId, changes: &[Change]) -> (Option<u64>, Vec<String>) {
        let mut settled = Vec::new();
        for change in changes {
            let target = if memory::is_global(&change.name) { global } else { netns };
            if self.tunables.overridden(target, &change.name) {
                settled.push(change.name.clone());
                continue;
            }
            // Asked directly: a tcp_mem bound is learned, not logged.
            match self.tunables.host().request(target, change) {
                Ok(()) => settled.push(change.name.clone()),
                Err(Denial::OutOfBounds(bounds)) if change.name == memory::TCP_MEM => {
                    return (Some(bounds.max.max(0).unsigned_abs()), settled);
                }
                // Too soon after the change it undoes (a relief right after
                // the mode was entered): kept, and asked for at the next relief.
                Err(denial @ Denial::RateLimited(_)) => self.tunables.log_denial(target, &change.name, &denial),
                Err(denial) => {
                    self.tunables.log_denial(target, &change.name, &denial);
                    settled.push(change.name.clone());
                }
            }
        }
        (None, settled)
    }

    fn on_syn(&mut self, overflow: &SynOverflow) {
        let netns = overflow.netns;
        let backlog = self.tunables.read_one(netns, syn::MAX_SYN_BACKLOG);
        let cookies = self.tunables.read_one(netns, syn::SYNCOOKIES);
        let now = self.tunables.now();
        let changes = self.syn.entry(netns).or_default().decide(overflow, backlog, cookies, self.learning_rate, now);
        for change in &changes {
            // Not asked for when the administrator owns it; a refusal is said
            // once by `Tunables`.
            let _ = self.tunables.request(netns, change);
        }
    }

    fn on_limit(&mut self, hit: &TcpBufferLimit) {
        let name = tuner::tunable(hit.direction);
        if self.tunables.overridden(hit.netns, name) {
            return;
        }
        let fields = self.tunables.read(hit.netns, name, 3);
        let Some(current) = fields.and_then(|fields| BufferLimits::from_fields(&fields)) else { return };
        let now = self.tunables.now();
        let lane = self.lanes.entry((hit.netns, hit.direction)).or_default();
        match lane.decide(hit, current, self.learning_rate, now) {
            Decision::Skip(_) => {}
            Decision::CapReached { cap } => self.cap_reached(hit, cap),
            Decision::Raise { max, reason } => self.raise(hit, current, max, reason),
            Decision::Shrink { max, reason } => self.shrink(hit, current, max, reason, now),
        }
    }

    /// Asks for the maximum `max`; the lane, not `Tunables`, waits for it to
    /// show, and an out-of-bounds refusal is retried once at the bound.
    fn raise(&mut self, hit: &TcpBufferLimit, current: BufferLimits, max: i64, reason: String) {
        let name = tuner::tunable(hit.direction);
        let change =
            |max: i64, reason: String| Change::new(name, current.with_max(max).to_vec(), tuner::SCENARIO_RAISE, reason);
        let mut requested = self.tunables.host().request(hit.netns, &change(max, reason.clone()));
        let mut new_max = max;
        if let Err(Denial::OutOfBounds(bounds)) = &requested {
            match self.lane(hit).out_of_bounds(current, bounds.max) {
                Some(cap) => {
                    let reason =
                        format!("{reason}; limited to {cap} bytes, the highest the administrator and host allow");
                    new_max = cap;
                    requested = self.tunables.host().request(hit.netns, &change(cap, reason));
                }
                None => {
                    if self.lane(hit).take_cap_report() {
                        self.cap_reached(hit, bounds.max);
                    }
                    return;
                }
            }
        }
        match requested {
            Ok(()) => {
                let now = self.tunables.now();
                self.lane(hit).requested(new_max, now);
                if hit.direction == BufferDirection::Receive {
                    self.ensure_receive_autotuning(hit.netns);
                }
            }
            Err(denial) => self.tunables.log_denial(hit.netns, name, &denial),
        }
    }

    fn shrink(&mut self, hit: &TcpBufferLimit, current: BufferLimits, max: i64, reason: String, now: InstantMs) {
        let name = tuner::tunable(hit.direction);
        let change = Change::new(name, current.with_max(max).to_vec(), tuner::SCENARIO_SHRINK, reason);
        match self.tunables.host().request(hit.netns, &change) {
            Ok(()) => self.lane(hit).requested(max, now),
            Err(denial) => self.tunables.log_denial(hit.netns, name, &denial),
        }
    }

    /// A larger `tcp_rmem[2]` only helps if the kernel grows receive buffers
    /// toward it, which `tcp_moderate_rcvbuf = 1` turns on.
    fn ensure_receive_autotuning(&mut self, netns: NetnsId) {
        if self.tunables.read_one(netns, MODERATE_RCVBUF) != Some(0) {
            return;
        }
        let reason = "tcp_rmem[2] was raised, but the kernel grows receive buffers toward it only while tcp_moderate_rcvbuf is 1; turning receive buffer auto-tuning back on";
        let change = Change::new(MODERATE_RCVBUF, vec![1], SCENARIO_AUTOTUNING, reason.to_string());
        if let Err(denial) = self.tunables.host().request(netns, &change) {
            self.tunables.log_denial(netns, MODERATE_RCVBUF, &denial);
        }
    }

    fn cap_reached(&mut self, hit: &TcpBufferLimit, cap: i64) {
        let message = format!(
            "{}[2] in netns {} is at its cap of {cap} bytes and sockets still reach it; not raising it further",
            tuner::short_name(hit.direction),
            hit.netns
        );
        self.tunables.host().log(Level::Info, &message);
    }

    fn lane(&mut self, hit: &TcpBufferLimit) -> &mut Lane {
        self.lanes.entry((hit.netns, hit.direction)).or_default()
    }

    /// The host, for tests that look at what it was asked.
    pub fn host(&mut self) -> &mut H {
        self.tunables.host()
    }

    /// The host back, as a rebuilt instance finds it.
    pub fn into_host(self) -> H {
        self.tunables.into_host()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtune_sdk::testing::FakeHost;
    use wasmtune_sdk::{AdminRelease, IpAddr};

    use crate::memory::{TCP_RMEM, TCP_WMEM};

    const NETNS: NetnsId = 4026532000;

    impl Host for FakeHost {
        /// A machine with 16 GiB of 4 KiB pages: a cap no test reaches.
        fn memory_cap_pages(&mut self) -> u64 {
            1 << 20
        }
    }

    /// Every tunable granted within `min..=max`, except that auto-tuning
    /// may only be turned on.
    fn granted(min: i64, max: i64) -> FakeHost {
        TUNABLES.iter().fold(FakeHost::new(), |host, name| match *name {
            MODERATE_RCVBUF => host.grant(name, 1, 1),
            _ => host.grant(name, min, max),
        })
    }

    /// [`granted`], with `NETNS` holding `rmem`, the kernel's default
    /// `tcp_wmem` and `moderate` auto-tuning.
    fn host_within(min: i64, max: i64, rmem: [i64; 3], moderate: i64) -> FakeHost {
        let mut host = granted(min, max);
        host.set_sysctl(NETNS, TCP_RMEM, &rmem);
        host.set_sysctl(NETNS, TCP_WMEM, &[4096, 16384, 4194304]);
        host.set_sysctl(NETNS, MODERATE_RCVBUF, &[moderate]);
        host
    }

    fn host(rmem: [i64; 3], moderate: i64) -> FakeHost {
        host_within(4096, tuner::GRANT_MAX, rmem, moderate)
    }

    /// The names requested so far, in order.
    fn requested(policy: &mut TcpBuffer<FakeHost>) -> Vec<String> {
        policy.host().requests().iter().map(|r| r.change.name.clone()).collect()
    }

    fn event(direction: BufferDirection, buffer: u32, limit: u32) -> Event {
        Event::TcpBufferLimit(TcpBufferLimit {
            netns: NETNS,
            direction,
            buffer_bytes: buffer,
            limit_bytes: limit,
            queued_bytes: buffer / 2,
            srtt_us: 60,
            remote: IpAddr::V4((10, 0, 0, 2)),
            remote_port: 5201,
        })
    }

    fn receive(buffer: u32, limit: u32) -> Event {
        event(BufferDirection::Receive, buffer, limit)
    }

    fn batch(policy: &mut TcpBuffer<FakeHost>, events: &[Event]) {
        for e in events {
            // As the export glue does before the policy sees a batch.
            wasmtune_sdk::netns::observe(e);
            policy.handle(e);
        }
        policy.host().apply();
        policy.host().advance(200);
    }

    #[test]
    fn a_batch_of_hits_raises_once_and_enables_autotuning() {
        let mut policy = TcpBuffer::new(host([4096, 65536, 98304], 0), 4);
        batch(&mut policy, &[receive(98304, 98304), receive(98000, 98304), receive(98304, 98304)]);
        assert_eq!(policy.host().value(NETNS, "net.ipv4.tcp_rmem"), Some(&[4096, 65536, 122880][..]));
        assert_eq!(policy.host().value(NETNS, MODERATE_RCVBUF), Some(&[1][..]));
        assert_eq!(requested(&mut policy), ["net.ipv4.tcp_rmem", MODERATE_RCVBUF]);
        assert_eq!(policy.host().requests()[0].change.scenario, tuner::SCENARIO_RAISE);
        assert_eq!(policy.host().requests()[1].change.scenario, SCENARIO_AUTOTUNING);
        assert!(
            policy.host().logs().is_empty(),
            "a raise is explained by its reason, not a log line: {:?}",
            policy.host().logs()
        );

        // The next batch still carries sockets limited by the old value.
        batch(&mut policy, &[receive(98304, 98304)]);
        assert_eq!(policy.host().requests().len(), 2);
        // Sockets reaching the new limit raise it again; auto-tuning is on.
        batch(&mut policy, &[receive(122880, 122880)]);
        assert_eq!(policy.host().value(NETNS, "net.ipv4.tcp_rmem"), Some(&[4096, 65536, 153600][..]));
        assert_eq!(policy.host().requests().len(), 3);
    }

    #[test]
    fn an_admin_override_stops_that_tunable_only() {
        let mut policy = TcpBuffer::new(host([4096, 65536, 98304], 1), 4);
        let taken = wasmtune_sdk::AdminOverride {
            netns: NETNS,
            sysctl: "net.ipv4.tcp_rmem".into(),
            pid: 42,
            comm: "sysctl".into(),
        };
        batch(&mut policy, &[Event::AdminOverride(taken)]);
        assert!(
            policy.host().logs()[0].1.contains("sysctl (42) changed net.ipv4.tcp_rmem"),
            "{:?}",
            policy.host().logs()
        );
        batch(&mut policy, &[receive(98304, 98304), event(BufferDirection::Send, 4194304, 4194304)]);
        assert_eq!(requested(&mut policy), ["net.ipv4.tcp_wmem"], "rmem is the administrator's now");
    }

    #[test]
    fn memory_pressure_raises_tcp_mem_through_the_host() {
        let mut host = host_within(1, tuner::GRANT_MAX, [4096, 65536, 98304], 1);
        for (name, value) in [
            (memory::TCP_MEM, &[1000, 2000, 4000][..]),
            (memory::NO_METRICS_SAVE, &[0]),
            (memory::NO_SSTHRESH_METRICS_SAVE, &[0]),
            (memory::HIGH_ORDER_ALLOC_DISABLE, &[0]),
            (memory::MAX_SYN_BACKLOG, &[1024]),
        ] {
            host.set_sysctl(NETNS, name, value);
        }
        let mut policy = TcpBuffer::new(host, 4);
        let pressure = MemoryPressure {
            netns: NETNS,
            protocol: Protocol::Tcp,
            level: MemoryLevel::Pressure,
            pages: 2100,
            limits: (1000, 2000, 4000),
        };
        batch(&mut policy, &[Event::MemoryPressure(pressure)]);
        assert_eq!(policy.host().value(NETNS, memory::TCP_MEM), Some(&[1250, 2500, 5000][..]));
        assert_eq!(policy.host().requests()[0].change.scenario, memory::SCENARIO_PRESSURE);
        // UDP pressure is udp-buffer's business.
        batch(&mut policy, &[Event::MemoryPressure(MemoryPressure { protocol: Protocol::Udp, ..pressure })]);
        assert_eq!(policy.host().requests().len(), 1);
    }

    #[test]
    fn exhaustion_at_the_administrator_cap_enters_low_memory_mode_where_each_tunable_lives() {
        const INIT: NetnsId = 4026531840;
        // The administrator's grant narrows tcp_mem to 200 pages.
        let mut host = host_within(0, tuner::GRANT_MAX, [4096, 131072, 6291456], 1).grant(memory::TCP_MEM, 1, 200);
        for (netns, name, value) in [
            (INIT, memory::TCP_MEM, &[32, 64, 128][..]),
            (INIT, memory::HIGH_ORDER_ALLOC_DISABLE, &[0]),
            (NETNS, memory::NO_METRICS_SAVE, &[0]),
            (NETNS, memory::NO_SSTHRESH_METRICS_SAVE, &[0]),
            (NETNS, memory::MAX_SYN_BACKLOG, &[1024]),
        ] {
            host.set_sysctl(netns, name, value);
        }
        let mut policy = TcpBuffer::new(host, 4);
        let init = wasmtune_sdk::NamespaceChange { netns: INIT, name: "init".into(), created: true };
        let memory = |level, pages| {
            Event::MemoryPressure(MemoryPressure {
                netns: NETNS,
                protocol: Protocol::Tcp,
                level,
                pages,
                limits: (32, 64, 128),
            })
        };
        batch(&mut policy, &[Event::NamespaceChange(init), memory(MemoryLevel::Pressure, 100)]);
        assert_eq!(policy.host().value(INIT, memory::TCP_MEM), Some(&[40, 80, 160][..]));
        batch(&mut policy, &[memory(MemoryLevel::Exhausted, 160)]);
        assert_eq!(policy.host().value(INIT, memory::TCP_MEM), Some(&[40, 80, 200][..]));
        // 250 is refused: 200 is the cap, and exhaustion there is low memory.
        batch(&mut policy, &[memory(MemoryLevel::Exhausted, 200)]);
        assert_eq!(policy.host().value(INIT, memory::TCP_MEM), Some(&[40, 80, 200][..]));
        assert_eq!(policy.host().value(INIT, memory::HIGH_ORDER_ALLOC_DISABLE), Some(&[1][..]));
        assert_eq!(policy.host().value(NETNS, memory::NO_METRICS_SAVE), Some(&[1][..]));
        assert_eq!(policy.host().value(NETNS, memory::NO_SSTHRESH_METRICS_SAVE), Some(&[1][..]));
        assert_eq!(policy.host().value(NETNS, memory::MAX_SYN_BACKLOG), Some(&[768][..]));
        assert_eq!(policy.host().value(NETNS, memory::TCP_RMEM), Some(&[4096, 131072, 4718592][..]));
        let low: Vec<&str> = policy
            .host()
            .requests()
            .iter()
            .filter(|r| r.change.scenario == memory::SCENARIO_LOW_MEMORY)
            .map(|r| r.change.name.as_str())
            .collect();
        assert_eq!(low.len(), 6, "{low:?}");
        assert!(
            !policy.host().logs().iter().any(|(level, _)| *level == Level::Warn),
            "nothing asked of a namespace without the tunable: {:?}",
            policy.host().logs()
        );
        // A rebuilt instance (after a fault) starts from the host's store.
        let mut policy = TcpBuffer::new(policy.into_host(), 4);
        batch(&mut policy, &[memory(MemoryLevel::Relieved, 20)]);
        assert_eq!(policy.host().value(INIT, memory::HIGH_ORDER_ALLOC_DISABLE), Some(&[0][..]));
        assert_eq!(policy.host().value(NETNS, memory::NO_METRICS_SAVE), Some(&[0][..]));
        assert_eq!(policy.host().value(NETNS, memory::NO_SSTHRESH_METRICS_SAVE), Some(&[0][..]));
        assert_eq!(policy.host().value(NETNS, memory::MAX_SYN_BACKLOG), Some(&[1024][..]));
    }

    #[test]
    fn send_hits_raise_tcp_wmem_and_leave_autotuning_alone() {
        let mut policy = TcpBuffer::new(host([4096, 65536, 98304], 0), 4);
        batch(&mut policy, &[event(BufferDirection::Send, 4194304, 4194304)]);
        assert_eq!(policy.host().value(NETNS, "net.ipv4.tcp_wmem"), Some(&[4096, 16384, 5242880][..]));
        assert_eq!(policy.host().value(NETNS, MODERATE_RCVBUF), Some(&[0][..]));
        assert_eq!(policy.host().requests().len(), 1);
    }

    #[test]
    fn an_administrator_cap_is_retried_once_then_reported_once() {
        let mut policy = TcpBuffer::new(host_within(4096, 7_000_000, [4096, 65536, 6_000_000], 1), 4);
        batch(&mut policy, &[receive(6_000_000, 6_000_000)]);
        assert_eq!(policy.host().value(NETNS, "net.ipv4.tcp_rmem"), Some(&[4096, 65536, 7_000_000][..]));
        let retried: Vec<i64> = policy.host().requests().iter().map(|r| r.change.fields[2]).collect();
        assert_eq!(retried, [7_500_000, 7_000_000]);
        assert!(
            policy.host().requests()[1]
                .change
                .reason
                .ends_with("limited to 7000000 bytes, the highest the administrator and host allow")
        );

        for _ in 0..3 {
            batch(&mut policy, &[receive(7_000_000, 7_000_000)]);
        }
        assert_eq!(policy.host().requests().len(), 2, "no requests past the learned cap");
        assert_eq!(policy.host().logs().len(), 1, "{:?}", policy.host().logs());
        assert_eq!(
            policy.host().logs()[0],
            (
                Level::Info,
                format!(
                    "tcp_rmem[2] in netns {NETNS} is at its cap of 7000000 bytes and sockets still reach it; not raising it further"
                )
            )
        );
    }

    #[test]
    fn a_cap_found_by_denial_is_reported_once() {
        let mut policy = TcpBuffer::new(host_within(4096, 7_000_000, [4096, 65536, 7_000_000], 1), 4);
        batch(&mut policy, &[receive(7_000_000, 7_000_000), receive(7_000_000, 7_000_000)]);
        assert_eq!(policy.host().requests().len(), 1, "the second event knows the cap");
        assert_eq!(policy.host().logs().len(), 1);
        assert!(policy.host().logs()[0].1.contains("at its cap of 7000000 bytes"));
    }

    #[test]
    fn denials_are_logged_once_per_kind_and_namespace() {
        let overridden = Denial::AdminOverride("net.ipv4.tcp_rmem written by pid 42".into());
        let mut policy = TcpBuffer::new(host([4096, 65536, 98304], 1).refuse(TCP_RMEM, overridden), 4);
        for _ in 0..5 {
            batch(&mut policy, &[receive(98304, 98304)]);
        }
        assert_eq!(policy.host().requests().len(), 5, "nothing pending after a refusal");
        assert_eq!(
            policy.host().logs(),
            [(
                Level::Info,
                format!(
                    "net.ipv4.tcp_rmem in netns {NETNS} not changed: the administrator changed it (net.ipv4.tcp_rmem written by pid 42), so it is left alone"
                )
            )]
        );
        policy.host().set_refusal(TCP_RMEM, Some(Denial::RateLimited(40)));
        batch(&mut policy, &[receive(98304, 98304)]);
        batch(&mut policy, &[receive(98304, 98304)]);
        assert_eq!(policy.host().logs().len(), 2);
        assert_eq!(policy.host().logs()[1].0, Level::Debug);
    }

    #[test]
    fn an_unreadable_tunable_is_reported_once_and_never_requested() {
        // Granted, but nothing readable: the namespace is not tuned.
        let mut policy = TcpBuffer::new(granted(4096, tuner::GRANT_MAX), 4);
        batch(&mut policy, &[receive(98304, 98304), receive(98304, 98304)]);
        assert!(policy.host().requests().is_empty());
        assert_eq!(policy.host().logs().len(), 1);
        assert!(policy.host().logs()[0].1.contains("is not tuned by this host"), "{:?}", policy.host().logs());
    }

    #[test]
    fn a_malformed_value_is_left_alone() {
        let mut policy = TcpBuffer::new(host([4096, 65536, 98304], 1), 4);
        policy.host().set_sysctl(NETNS, TCP_RMEM, &[4096, 98304]);
        batch(&mut policy, &[receive(98304, 98304), receive(98304, 98304)]);
        assert!(policy.host().requests().is_empty());
        assert_eq!(policy.host().logs().len(), 1);
        assert!(policy.host().logs()[0].1.contains("holds 2 integer(s) here, not 3"), "{:?}", policy.host().logs());
    }

    #[test]
    fn lost_events_change_nothing() {
        let mut policy = TcpBuffer::new(host([4096, 65536, 98304], 1), 4);
        batch(&mut policy, &[Event::Lost(12)]);
        assert!(policy.host().requests().is_empty() && policy.host().logs().is_empty());
    }

    #[test]
    fn memory_pressure_raises_tcp_mem_on_a_kernel_without_high_order_alloc_disable() {
        let mut host =
            host_within(1, tuner::GRANT_MAX, [4096, 65536, 98304], 1).missing(memory::HIGH_ORDER_ALLOC_DISABLE);
        for (name, value) in [
            (memory::TCP_MEM, &[1000, 2000, 4000][..]),
            (memory::NO_METRICS_SAVE, &[0]),
            (memory::NO_SSTHRESH_METRICS_SAVE, &[0]),
            (memory::MAX_SYN_BACKLOG, &[1024]),
        ] {
            host.set_sysctl(NETNS, name, value);
        }
        let mut policy = TcpBuffer::new(host, 4);
        let pressure = |level| {
            Event::MemoryPressure(MemoryPressure {
                netns: NETNS,
                protocol: Protocol::Tcp,
                level,
                pages: 2100,
                limits: (1000, 2000, 4000),
            })
        };
        batch(&mut policy, &[pressure(MemoryLevel::Pressure)]);
        assert_eq!(policy.host().value(NETNS, memory::TCP_MEM), Some(&[1250, 2500, 5000][..]));
        assert!(
            !policy.host().logs().iter().any(|(level, _)| *level == Level::Warn),
            "the host says what is missing: {:?}",
            policy.host().logs()
        );
    }

    #[test]
    fn a_syn_flood_turns_cookies_on_when_the_backlog_is_unreadable() {
        let host = host_within(0, tuner::GRANT_MAX, [4096, 65536, 98304], 1).sysctl(NETNS, syn::SYNCOOKIES, &[0]);
        let mut policy = TcpBuffer::new(host, 4);
        let flood = SynOverflow {
            netns: NETNS,
            local_port: 80,
            queued: 128,
            max_queued: 128,
            cookie_sent: false,
            established: 0,
        };
        batch(&mut policy, &[Event::SynOverflow(flood)]);
        assert_eq!(policy.host().value(NETNS, syn::SYNCOOKIES), Some(&[1][..]));
    }

    #[test]
    fn a_full_state_store_is_said_and_not_fatal() {
        let mut host = FakeHost::new();
        host.store("low-memory/1", Some(&vec![0; wasmtune_sdk::state::QUOTA_BYTES]));
        assert_eq!(host.load("low-memory/1"), None);
        assert_eq!(host.logs().len(), 1);
        assert_eq!(host.logs()[0].0, Level::Warn);
        assert!(host.logs()[0].1.starts_with("cannot keep low-memory/1 across restarts"), "{:?}", host.logs());
        host.store("low-memory/1", Some(b"low"));
        assert_eq!(host.stored("low-memory/1"), Some(&b"low"[..]));
        host.store("low-memory/1", None);
        assert_eq!(host.load("low-memory/1"), None);
    }

    #[test]
    fn a_released_tunable_is_tuned_again() {
        let mut policy = TcpBuffer::new(host([4096, 65536, 98304], 1), 4);
        let taken = wasmtune_sdk::AdminOverride {
            netns: NETNS,
            sysctl: "net.ipv4.tcp_rmem".into(),
            pid: 42,
            comm: "sysctl".into(),
        };
        batch(&mut policy, &[Event::AdminOverride(taken), receive(98304, 98304)]);
        assert!(policy.host().requests().is_empty());
        let released = AdminRelease { netns: NETNS, sysctl: "net.ipv4.tcp_rmem".into() };
        batch(&mut policy, &[Event::AdminRelease(released), receive(98304, 98304)]);
        assert_eq!(policy.host().value(NETNS, "net.ipv4.tcp_rmem"), Some(&[4096, 65536, 122880][..]));
        assert!(policy.host().logs()[1].1.contains("handed net.ipv4.tcp_rmem in netns"), "{:?}", policy.host().logs());
    }
}
