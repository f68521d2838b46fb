//! The BPF thread: owns the object, its links and the ring-buffer consumer
//! (none of which may leave the thread that made them), drains the ring on a
//! timer and hands decoded batches to the channel without ever blocking.
//!
//! The programs wake user space only for the first record after a drain
//! (the kernel's adaptive notification) or when the ring fills up, so an
//! idle daemon's thread sleeps until traffic comes. Once woken it lets a
//! drain interval's worth of records gather and takes them in one
//! `consume`, which reads whatever is there: one wake-up per drain at most,
//! as with a timer, and none at all without events.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use crossbeam_channel::{Sender, TrySendError};
use libbpf_rs::{MapHandle, RingBuffer, RingBufferBuilder};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::loader;
use super::relief::Relief;
use super::{BpfConfig, BpfError, HookStatus};
use crate::wit::Event;

/// State the thread shares with its [`super::KernelSource`].
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Set to make the thread detach everything and return (then the
    /// thread is woken through its socket).
    pub stop: AtomicBool,
    /// Events dropped because the channel was full.
    pub dropped_full_channel: AtomicU64,
    /// Records that did not decode.
    pub malformed: AtomicU64,
}

/// What the thread reports once every hook is attached or has failed.
pub(super) struct Started {
    pub hooks: Vec<HookStatus>,
    /// The per-CPU `lost` counters, readable from any thread.
    pub lost_map: MapHandle,
    /// The per-CPU `suppressed` counters (connection summaries over the cap).
    pub suppressed_map: MapHandle,
    /// A descriptor per attached hook's program, for run counters.
    pub programs: Vec<(&'static str, OwnedFd)>,
}

/// Runs the BPF thread: load, attach, report through `ready`, then drain
/// until `shared.stop` is set. Everything is detached when this returns.
pub(super) fn run(
    config: BpfConfig,
    shared: Arc<Shared>,
    woken: UnixStream,
    ready: Sender<Result<Started, BpfError>>,
    events: Sender<Vec<Event>>,
) {
    let mut first = MaybeUninit::uninit();
    let mut second = MaybeUninit::uninit();
    let batch = RefCell::new(Vec::new());
    let relief = RefCell::new(Relief::default());
    let loaded = match loader::load_and_attach(&mut first, &mut second, config.tuning()) {
        Ok(loaded) => loaded,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let (ring, started) =
        match consume_into(&loaded, &batch, &relief, &shared).and_then(|ring| Ok((ring, handles(&loaded)?))) {
            Ok(set_up) => set_up,
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        };
    if ready.send(Ok(started)).is_err() {
        return;
    }
    drain_until_stopped(&config, &ring, &batch, &relief, &events, (&shared, &woken));
    // What the kernel posted before the stop still goes out.
    let _ = drain(&ring, &batch, &events, &shared);
    drop(ring);
    drop(loaded);
}

/// The ring buffer's consumer: each record decoded into `batch`, pressure
/// noted for `relief`, a record that does not decode counted.
fn consume_into<'a>(
    loaded: &'a loader::Loaded<'_>,
    batch: &'a RefCell<Vec<Event>>,
    relief: &'a RefCell<Relief>,
    shared: &'a Shared,
) -> Result<RingBuffer<'a>, BpfError> {
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&loaded.skel.maps.events, |record: &[u8]| {
            match crate::events::decode(record) {
                Ok(event) => {
                    relief.borrow_mut().note(&event);
                    batch.borrow_mut().push(event);
                }
                Err(error) => note_malformed(shared, &error),
            }
            0
        })
        .map(|_| ())
        .and_then(|()| builder.build())
        .map_err(|e| BpfError::RingBuffer { reason: e.to_string() })
}

/// What other threads read of the loaded object: its counter maps and a
/// descriptor per attached program.
fn handles(loaded: &loader::Loaded<'_>) -> Result<Started, BpfError> {
    let lost_map = MapHandle::try_from(&loaded.skel.maps.lost)
        .map_err(|e| BpfError::MapHandle { map: "lost", reason: e.to_string() })?;
    let suppressed_map = MapHandle::try_from(&loaded.skel.maps.suppressed)
        .map_err(|e| BpfError::MapHandle { map: "suppressed", reason: e.to_string() })?;
    let mut programs = Vec::new();
    for (hook, program) in &loaded.programs {
        let fd = program.program_fd.try_clone().map_err(|source| BpfError::DuplicateFd { hook, source })?;
        programs.push((*hook, fd));
    }
    Ok(Started { hooks: loaded.hooks.clone(), lost_map, suppressed_map, programs })
}

