//! The daemon's one choke point for kernel writes. Every sysctl change,
//! from any policy, passes through the actuator thread, which for each
//! change enters the namespace, reads the current value, stops if the
//! administrator took the tunable over, then makes the one journaled write
//! ([`crate::ledger::write_sysctl`]: intent synced to disk, write, read back,
//! outcome), and logs what changed and why. The administrator's value put
//! back after a racing write and the daemon's rollbacks take the same write.
//! Per-destination changes (entries of the sockops `peers` map) take the
//! same path: journaled before the map is written, outcome after.
//!
//! Changes are applied in submission order by one thread, so two changes to
//! the same tunable can never interleave, and the thread entering namespaces
//! never disturbs the threads that run policies. Reads, the summary and the
//! rollback are round trips through the same queue, so they see every change
//! submitted before them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::admin_write::AdminWrite;
use crate::bpf::cgroup::PeerMap;
use crate::grants::HostLimits;
use crate::ledger::ADMINISTRATOR;
use crate::ledger::rollback::{NamespaceAccess, roll_back, roll_back_matching, settle_unresolved};
use crate::ledger::{
    DerivedState, Intent, Ledger, LedgerError, PeerEntry, PeerIntent, Record, RollbackReport, Summary, SysctlIntent,
    record::now_ms, write_sysctl,
};
use crate::netns::{NetnsError, NetnsRegistry};
use crate::overrides::{AdminOverrides, Override, OverridesError};
use crate::peer::{PeerPrefix, PeerSettings};
use crate::sysctl::{self, SysctlError, Value};

/// How long [`Actuator::read`] waits for the actuator thread.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Sysctl files kept open for fast reads. Policies read a handful of
/// tunables per namespace; a policy reading hundreds must not use up the
/// daemon's descriptors (writes, the journal and the control socket need
/// them), so reads beyond this take the slower path through the thread.
pub const MAX_OPEN_SYSCTLS: usize = 256;
/// Changes (and other commands) waiting for the actuator thread. Each
/// change costs two synced journal lines; a flood beyond this is refused
/// (`rate-limited`) instead of queued without end.
pub const MAX_QUEUED_COMMANDS: usize = 4096;

/// A checked request to change one sysctl in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SysctlChange {
    pub policy: String,
    /// The namespace's cookie.
    pub netns: u64,
    pub tunable: String,
    pub value: Value,
    /// The value the request was checked against (grant, fields, order).
    /// If the kernel holds another by the time the change is applied, the
    /// check no longer holds (a field the policy may not change could be
    /// put back to a stale value), so the change is not made.
    pub checked_against: Option<Value>,
    /// The short name of the situation ("need to increase TCP buffer size(s)").
    pub scenario: String,
    /// The sentence an administrator reads in the log.
    pub reason: String,
}

/// A checked request to set (or, with `settings: None`, forget) the
/// per-destination settings of one peer prefix in one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerEntryChange {
    pub policy: String,
    pub netns: u64,
    pub prefix: PeerPrefix,
    pub settings: Option<PeerSettings>,
    pub scenario: String,
    pub reason: String,
}

pub struct ActuatorConfig {
    /// Decide and log, write nothing (neither the kernel nor the journal).
    pub dry_run: bool,
    /// Where the journal lives (see [`crate::paths::DEFAULT_STATE_DIR`]).
    pub state_dir: PathBuf,
    pub registry: Arc<NetnsRegistry>,
    /// The journal is compacted past this size ([`crate::ledger::COMPACT_AT_BYTES`] by default).
    pub journal_max_bytes: u64,
}

/// Why the actuator could not start or answer.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// The journal could not be opened; without it nothing may be written.
    #[error("cannot open the journal: {source}")]
    Journal {
        #[from]
        source: LedgerError,
    },
    /// The administrator's overrides could not be read: starting without
    /// them would fight the administrator.
    #[error(transparent)]
    Overrides {
        #[from]
        source: OverridesError,
    },
    /// The actuator thread could not be started.
    #[error("cannot start the actuator thread: {source}")]
    Spawn { source: std::io::Error },
    /// The actuator thread has stopped (shut down, or panicked).
    #[error("the actuator has stopped")]
    Stopped,
    /// The actuator thread did not answer in time (a long queue of changes).
    #[error("reading {tunable} in netns {netns} took longer than {waited:?}")]
    Timeout { netns: u64, tunable: String, waited: Duration },
    /// The namespace could not be entered.
    #[error(transparent)]
    Netns {
        #[from]
        source: NetnsError,
    },
    /// The sysctl could not be read.
    #[error(transparent)]
    Sysctl {
        #[from]
        source: SysctlError,
    },
}

/// What the actuator thread is asked to do.
enum Command {
    Apply(SysctlChange),
    Peer(PeerEntryChange),
    AdminWrite(AdminWrite),
    NamespaceGone(u64),
    Read {
        netns: u64,
        tunable: String,
        reply: Sender<Result<Value, ActuateError>>,
    },
    Summary {
        reply: Sender<Summary>,
    },
    Rollback {
        reply: Sender<RollbackReport>,
    },
    /// Undoes what a canary changed (see [`canary_rollback`]).
    RollbackCanary {
        policy: String,
        why: String,
        reply: Sender<CanaryRollback>,
    },
    RollbackPolicy {
        policy: String,
        reply: Sender<RollbackReport>,
    },
    State {
        reply: Sender<DerivedState>,
    },
    /// Answered when the thread gets to it: it makes progress.
    Ping {
        reply: Sender<()>,
    },
    Shutdown {
        done: Sender<()>,
    },
}

