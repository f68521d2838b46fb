//! The BPF thread: owns the object, its links and the ring-buffer consumer
//! (none of which may leave the thread that made them), drains the ring on a
//! timer and hands decoded batches to the channel without ever blocking.
//!
//! The programs post without waking user space, so `RingBuffer::poll`
//! mostly serves as the timer; every tick ends with a `consume`, which reads
//! whatever is there regardless of wakeups (level-triggered, so no record
//! can be stranded the way an edge-triggered reactor strands them).

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use libbpf_rs::{MapHandle, RingBuffer, RingBufferBuilder};

use super::loader;
use super::relief::Relief;
use super::{BpfConfig, BpfError, HookStatus};
use crate::wit::Event;

/// The longest the thread sleeps before looking at the stop flag.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// State the thread shares with its [`super::KernelSource`].
#[derive(Debug, Default)]
pub(super) struct Shared {
    /// Set to make the thread detach everything and return.
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
    drain_until_stopped(&config, &ring, &batch, &relief, &events, &shared);
    // What the kernel posted before the stop still goes out.
    drain(&ring, &batch, &events, &shared);
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

/// The drain loop: polls (mostly as a timer), drains every
/// `drain_interval`, checks for relieved memory pressure every
/// `relief_check_interval`, until `shared.stop` is set.
fn drain_until_stopped(
    config: &BpfConfig,
    ring: &RingBuffer<'_>,
    batch: &RefCell<Vec<Event>>,
    relief: &RefCell<Relief>,
    events: &Sender<Vec<Event>>,
    shared: &Shared,
) {
    let tick = config.drain_interval.min(STOP_CHECK);
    let mut last_drain = Instant::now();
    let mut last_relief_check = Instant::now();
    let mut poll_failed = false;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Err(e) = ring.poll(tick)
            && e.kind() != libbpf_rs::ErrorKind::Interrupted
        {
            if !poll_failed {
                tracing::warn!(error = %e, "polling the BPF ring buffer failed; draining on the timer alone");
                poll_failed = true;
            }
            std::thread::sleep(tick);
        }
        if last_drain.elapsed() >= config.drain_interval {
            last_drain = Instant::now();
            drain(ring, batch, events, shared);
        }
        if last_relief_check.elapsed() >= config.relief_check_interval {
            last_relief_check = Instant::now();
            let relieved = relief.borrow_mut().check();
            if !relieved.is_empty() {
                batch.borrow_mut().extend(relieved);
                drain(ring, batch, events, shared);
            }
        }
    }
}

fn drain(ring: &RingBuffer<'_>, batch: &RefCell<Vec<Event>>, events: &Sender<Vec<Event>>, shared: &Shared) {
    if let Err(e) = ring.consume() {
        tracing::debug!(error = %e, "consuming the BPF ring buffer failed");
    }
    let taken = std::mem::take(&mut *batch.borrow_mut());
    if taken.is_empty() {
        return;
    }
    match events.try_send(taken) {
        Ok(()) => {}
        Err(TrySendError::Full(dropped) | TrySendError::Disconnected(dropped)) => {
            shared.dropped_full_channel.fetch_add(dropped.len() as u64, Ordering::Relaxed);
        }
    }
}

/// Counts a record that did not decode; warns about the first only, since a
/// bad record means a layout mismatch and every later record will be bad too.
fn note_malformed(shared: &Shared, error: &crate::events::DecodeError) {
    if shared.malformed.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(%error, "a BPF record did not decode; counting such records as lost");
    }
}
