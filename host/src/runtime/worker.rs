//! One host thread per policy: it holds the policy's channel to the
//! runtime process (where the instance runs) and its host capabilities,
//! takes event batches from a bounded queue, and keeps faults contained. A
//! fault fails one call; the instance is rebuilt in the runtime and
//! re-initialised after a back-off that doubles with each fault (1 s, 2 s, ...);
//! after repeated faults the policy is quarantined (it stays loaded, visible
//! in status, and gets no more events) so it cannot burn the host's CPU. A
//! new file (a new digest) starts a fresh worker. Guests never run in the
//! host at all. When the runtime process dies, hangs or breaks the
//! protocol, it is killed and restarted ([`crate::runtime::supervisor`]);
//! the worker rebuilds its policy in the new one, which is not the policy's
//! fault, and tells it which namespaces exist, as after a fault.
//!
//! Stopping a worker closes its queue: the thread handles every batch
//! already queued, then ends. So when the router hands a name to a new
//! version, every event given to the old one is still handled by it, once.
//!
//! Nothing waits on a policy's thread without a deadline: not its start
//! ([`INIT_DEADLINE`]), not its stop ([`STOP_DEADLINE`]). Fuel and the epoch
//! deadline only interrupt guest code, so a thread stuck in a host call
//! could otherwise hold up unload, replace and the daemon's stop for good;
//! past the deadline it is left behind (its queue closed, it gets no more
//! events and makes no further call into the guest) and the host goes on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::actuate::Actuator;
use crate::caps::log::LogCap;
use crate::caps::state::StateCap;
use crate::caps::sysctl::{RequestCounters, SysctlCap};
use crate::config::PolicySettings;
use crate::grants::{Arbiter, EffectiveGrant, HostLimits};
use crate::manifest::event_kind_name;
use crate::netns::NetnsRegistry;
use crate::runtime::calls::LocalHost;
use crate::runtime::channel::{LOAD_DEADLINE, PolicyChannel};
use crate::runtime::image::{LoadError, PolicyImage};
use crate::runtime::instance::Fault;
use crate::runtime::protocol::RemoteFault;
use crate::runtime::quarantine::{QuarantineEntry, QuarantineList};
use crate::runtime::supervisor::{MAX_BACKOFF, RuntimeProcess};
use crate::wit::{Event, EventKind, PolicyConfig};

/// Batches a policy may have waiting before new ones count as lost.
pub const QUEUE_BATCHES: usize = 64;
/// Largest batch handed to one `on-events` call.
pub const MAX_BATCH: usize = 256;
/// Faults within [`QUARANTINE_WINDOW`] that park a policy.
pub const QUARANTINE_AFTER: usize = 3;
pub const QUARANTINE_WINDOW: Duration = Duration::from_secs(60);
/// Wait before the first rebuild after a fault; doubled for each further
/// fault within [`QUARANTINE_WINDOW`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
const TICK_RANGE_MS: (u32, u32) = (100, 3_600_000);
/// How long stopping a policy waits for its thread to finish its queue.
pub const STOP_DEADLINE: Duration = Duration::from_secs(2);
/// How long starting a policy waits for its thread to have it compiled,
/// instantiated and initialised in the runtime process: past the channel's
/// own deadlines, so only a thread stuck outside its calls misses it.
pub const INIT_DEADLINE: Duration = Duration::from_secs(5);
pub const START_DEADLINE: Duration = LOAD_DEADLINE.saturating_add(INIT_DEADLINE);
/// How long a policy waits for a runtime process to rebuild it in: past
/// the longest restart back-off.
pub const RUNTIME_WAIT: Duration = MAX_BACKOFF.saturating_add(Duration::from_secs(5));

/// What the rest of the host shares with every policy worker.
#[derive(Clone)]
pub struct WorkerContext {
    /// Where policies are compiled and run.
    pub runtime: Arc<RuntimeProcess>,
    pub arbiter: Arc<Arbiter>,
    pub actuator: Actuator,
    pub registry: Arc<NetnsRegistry>,
    pub limits: HostLimits,
    pub learning_rate: u8,
    pub memory_limit: usize,
    pub started: Instant,
    /// Per-policy-name key-value state, handed from version to version.
    pub stores: Arc<crate::caps::state::PolicyStores>,
    /// Tunables policies found missing on this kernel.
    pub missing: Arc<crate::missing::MissingTunables>,
    /// Quarantined policy files, kept across restarts.
    pub quarantine: Arc<QuarantineList>,
}