/// The per-destination map, once the sockops program runs.
type PeerSlot = Arc<RwLock<Option<Arc<PeerMap>>>>;

/// A number that changes whenever sysctl values read before may have
/// changed: the host wrote one, another process wrote any sysctl, a
/// namespace was registered or went, a change is still queued. The runtime
/// process keeps the values a policy read until it changes. Without the
/// administrator-write hook another process's write would go unseen, so it
/// then changes at every look.
#[derive(Debug, Default)]
pub struct KernelEpoch {
    number: AtomicU64,
    outside_writes_seen: AtomicBool,
}

impl KernelEpoch {
    fn advance(&self) {
        self.number.fetch_add(1, Ordering::AcqRel);
    }

    /// The number for a call about to start. `settled`: no change is
    /// queued. `namespaces`: the registry's generation, folded in by
    /// addition: both only grow, so the sum changes whenever either does.
    fn look(&self, settled: bool, namespaces: u64) -> u64 {
        let number = if settled && self.outside_writes_seen.load(Ordering::Relaxed) {
            self.number.load(Ordering::Acquire)
        } else {
            self.number.fetch_add(1, Ordering::AcqRel) + 1
        };
        number.wrapping_add(namespaces)
    }
}

/// A handle to the actuator thread; clones share it.
#[derive(Clone)]
pub struct Actuator {
    commands: Sender<Command>,
    epoch: Arc<KernelEpoch>,
    overrides: Arc<AdminOverrides>,
    registry: Arc<NetnsRegistry>,
    peers: PeerSlot,
    readers: OpenSysctls,
    /// Changes submitted but not applied yet; reads take the ordered path
    /// through the thread while any are pending.
    pending: Arc<AtomicUsize>,
}

/// Sysctl files opened inside their namespace by the actuator thread, kept
/// so that later reads need neither a hop to that thread nor `setns`: an
/// open `/proc/sys` file stays bound to the namespace it was opened in.
type OpenSysctls = Arc<RwLock<HashMap<(u64, String), Arc<std::fs::File>>>>;

impl Actuator {
    /// Opens (or creates: directory 0700, file 0600) the journal, replays it,
    /// and starts the actuator thread. The thread inherits the calling
    /// thread's capabilities, and needs CAP_SYS_ADMIN to enter namespaces.
    pub fn spawn(config: ActuatorConfig) -> Result<(Actuator, JoinHandle<()>), ActuateError> {
        let mut ledger = Ledger::open_compacting_at(&config.state_dir, config.journal_max_bytes)?;
        let overrides = Arc::new(match config.dry_run {
            true => AdminOverrides::load_read_only(&config.state_dir)?,
            false => AdminOverrides::load(&config.state_dir)?,
        });
        if !config.dry_run {
            // A crash between journaling and confirming a change leaves it
            // open; what the kernel holds now says which way it went.
            let settled = settle_unresolved(&mut ledger, &NamespaceAccess::Registry(&config.registry));
            if settled != crate::ledger::SettledIntents::default() {
                tracing::info!(
                    applied = settled.applied,
                    not_applied = settled.not_applied,
                    unknown = settled.unknown,
                    "settled changes interrupted by a previous crash"
                );
            }
        }
        let (commands, receiver) = crossbeam_channel::bounded(MAX_QUEUED_COMMANDS);
        let readers = OpenSysctls::default();
        let pending = Arc::new(AtomicUsize::new(0));
        let peers = PeerSlot::default();
        let epoch = Arc::new(KernelEpoch::default());
        let worker = Worker {
            epoch: epoch.clone(),
            peers: peers.clone(),
            peer_entries: BTreeMap::new(),
            displaced: BTreeMap::new(),
            dry_run: config.dry_run,
            registry: config.registry.clone(),
            ledger,
            plan: DerivedState::default(),
            overrides: overrides.clone(),
            limits: HostLimits::detect(),
            readers: readers.clone(),
            pending: pending.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("wasmtune-actuator".into())
            .spawn(move || worker.run(receiver))
            .map_err(|source| ActuateError::Spawn { source })?;
        Ok((Actuator { commands, epoch, overrides, registry: config.registry, peers, readers, pending }, handle))
    }

    /// The current [`KernelEpoch`] number, for a policy call about to start.
    pub fn kernel_epoch(&self) -> u64 {
        let settled = self.pending.load(Ordering::Acquire) == 0;
        self.epoch.look(settled, self.registry.generation())
    }

    /// Whether the administrator-write hook reports other processes' sysctl
    /// writes, so that values read need not be read again until one comes.
    pub fn set_outside_writes_seen(&self, seen: bool) {
        self.epoch.outside_writes_seen.store(seen, Ordering::Relaxed);
        self.epoch.advance();
    }

    /// The administrator-write hook saw another process write a sysctl:
    /// any sysctl, in any namespace (or one the kernel did not name), since
    /// a policy may read tunables no policy writes, and the runtime process
    /// would otherwise keep the value it read before.
    pub fn note_outside_write(&self) {
        self.epoch.advance();
    }

    /// The current value of a sysctl in a namespace, read by the actuator
    /// thread after every change submitted before.
    pub fn read(&self, netns: u64, tunable: &str) -> Result<Value, ActuateError> {
        let key = (netns, tunable.to_string());
        let open = match self.pending.load(Ordering::Acquire) {
            0 => self.readers.read().unwrap_or_else(PoisonError::into_inner).get(&key).cloned(),
            _ => None,
        };
        if let Some(file) = open {
            match sysctl::read_open(tunable, &file) {
                Ok(value) => return Ok(value),
                // The namespace may be gone; the thread's answer is authoritative.
                Err(_) => {
                    self.readers.write().unwrap_or_else(PoisonError::into_inner).remove(&key);
                }
            }
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Read { netns, tunable: tunable.to_string(), reply })
            .map_err(|_| ActuateError::Stopped)?;
        match answer.recv_timeout(READ_TIMEOUT) {
            Ok(result) => result,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Err(ActuateError::Timeout { netns, tunable: tunable.to_string(), waited: READ_TIMEOUT })
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(ActuateError::Stopped),
        }
    }

    /// Queues a change; never blocks. Changes are applied in submission
    /// order. False when the queue is full (or the actuator stopped): the
    /// change is not made.
    pub fn submit(&self, change: SysctlChange) -> bool {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.commands.try_send(Command::Apply(change)) {
            Ok(()) => true,
            Err(refused) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                if let crossbeam_channel::TrySendError::Disconnected(Command::Apply(change)) = refused {
                    tracing::warn!(
                        policy = %change.policy,
                        tunable = %change.tunable,
                        "the actuator has stopped; change of {} not applied",
                        change.tunable
                    );
                }
                false
            }
        }
    }