/// The drain loop: sleeps until the ring has records (or, while some
/// namespace is under memory pressure, until the next relief check), lets
/// `drain_interval` pass since the last drain so records come in batches,
/// drains, and goes back to sleep, until `shared.stop` is set.
fn drain_until_stopped(
    config: &BpfConfig,
    ring: &RingBuffer<'_>,
    batch: &RefCell<Vec<Event>>,
    relief: &RefCell<Relief>,
    events: &Sender<Vec<Event>>,
    (shared, woken): (&Shared, &UnixStream),
) {
    let mut last_drain = Instant::now();
    let mut last_relief_check = Instant::now();
    // While records keep coming, the thread drains on the interval without
    // waiting for the ring (one wake-up per drain); once a drain finds
    // nothing it sleeps until the ring wakes it.
    let mut flowing = false;
    while !shared.stop.load(Ordering::Relaxed) {
        let records = flowing || {
            let relief_due = relief.borrow().waiting().then(|| last_relief_check + config.relief_check_interval);
            wait(ring, woken, relief_due)
        };
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        if records {
            // Woken from idle, the first records wait a whole interval for
            // the rest of their batch, as on a timer.
            let batch_ends = if flowing { last_drain } else { Instant::now() } + config.drain_interval;
            if sleep_until(woken, batch_ends) == Woken::Stop {
                return;
            }
            flowing = drain(ring, batch, events, shared) > 0;
            // Counted from the end of the drain, as a timer re-armed after
            // the work would: batches stay at least an interval apart.
            last_drain = Instant::now();
        }
        if last_relief_check.elapsed() >= config.relief_check_interval {
            last_relief_check = Instant::now();
            let relieved = relief.borrow_mut().check();
            if !relieved.is_empty() {
                batch.borrow_mut().extend(relieved);
                let _ = drain(ring, batch, events, shared);
            }
        }
    }
}

/// Whether a sleep ended at its time or because the thread is told to stop.
#[derive(Debug, PartialEq, Eq)]
enum Woken {
    Time,
    Stop,
}

/// Sleeps until the ring has records, the stop socket is written or
/// closed, or `until`; whether the ring has records. A failed wait is
/// taken as records, so the caller drains on its interval instead of
/// stranding them.
fn wait(ring: &RingBuffer<'_>, woken: &UnixStream, until: Option<Instant>) -> bool {
    // SAFETY: the ring buffer's epoll descriptor lives as long as `ring`,
    // which outlives this borrow.
    let epoll = unsafe { BorrowedFd::borrow_raw(ring.epoll_fd()) };
    let mut fds = [PollFd::new(woken.as_fd(), PollFlags::POLLIN), PollFd::new(epoll, PollFlags::POLLIN)];
    match poll(&mut fds, timeout_until(until)) {
        Ok(_) => fds[1].revents().is_some_and(|r| r.contains(PollFlags::POLLIN)),
        Err(nix::errno::Errno::EINTR) => false,
        Err(error) => {
            tracing::debug!(%error, "waiting for the BPF ring buffer failed; draining on the interval");
            true
        }
    }
}

/// Sleeps until `until` unless the stop socket is written or closed first.
fn sleep_until(woken: &UnixStream, until: Instant) -> Woken {
    let mut fds = [PollFd::new(woken.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, timeout_until(Some(until))) {
        Ok(n) if n > 0 => Woken::Stop,
        _ => Woken::Time,
    }
}

/// `until` as a poll timeout: none for `None`, at least 0, at most ~24 days,
/// never shorter than the time left.
fn timeout_until(until: Option<Instant>) -> PollTimeout {
    match until {
        None => PollTimeout::NONE,
        Some(until) => {
            // Rounded up: poll(2) counts whole milliseconds, and a sleep cut
            // short would put two batches closer than the drain interval.
            let ms = until.saturating_duration_since(Instant::now()).as_micros().div_ceil(1000);
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Takes every record there is and sends them on as one batch; how many.
fn drain(ring: &RingBuffer<'_>, batch: &RefCell<Vec<Event>>, events: &Sender<Vec<Event>>, shared: &Shared) -> usize {
    if let Err(e) = ring.consume() {
        tracing::debug!(error = %e, "consuming the BPF ring buffer failed");
    }
    let taken = std::mem::take(&mut *batch.borrow_mut());
    let count = taken.len();
    if taken.is_empty() {
        return 0;
    }
    match events.try_send(taken) {
        Ok(()) => {}
        Err(TrySendError::Full(dropped) | TrySendError::Disconnected(dropped)) => {
            shared.dropped_full_channel.fetch_add(dropped.len() as u64, Ordering::Relaxed);
        }
    }
    count
}

/// Counts a record that did not decode; warns about the first only, since a
/// bad record means a layout mismatch and every later record will be bad too.
fn note_malformed(shared: &Shared, error: &crate::events::DecodeError) {
    if shared.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(%error, "a BPF record did not decode; counting such records as lost");
    }
}
