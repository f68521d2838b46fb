//! Routes every event to the policies that subscribed to it, in the
//! namespaces the host tunes: kernel batches (BPF ring buffer and the /proc
//! pollers), the start-up socket walk, administrator writes and namespace
//! changes all take [`dispatch`]. Never blocks on a policy: a full queue
//! counts as lost events for that policy only. Events lost before routing
//! (a full ring buffer, a full channel) are counted once in
//! [`PolicySet::upstream_lost`] and reported to every policy as `lost`.
//!
//! A batch is routed entirely under the set's read lock, and a load, replace
//! or unload takes the write lock: a swap therefore falls between two
//! batches, never inside one. Every event offered to a name before the swap
//! is queued at the old version (which handles its queue before it stops),
//! every later one at the new: each is handled once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;

use crate::canary::health::{HealthSettings, Observations};
use crate::canary::scope::CanaryScope;
use crate::events::{event_kind, event_netns};
use crate::netns::NetnsRegistry;
use crate::recording::writer::Recorder;
use crate::runtime::worker::{NameTotals, PolicyWorker};
use crate::wit::{Event, EventKind};

/// The running policies by name; swapped atomically on load, replace, unload.
#[derive(Default)]
pub struct PolicySet {
    workers: RwLock<BTreeMap<String, Arc<PolicyWorker>>>,
    /// Counts per name across every version ever loaded under it.
    totals: Mutex<BTreeMap<String, Arc<NameTotals>>>,
    /// Events lost before routing, as last reported to the policies.
    upstream_lost: AtomicU64,
    /// `--record`: every batch routed is written down.
    recorder: OnceLock<Arc<Recorder>>,
    /// Shadow versions, by policy name: routed like the live ones, never
    /// part of the running set.
    shadows: RwLock<BTreeMap<String, Arc<PolicyWorker>>>,
    /// Numbers the batches routed while a shadow runs.
    batches: AtomicU64,
    /// Canary versions, by policy name: each gets the events of its scope,
    /// and the current version of its name no longer does.
    canaries: RwLock<BTreeMap<String, Arc<Canary>>>,
    /// What the canaries are judged by, kept for every tuned namespace so
    /// that a canary has a baseline from before it started.
    observations: Mutex<Observations>,
    /// Told when a canary starts (the judge sleeps while none runs).
    canary_signal: OnceLock<crossbeam_channel::Sender<()>>,
}

/// A canary version and what it is held to.
pub struct Canary {
    pub worker: Arc<PolicyWorker>,
    pub scope: CanaryScope,
    pub health: HealthSettings,
    pub started: std::time::Instant,
    /// Declared in the configuration (it comes back after a restart), or
    /// started from the command line.
    pub declared: bool,
    /// The judge's last verdict, for status.
    pub verdict: Mutex<Option<crate::canary::health::Verdict>>,
}

impl PolicySet {
    /// Adds (or replaces) the canary of its name.
    pub fn insert_canary(&self, canary: Canary) -> Option<Arc<Canary>> {
        let mut canaries = self.canaries.write().unwrap_or_else(|p| p.into_inner());
        let replaced = canaries.insert(canary.worker.name.clone(), Arc::new(canary));
        if let Some(signal) = self.canary_signal.get() {
            let _ = signal.try_send(());
        }
        replaced
    }