    /// Hands the actuator the per-destination map (the sockops program runs).
    pub fn attach_peer_map(&self, map: Arc<PeerMap>) {
        *self.peers.write().unwrap_or_else(PoisonError::into_inner) = Some(map);
    }

    /// Whether per-destination settings can be applied (the sockops program runs).
    pub fn has_peer_map(&self) -> bool {
        self.peers.read().unwrap_or_else(PoisonError::into_inner).is_some()
    }

    /// Queues a per-destination change; applied in order with sysctl
    /// changes. False when the queue is full (or the actuator stopped).
    pub fn submit_peer(&self, change: PeerEntryChange) -> bool {
        match self.commands.try_send(Command::Peer(change)) {
            Ok(()) => true,
            Err(crossbeam_channel::TrySendError::Full(_)) => false,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                tracing::warn!("the actuator has stopped; per-destination change not applied");
                false
            }
        }
    }

    /// The administrator (another process) wrote `write.tunable` in
    /// `write.netns`: from now on the host leaves it alone there. The mark
    /// is visible at once to every later check and write, and kept on disk;
    /// the actuator thread then makes sure no host write raced the
    /// administrator's (see `Worker::settle_admin_write`). Returns whether
    /// the tunable is newly theirs.
    pub fn mark_overridden(&self, write: AdminWrite) -> bool {
        let entry = Override {
            netns: self.netns_name(write.netns),
            tunable: write.tunable.clone(),
            value: write.value.clone(),
            pid: write.pid,
            comm: write.comm.clone(),
            time_ms: now_ms(),
            source: "write".to_string(),
        };
        self.epoch.advance();
        let new = match self.overrides.insert(entry) {
            Ok(new) => new,
            Err(error) => {
                tracing::error!(%error, tunable = %write.tunable, "the override holds until the daemon stops, but is not kept on disk");
                true
            }
        };
        if self.commands.send(Command::AdminWrite(write)).is_err() {
            tracing::debug!("the actuator has stopped; administrator write only marked");
        }
        new
    }

    /// Whether the administrator owns this tunable in this namespace; the
    /// host leaves it alone there.
    pub fn is_overridden(&self, netns: u64, tunable: &str) -> bool {
        self.overrides.contains(&self.netns_name(netns), tunable)
    }

    /// Closes what was kept open for a namespace that went away, and removes
    /// its per-destination entries (the kernel map would keep them).
    pub fn forget_netns(&self, netns: u64) {
        self.epoch.advance();
        self.readers.write().unwrap_or_else(PoisonError::into_inner).retain(|(cookie, _), _| *cookie != netns);
        if self.commands.send(Command::NamespaceGone(netns)).is_err() {
            tracing::debug!("the actuator has stopped; nothing to remove for a namespace gone");
        }
    }

    /// How many sysctl files are kept open for fast reads.
    pub fn open_sysctls(&self) -> usize {
        self.readers.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The administrator's tunables, shared with the control socket.
    pub fn overrides(&self) -> &Arc<AdminOverrides> {
        &self.overrides
    }

    fn netns_name(&self, netns: u64) -> String {
        self.registry.display_name(netns)
    }

    /// The changes in effect (under `--dry-run`, those that would have been made).
    pub fn summary(&self) -> Summary {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::Summary { reply }).is_ok()
            && let Ok(summary) = answer.recv()
        {
            return summary;
        }
        tracing::warn!("the actuator has stopped; no summary");
        Summary::default()
    }

    /// Restores every value this daemon, and earlier runs still in the
    /// journal, changed (see [`crate::ledger::rollback`]).
    pub fn rollback(&self) -> RollbackReport {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::Rollback { reply }).is_ok()
            && let Ok(report) = answer.recv()
        {
            return report;
        }
        tracing::error!("the actuator has stopped; run `wasmtune rollback` to restore the original values");
        RollbackReport::default()
    }

    /// Undoes what the canary of `policy` changed: each sysctl back to the
    /// value before its run of changes, each per-destination entry back to
    /// the one it replaced (or removed), journaled and logged as the
    /// current version's, saying `why`.
    pub fn rollback_canary(&self, policy: &str, why: &str) -> CanaryRollback {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let command = Command::RollbackCanary { policy: policy.to_string(), why: why.to_string(), reply };
        if self.commands.send(command).is_ok()
            && let Ok(report) = answer.recv()
        {
            return report;
        }
        tracing::error!(policy, "the actuator has stopped; the canary of {policy} is not undone");
        CanaryRollback::default()
    }

    /// Restores the values whose last change `policy` made (see
    /// [`crate::ledger::rollback`]); other policies' changes stay.
    pub fn rollback_policy(&self, policy: &str) -> RollbackReport {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::RollbackPolicy { policy: policy.to_string(), reply }).is_ok()
            && let Ok(report) = answer.recv()
        {
            return report;
        }
        tracing::error!(policy, "the actuator has stopped; the values of policy {policy} are not restored");
        RollbackReport::default()
    }

    /// The fold of the journal, after every change submitted before (under
    /// `--dry-run`, of the changes that would have been made).
    pub fn ledger_state(&self) -> DerivedState {
        let (reply, answer) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::State { reply }).is_ok()
            && let Ok(state) = answer.recv()
        {
            return state;
        }
        DerivedState::default()
    }

    /// Whether the thread gets through what was submitted before and
    /// answers by `deadline`.
    pub fn answers_by(&self, deadline: Instant) -> bool {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.commands.send(Command::Ping { reply }).is_ok() && answer.recv_deadline(deadline).is_ok()
    }

    /// Applies every change submitted before, then stops the thread.
    pub fn shutdown(self) {
        let (done, finished) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::Shutdown { done }).is_ok() {
            // An error means the thread is already gone: nothing left to drain.
            let _ = finished.recv();
        }
    }
}

