//! Routes kernel event batches to the policies that subscribed to them, in
//! the namespaces the host tunes. Never blocks on a policy: a full queue
//! counts as lost events for that policy only.
//!
//! A batch is routed entirely under the set's read lock, and a load, replace
//! or unload takes the write lock: a swap therefore falls between two
//! batches, never inside one. Every event offered to a name before the swap
//! is queued at the old version (which handles its queue before it stops),
//! every later one at the new: each is handled once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::events::{event_kind, event_netns};
use crate::netns::NetnsRegistry;
use crate::runtime::worker::{NameTotals, PolicyWorker};
use crate::wit::Event;

/// The running policies by name; swapped atomically on load, replace, unload.
#[derive(Default)]
pub struct PolicySet {
    workers: RwLock<BTreeMap<String, Arc<PolicyWorker>>>,
    /// Counts per name across every version ever loaded under it.
    totals: Mutex<BTreeMap<String, Arc<NameTotals>>>,
}

impl PolicySet {
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

    /// Removes every worker; each stops when its last reference drops.
    pub fn clear(&self) -> Vec<Arc<PolicyWorker>> {
        let mut workers = self.workers.write().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *workers).into_values().collect()
    }
}

/// Splits one kernel batch into per-policy batches, keeping kernel order.
pub fn route(batch: &[Event], registry: &NetnsRegistry, workers: &[Arc<PolicyWorker>]) -> Vec<Vec<Event>> {
    let mut per_worker: Vec<Vec<Event>> = vec![Vec::new(); workers.len()];
    for event in batch {
        if let Some(netns) = event_netns(event)
            && !registry.is_tuned(netns)
        {
            continue;
        }
        let Some(kind) = event_kind(event) else { continue };
        for (i, worker) in workers.iter().enumerate() {
            if worker.wants(kind) {
                per_worker[i].push(event.clone());
            }
        }
    }
    per_worker
}

/// The routing thread: kernel batches in, per-policy batches out.
pub struct Router {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Router {
    pub fn spawn(
        events: Receiver<Vec<Event>>,
        upstream_lost: impl Fn() -> u64 + Send + 'static,
        registry: Arc<NetnsRegistry>,
        policies: Arc<PolicySet>,
    ) -> std::io::Result<Router> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new().name("router".into()).spawn(move || {
            let mut lost_seen = 0;
            while !stopping.load(Ordering::Relaxed) {
                let batch = match events.recv_timeout(Duration::from_millis(100)) {
                    Ok(batch) => batch,
                    Err(RecvTimeoutError::Timeout) => Vec::new(),
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                let lost_now = upstream_lost();
                policies.with_workers(|workers| {
                    if lost_now > lost_seen {
                        for worker in workers {
                            worker.note_upstream_loss(lost_now - lost_seen);
                        }
                    }
                    if batch.is_empty() {
                        return;
                    }
                    for (worker, events) in workers.iter().zip(route(&batch, &registry, workers)) {
                        if !events.is_empty() {
                            worker.deliver(events);
                        }
                    }
                });
                lost_seen = lost_now;
            }
        })?;
        Ok(Router { stop, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.shutdown();
    }
}