/// Counters a worker keeps; read by status, the router and tests.
#[derive(Debug, Default)]
pub struct PolicyStats {
    /// Events delivered to a call that returned normally.
    pub events_handled: AtomicU64,
    /// Events in a call that faulted (or in the rest of its batch).
    pub events_failed: AtomicU64,
    /// Events that never reached the policy (queue full or quarantined).
    pub events_lost: AtomicU64,
    /// Lost events not yet reported to the policy in a `lost` event.
    lost_unreported: AtomicU64,
    pub faults: AtomicU64,
    pub quarantined: AtomicBool,
    /// Waiting out the back-off before a rebuild; events are lost meanwhile.
    pub backing_off: AtomicBool,
    pub requests: Arc<RequestCounters>,
    /// The kind of the last fault (`trap`, `blocked`, ..., or `init` for a
    /// failed rebuild), for status.
    last_fault: Mutex<Option<&'static str>>,
    /// The thread missed a deadline and was left behind: it must not call
    /// into the guest again, should its stuck call ever return.
    abandoned: AtomicBool,
}

impl PolicyStats {
    /// `running`, `backing-off` or `quarantined`.
    pub fn state(&self) -> &'static str {
        if self.quarantined.load(Ordering::Relaxed) {
            "quarantined"
        } else if self.backing_off.load(Ordering::Relaxed) {
            "backing-off"
        } else {
            "running"
        }
    }

    /// The kind of the last fault, if any.
    pub fn last_fault(&self) -> Option<&'static str> {
        *lock(&self.last_fault)
    }

    /// Counts a fault of `kind`; returns the count so far.
    fn count_fault(&self, kind: &'static str) -> u64 {
        *lock(&self.last_fault) = Some(kind);
        self.faults.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A poisoned lock held plain data that no panic can leave half-written.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counts summed over every version of one policy name, so that what the
/// router gave a name can be compared with what its versions did with it:
/// `routed == handled + lost + failed` once the queues are empty.
#[derive(Debug, Default)]
pub struct NameTotals {
    /// Events the router offered to this name.
    pub routed: AtomicU64,
    /// Events handled by a call that returned normally, by any version.
    pub handled: AtomicU64,
    /// Events that never reached a call (queue full, back-off, quarantine).
    pub lost: AtomicU64,
    /// Events in calls that faulted.
    pub failed: AtomicU64,
    /// Versions started under this name.
    pub versions: AtomicU64,
}

impl NameTotals {
    fn add_lost(&self, stats: &PolicyStats, n: u64) {
        stats.events_lost.fetch_add(n, Ordering::Relaxed);
        self.lost.fetch_add(n, Ordering::Relaxed);
    }
}

enum WorkerMsg {
    Events(Vec<Event>),
}

/// A running policy.
pub struct PolicyWorker {
    pub name: String,
    pub version: String,
    pub digest: String,
    pub source: crate::runtime::image::PolicySource,
    pub subscriptions: Vec<EventKind>,
    pub grant: Arc<EffectiveGrant>,
    pub stats: Arc<PolicyStats>,
    pub totals: Arc<NameTotals>,
    /// Whether the administrator asked for this policy's values to be
    /// restored when it is unloaded.
    pub rollback_on_unload: bool,
    /// Taken (closing the queue) when the worker stops; behind a lock so
    /// that a worker shared with the router can be stopped.
    tx: Mutex<Option<Sender<WorkerMsg>>>,
    /// Taken when the thread is joined or left behind.
    thread: Mutex<Option<WorkerThread>>,
}

/// A policy's thread and a way to wait for its end with a deadline (std's
/// `join` has none): the thread holds the only sender of `ended` until it
/// returns or unwinds, so `ended` disconnects exactly when it is done.
struct WorkerThread {
    handle: JoinHandle<()>,
    ended: Receiver<()>,
}

impl WorkerThread {
    fn spawn(name: String, body: impl FnOnce() + Send + 'static) -> std::io::Result<WorkerThread> {
        let (alive, ended) = crossbeam_channel::bounded::<()>(0);
        let handle = std::thread::Builder::new().name(name).spawn(move || {
            let _alive = alive;
            body();
        })?;
        Ok(WorkerThread { handle, ended })
    }

    /// Joins the thread if it ends by `deadline`; otherwise leaves it
    /// running, detached, and says so (false).
    fn join_by(self, deadline: Instant) -> bool {
        match self.ended.recv_deadline(deadline) {
            Err(RecvTimeoutError::Timeout) => false,
            // Nothing is ever sent: the sender was dropped with the thread.
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                let _ = self.handle.join();
                true
            }
        }
    }
}