/// The state owned by the actuator thread.
struct Worker {
    peers: PeerSlot,
    /// Per-destination entries this daemon put in the map, for rollback.
    peer_entries: BTreeMap<(u64, PeerPrefix), String>,
    /// The entry (owner, settings) each entry replaced when its owner
    /// differed: what undoing a canary's entry puts back.
    displaced: BTreeMap<(u64, PeerPrefix), (String, PeerSettings)>,
    dry_run: bool,
    registry: Arc<NetnsRegistry>,
    ledger: Ledger,
    /// Under `--dry-run`, the fold of the changes that would have been made,
    /// for the summary (the journal is not written).
    plan: DerivedState,
    overrides: Arc<AdminOverrides>,
    /// Hard limits a value written on the administrator's behalf must meet.
    limits: HostLimits,
    readers: OpenSysctls,
    pending: Arc<AtomicUsize>,
    epoch: Arc<KernelEpoch>,
}

mod canary_rollback;
pub use canary_rollback::CanaryRollback;

impl Worker {
    fn run(mut self, commands: Receiver<Command>) {
        while let Ok(command) = commands.recv() {
            let writes = matches!(
                command,
                Command::AdminWrite(_)
                    | Command::Rollback { .. }
                    | Command::RollbackPolicy { .. }
                    | Command::RollbackCanary { .. }
            );
            match command {
                Command::Apply(change) => {
                    self.apply(&change);
                    // Before the change stops counting as pending: no
                    // moment in which an old value looks current.
                    self.epoch.advance();
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
                Command::Peer(change) => self.apply_peer(&change),
                Command::AdminWrite(write) => self.settle_admin_write(&write),
                Command::NamespaceGone(netns) => self.clear_peers_of(netns),
                Command::Read { netns, tunable, reply } => {
                    let _ = reply.send(self.read(netns, &tunable));
                }
                Command::Summary { reply } => {
                    let state = if self.dry_run { &self.plan } else { self.ledger.state() };
                    let _ = reply.send(Summary::from_state(state, self.dry_run));
                }
                Command::Rollback { reply } => {
                    let peers_removed = if self.dry_run { Vec::new() } else { self.clear_peers(None) };
                    let mut report =
                        roll_back(&mut self.ledger, &NamespaceAccess::Registry(&self.registry), self.dry_run);
                    report.peers_removed = peers_removed;
                    let _ = reply.send(report);
                }
                Command::RollbackCanary { policy, why, reply } => {
                    let _ = reply.send(self.roll_back_canary(&policy, &why));
                }
                Command::RollbackPolicy { policy, reply } => {
                    let peers_removed = if self.dry_run { Vec::new() } else { self.clear_peers(Some(&policy)) };
                    let access = NamespaceAccess::Registry(&self.registry);
                    let mut report = roll_back_matching(&mut self.ledger, &access, self.dry_run, Some(&policy));
                    report.peers_removed = peers_removed;
                    let _ = reply.send(report);
                }
                Command::Ping { reply } => {
                    let _ = reply.send(());
                }
                Command::State { reply } => {
                    let state = if self.dry_run { &self.plan } else { self.ledger.state() };
                    let _ = reply.send(state.clone());
                }
                Command::Shutdown { done } => {
                    let _ = done.send(());
                    break;
                }
            }
            if writes {
                self.epoch.advance();
            }
        }
        tracing::debug!(journal = %self.ledger.path().display(), "actuator stopped");
    }

    fn read(&self, netns: u64, tunable: &str) -> Result<Value, ActuateError> {
        let file = {
            let _inside = self.registry.enter(netns)?;
            sysctl::open(tunable)?
        };
        let value = sysctl::read_open(tunable, &file)?;
        let mut readers = self.readers.write().unwrap_or_else(PoisonError::into_inner);
        if readers.len() < MAX_OPEN_SYSCTLS {
            readers.insert((netns, tunable.to_string()), Arc::new(file));
        }
        Ok(value)
    }

    fn netns_name(&self, netns: u64) -> String {
        self.registry.display_name(netns)
    }

    /// Found holding a value the host did not write: the administrator's.
    fn mark_changed(&self, netns: &str, tunable: &str, found: &Value) {
        let entry = Override {
            netns: netns.to_string(),
            tunable: tunable.to_string(),
            value: Some(found.to_string()),
            pid: 0,
            comm: String::new(),
            time_ms: now_ms(),
            source: "changed".to_string(),
        };
        if let Err(error) = self.overrides.insert(entry) {
            tracing::error!(%error, tunable, "the override holds until the daemon stops, but is not kept on disk");
        }
    }

    fn is_overridden(&self, netns: &str, tunable: &str) -> bool {
        self.overrides.contains(netns, tunable)
    }

    /// Applies one change; see the module documentation for the steps.
    fn apply(&mut self, change: &SysctlChange) {
        let netns = self.netns_name(change.netns);
        if self.is_overridden(&netns, &change.tunable) {
            tracing::debug!(tunable = %change.tunable, %netns, "not changing a tunable the administrator took over");
            return;
        }
        if let Err(why) = self.may_write(change) {
            return log_failed(change, &netns, None, &why);
        }
        let _inside = match self.registry.enter(change.netns) {
            Ok(guard) => guard,
            Err(error) => return log_failed(change, &netns, None, &error.to_string()),
        };
        let old = match sysctl::read(&change.tunable) {
            Ok(old) => old,
            Err(error) => return log_failed(change, &netns, None, &error.to_string()),
        };
        if old == change.value {
            tracing::debug!(tunable = %change.tunable, %netns, value = %old, "already holds the requested value");
            return;
        }
        if let Err(why) = still_applies(change, &old) {
            return log_failed(change, &netns, Some(&old), &why);
        }
        if self.taken_over(change, &netns, &old) {
            return;
        }
        if self.dry_run {
            self.plan_change(change, &netns, &old);
            return log_change("sysctl-would-change", change, &netns, &old);
        }
        match self.write_journaled(change, &netns, &old) {
            Ok(()) => {
                crate::metrics::global().changed(&change.policy, &change.tunable);
                log_change("sysctl-change", change, &netns, &old)
            }
            Err(error) => log_failed(change, &netns, Some(&old), &error),
        }
    }

    /// Whether the host may write this tunable in this namespace at all.
    fn may_write(&self, change: &SysctlChange) -> Result<(), String> {
        sysctl::validate_name(&change.tunable).map_err(|error| error.to_string())?;
        if !self.registry.is_tuned(change.netns) {
            return Err("wasmtune does not tune this network namespace".to_string());
        }
        Ok(())
    }

    /// Whether the kernel holds something other than the host's last value:
    /// then someone else wrote it, and it is the administrator's from now on.
    fn taken_over(&self, change: &SysctlChange, netns: &str, old: &Value) -> bool {
        let Some(history) = self.ledger.state().get(netns, &change.tunable) else { return false };
        let Some(expected) = &history.last_written else { return false };
        if history.netns_cookie != change.netns || history.holds_host_value(old) {
            return false;
        }
        self.mark_changed(netns, &change.tunable, old);
        tracing::warn!(
            event = "admin-override",
            tunable = %change.tunable,
            netns = %netns,
            expected = %expected,
            found = %old,
            "{} in netns {netns} was changed by someone else: wasmtune wrote ({expected}), it now holds ({old}); \
             wasmtune leaves it alone from now on",
            change.tunable
        );
        true
    }

    /// Under `--dry-run`: the change folded into the plan, as if made.
    fn plan_change(&mut self, change: &SysctlChange, netns: &str, old: &Value) {
        let intent = self.intent(change, netns, old, self.plan.max_seq() + 1);
        let seq = intent.seq;
        self.plan.apply(&Record::Intent(intent));
        self.plan.apply(&Record::Applied { seq, time: now_ms() });
    }

    fn intent(&self, change: &SysctlChange, netns: &str, old: &Value, seq: u64) -> Intent {
        Intent {
            seq,
            time: now_ms(),
            policy: change.policy.clone(),
            netns: change.netns,
            netns_name: netns.to_string(),
            tunable: change.tunable.clone(),
            old: old.clone(),
            new: change.value.clone(),
            scenario: change.scenario.clone(),
            reason: change.reason.clone(),
        }
    }

    /// A change written through [`write_sysctl`], inside its namespace (the
    /// caller entered it). The error says what failed.
    fn write_journaled(&mut self, change: &SysctlChange, netns: &str, old: &Value) -> Result<(), String> {
        let intent = self.intent(change, netns, old, 0);
        let write = write_sysctl(&mut self.ledger, SysctlIntent::Change(intent));
        if let Some(journal_error) = write.unjournaled_outcome {
            tracing::error!(error = %journal_error, tunable = %change.tunable, %netns, "cannot journal the outcome of a change");
        }
        write.result.map_err(|error| error.to_string())
    }
}

impl Worker {
    /// Sets or clears one prefix's per-destination settings: journals the
    /// intent (synced to disk), writes the map, journals the outcome, logs.
    fn apply_peer(&mut self, change: &PeerEntryChange) {
        let netns = self.netns_name(change.netns);
        let peer = change.prefix.to_string();
        let settings = change.settings.as_ref().map_or_else(|| "(cleared)".to_string(), PeerSettings::to_string);
        let map = self.peers.read().unwrap_or_else(PoisonError::into_inner).clone();
        let replaced = self.ledger.state().peer(&netns, &peer).map(|entry| entry.settings.clone());
        let result = match (&map, self.dry_run) {
            (_, true) => {
                let intent = self.peer_intent(change, &netns, self.plan.max_seq() + 1);
                let seq = intent.seq;
                self.plan.apply(&Record::PeerIntent(intent));
                self.plan.apply(&Record::Applied { seq, time: now_ms() });
                Ok(())
            }
            (None, false) => Err("the sockops program is not attached".to_string()),
            (Some(map), false) => self.write_peer(map, change, &netns),
        };
        if let Err(error) = result {
            tracing::warn!(
                event = "peer-change-failed",
                policy = %change.policy,
                netns = %netns,
                peer = %peer,
                settings = %settings,
                error = %error,
                "per-destination settings for {peer} in netns {netns} not applied for policy {}: {error}",
                change.policy
            );
            return;
        }
        let key = (change.netns, change.prefix);
        match change.settings {
            Some(_) => {
                if let (Some(owner), Some(settings)) = (self.peer_entries.get(&key), replaced)
                    && *owner != change.policy
                {
                    self.displaced.insert(key, (owner.clone(), settings));
                }
                self.peer_entries.insert(key, change.policy.clone())
            }
            None => {
                self.displaced.remove(&key);
                self.peer_entries.remove(&key)
            }
        };
        let event = if self.dry_run { "peer-would-change" } else { "peer-change" };
        tracing::info!(
            event,
            policy = %change.policy,
            netns = %netns,
            peer = %peer,
            settings = %settings,
            scenario = %change.scenario,
            reason = %change.reason,
            "{}: new connections to {peer} in netns {netns} get {settings}{} (policy {}): {}",
            change.scenario,
            if self.dry_run { " (dry run)" } else { "" },
            change.policy,
            change.reason
        );
    }

