//! The judge: once a second while a canary runs, its health is judged
//! ([`crate::canary::health::judge`]) and a regression beyond the margin,
//! or a fault of the canary's own, reverts it through the reconciler. The
//! thread sleeps on a channel while no canary runs.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::canary::health::{Verdict, judge};
use crate::router::{Canary, PolicySet};
use crate::watcher::{Ending, Reconciler};

/// How often a running canary is judged.
pub const JUDGE_EVERY: Duration = Duration::from_secs(1);

pub struct CanaryJudge {
    stop: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl CanaryJudge {
    pub fn spawn(policies: Arc<PolicySet>, reconciler: Arc<Mutex<Reconciler>>) -> std::io::Result<CanaryJudge> {
        let (stop, stopping) = crossbeam_channel::bounded::<()>(1);
        let started = policies.canary_started();
        let thread = std::thread::Builder::new()
            .name("canary-judge".into())
            .spawn(move || run(&policies, &reconciler, &stopping, &started))?;
        Ok(CanaryJudge { stop: Some(stop), thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for CanaryJudge {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(policies: &PolicySet, reconciler: &Mutex<Reconciler>, stopping: &Receiver<()>, started: &Receiver<()>) {
    loop {
        let idle = policies.canaries().is_empty();
        let woken = if idle {
            crossbeam_channel::select! {
                recv(stopping) -> _ => return,
                recv(started) -> _ => continue,
            }
        } else {
            stopping.recv_timeout(JUDGE_EVERY)
        };
        if !matches!(woken, Err(crossbeam_channel::RecvTimeoutError::Timeout)) {
            return;
        }
        for canary in policies.canaries() {
            if let Some(why) = regression(policies, &canary) {
                let name = canary.worker.name.clone();
                let ended =
                    reconciler.lock().unwrap_or_else(|p| p.into_inner()).end_canary(&name, Ending::Reverted, &why);
                if let Err(error) = ended {
                    tracing::debug!(policy = %name, "canary already ended: {error}");
                }
            }
        }
    }
}

/// Why `canary` is to be reverted now, with its figures; `None` while it
/// holds (its verdict kept for status).
fn regression(policies: &PolicySet, canary: &Canary) -> Option<String> {
    let stats = &canary.worker.stats;
    let faults = stats.faults.load(Ordering::Relaxed) + stats.runtime_failures.load(Ordering::Relaxed);
    if faults > 0 || stats.quarantined.load(Ordering::Relaxed) {
        return Some(format!(
            "the canary faulted {faults} time(s) (last: {})",
            stats.last_fault().unwrap_or("runtime process failure")
        ));
    }
    let now = Instant::now();
    let verdict = policies.with_observations(|o| judge(o, &canary.scope, canary.started, now, &canary.health));
    let why = match &verdict {
        Verdict::Regressed(figures) => Some(figures.to_string()),
        _ => None,
    };
    *canary.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(verdict);
    why
}