impl PolicyWorker {
    /// Instantiates and initialises the policy on its own thread, and returns
    /// once `init` has succeeded; on failure nothing keeps running.
    pub fn start(
        image: &PolicyImage,
        ctx: &WorkerContext,
        settings: &PolicySettings,
    ) -> Result<PolicyWorker, LoadError> {
        PolicyWorker::start_with_totals(image, ctx, settings, Arc::default())
    }

    /// [`PolicyWorker::start`], adding to `totals`, the counts shared by
    /// every version of the policy's name.
    pub fn start_with_totals(
        image: &PolicyImage,
        ctx: &WorkerContext,
        settings: &PolicySettings,
        totals: Arc<NameTotals>,
    ) -> Result<PolicyWorker, LoadError> {
        if settings.enabled == Some(false) {
            return Err(LoadError::Disabled);
        }
        let grant = Arc::new(
            EffectiveGrant::resolve(&image.manifest, settings, &ctx.limits)
                .map_err(|refused| LoadError::NotAllowed(refused.to_string()))?,
        );
        let stats = Arc::new(PolicyStats::default());
        let config = PolicyConfig {
            learning_rate: ctx.learning_rate,
            settings: settings.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_BATCHES);
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let runner = Runner {
            name: image.name().to_string(),
            digest: image.digest.clone(),
            source: image.source.to_string(),
            bytes: image.bytes.clone(),
            channel: None,
            config,
            grant: grant.clone(),
            ctx: ctx.clone(),
            stats: stats.clone(),
            totals: totals.clone(),
            faults: Vec::new(),
            tick: None,
        };
        let thread = WorkerThread::spawn(format!("policy-{}", image.name()), move || runner.run(rx, ready_tx))
            .map_err(LoadError::Spawn)?;
        let subscriptions = match ready_rx.recv_timeout(START_DEADLINE) {
            Ok(Ok(subscriptions)) => subscriptions,
            Ok(Err(error)) => {
                thread.join_by(Instant::now() + STOP_DEADLINE);
                return Err(error);
            }
            Err(RecvTimeoutError::Timeout) => {
                // `tx` is dropped on return: should init ever finish, the
                // thread finds its queue closed and ends.
                stats.abandoned.store(true, Ordering::Relaxed);
                tracing::warn!(event = "policy-abandoned", policy = %image.name(),
                    waited_ms = millis(START_DEADLINE), "policy {} did not finish init within {} ms; \
                    its thread is left behind", image.name(), millis(START_DEADLINE));
                return Err(LoadError::Init(format!(
                    "init did not return within {} ms (stuck in a host call)",
                    millis(START_DEADLINE)
                )));
            }
            Err(RecvTimeoutError::Disconnected) => {
                thread.join_by(Instant::now() + STOP_DEADLINE);
                return Err(LoadError::Init("the policy thread ended during init".into()));
            }
        };
        totals.versions.fetch_add(1, Ordering::Relaxed);
        Ok(PolicyWorker {
            name: image.name().to_string(),
            version: image.manifest.policy.version.clone(),
            digest: image.digest.clone(),
            source: image.source.clone(),
            subscriptions,
            grant,
            stats,
            totals,
            rollback_on_unload: settings.rollback_on_unload,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.subscriptions.contains(&kind)
    }

    /// Queues a batch without ever blocking; a full queue or a quarantined
    /// policy counts the events as lost.
    pub fn deliver(&self, batch: Vec<Event>) {
        let n = batch.len() as u64;
        self.totals.routed.fetch_add(n, Ordering::Relaxed);
        if self.stats.quarantined.load(Ordering::Relaxed) {
            self.totals.add_lost(&self.stats, n);
            return;
        }
        let tx = lock(&self.tx);
        let Some(tx) = tx.as_ref() else {
            self.totals.add_lost(&self.stats, n);
            return;
        };
        match tx.try_send(WorkerMsg::Events(batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.totals.add_lost(&self.stats, n);
                self.stats.lost_unreported.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Events queued and not yet taken by the thread.
    pub fn queued_batches(&self) -> usize {
        lock(&self.tx).as_ref().map_or(0, Sender::len)
    }

    /// Records events lost before they reached the router (ring buffer overflow).
    pub fn note_upstream_loss(&self, n: u64) {
        self.stats.events_lost.fetch_add(n, Ordering::Relaxed);
        self.stats.lost_unreported.fetch_add(n, Ordering::Relaxed);
    }

    /// Stops the thread after the batches already queued, waiting for it at
    /// most [`STOP_DEADLINE`]. Works on a worker still shared (the router's
    /// or a status query's reference): once stopped it gets no events.
    pub fn stop(&self) {
        self.close_queue();
        self.wait_stopped(Instant::now() + STOP_DEADLINE);
    }

    /// Closing the queue ends the thread once it has taken every batch
    /// already queued: none is dropped, and none can arrive later.
    fn close_queue(&self) {
        drop(lock(&self.tx).take());
    }

    /// Waits until `deadline` for the thread to end; past it, leaves the
    /// thread behind with a warning. At once when it was already stopped.
    fn wait_stopped(&self, deadline: Instant) {
        let Some(thread) = lock(&self.thread).take() else { return };
        let waited = Instant::now();
        if !thread.join_by(deadline) {
            self.stats.abandoned.store(true, Ordering::Relaxed);
            let waited_ms = millis(waited.elapsed());
            tracing::warn!(event = "policy-abandoned", policy = %self.name, waited_ms,
                "policy {} did not stop within {waited_ms} ms (its thread is stuck in a call); \
                 it is left behind: its queue is closed and it gets no more events", self.name);
        }
    }
}

impl Drop for PolicyWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Stops every worker in `workers` together: every queue is closed first,
/// then all share one deadline, so stuck threads cost [`STOP_DEADLINE`]
/// once, not once each.
pub fn stop_all(workers: &[Arc<PolicyWorker>]) {
    for worker in workers {
        worker.close_queue();
    }
    let deadline = Instant::now() + STOP_DEADLINE;
    for worker in workers {
        worker.wait_stopped(deadline);
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The worker thread's own state.
struct Runner {
    name: String,
    /// The file's digest and where it came from: what a quarantine records.
    digest: String,
    source: String,
    /// The file, to load again into a new runtime process.
    bytes: Arc<[u8]>,
    /// The channel to the instance in the runtime process, once loaded.
    channel: Option<PolicyChannel>,
    config: PolicyConfig,
    grant: Arc<EffectiveGrant>,
    ctx: WorkerContext,
    stats: Arc<PolicyStats>,
    totals: Arc<NameTotals>,
    faults: Vec<Instant>,
    tick: Option<Duration>,
}

/// One `namespace-change` (created) per namespace the host tunes: what a
/// policy that follows namespaces is told before any other event, at its
/// start and after every rebuild.
pub fn namespace_announcements(registry: &NetnsRegistry) -> Vec<Event> {
    registry
        .list()
        .into_iter()
        .map(|ns| {
            Event::NamespaceChange(crate::wit::NamespaceChange { netns: ns.cookie, name: ns.name, created: true })
        })
        .collect()
}

/// Why a call did not return normally.
enum Failure {
    /// The policy faulted: its fault, counted toward quarantine.
    Fault(Fault),
    /// The runtime process failed the channel (died, hung, sent garbage):
    /// not the policy's doing.
    Runtime(String),
}

impl From<RemoteFault> for Failure {
    fn from(fault: RemoteFault) -> Failure {
        Failure::Fault(Fault { kind: fault.kind, detail: fault.detail })
    }
}

/// What became of a worker after a failure.
enum Recovery {
    Rebuilt,
    /// Parked, for this reason.
    Quarantine(String),
    /// The queue was closed (or the daemon is stopping) meanwhile.
    Stopped,
}

impl Runner {
    fn run(mut self, rx: Receiver<WorkerMsg>, ready: Sender<Result<Vec<EventKind>, LoadError>>) {
        if let Err(error) = drop_thread_capabilities() {
            // The thread answers the policy's host calls: never with a
            // capability left.
            tracing::error!(policy = %self.name, %error, "the policy is not started");
            let _ = ready.send(Err(LoadError::Init(error)));
            return;
        }
        let mut host = self.local_host();
        match self.instantiate_and_init(&mut host) {
            Ok(subscriptions) => {
                let _ = ready.send(Ok(subscriptions));
            }
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        }
        let mut next_tick = self.tick.map(|t| Instant::now() + t);
        loop {
            if self.stats.abandoned.load(Ordering::Relaxed) {
                return self.discard_queue(&rx);
            }
            let msg = match next_tick {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(msg) => Some(msg),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return,
                },
                None => match rx.recv() {
                    Ok(msg) => Some(msg),
                    Err(_) => return,
                },
            };
            let outcome = match msg {
                Some(WorkerMsg::Events(batch)) => self.handle_batch(&mut host, batch),
                None => {
                    next_tick = self.tick.map(|t| Instant::now() + t);
                    let now = u64::try_from(self.ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.call_tick(&mut host, now)
                }
            };
            if let Err(failure) = outcome {
                match self.recover(&mut host, failure, &rx) {
                    Recovery::Rebuilt => next_tick = self.tick.map(|t| Instant::now() + t),
                    Recovery::Quarantine(reason) => return self.park(rx, &reason),
                    Recovery::Stopped => return,
                }
            }
        }
    }

    fn handle_batch(&mut self, host: &mut LocalHost, mut batch: Vec<Event>) -> Result<(), Failure> {
        let total = batch.len() as u64;
        let lost = self.stats.lost_unreported.swap(0, Ordering::Relaxed);
        if lost > 0 {
            batch.insert(0, Event::Lost(lost));
        }
        let mut done = 0;
        for chunk in batch.chunks(MAX_BATCH) {
            let handled = chunk.iter().filter(|e| !matches!(e, Event::Lost(_))).count() as u64;
            if let Err(failure) = self.call_events(host, chunk) {
                let failed = total - done;
                self.stats.events_failed.fetch_add(failed, Ordering::Relaxed);
                self.totals.failed.fetch_add(failed, Ordering::Relaxed);
                return Err(failure);
            }
            done += handled;
            self.stats.events_handled.fetch_add(handled, Ordering::Relaxed);
            self.totals.handled.fetch_add(handled, Ordering::Relaxed);
        }
        Ok(())
    }

    fn call_events(&mut self, host: &mut LocalHost, batch: &[Event]) -> Result<(), Failure> {
        let kernel = self.ctx.actuator.kernel_epoch();
        let channel = self.channel.as_mut().ok_or_else(|| Failure::Runtime("no channel".into()))?;
        match channel.on_events(batch, kernel, host) {
            Ok(outcome) => outcome.map_err(Failure::from),
            Err(broken) => Err(self.runtime_failed(broken.to_string())),
        }
    }

    fn call_tick(&mut self, host: &mut LocalHost, now: u64) -> Result<(), Failure> {
        let kernel = self.ctx.actuator.kernel_epoch();
        let channel = self.channel.as_mut().ok_or_else(|| Failure::Runtime("no channel".into()))?;
        match channel.on_tick(now, kernel, host) {
            Ok(outcome) => outcome.map_err(Failure::from),
            Err(broken) => Err(self.runtime_failed(broken.to_string())),
        }
    }

    /// The channel broke: the runtime process that held it is killed (if it
    /// is not dead already), and the channel dropped.
    fn runtime_failed(&mut self, why: String) -> Failure {
        if let Some(channel) = self.channel.take() {
            self.ctx.runtime.kill(channel.process, &format!("policy {}'s channel: {why}", self.name));
        }
        Failure::Runtime(why)
    }

    /// After a fault: counts it, waits out the back-off and rebuilds the
    /// instance, or quarantines the policy when it has faulted too often.
    /// After a runtime failure: rebuilds the policy in the new process.
    fn recover(&mut self, host: &mut LocalHost, failure: Failure, rx: &Receiver<WorkerMsg>) -> Recovery {
        let fault = match failure {
            Failure::Fault(fault) => fault,
            Failure::Runtime(why) => return self.rebuild_elsewhere(host, &why, rx),
        };
        let now = Instant::now();
        self.faults.retain(|t| now.duration_since(*t) < QUARANTINE_WINDOW);
        self.faults.push(now);
        let total = self.stats.count_fault(fault.kind.as_str());
        if self.faults.len() >= QUARANTINE_AFTER {
            tracing::warn!(
                event = "policy-fault",
                policy = %self.name,
                fault = fault.kind.as_str(),
                faults = total,
                detail = %fault.detail,
                "policy {} faulted ({}); the call was abandoned",
                self.name,
                fault
            );
            return Recovery::Quarantine(fault.to_string());
        }
        let backoff = backoff_after(self.faults.len());
        tracing::warn!(
            event = "policy-fault",
            policy = %self.name,
            fault = fault.kind.as_str(),
            faults = total,
            detail = %fault.detail,
            backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            "policy {} faulted ({}); the call was abandoned and the instance is rebuilt in {} ms",
            self.name,
            fault,
            backoff.as_millis()
        );
        if !self.back_off(backoff, rx) {
            return Recovery::Stopped;
        }
        match self.instantiate_and_init(host) {
            Ok(subscriptions) => self.announce_namespaces(host, &subscriptions, rx),
            Err(LoadError::Runtime(why)) => self.rebuild_elsewhere(host, &why, rx),
            Err(e) => {
                *lock(&self.stats.last_fault) = Some("init");
                tracing::warn!(event = "policy-fault", policy = %self.name, fault = "init", faults = total,
                    detail = %e, "policy {} could not be rebuilt: {e}", self.name);
                Recovery::Quarantine(format!("could not be rebuilt: {e}"))
            }
        }
    }

    /// The new instance starts with empty memory: tell it again which
    /// namespaces exist, as at its first start, so a policy that follows
    /// them (to find the initial one, say) does not lose track.
    fn announce_namespaces(
        &mut self,
        host: &mut LocalHost,
        subscriptions: &[EventKind],
        rx: &Receiver<WorkerMsg>,
    ) -> Recovery {
        if subscriptions.contains(&EventKind::NamespaceChange) {
            let known = namespace_announcements(&self.ctx.registry);
            if !known.is_empty()
                && let Err(failure) = self.call_events(host, &known)
            {
                return self.recover(host, failure, rx);
            }
        }
        Recovery::Rebuilt
    }

    /// Rebuilds the policy in a new runtime process, waiting for one (the
    /// supervisor restarts it with a back-off); events meanwhile are lost
    /// and the policy is told.
    fn rebuild_elsewhere(&mut self, host: &mut LocalHost, why: &str, rx: &Receiver<WorkerMsg>) -> Recovery {
        tracing::warn!(event = "policy-runtime-lost", policy = %self.name, reason = why,
            "policy {} lost its runtime process ({why}); it is rebuilt in a new one", self.name);
        loop {
            match self.instantiate_and_init(host) {
                Ok(subscriptions) => {
                    tracing::info!(event = "policy-rebuilt", policy = %self.name,
                        "policy {} runs again in runtime process {}", self.name,
                        self.ctx.runtime.pid().unwrap_or(0));
                    return self.announce_namespaces(host, &subscriptions, rx);
                }
                Err(LoadError::Runtime(why)) => {
                    tracing::debug!(policy = %self.name, reason = %why, "no runtime process yet");
                    if !self.back_off(Duration::from_millis(200), rx) {
                        return Recovery::Stopped;
                    }
                }
                Err(e) => {
                    *lock(&self.stats.last_fault) = Some("init");
                    tracing::warn!(event = "policy-fault", policy = %self.name, fault = "init",
                        detail = %e, "policy {} could not be rebuilt: {e}", self.name);
                    return Recovery::Quarantine(format!("could not be rebuilt: {e}"));
                }
            }
        }
    }

    /// Waits `backoff`, counting the events that arrive meanwhile as lost
    /// (the policy is told in its next batch). False when the queue closed.
    fn back_off(&self, backoff: Duration, rx: &Receiver<WorkerMsg>) -> bool {
        self.stats.backing_off.store(true, Ordering::Relaxed);
        let until = Instant::now() + backoff;
        let open = loop {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(WorkerMsg::Events(batch)) => {
                    let n = batch.len() as u64;
                    self.totals.add_lost(&self.stats, n);
                    self.stats.lost_unreported.fetch_add(n, Ordering::Relaxed);
                }
                Err(RecvTimeoutError::Timeout) => break true,
                Err(RecvTimeoutError::Disconnected) => break false,
            }
        };
        self.stats.backing_off.store(false, Ordering::Relaxed);
        open
    }

    /// The thread was left behind after a stuck call: whatever is still
    /// queued is lost, never handed to the guest.
    fn discard_queue(&self, rx: &Receiver<WorkerMsg>) {
        for WorkerMsg::Events(batch) in rx.try_iter() {
            self.totals.add_lost(&self.stats, batch.len() as u64);
        }
    }

    fn park(&self, rx: Receiver<WorkerMsg>, reason: &str) {
        self.stats.quarantined.store(true, Ordering::Relaxed);
        let faults = self.stats.faults.load(Ordering::Relaxed);
        tracing::error!(
            event = "policy-quarantined",
            policy = %self.name,
            faults,
            reason,
            "policy {} quarantined after {} faults in {} s: it gets no more events, nor is this file loaded \
             at later starts, until its file changes or `wasmtune policy enable {}`",
            self.name,
            self.faults.len(),
            QUARANTINE_WINDOW.as_secs(),
            self.name
        );
        self.remember_quarantine(reason);
        for WorkerMsg::Events(batch) in rx {
            self.totals.add_lost(&self.stats, batch.len() as u64);
        }
    }

    /// Keeps the quarantine across restarts: a policy that exhausted the
    /// host must not come back with the daemon.
    fn remember_quarantine(&self, reason: &str) {
        let entry = QuarantineEntry::new(&self.digest, &self.name, &self.source, reason);
        if let Err(error) = self.ctx.quarantine.insert(entry) {
            tracing::warn!(policy = %self.name, %error,
                "the quarantine of policy {} holds only until the daemon stops: {error}", self.name);
        }
    }

    /// Loads the policy into the runtime process (on a new channel when it
    /// has none), then a fresh instance and its `init`. A runtime that
    /// cannot be reached or breaks the channel is [`LoadError::Runtime`].
    fn instantiate_and_init(&mut self, host: &mut LocalHost) -> Result<Vec<EventKind>, LoadError> {
        if self.channel.is_none() {
            let mut channel =
                self.ctx.runtime.open_channel(RUNTIME_WAIT).map_err(|e| LoadError::Runtime(e.to_string()))?;
            let clock_ms = u64::try_from(self.ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX);
            match channel.load(&self.name, &self.bytes, self.ctx.memory_limit, clock_ms) {
                Ok(Ok(())) => self.channel = Some(channel),
                Ok(Err(refused)) => return Err(LoadError::InRuntime(refused)),
                Err(broken) => {
                    self.ctx.runtime.kill(channel.process, &format!("loading policy {}: {broken}", self.name));
                    return Err(LoadError::Runtime(broken.to_string()));
                }
            }
        }
        let channel = self.channel.as_mut().ok_or_else(|| LoadError::Runtime("no channel".into()))?;
        let info = match channel.start(&self.config, host) {
            Ok(Ok(Ok(info))) => info,
            Ok(Ok(Err(message))) => return Err(LoadError::Init(message)),
            Ok(Err(fault)) => return Err(LoadError::Init(Failure::from(fault).describe())),
            Err(broken) => {
                let why = broken.to_string();
                self.runtime_failed(why.clone());
                return Err(LoadError::Runtime(why));
            }
        };
        for kind in &info.subscriptions {
            if !self.grant.may_subscribe(*kind) {
                return Err(LoadError::UngrantedSubscription { event: event_kind_name(*kind).to_string() });
            }
        }
        self.tick = info.tick_ms.map(|ms| Duration::from_millis(u64::from(ms.clamp(TICK_RANGE_MS.0, TICK_RANGE_MS.1))));
        Ok(info.subscriptions)
    }

    /// The policy's host capabilities, kept on this thread for its life:
    /// counters, rate limits and its state store survive every rebuild.
    fn local_host(&self) -> LocalHost {
        let sysctl = SysctlCap::new(
            self.grant.clone(),
            self.ctx.arbiter.clone(),
            self.ctx.actuator.clone(),
            self.ctx.registry.clone(),
            self.stats.requests.clone(),
            self.ctx.missing.clone(),
        );
        LocalHost::new(LogCap::new(&self.name), sysctl, StateCap { store: self.ctx.stores.for_policy(&self.name) })
    }
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Fault(fault) => fault.to_string(),
            Failure::Runtime(why) => format!("the runtime process: {why}"),
        }
    }
}

/// The wait before rebuilding after the `faults`-th fault in the window:
/// 1 s, 2 s, 4 s, ...
pub fn backoff_after(faults: usize) -> Duration {
    let doublings = u32::try_from(faults.saturating_sub(1)).unwrap_or(u32::MAX).min(6);
    BACKOFF_BASE * 2u32.pow(doublings)
}

/// Guest code never needs a capability: every privileged action goes
/// through the actuator's thread. Capabilities are per thread, so this
/// thread gives up all of its own before running any guest code.
/// A drop that fails, or leaves anything behind, is an error: the caller
/// must not run guest code then.
fn drop_thread_capabilities() -> Result<(), String> {
    for set in [caps::CapSet::Ambient, caps::CapSet::Effective, caps::CapSet::Permitted, caps::CapSet::Inheritable] {
        caps::clear(None, set)
            .map_err(|e| format!("cannot clear the {set:?} capabilities of the policy thread: {e}"))?;
    }
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted] {
        let left = caps::read(None, set).map_err(|e| format!("cannot read the {set:?} capabilities back: {e}"))?;
        if !left.is_empty() {
            return Err(format!("the policy thread still holds {left:?} in its {set:?} set"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_thread_keeps_no_capability() {
        let left = std::thread::spawn(|| {
            drop_thread_capabilities()?;
            caps::read(None, caps::CapSet::Effective).map_err(|e| e.to_string())
        })
        .join()
        .expect("thread");
        assert_eq!(left, Ok(caps::CapsHashSet::new()));
    }

    #[test]
    fn a_thread_that_ends_is_joined_and_a_stuck_one_is_left_behind_at_the_deadline() {
        let quick = WorkerThread::spawn("quick".into(), || {}).expect("spawn");
        assert!(quick.join_by(Instant::now() + Duration::from_secs(5)), "a thread that ended was not joined");

        let (release, stuck_on) = crossbeam_channel::bounded::<()>(0);
        let stuck = WorkerThread::spawn("stuck".into(), move || {
            let _ = stuck_on.recv();
        })
        .expect("spawn");
        let started = Instant::now();
        assert!(!stuck.join_by(started + Duration::from_millis(200)), "a stuck thread was joined");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(2), "waited {waited:?}");
        drop(release);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_after(1), Duration::from_secs(1));
        assert_eq!(backoff_after(2), Duration::from_secs(2));
        assert_eq!(backoff_after(3), Duration::from_secs(4));
        assert_eq!(backoff_after(100), Duration::from_secs(64));
    }
}