    fn peer_intent(&self, change: &PeerEntryChange, netns: &str, seq: u64) -> PeerIntent {
        PeerIntent {
            seq,
            time: now_ms(),
            policy: change.policy.clone(),
            netns: change.netns,
            netns_name: netns.to_string(),
            peer: change.prefix.to_string(),
            settings: change.settings.clone(),
            scenario: change.scenario.clone(),
            reason: change.reason.clone(),
        }
    }

    /// The journaled write of one map entry; the error says what failed.
    fn write_peer(&mut self, map: &PeerMap, change: &PeerEntryChange, netns: &str) -> Result<(), String> {
        let intent = self.peer_intent(change, netns, self.ledger.next_seq());
        let seq = intent.seq;
        self.ledger
            .record(Record::PeerIntent(intent))
            .map_err(|error| format!("not written, because the journal failed: {error}"))?;
        let written = match &change.settings {
            Some(settings) => map.set(change.netns, &change.prefix, settings),
            None => map.clear(change.netns, &change.prefix),
        };
        let outcome = match &written {
            Ok(()) => Record::Applied { seq, time: now_ms() },
            Err(error) => Record::Failed { seq, time: now_ms(), error: error.to_string(), found: None },
        };
        if let Err(journal_error) = self.ledger.record(outcome) {
            tracing::error!(error = %journal_error, peer = %change.prefix, %netns, "cannot journal the outcome of a per-destination change");
        }
        written.map_err(|error| error.to_string())
    }