    /// A channel told whenever a canary starts (for one listener: the judge).
    pub fn canary_started(&self) -> crossbeam_channel::Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.canary_signal.set(tx).is_err() {
            tracing::warn!("a second canary judge would never be told; the first is");
        }
        rx
    }

    pub fn remove_canary(&self, name: &str) -> Option<Arc<Canary>> {
        self.canaries.write().unwrap_or_else(|p| p.into_inner()).remove(name)
    }

    pub fn canary(&self, name: &str) -> Option<Arc<Canary>> {
        self.canaries.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn canaries(&self) -> Vec<Arc<Canary>> {
        self.canaries.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Removes every canary, for stopping.
    pub fn clear_canaries(&self) -> Vec<Arc<Canary>> {
        let mut canaries = self.canaries.write().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *canaries).into_values().collect()
    }

    /// Runs `f` on what the host has seen lately (for judging canaries).
    pub fn with_observations<T>(&self, f: impl FnOnce(&Observations) -> T) -> T {
        f(&self.observations.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Keeps the batch's connection summaries and drops (in tuned
    /// namespaces); a batch with none costs no lock.
    fn observe(&self, batch: &[Event], registry: &NetnsRegistry) {
        let mut judged = batch
            .iter()
            .filter(|e| matches!(e, Event::ConnectionSummary(_) | Event::BacklogDrops(_)))
            .filter(|e| reaches_policies(e, |n| registry.is_tuned(n)))
            .peekable();
        if judged.peek().is_none() {
            return;
        }
        let now = std::time::Instant::now();
        let name = |cookie: u64| registry.display_name(cookie);
        let mut observations = self.observations.lock().unwrap_or_else(|p| p.into_inner());
        for event in judged {
            observations.observe(event, &name, now);
        }
    }
}

impl PolicySet {
    /// Adds (or replaces) the shadow version of its name.
    pub fn insert_shadow(&self, worker: PolicyWorker) -> Option<Arc<PolicyWorker>> {
        let mut shadows = self.shadows.write().unwrap_or_else(|p| p.into_inner());
        shadows.insert(worker.name.clone(), Arc::new(worker))
    }

    pub fn remove_shadow(&self, name: &str) -> Option<Arc<PolicyWorker>> {
        self.shadows.write().unwrap_or_else(|p| p.into_inner()).remove(name)
    }

    pub fn shadows(&self) -> Vec<Arc<PolicyWorker>> {
        self.shadows.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Removes every shadow, for stopping.
    pub fn clear_shadows(&self) -> Vec<Arc<PolicyWorker>> {
        let mut shadows = self.shadows.write().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *shadows).into_values().collect()
    }

    /// From now on, every batch routed is also written to `recorder`.
    pub fn record_to(&self, recorder: Arc<Recorder>) {
        if self.recorder.set(recorder).is_err() {
            tracing::warn!("a recording is already being written; the second is ignored");
        }
    }

    /// Writes down the events of `batch` that reach the policies (in a
    /// tuned namespace), whether or not one subscribed: a replayed policy
    /// may subscribe to more than the live ones.
    fn record(&self, batch: &[Event], registry: &NetnsRegistry) {
        let Some(recorder) = self.recorder.get() else { return };
        let routed: Vec<&Event> = batch.iter().filter(|e| reaches_policies(e, |n| registry.is_tuned(n))).collect();
        recorder.events(&routed, &|cookie| registry.display_name(cookie));
    }

    /// The counters every version of `name` adds to.
    pub fn totals_for(&self, name: &str) -> Arc<NameTotals> {
        let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.entry(name.to_string()).or_default().clone()
    }

    /// The counters of every name ever loaded.
    pub fn all_totals(&self) -> Vec<(String, Arc<NameTotals>)> {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals.iter().map(|(name, t)| (name.clone(), t.clone())).collect()
    }

    /// Runs `f` on the running workers while no swap can happen.
    pub fn with_workers<T>(&self, f: impl FnOnce(&[Arc<PolicyWorker>]) -> T) -> T {
        let workers = self.workers.read().unwrap_or_else(|p| p.into_inner());
        let list: Vec<Arc<PolicyWorker>> = workers.values().cloned().collect();
        f(&list)
    }

    /// Installs a worker, returning the one it replaces (still running until dropped).
    pub fn insert(&self, worker: PolicyWorker) -> Option<Arc<PolicyWorker>> {
        let mut workers = self.workers.write().unwrap_or_else(|p| p.into_inner());
        workers.insert(worker.name.clone(), Arc::new(worker))
    }

    pub fn remove(&self, name: &str) -> Option<Arc<PolicyWorker>> {
        self.workers.write().unwrap_or_else(|p| p.into_inner()).remove(name)
    }

    pub fn get(&self, name: &str) -> Option<Arc<PolicyWorker>> {
        self.workers.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn snapshot(&self) -> Vec<Arc<PolicyWorker>> {
        self.workers.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn names(&self) -> Vec<String> {
        self.workers.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect()
    }

    /// Events lost before they could be routed (kernel ring buffer and
    /// event channel overflows), as far as reported to the policies.
    pub fn upstream_lost(&self) -> u64 {
        self.upstream_lost.load(Ordering::Relaxed)
    }

    /// Removes every worker; each stops when its last reference drops.
    pub fn clear(&self) -> Vec<Arc<PolicyWorker>> {
        let mut workers = self.workers.write().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *workers).into_values().collect()
    }
}

/// Splits one batch into per-policy batches, keeping the order of events.
pub fn route(batch: &[Event], registry: &NetnsRegistry, workers: &[Arc<PolicyWorker>]) -> Vec<Vec<Event>> {
    let subscriptions: Vec<&[EventKind]> = workers.iter().map(|w| w.subscriptions.as_slice()).collect();
    split(batch, |netns| registry.is_tuned(netns), &subscriptions)
}

/// The pure part of [`route`]: one list per subscriber, of the events of a
/// kind it subscribed to in a namespace that is tuned. A namespace that went
/// away is no longer tuned, yet its `namespace-change` is what says so: it
/// is routed (those offered here were tuned while they lived).
pub fn split(batch: &[Event], is_tuned: impl Fn(u64) -> bool, subscriptions: &[&[EventKind]]) -> Vec<Vec<Event>> {
    let mut per_subscriber: Vec<Vec<Event>> = vec![Vec::new(); subscriptions.len()];
    for event in batch {
        if !reaches_policies(event, &is_tuned) {
            continue;
        }
        let Some(kind) = event_kind(event) else { continue };
        for (i, kinds) in subscriptions.iter().enumerate() {
            if kinds.contains(&kind) {
                per_subscriber[i].push(event.clone());
            }
        }
    }
    per_subscriber
}

/// Whether an event is for the policies at all: about a tuned namespace,
/// or the news that one went away.
fn reaches_policies(event: &Event, is_tuned: impl Fn(u64) -> bool) -> bool {
    let gone = matches!(event, Event::NamespaceChange(change) if !change.created);
    match event_netns(event) {
        Some(netns) => gone || is_tuned(netns),
        None => true,
    }
}

/// Routes one batch to the running policies (see [`route`]) while no swap
/// can happen, queueing without blocking.
pub fn dispatch(batch: &[Event], registry: &NetnsRegistry, policies: &PolicySet) {
    if batch.is_empty() {
        return;
    }
    policies.with_workers(|workers| {
        policies.record(batch, registry);
        deliver(policies, batch, registry, workers);
    });
}

/// Queues one batch's share at every live policy and every shadow. While a
/// shadow runs, the batch is numbered and its book told, before anyone
/// gets it, whether the live version of its name got it too.
fn deliver(policies: &PolicySet, batch: &[Event], registry: &NetnsRegistry, workers: &[Arc<PolicyWorker>]) {
    crate::metrics::global().events(batch);
    policies.observe(batch, registry);
    let shadows = policies.shadows();
    let mut live = route(batch, registry, workers);
    let canaries = policies.canaries();
    if !canaries.is_empty() {
        deliver_to_canaries(batch, registry, workers, &mut live, &canaries);
    }
    if shadows.is_empty() {
        for (worker, events) in workers.iter().zip(live) {
            if !events.is_empty() {
                worker.deliver(events);
            }
        }
        return;
    }
    let seq = policies.batches.fetch_add(1, Ordering::Relaxed) + 1;
    let shadowed = route(batch, registry, &shadows);
    for (shadow, events) in shadows.iter().zip(&shadowed) {
        if let Some(book) = shadow.shadow_book.as_ref().filter(|_| !events.is_empty()) {
            let live_got = workers.iter().zip(&live).any(|(w, e)| w.name == shadow.name && !e.is_empty());
            book.expect(seq, live_got);
        }
    }
    for (worker, events) in workers.iter().zip(live).chain(shadows.iter().zip(shadowed)) {
        if !events.is_empty() {
            worker.deliver_numbered(seq, events);
        }
    }
}

/// A namespace canary takes its namespaces' events from the current version
/// of its name; a peer canary gets every event its name gets (connection
/// summaries of other peers are what it learns the network from), and the
/// capabilities hold each side to its peers.
fn deliver_to_canaries(
    batch: &[Event],
    registry: &NetnsRegistry,
    workers: &[Arc<PolicyWorker>],
    live: &mut [Vec<Event>],
    canaries: &[Arc<Canary>],
) {
    let in_scope = |scope: &CanaryScope, event: &Event| {
        event_netns(event).is_some_and(|netns| scope.owns_netns(&registry.display_name(netns)))
    };
    let canary_workers: Vec<Arc<PolicyWorker>> = canaries.iter().map(|c| c.worker.clone()).collect();
    let routed = route(batch, registry, &canary_workers);
    for (canary, mut events) in canaries.iter().zip(routed) {
        if let CanaryScope::Netns(_) = canary.scope {
            events.retain(|e| event_netns(e).is_none() || in_scope(&canary.scope, e));
            if let Some(i) = workers.iter().position(|w| w.name == canary.worker.name) {
                live[i].retain(|e| !in_scope(&canary.scope, e));
            }
        }
        if !events.is_empty() {
            canary.worker.deliver(events);
        }
    }
}

/// The routing thread: kernel batches in, per-policy batches out.
pub struct Router {
    /// Dropped (or sent on) to stop: the thread sleeps until a batch or this.
    stop: Option<crossbeam_channel::Sender<()>>,
    /// Pings, answered between batches.
    pings: crossbeam_channel::Sender<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Router {
    /// `upstream_lost` returns every event lost before routing so far
    /// (kernel and /proc sources together; it never decreases).
    pub fn spawn(
        events: Receiver<Vec<Event>>,
        upstream_lost: impl Fn() -> u64 + Send + 'static,
        registry: Arc<NetnsRegistry>,
        policies: Arc<PolicySet>,
    ) -> std::io::Result<Router> {
        let (stop, stopping) = crossbeam_channel::bounded::<()>(1);
        let (pings, pinged) = crossbeam_channel::unbounded::<crossbeam_channel::Sender<()>>();
        let thread = std::thread::Builder::new().name("router".into()).spawn(move || {
            let mut lost_seen = 0;
            loop {
                // Losses before routing come with batches (a full ring or
                // channel means events are waiting): nothing to do between them.
                let batch = crossbeam_channel::select! {
                    recv(stopping) -> _ => break,
                    recv(pinged) -> reply => {
                        if let Ok(reply) = reply {
                            let _ = reply.send(());
                        }
                        continue;
                    }
                    recv(events) -> batch => match batch {
                        Ok(batch) => batch,
                        Err(_) => break,
                    },
                };
                let lost_now = upstream_lost();
                policies.with_workers(|workers| {
                    if lost_now > lost_seen {
                        policies.record(&[Event::Lost(lost_now - lost_seen)], &registry);
                        for worker in workers {
                            worker.note_upstream_loss(lost_now - lost_seen);
                        }
                    }
                    if batch.is_empty() {
                        return;
                    }
                    policies.record(&batch, &registry);
                    deliver(&policies, &batch, &registry, workers);
                });
                lost_seen = lost_seen.max(lost_now);
                policies.upstream_lost.store(lost_seen, Ordering::Relaxed);
            }
        })?;
        Ok(Router { stop: Some(stop), pings, thread: Some(thread) })
    }

    /// A handle that asks the thread whether it makes progress.
    pub fn pinger(&self) -> RouterPinger {
        RouterPinger(self.pings.clone())
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender ends the select.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Asks the routing thread to answer between batches.
#[derive(Clone)]
pub struct RouterPinger(crossbeam_channel::Sender<crossbeam_channel::Sender<()>>);

impl RouterPinger {
    /// Whether the thread is between batches, or gets there, by `deadline`.
    pub fn answers_by(&self, deadline: std::time::Instant) -> bool {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.0.send(reply).is_ok() && answer.recv_deadline(deadline).is_ok()
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{AdminOverride, NamespaceChange};
    use std::time::Duration;

    const TUNED: u64 = 1;
    const OTHER: u64 = 2;

    fn admin(netns: u64) -> Event {
        Event::AdminOverride(AdminOverride { netns, sysctl: "net.ipv4.tcp_rmem".into(), pid: 7, comm: "sysctl".into() })
    }

    fn namespace(netns: u64, created: bool) -> Event {
        Event::NamespaceChange(NamespaceChange { netns, name: format!("ns{netns}"), created })
    }

    #[test]
    fn admin_overrides_and_namespace_changes_go_to_subscribers_only_in_order() {
        let batch =
            [namespace(TUNED, true), admin(TUNED), admin(OTHER), namespace(OTHER, true), namespace(TUNED, false)];
        let both: &[EventKind] = &[EventKind::AdminOverride, EventKind::NamespaceChange];
        let admin_only: &[EventKind] = &[EventKind::AdminOverride];
        let neither: &[EventKind] = &[EventKind::TcpBufferLimit];
        let routed = split(&batch, |netns| netns == TUNED, &[both, admin_only, neither]);
        assert_eq!(routed[0], [namespace(TUNED, true), admin(TUNED), namespace(TUNED, false)]);
        assert_eq!(routed[1], [admin(TUNED)], "only what it subscribed to, only where the host tunes");
        assert!(routed[2].is_empty());
    }

    #[test]
    fn a_namespace_that_went_away_is_still_announced() {
        let routed = split(&[namespace(OTHER, false)], |_| false, &[&[EventKind::NamespaceChange]]);
        assert_eq!(routed[0], [namespace(OTHER, false)]);
        let routed = split(&[namespace(OTHER, true)], |_| false, &[&[EventKind::NamespaceChange]]);
        assert!(routed[0].is_empty(), "a namespace the host does not tune is not announced");
    }

    #[test]
    fn losses_before_routing_from_every_source_are_counted_once() {
        let registry = Arc::new(NetnsRegistry::discover(&["init".to_string()]).expect("registry"));
        let policies = Arc::new(PolicySet::default());
        let (tx, rx) = crossbeam_channel::bounded(4);
        let kernel = Arc::new(AtomicU64::new(0));
        let proc_pollers = Arc::new(AtomicU64::new(0));
        let (k, p) = (kernel.clone(), proc_pollers.clone());
        let router = Router::spawn(
            rx,
            move || k.load(Ordering::Relaxed) + p.load(Ordering::Relaxed),
            registry,
            policies.clone(),
        )
        .expect("router");
        kernel.store(3, Ordering::Relaxed);
        proc_pollers.store(4, Ordering::Relaxed);
        tx.send(Vec::new()).expect("send");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while policies.upstream_lost() != 7 {
            assert!(std::time::Instant::now() < deadline, "lost {} != 7", policies.upstream_lost());
            std::thread::sleep(Duration::from_millis(10));
        }
        router.stop();
    }
}
