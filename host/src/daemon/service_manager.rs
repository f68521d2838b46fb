//! Telling the service manager how the daemon is (systemd's `Type=notify`):
//! ready once the hooks are attached and the policies loaded, with the
//! counts as its status; reloading; stopping; and watchdog pings, sent only
//! while the threads of the data path answer, so that a stuck actuator,
//! router or policy thread stops them and `WatchdogSec=` restarts the
//! daemon. Outside systemd (`NOTIFY_SOCKET` unset) all of it is a no-op.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::actuate::Actuator;
use crate::router::{PolicySet, RouterPinger};

/// Sends `states`; a failure is only worth a debug line (no manager, or
/// one that went away: the daemon tunes on).
fn notify(states: &[NotifyState]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "cannot notify the service manager");
    }
}

/// `READY=1` and the status line.
pub fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `RELOADING=1`, with the time systemd wants beside it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now, NotifyState::Status("reloading the configuration")]),
        Err(_) => notify(&[NotifyState::Reloading, NotifyState::Status("reloading the configuration")]),
    }
}

/// `STOPPING=1`.
pub fn stopping(why: &str) {
    notify(&[NotifyState::Stopping, NotifyState::Status(why)]);
}

/// What the watchdog asks to answer before it pings.
pub struct Liveness {
    pub actuator: Actuator,
    pub router: RouterPinger,
    pub policies: Arc<PolicySet>,
}

impl Liveness {
    /// The first part that does not answer by `deadline`, by name.
    fn stuck(&self, deadline: Instant) -> Option<String> {
        if !self.actuator.answers_by(deadline) {
            return Some("the actuator".into());
        }
        if !self.router.answers_by(deadline) {
            return Some("the router".into());
        }
        let canaries = self.policies.canaries().into_iter().map(|c| c.worker.clone());
        let workers = self.policies.snapshot().into_iter().chain(self.policies.shadows()).chain(canaries);
        workers.into_iter().find(|w| !w.answers_by(deadline)).map(|w| format!("the thread of policy {}", w.name))
    }
}

/// Pings the watchdog every half interval while every part answers.
pub struct Watchdog {
    stop: Option<crossbeam_channel::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts pinging when the manager asked for it (`WATCHDOG_USEC` for
    /// this process); `None` otherwise.
    pub fn start(liveness: Liveness) -> Option<Watchdog> {
        let interval = sd_notify::watchdog_enabled()?;
        let (stop, stopping) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || ping_while_alive(&liveness, interval, &stopping));
        match thread {
            Ok(thread) => {
                tracing::info!(
                    event = "watchdog",
                    interval_ms = interval.as_millis() as u64,
                    "the service manager's watchdog is pinged every {} ms while the actuator, the router and every \
                     policy thread answer",
                    (interval / 2).as_millis()
                );
                Some(Watchdog { stop: Some(stop), thread: Some(thread) })
            }
            Err(error) => {
                tracing::error!(%error, "cannot start the watchdog thread: the service manager will restart the daemon");
                None
            }
        }
    }

    pub fn stop(self) {}
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread's wait.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Every half `interval`: asks each part to answer within a quarter
/// interval, pings if all did. Says once when a part stops answering and
/// once when it answers again.
fn ping_while_alive(liveness: &Liveness, interval: Duration, stopping: &crossbeam_channel::Receiver<()>) {
    let period = interval / 2;
    let mut stuck_since: Option<(Instant, String)> = None;
    loop {
        let started = Instant::now();
        match liveness.stuck(started + interval / 4) {
            None => {
                notify(&[NotifyState::Watchdog]);
                if let Some((since, part)) = stuck_since.take() {
                    tracing::info!(event = "watchdog-recovered", part = %part,
                        "{part} answers again after {} ms; the watchdog is pinged again", since.elapsed().as_millis());
                }
            }
            Some(part) => {
                if stuck_since.as_ref().is_none_or(|(_, p)| *p != part) {
                    tracing::error!(event = "watchdog-stuck", part = %part, interval_ms = interval.as_millis() as u64,
                        "{part} has not answered within {} ms: the watchdog is no longer pinged, so the service \
                         manager restarts the daemon unless it recovers within {} ms",
                        (interval / 4).as_millis(), interval.as_millis());
                    stuck_since = Some((started, part));
                }
            }
        }
        match stopping.recv_timeout(period.saturating_sub(started.elapsed())) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => return,
        }
    }
}