    /// Removes, journaled, the per-destination entries of a namespace that
    /// went away.
    fn clear_peers_of(&mut self, netns: u64) {
        let Some(map) = self.peers.read().unwrap_or_else(PoisonError::into_inner).clone() else { return };
        let gone: Vec<((u64, PeerPrefix), String)> =
            self.peer_entries.iter().filter(|((n, _), _)| *n == netns).map(|(k, o)| (*k, o.clone())).collect();
        for ((netns, prefix), owner) in gone {
            let name = self.netns_name(netns);
            let change = PeerEntryChange {
                policy: owner,
                netns,
                prefix,
                settings: None,
                scenario: "namespace gone".to_string(),
                reason: "per-destination settings of a network namespace that went away".to_string(),
            };
            match self.write_peer(&map, &change, &name) {
                Ok(()) => {
                    self.peer_entries.remove(&(netns, prefix));
                    tracing::info!(netns = %name, peer = %prefix, "per-destination settings for {prefix} removed with namespace {name}");
                }
                Err(error) => {
                    tracing::warn!(%error, netns = %name, "cannot remove per-destination settings for {prefix}")
                }
            }
        }
    }

    /// Removes the per-destination entries this daemon made (those of
    /// `policy` only, when given), each journaled; returns what was removed.
    fn clear_peers(&mut self, policy: Option<&str>) -> Vec<PeerEntry> {
        let Some(map) = self.peers.read().unwrap_or_else(PoisonError::into_inner).clone() else { return Vec::new() };
        let chosen: Vec<((u64, PeerPrefix), String)> = self
            .peer_entries
            .iter()
            .filter(|(_, owner)| policy.is_none_or(|p| *owner == p))
            .map(|(key, owner)| (*key, owner.clone()))
            .collect();
        let mut removed = Vec::new();
        for ((netns, prefix), owner) in chosen {
            let name = self.netns_name(netns);
            let entry = self.ledger.state().peer(&name, &prefix.to_string()).cloned();
            let change = PeerEntryChange {
                policy: owner.clone(),
                netns,
                prefix,
                settings: None,
                scenario: "rollback".to_string(),
                reason: "per-destination settings removed by a rollback".to_string(),
            };
            match self.write_peer(&map, &change, &name) {
                Ok(()) => {
                    self.peer_entries.remove(&(netns, prefix));
                    let settings = entry.as_ref().map_or_else(String::new, |e| e.settings.to_string());
                    tracing::info!(
                        event = "rollback",
                        tunable = %format!("tcp-peer:{prefix}"),
                        netns = %name,
                        from = %settings,
                        to = "cleared",
                        "per-destination settings for {prefix} in netns {name} (policy {owner}) removed; \
                         connections already open keep them"
                    );
                    removed.extend(entry);
                }
                Err(error) => {
                    tracing::warn!(%error, netns = %name, "cannot remove per-destination settings for {prefix}")
                }
            }
        }
        removed
    }

