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
//! the worker rebuilds its policy in the new one and tells it which
//! namespaces exist, as after a fault. A runtime failure is not counted
//! against the policy, unless it broke this policy's call first: a policy
//! that keeps crashing or hanging the runtime is quarantined like one that
//! keeps faulting, but only until the daemon stops (see [`Charges`]).
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
use crate::canary::scope::{CanaryScopes, Side};
use crate::caps::canary::ScopedKernel;
use crate::caps::kernel::{KernelSide, LiveKernel};
use crate::caps::log::LogCap;
use crate::caps::shadow::{ShadowBook, ShadowBooks, ShadowKernel};
use crate::caps::state::StateCap;
use crate::caps::sysctl::{RequestCounters, SysctlCap};
use crate::config::PolicySettings;
use crate::grants::{Arbiter, EffectiveGrant, HostLimits};
use crate::manifest::event_kind_name;
use crate::netns::NetnsRegistry;
use crate::runtime::calls::LocalHost;
use crate::runtime::channel::{CALL_DEADLINE, LOAD_DEADLINE, PolicyChannel};
use crate::runtime::image::{LoadError, PolicyImage};
use crate::runtime::instance::Fault;
use crate::runtime::protocol::RemoteFault;
use crate::runtime::quarantine::{QuarantineEntry, QuarantineList};
use crate::runtime::supervisor::{MAX_BACKOFF, RuntimeError, RuntimeProcess};
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
/// Rebuilds tried in one recovery before the policy is left without an
/// instance until its next event or tick (which starts another recovery):
/// a runtime that keeps failing costs back-offs, never a deeper stack.
pub const REBUILD_ATTEMPTS: usize = 5;
pub const TICK_RANGE_MS: (u32, u32) = (100, 3_600_000);
/// How long stopping a policy waits for its thread to finish its queue.
pub const STOP_DEADLINE: Duration = Duration::from_secs(2);
/// How long a policy waits for a runtime process to rebuild it in: past
/// the longest restart back-off.
pub const RUNTIME_WAIT: Duration = MAX_BACKOFF.saturating_add(Duration::from_secs(5));
/// The slack the start of a policy gets past the channel's own deadlines.
pub const INIT_DEADLINE: Duration = Duration::from_secs(5);
/// How long starting a policy waits for its thread to have it compiled,
/// instantiated and initialised in the runtime process: a runtime process
/// to exist, its hello, the compilation and `init`, each at its own
/// deadline, and slack; so only a thread stuck outside its calls misses it.
pub const START_DEADLINE: Duration = RUNTIME_WAIT
    .saturating_add(CALL_DEADLINE)
    .saturating_add(LOAD_DEADLINE)
    .saturating_add(CALL_DEADLINE)
    .saturating_add(INIT_DEADLINE);

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
    /// The shadow versions' books, by policy name.
    pub shadows: Arc<ShadowBooks>,
    /// The scopes of running canaries, by policy name: both versions of a
    /// name consult it on every change.
    pub canaries: Arc<CanaryScopes>,
    /// `--record`: the sysctl values policies read are written down.
    pub recorder: Option<Arc<crate::recording::writer::Recorder>>,
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
    /// Faults the runtime process reported as the policy's own.
    pub faults: AtomicU64,
    /// Runtime-process failures during this policy's calls, first on their
    /// process: counted toward quarantine with the faults, kept apart from
    /// them since the host cannot tell whose doing they were.
    pub runtime_failures: AtomicU64,
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
    /// A batch, and its routing number (0: not compared with a shadow).
    Events(u64, Vec<Event>),
    /// Answered as soon as the thread takes it: the thread makes progress.
    Ping(Sender<()>),
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
    /// A shadow version's book (`None` for a live policy).
    pub shadow_book: Option<Arc<ShadowBook>>,
    /// A canary acts in its scope only; the current version everywhere else.
    pub side: Side,
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
        PolicyWorker::start_inner(image, ctx, settings, totals, None, Side::Current)
    }

    /// A canary version of `image`'s name: it acts only in the scope
    /// `ctx.canaries` holds for its name ([`crate::caps::canary`]); its
    /// changes are journaled under [`crate::canary::journal_label`].
    pub fn start_canary(
        image: &PolicyImage,
        ctx: &WorkerContext,
        settings: &PolicySettings,
        totals: Arc<NameTotals>,
    ) -> Result<PolicyWorker, LoadError> {
        PolicyWorker::start_inner(image, ctx, settings, totals, None, Side::Canary)
    }

    /// A shadow version of `image`'s name: the same checks, nothing changed
    /// ([`crate::caps::shadow`]).
    pub fn start_shadow(
        image: &PolicyImage,
        ctx: &WorkerContext,
        settings: &PolicySettings,
        book: Arc<ShadowBook>,
    ) -> Result<PolicyWorker, LoadError> {
        PolicyWorker::start_inner(image, ctx, settings, Arc::default(), Some(book), Side::Current)
    }

    fn start_inner(
        image: &PolicyImage,
        ctx: &WorkerContext,
        settings: &PolicySettings,
        totals: Arc<NameTotals>,
        shadow: Option<Arc<ShadowBook>>,
        side: Side,
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
            charges: Charges::default(),
            tick: None,
            shadow: shadow.clone().map(|book| (book, Arc::new(Arbiter::default()))),
            side,
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
            shadow_book: shadow,
            side,
        })
    }

    pub fn wants(&self, kind: EventKind) -> bool {
        self.subscriptions.contains(&kind)
    }

    /// Queues a batch without ever blocking; a full queue or a quarantined
    /// policy counts the events as lost.
    pub fn deliver(&self, batch: Vec<Event>) {
        self.deliver_numbered(0, batch);
    }

    /// [`PolicyWorker::deliver`], with the routing number a shadow and the
    /// live version are compared by.
    pub fn deliver_numbered(&self, seq: u64, batch: Vec<Event>) {
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
        match tx.try_send(WorkerMsg::Events(seq, batch)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.totals.add_lost(&self.stats, n);
                self.stats.lost_unreported.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Whether the thread takes a message from its queue by `deadline`
    /// (a stopped worker counts as answering: it is not stuck).
    pub fn answers_by(&self, deadline: Instant) -> bool {
        let Some(tx) = lock(&self.tx).as_ref().cloned() else { return true };
        let (reply, answer) = crossbeam_channel::bounded(1);
        match tx.send_deadline(WorkerMsg::Ping(reply), deadline) {
            Ok(()) => answer.recv_deadline(deadline).is_ok(),
            Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => true,
            Err(crossbeam_channel::SendTimeoutError::Timeout(_)) => false,
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
    charges: Charges,
    tick: Option<Duration>,
    /// Set for a shadow version: its book, and its own arbiter (a shadow
    /// owns nothing the live policies could be refused for).
    shadow: Option<(Arc<ShadowBook>, Arc<Arbiter>)>,
    side: Side,
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
    /// The policy faulted, as the runtime process reports it: counted
    /// toward quarantine.
    Fault(Fault),
    /// The runtime process failed the channel (died, hung, sent garbage).
    Runtime(RuntimeFailure),
}

impl From<RemoteFault> for Failure {
    fn from(fault: RemoteFault) -> Failure {
        Failure::Fault(Fault { kind: fault.kind, detail: fault.detail })
    }
}

/// A runtime-process failure, and whether it is charged to the policy.
struct RuntimeFailure {
    why: String,
    /// The process was current when this policy's request went out, and
    /// this channel was the first to break on it: the policy may have
    /// caused it (made the runtime exceed a limit, hang, or worse), so it
    /// counts toward quarantine. Not when the channel was already dead, or
    /// when another policy's channel broke first (then the process died,
    /// or was killed, for that one).
    during_call: bool,
}

impl RuntimeFailure {
    /// A failure that is not this policy's: nothing of it was in flight.
    fn not_charged(why: impl Into<String>) -> Failure {
        Failure::Runtime(RuntimeFailure { why: why.into(), during_call: false })
    }
}

/// Why a (re)build gave no running instance.
enum BuildError {
    /// No runtime process to build in yet: wait for one.
    NoRuntime(String),
    /// The runtime process failed the channel.
    Runtime(RuntimeFailure),
    /// The runtime refused the file, `init` refused or faulted, or the
    /// policy subscribed to what it may not: the policy's own doing.
    Refused(LoadError),
}

impl From<BuildError> for LoadError {
    fn from(error: BuildError) -> LoadError {
        match error {
            BuildError::NoRuntime(why) => LoadError::Runtime(why),
            BuildError::Runtime(failure) => LoadError::Runtime(failure.why),
            BuildError::Refused(error) => error,
        }
    }
}

/// What counts toward quarantine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Charge {
    /// A fault the runtime process reported as the policy's own.
    Fault,
    /// The runtime process failed during the policy's call.
    Runtime,
}

/// What to do after a charge.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Rebuild after this back-off.
    Retry(Duration),
    /// Quarantine; `lasting`: kept across restarts.
    Quarantine { lasting: bool },
}

/// The failures charged to a policy within [`QUARANTINE_WINDOW`].
#[derive(Debug, Default)]
struct Charges {
    recent: Vec<(Instant, Charge)>,
}

impl Charges {
    /// Counts one at `now`: a back-off that doubles with each charge in the
    /// window, or quarantine at [`QUARANTINE_AFTER`].
    fn add(&mut self, now: Instant, charge: Charge) -> Verdict {
        self.recent.retain(|(at, _)| now.duration_since(*at) < QUARANTINE_WINDOW);
        self.recent.push((now, charge));
        if self.recent.len() >= QUARANTINE_AFTER {
            Verdict::Quarantine { lasting: self.lasting() }
        } else if charge == Charge::Runtime && self.recent.len() == 1 {
            // A first runtime failure is rebuilt at once: the supervisor's
            // own restart back-off already spaces the process's deaths, and
            // events that come meanwhile would be lost for nothing.
            Verdict::Retry(Duration::ZERO)
        } else {
            Verdict::Retry(backoff_after(self.recent.len()))
        }
    }

    fn len(&self) -> usize {
        self.recent.len()
    }

    /// Whether a quarantine decided now is kept across restarts: not when
    /// it rests on runtime failures alone. A compromised runtime process
    /// can crash or hang itself during any policy's call at will; were that
    /// kept, it could bar any policy from the host for good.
    fn lasting(&self) -> bool {
        self.recent.iter().any(|(_, charge)| *charge == Charge::Fault)
    }
}

/// A policy to park.
struct Quarantine {
    reason: String,
    /// Kept across restarts (see [`Charges::lasting`]).
    lasting: bool,
}

/// What became of a worker after a failure.
enum Recovery {
    Rebuilt,
    /// Every attempt failed for reasons not the policy's: it has no
    /// instance until its next event or tick, which starts over.
    Deferred,
    Quarantine(Quarantine),
    /// The queue was closed (or the daemon is stopping) meanwhile.
    Stopped,
}

/// How one rebuild ended.
enum Rebuild {
    Running,
    Failed(Failure),
    Refused(LoadError),
    Stopped,
}

/// The wait before rebuild `attempt` (from 1) after failures that are not
/// the policy's: none before the first (opening a channel already waits
/// for the supervisor's restart), then 1 s, 2 s, ...
fn rebuild_wait(attempt: usize) -> Duration {
    match attempt {
        0 | 1 => Duration::ZERO,
        n => backoff_after(n - 1),
    }
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
                let _ = ready.send(Err(e.into()));
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
                Some(WorkerMsg::Ping(reply)) => {
                    let _ = reply.send(());
                    Ok(())
                }
                Some(WorkerMsg::Events(seq, batch)) => {
                    // What ticks and rebuilds asked for is not this batch's.
                    host.sysctl.take_decided();
                    let outcome = self.handle_batch(&mut host, batch);
                    self.report_decisions(&mut host, seq);
                    outcome
                }
                None => {
                    next_tick = self.tick.map(|t| Instant::now() + t);
                    let now = u64::try_from(self.ctx.started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    self.call_tick(&mut host, now)
                }
            };
            if let Err(failure) = outcome {
                match self.recover(&mut host, failure, &rx) {
                    Recovery::Rebuilt | Recovery::Deferred => next_tick = self.tick.map(|t| Instant::now() + t),
                    Recovery::Quarantine(quarantine) => return self.park(rx, &quarantine),
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
        let channel = self.live_channel()?;
        match channel.on_events(batch, kernel, host) {
            Ok(outcome) => outcome.map(|fuel| self.count_fuel(fuel)).map_err(Failure::from),
            Err(broken) => Err(Failure::Runtime(self.runtime_failed(broken.to_string()))),
        }
    }

    fn call_tick(&mut self, host: &mut LocalHost, now: u64) -> Result<(), Failure> {
        let kernel = self.ctx.actuator.kernel_epoch();
        let channel = self.live_channel()?;
        match channel.on_tick(now, kernel, host) {
            Ok(outcome) => outcome.map(|fuel| self.count_fuel(fuel)).map_err(Failure::from),
            Err(broken) => Err(Failure::Runtime(self.runtime_failed(broken.to_string()))),
        }
    }

    /// A shadow's calls are not the policy's: its fuel is not counted.
    fn count_fuel(&self, fuel: u64) {
        if self.shadow.is_none() {
            crate::metrics::global().fuel_used(&self.name, fuel);
        }
    }

    /// The channel, if the process it leads to still runs. One whose
    /// process died (or was replaced) since the last call is dropped
    /// without a call: its failure is not this policy's to answer for.
    fn live_channel(&mut self) -> Result<&mut PolicyChannel, Failure> {
        let Some(process) = self.channel.as_ref().map(|channel| channel.process) else {
            return Err(RuntimeFailure::not_charged("no channel"));
        };
        if self.ctx.runtime.current_number() != Some(process) {
            self.channel = None;
            return Err(RuntimeFailure::not_charged(format!("runtime process {process} is gone")));
        }
        self.channel.as_mut().ok_or_else(|| RuntimeFailure::not_charged("no channel"))
    }

    /// The channel broke during this policy's request: the runtime process
    /// that held it is killed (if it is not dead already), and the channel
    /// dropped. Charged to the policy when its channel is the first to
    /// report that process failing.
    fn runtime_failed(&mut self, why: String) -> RuntimeFailure {
        let Some(channel) = self.channel.take() else { return RuntimeFailure { why, during_call: false } };
        // Claimed before the kill: the channels the kill breaks find it taken.
        let during_call = self.ctx.quarantine.claim_runtime_failure(channel.process);
        self.ctx.runtime.kill(channel.process, &format!("policy {}'s channel: {why}", self.name));
        RuntimeFailure { why, during_call }
    }

    /// After a failure: counts it when it is charged to the policy, waits
    /// out the back-off and rebuilds the instance (in a new runtime
    /// process when the old one failed), or quarantines the policy when it
    /// has been charged too often. A rebuild that fails is one more
    /// failure, handled by the same loop, at most [`REBUILD_ATTEMPTS`] times.
    fn recover(&mut self, host: &mut LocalHost, first: Failure, rx: &Receiver<WorkerMsg>) -> Recovery {
        let mut failure = first;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Every failure is accounted, the last one too: it may be the
            // charge that quarantines.
            let wait = match self.account(failure, attempt) {
                Ok(wait) => wait,
                Err(quarantine) => return Recovery::Quarantine(quarantine),
            };
            if attempt > REBUILD_ATTEMPTS {
                tracing::warn!(event = "policy-rebuild-deferred", policy = %self.name, attempts = REBUILD_ATTEMPTS,
                    "policy {} could not be rebuilt in {REBUILD_ATTEMPTS} attempts; it is tried again at its next \
                     event or tick", self.name);
                return Recovery::Deferred;
            }
            if !wait.is_zero() && !self.back_off(wait, rx) {
                return Recovery::Stopped;
            }
            failure = match self.rebuild(host, rx) {
                Rebuild::Running => return Recovery::Rebuilt,
                Rebuild::Failed(failure) => failure,
                Rebuild::Stopped => return Recovery::Stopped,
                Rebuild::Refused(e) => return self.refused(&e),
            };
        }
    }

    /// A rebuild the policy itself refused (`init` refused or faulted, as
    /// the runtime reports it): quarantined at once, and kept like a fault
    /// (see `remember_quarantine`).
    fn refused(&self, e: &LoadError) -> Recovery {
        *lock(&self.stats.last_fault) = Some("init");
        if self.shadow.is_none() {
            crate::metrics::global().fault(&self.name, "init");
        }
        tracing::warn!(event = "policy-fault", policy = %self.name, fault = "init",
            faults = self.stats.faults.load(Ordering::Relaxed), detail = %e,
            "policy {} could not be rebuilt: {e}", self.name);
        Recovery::Quarantine(Quarantine { reason: format!("could not be rebuilt: {e}"), lasting: true })
    }

    /// Counts and logs one failure; the wait before the next rebuild, or
    /// the quarantine it leads to.
    fn account(&mut self, failure: Failure, attempt: usize) -> Result<Duration, Quarantine> {
        let (charge, kind, detail) = match failure {
            Failure::Fault(fault) => {
                self.stats.count_fault(fault.kind.as_str());
                (Charge::Fault, fault.kind.as_str(), fault.detail)
            }
            Failure::Runtime(RuntimeFailure { why, during_call: true }) => {
                self.stats.runtime_failures.fetch_add(1, Ordering::Relaxed);
                (Charge::Runtime, "runtime", why)
            }
            Failure::Runtime(RuntimeFailure { why, during_call: false }) => {
                tracing::warn!(event = "policy-runtime-lost", policy = %self.name, reason = %why, attempt,
                    "policy {} lost its runtime process ({why}); it is rebuilt in a new one", self.name);
                return Ok(rebuild_wait(attempt));
            }
        };
        if self.shadow.is_none() {
            crate::metrics::global().fault(&self.name, kind);
        }
        let verdict = self.charges.add(Instant::now(), charge);
        self.log_charge(charge, kind, &detail, &verdict);
        match verdict {
            Verdict::Retry(backoff) => Ok(backoff),
            Verdict::Quarantine { lasting } => Err(Quarantine {
                reason: match charge {
                    Charge::Fault => format!("{kind}: {detail}"),
                    Charge::Runtime => format!("the runtime process failed during its call: {detail}"),
                },
                lasting,
            }),
        }
    }

    /// The WARN line of a charged failure: a fault, or a runtime-process
    /// failure during this policy's call, told apart.
    fn log_charge(&self, charge: Charge, kind: &'static str, detail: &str, verdict: &Verdict) {
        let (backoff_ms, then) = match verdict {
            Verdict::Retry(backoff) => (
                millis(*backoff),
                format!("the call was abandoned and the instance is rebuilt in {} ms", millis(*backoff)),
            ),
            Verdict::Quarantine { .. } => (0, "the call was abandoned".to_string()),
        };
        let faults = self.stats.faults.load(Ordering::Relaxed);
        let runtime_failures = self.stats.runtime_failures.load(Ordering::Relaxed);
        match charge {
            Charge::Fault => tracing::warn!(event = "policy-fault", policy = %self.name, fault = kind, faults,
                runtime_failures, detail, backoff_ms, "policy {} faulted ({kind}: {detail}); {then}", self.name),
            Charge::Runtime => tracing::warn!(event = "policy-runtime-failure", policy = %self.name, faults,
                runtime_failures, reason = detail, backoff_ms,
                "the runtime process failed during this policy's call (policy {}: {detail}); it counts toward the \
                 policy's quarantine, as a fault would; {then}", self.name),
        }
    }

    /// One rebuild: waits for a runtime process, loads the policy and
    /// starts a fresh instance, then tells it which namespaces exist.
    fn rebuild(&mut self, host: &mut LocalHost, rx: &Receiver<WorkerMsg>) -> Rebuild {
        let subscriptions = loop {
            match self.instantiate_and_init(host) {
                Ok(subscriptions) => break subscriptions,
                // Waiting costs nothing and the queue's closing ends it.
                Err(BuildError::NoRuntime(why)) => {
                    tracing::debug!(policy = %self.name, reason = %why, "no runtime process yet");
                    if !self.back_off(Duration::from_millis(200), rx) {
                        return Rebuild::Stopped;
                    }
                }
                Err(BuildError::Runtime(failure)) => return Rebuild::Failed(Failure::Runtime(failure)),
                Err(BuildError::Refused(e)) => return Rebuild::Refused(e),
            }
        };
        tracing::info!(event = "policy-rebuilt", policy = %self.name,
            "policy {} runs again in runtime process {}", self.name, self.ctx.runtime.pid().unwrap_or(0));
        match self.announce_namespaces(host, &subscriptions) {
            Ok(()) => Rebuild::Running,
            Err(failure) => Rebuild::Failed(failure),
        }
    }

    /// The new instance starts with empty memory: tell it again which
    /// namespaces exist, as at its first start, so a policy that follows
    /// them (to find the initial one, say) does not lose track.
    fn announce_namespaces(&mut self, host: &mut LocalHost, subscriptions: &[EventKind]) -> Result<(), Failure> {
        if !subscriptions.contains(&EventKind::NamespaceChange) {
            return Ok(());
        }
        let known = namespace_announcements(&self.ctx.registry);
        if known.is_empty() {
            return Ok(());
        }
        self.call_events(host, &known)
    }

    /// Waits `backoff`, counting the events that arrive meanwhile as lost
    /// (the policy is told in its next batch). False when the queue closed.
    fn back_off(&self, backoff: Duration, rx: &Receiver<WorkerMsg>) -> bool {
        self.stats.backing_off.store(true, Ordering::Relaxed);
        let until = Instant::now() + backoff;
        let open = loop {
            match rx.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(WorkerMsg::Events(_, batch)) => {
                    let n = batch.len() as u64;
                    self.totals.add_lost(&self.stats, n);
                    self.stats.lost_unreported.fetch_add(n, Ordering::Relaxed);
                }
                Ok(WorkerMsg::Ping(reply)) => {
                    let _ = reply.send(());
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
        for msg in rx.try_iter() {
            self.discard(msg);
        }
    }

    fn park(&self, rx: Receiver<WorkerMsg>, quarantine: &Quarantine) {
        self.stats.quarantined.store(true, Ordering::Relaxed);
        if self.shadow.is_none() {
            crate::metrics::global().quarantined(&self.name);
        }
        let faults = self.stats.faults.load(Ordering::Relaxed);
        let runtime_failures = self.stats.runtime_failures.load(Ordering::Relaxed);
        let reason = quarantine.reason.as_str();
        let later = match quarantine.lasting {
            true => "nor is this file loaded at later starts",
            // It rests on runtime-process failures alone (see `Charges::lasting`).
            false => "until the daemon stops (runtime-process failures alone are not kept across restarts)",
        };
        tracing::error!(
            event = "policy-quarantined",
            policy = %self.name,
            faults,
            runtime_failures,
            reason,
            lasting = quarantine.lasting,
            "policy {} quarantined after {} failures in {} s: it gets no more events, {later}, \
             until its file changes or `wasmtune policy enable {}`",
            self.name,
            self.charges.len(),
            QUARANTINE_WINDOW.as_secs(),
            self.name
        );
        if quarantine.lasting {
            self.remember_quarantine(reason);
        }
        for msg in rx {
            self.discard(msg);
        }
    }

    /// A message for a thread that runs the policy no more: events are
    /// lost, a ping is still answered (the thread is not stuck).
    fn discard(&self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Events(_, batch) => self.totals.add_lost(&self.stats, batch.len() as u64),
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(());
            }
        }
    }

    /// Keeps the quarantine across restarts: a policy that exhausted the
    /// host must not come back with the daemon. What makes a quarantine
    /// lasting (traps, fuel, deadline, memory, blocked, a refused `init`)
    /// is reported by the runtime process, which the host cannot check: a
    /// compromised runtime could have any policy quarantined for good by
    /// reporting faults it never had, as it could simply not run it. That
    /// is a denial of service, not a way into the host; `wasmtune policy
    /// enable` (or a new file) clears it.
    fn remember_quarantine(&self, reason: &str) {
        let entry = QuarantineEntry::new(&self.digest, &self.name, &self.source, reason);
        if let Err(error) = self.ctx.quarantine.insert(entry) {
            tracing::warn!(policy = %self.name, %error,
                "the quarantine of policy {} holds only until the daemon stops: {error}", self.name);
        }
    }

    /// Loads the policy into the runtime process (on a new channel when it
    /// has none), then a fresh instance and its `init`. A load or `init`
    /// that breaks the channel is a runtime failure during this policy's
    /// request; a channel that cannot be opened is not.
    fn instantiate_and_init(&mut self, host: &mut LocalHost) -> Result<Vec<EventKind>, BuildError> {
        if self.channel.is_none() {
            let mut channel = self.open_channel()?;
            let clock_ms = millis(self.ctx.started.elapsed());
            match channel.load(&self.name, &self.bytes, self.ctx.memory_limit, clock_ms) {
                Ok(Ok(())) => self.channel = Some(channel),
                Ok(Err(refused)) => return Err(BuildError::Refused(LoadError::InRuntime(refused))),
                Err(broken) => {
                    // The file being compiled may be what broke it.
                    self.channel = Some(channel);
                    let why = format!("loading policy {}: {broken}", self.name);
                    return Err(BuildError::Runtime(self.runtime_failed(why)));
                }
            }
        }
        let channel = self.channel.as_mut().ok_or_else(|| BuildError::NoRuntime("no channel".into()))?;
        let info = match channel.start(&self.config, host) {
            Ok(Ok(Ok(info))) => info,
            Ok(Ok(Err(message))) => return Err(BuildError::Refused(LoadError::Init(message))),
            Ok(Err(fault)) => {
                let fault = Fault { kind: fault.kind, detail: fault.detail };
                return Err(BuildError::Refused(LoadError::Init(fault.to_string())));
            }
            Err(broken) => return Err(BuildError::Runtime(self.runtime_failed(broken.to_string()))),
        };
        for kind in &info.subscriptions {
            if !self.grant.may_subscribe(*kind) {
                return Err(BuildError::Refused(LoadError::UngrantedSubscription {
                    event: event_kind_name(*kind).to_string(),
                }));
            }
        }
        self.tick = info.tick_ms.map(|ms| Duration::from_millis(u64::from(ms.clamp(TICK_RANGE_MS.0, TICK_RANGE_MS.1))));
        Ok(info.subscriptions)
    }

    /// A new channel to the runtime process. One whose hello failed had
    /// its process killed by the supervisor: that death is claimed here, so
    /// no policy whose call it cut off is charged with it.
    fn open_channel(&self) -> Result<PolicyChannel, BuildError> {
        match self.ctx.runtime.open_channel(RUNTIME_WAIT) {
            Ok(channel) => Ok(channel),
            Err(error @ RuntimeError::Channel(_)) => {
                // Dead or not by now, it is still the last one started:
                // its successor waits out the supervisor's back-off.
                self.ctx.quarantine.claim_runtime_failure(self.ctx.runtime.last_number());
                Err(BuildError::Runtime(RuntimeFailure { why: error.to_string(), during_call: false }))
            }
            Err(error) => Err(BuildError::NoRuntime(error.to_string())),
        }
    }

    /// The policy's host capabilities, kept on this thread for its life:
    /// counters, rate limits and its state store survive every rebuild.
    fn local_host(&self) -> LocalHost {
        let live: Arc<dyn KernelSide> =
            Arc::new(LiveKernel { actuator: self.ctx.actuator.clone(), registry: self.ctx.registry.clone() });
        if let Some((_, arbiter)) = &self.shadow {
            // Reads the live values, changes nothing, keeps its own state.
            let sysctl = SysctlCap::new(
                self.grant.clone(),
                arbiter.clone(),
                Arc::new(ShadowKernel { live }),
                self.stats.requests.clone(),
                self.ctx.missing.clone(),
            )
            .as_shadow();
            let log = LogCap::new(&format!("{} (shadow)", self.name));
            return LocalHost::new(log, sysctl, StateCap { store: Arc::default() });
        }
        let scoped = Arc::new(ScopedKernel {
            inner: live,
            policy: self.name.clone(),
            side: self.side,
            scopes: self.ctx.canaries.clone(),
        });
        let sysctl = SysctlCap::new(
            self.grant.clone(),
            self.ctx.arbiter.clone(),
            scoped,
            self.stats.requests.clone(),
            self.ctx.missing.clone(),
        )
        .recording_to(self.ctx.recorder.clone());
        if self.side == Side::Canary {
            // Its own state: the current version's is not a new version's
            // to rewrite until it is promoted.
            let log = LogCap::new(&crate::canary::journal_label(&self.name));
            return LocalHost::new(log, sysctl, StateCap { store: Arc::default() });
        }
        LocalHost::new(LogCap::new(&self.name), sysctl, StateCap { store: self.ctx.stores.for_policy(&self.name) })
    }

    /// What the last batch's calls asked for, handed to the shadow book of
    /// this name (as the shadow's, or as the live version's).
    fn report_decisions(&self, host: &mut LocalHost, seq: u64) {
        let decided = host.sysctl.take_decided();
        if seq == 0 {
            return;
        }
        match &self.shadow {
            Some((book, _)) => book.shadow_done(seq, decided),
            None => {
                if let Some(book) = self.ctx.shadows.get(&self.name) {
                    book.live_done(seq, decided);
                }
            }
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
    fn runtime_failures_during_its_calls_quarantine_a_policy_until_the_daemon_stops() {
        let mut charges = Charges::default();
        let now = Instant::now();
        assert_eq!(charges.add(now, Charge::Runtime), Verdict::Retry(Duration::ZERO), "the first: at once");
        assert_eq!(charges.add(now, Charge::Runtime), Verdict::Retry(Duration::from_secs(2)));
        assert_eq!(
            charges.add(now, Charge::Runtime),
            Verdict::Quarantine { lasting: false },
            "runtime failures alone either never quarantine or are kept across restarts"
        );
    }

    #[test]
    fn a_fault_of_the_policys_own_makes_the_quarantine_lasting() {
        let mut charges = Charges::default();
        let now = Instant::now();
        charges.add(now, Charge::Runtime);
        charges.add(now, Charge::Fault);
        assert_eq!(charges.add(now, Charge::Runtime), Verdict::Quarantine { lasting: true });
        let mut faults = Charges::default();
        for _ in 1..QUARANTINE_AFTER {
            faults.add(now, Charge::Fault);
        }
        assert_eq!(faults.add(now, Charge::Fault), Verdict::Quarantine { lasting: true });
    }

    #[test]
    fn charges_older_than_the_window_no_longer_count() {
        let mut charges = Charges::default();
        let start = Instant::now();
        charges.add(start, Charge::Runtime);
        charges.add(start, Charge::Fault);
        let later = start + QUARANTINE_WINDOW + Duration::from_secs(1);
        // The only charge in the window again: rebuilt at once.
        assert_eq!(charges.add(later, Charge::Runtime), Verdict::Retry(Duration::ZERO));
        assert_eq!(charges.len(), 1);
        assert!(!charges.lasting(), "a fault that left the window still makes a quarantine lasting");
    }

    #[test]
    fn rebuilds_after_lost_runtimes_back_off_from_the_second_attempt() {
        assert_eq!(rebuild_wait(1), Duration::ZERO);
        assert_eq!(rebuild_wait(2), Duration::from_secs(1));
        assert_eq!(rebuild_wait(3), Duration::from_secs(2));
        let total: Duration = (1..=REBUILD_ATTEMPTS).map(rebuild_wait).sum();
        assert!(total < QUARANTINE_WINDOW, "one recovery waits {total:?}");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff_after(1), Duration::from_secs(1));
        assert_eq!(backoff_after(2), Duration::from_secs(2));
        assert_eq!(backoff_after(3), Duration::from_secs(4));
        assert_eq!(backoff_after(100), Duration::from_secs(64));
    }
}