    /// Runs, in order with the writes, after an administrator's write was
    /// seen. The mark already stops every later write; this catches the one
    /// race left: a host write that read the old value just before the
    /// administrator wrote and landed just after, overwriting them. Then the
    /// kernel holds the host's value while the administrator wrote another,
    /// and the administrator's value is put back, through the same hard
    /// limits and journal as any change. `write.netns` is the namespace of
    /// the sysctl table written (not the writer's), so a value written
    /// through a descriptor passed from another namespace is put back only
    /// where it was written.
    fn settle_admin_write(&mut self, write: &AdminWrite) {
        if self.dry_run {
            return;
        }
        let netns = self.netns_name(write.netns);
        let Some(history) = self.ledger.state().get(&netns, &write.tunable) else { return };
        let Some(host_value) = history.last_written.clone() else { return };
        if history.netns_cookie != write.netns {
            return;
        }
        let Some(admin_value) = write.value.as_deref().map(Value::parse) else { return };
        if let Some(why) = self.outside_hard_limits(&write.tunable, &admin_value) {
            tracing::warn!(tunable = %write.tunable, %netns, "the value {} (pid {}) wrote to {} is not put back after a racing write: {why}", write.comm, write.pid, write.tunable);
            return;
        }
        let Ok(_inside) = self.registry.enter(write.netns) else { return };
        let Ok(now) = sysctl::read(&write.tunable) else { return };
        if now != host_value || now == admin_value || shape_mismatch(&now, &admin_value).is_some() {
            return;
        }
        let change = SysctlChange {
            policy: ADMINISTRATOR.to_string(),
            netns: write.netns,
            tunable: write.tunable.clone(),
            value: admin_value.clone(),
            checked_against: Some(now.clone()),
            scenario: "administrator's value restored".to_string(),
            reason: format!("{} (pid {}) wrote it while a wasmtune write was under way", write.comm, write.pid),
        };
        match self.write_journaled(&change, &netns, &now) {
            Ok(()) => tracing::warn!(
                event = "admin-override-restored",
                tunable = %write.tunable,
                netns = %netns,
                pid = write.pid,
                comm = %write.comm,
                found = %now,
                restored = %admin_value,
                "a wasmtune write to {} in netns {netns} raced the write by {} (pid {}); their value ({admin_value}) is restored",
                write.tunable,
                write.comm,
                write.pid
            ),
            Err(error) => tracing::error!(
                %error,
                tunable = %write.tunable,
                netns = %netns,
                "cannot restore the administrator's value of {} after a racing write",
                write.tunable
            ),
        }
    }

    /// Why a value is beyond what the host ever writes, if it is.
    fn outside_hard_limits(&self, tunable: &str, value: &Value) -> Option<String> {
        sysctl::validate_name(tunable).err().map(|e| e.to_string()).or_else(|| {
            let Some((min, max)) = self.limits.bounds(tunable) else {
                return Some("it is not a tunable wasmtune writes".to_string());
            };
            let Value::Integers(fields) = value else { return None };
            fields
                .iter()
                .find(|field| !(min..=max).contains(*field))
                .map(|field| format!("{field} is outside the host's hard limits [{min}, {max}]"))
        })
    }
}

/// Refuses a write the kernel would take only in part: writing two integers
/// to a three-integer sysctl sets the first two and keeps the third, and the
/// kernel reports success.
fn shape_mismatch(old: &Value, new: &Value) -> Option<String> {
    match (old, new) {
        (Value::Integers(old), Value::Integers(new)) if old.len() != new.len() => Some(format!(
            "it holds {} integer(s) and the change has {}; a partial write is refused",
            old.len(),
            new.len()
        )),
        (Value::Integers(_), Value::Text(_)) => Some("it holds integers and the change is text".to_string()),
        _ => None,
    }
}

/// Whether a change checked against one value may still be made now that
/// the kernel holds `old`: not if the write would be partial, nor if the
/// value changed since the check (the policy may ask again).
fn still_applies(change: &SysctlChange, old: &Value) -> Result<(), String> {
    if let Some(mismatch) = shape_mismatch(old, &change.value) {
        return Err(mismatch);
    }
    match &change.checked_against {
        Some(checked) if checked != old => {
            Err(format!("it changed from ({checked}) since the request was checked; the policy may ask again"))
        }
        _ => Ok(()),
    }
}

/// The INFO line of a change made (or, under `--dry-run`, one that would be).
fn log_change(event: &'static str, change: &SysctlChange, netns: &str, old: &Value) {
    let verb = if event == "sysctl-change" { "changed" } else { "would change (dry run)" };
    tracing::info!(
        event,
        policy = %change.policy,
        tunable = %change.tunable,
        netns = %netns,
        old = %old,
        new = %change.value,
        scenario = %change.scenario,
        reason = %change.reason,
        "{}: {} in netns {netns} {verb} from ({old}) to ({}) by policy {}: {}",
        change.scenario,
        change.tunable,
        change.value,
        change.policy,
        change.reason
    );
}

/// The WARN line of a change that was not made.
fn log_failed(change: &SysctlChange, netns: &str, old: Option<&Value>, error: &str) {
    let old = old.map_or_else(|| "unknown".to_string(), Value::to_string);
    tracing::warn!(
        event = "sysctl-change-failed",
        policy = %change.policy,
        tunable = %change.tunable,
        netns = %netns,
        old = %old,
        new = %change.value,
        scenario = %change.scenario,
        reason = %change.reason,
        error = %error,
        "{}: {} in netns {netns} could not be changed from ({old}) to ({}) by policy {}: {error}",
        change.scenario,
        change.tunable,
        change.value,
        change.policy
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_epoch_moves_with_writes_namespaces_and_queued_changes() {
        let epoch = KernelEpoch::default();
        epoch.outside_writes_seen.store(true, Ordering::Relaxed);
        let settled = epoch.look(true, 0);
        assert_eq!(epoch.look(true, 0), settled, "nothing changed, yet values read must be read again");
        let registered = epoch.look(true, 1);
        assert_ne!(registered, settled, "a namespace registered or removed left the epoch");
        assert_eq!(epoch.look(true, 1), registered);
        epoch.advance();
        let written = epoch.look(true, 1);
        assert_ne!(written, registered, "a write left the epoch");
        assert_ne!(epoch.look(false, 1), written, "a change still queued left the epoch");
        epoch.outside_writes_seen.store(false, Ordering::Relaxed);
        let unseen = epoch.look(true, 1);
        assert_ne!(epoch.look(true, 1), unseen, "without the write hook every look must be new");
    }

    #[test]
    fn refuses_partial_and_mistyped_writes() {
        let three = Value::Integers(vec![4096, 131072, 6291456]);
        assert!(shape_mismatch(&three, &Value::Integers(vec![1, 2])).is_some());
        assert!(shape_mismatch(&three, &Value::Text("x".into())).is_some());
        assert_eq!(shape_mismatch(&three, &Value::Integers(vec![0, 0, 0])), None);
        assert_eq!(shape_mismatch(&Value::Text("cubic".into()), &Value::Text("bbr".into())), None);
    }
}
