//! Kernel signals in: the BPF programs of `bpf/`, loaded and attached hook
//! by hook on a thread of their own, and the ring buffer drained into
//! batches of typed events.
//!
//! [`KernelSource::start`] spawns the BPF thread (the skeleton, its links
//! and the ring-buffer consumer never leave it) and returns once every hook
//! is attached or has failed; [`KernelSource::events`] yields one batch per
//! drain, in kernel order. Nothing is pinned: dropping the source (or the
//! process exiting) detaches and unloads everything.
//!
//! The BPF thread is a clone of the thread that calls `start` and inherits
//! its capabilities: call `start` before dropping CAP_BPF, CAP_PERFMON.

pub mod cgroup;
mod drain;
mod hooks;
mod loader;
mod relief;
mod skeleton;
mod stats;

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use libbpf_rs::{MapCore, MapFlags, MapHandle};

use crate::wit::Event;

pub(crate) use hooks::{HOOKS, Hook, is_attach_point};
pub(crate) use loader::try_alone;
pub(crate) use skeleton::Tuning;
pub use stats::{HookRunStats, RunTimeAccounting};

/// Where the kernel publishes its own BTF; CO-RE needs it.
pub(crate) const KERNEL_BTF: &str = "/sys/kernel/btf/vmlinux";

/// How the BPF side filters and how the host drains it.
#[derive(Debug, Clone)]
pub struct BpfConfig {
    /// A buffer is "near" its limit when within `limit >> near_limit_shift`
    /// of it (`6 - learning_rate`; 2 is within 25 %). 1..=30.
    pub near_limit_shift: u32,
    /// At most one event per (netns, direction) per this interval.
    pub min_interval: Duration,
    /// How often the ring buffer is drained into a batch. At least 1 ms.
    pub drain_interval: Duration,
    /// Batches the channel holds before new ones are dropped (and counted
    /// as lost). At least 1.
    pub channel_capacity: usize,
    /// At most one event per (netns, signal, subject) of every BPF signal
    /// other than tcp-buffer-limit per this interval; aggregated signals
    /// (backlog drops per CPU, UDP drops per netns) post their counts at
    /// most this often.
    pub signal_interval: Duration,
    /// How often namespaces under memory pressure are checked for relief.
    pub relief_check_interval: Duration,
    /// At most this many connection summaries per netns and second leave
    /// the kernel; the rest are counted (see
    /// [`KernelSource::suppressed_summaries`]) and reported as lost. 0 lifts
    /// the cap.
    pub connection_summaries_per_second: u32,
}

impl Default for BpfConfig {
    fn default() -> Self {
        Self {
            near_limit_shift: 2,
            min_interval: Duration::from_millis(25),
            drain_interval: Duration::from_millis(100),
            channel_capacity: 1024,
            signal_interval: Duration::from_millis(100),
            relief_check_interval: Duration::from_secs(1),
            connection_summaries_per_second: 500,
        }
    }
}

impl BpfConfig {
    /// The read-only settings the BPF programs are loaded with.
    pub(crate) fn tuning(&self) -> Tuning {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Tuning {
            near_limit_shift: self.near_limit_shift,
            min_interval_ns: ns(self.min_interval),
            signal_interval_ns: ns(self.signal_interval),
            connection_summaries_per_s: self.connection_summaries_per_second,
        }
    }

    fn validate(&self) -> Result<(), BpfError> {
        if !(1..=30).contains(&self.near_limit_shift) {
            return Err(BpfError::InvalidConfig { field: "near_limit_shift", requirement: "between 1 and 30" });
        }
        if self.drain_interval < Duration::from_millis(1) {
            return Err(BpfError::InvalidConfig { field: "drain_interval", requirement: "at least 1 ms" });
        }
        if self.channel_capacity == 0 {
            return Err(BpfError::InvalidConfig { field: "channel_capacity", requirement: "at least 1" });
        }
        Ok(())
    }
}

/// Whether a hook is live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookState {
    /// Loaded, attached and posting.
    Attached,
    /// Not running; the reason names every program tried.
    Failed {
        /// What the kernel or libbpf said.
        reason: String,
    },
}

/// One kernel hook and how it fared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookStatus {
    /// Short name, e.g. `tcp_rcvbuf_grow`.
    pub name: &'static str,
    /// The attach point in use (or, if none worked, the preferred one),
    /// e.g. `tp_btf/tcp_rcvbuf_grow`.
    pub attach_point: &'static str,
    /// The event it produces, e.g. `tcp-buffer-limit (receive)`.
    pub feeds: &'static str,
    /// Whether it runs.
    pub state: HookState,
}

/// Why the kernel side could not start or be read.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum BpfError {
    /// A [`BpfConfig`] field is out of range.
    #[error("BPF config: {field} must be {requirement}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// What it must be.
        requirement: &'static str,
    },
    /// The kernel does not publish its BTF, which every program needs.
    #[error("kernel BTF is missing ({path} does not exist); wasmtune needs a kernel built with CONFIG_DEBUG_INFO_BTF")]
    NoKernelBtf {
        /// Where it was looked for.
        path: &'static str,
    },
    /// Not one program of any hook loads on this kernel.
    #[error("no BPF program loads on this kernel: {}", describe(hooks))]
    NoHookLoads {
        /// Every hook, each failed with its reason.
        hooks: Vec<HookStatus>,
    },
    /// Every program loaded alone, but not together.
    #[error("loading the BPF programs {programs} together failed: {reason}")]
    Load {
        /// The programs loaded.
        programs: String,
        /// What the kernel or libbpf said.
        reason: String,
    },
    /// Programs loaded, but none attached.
    #[error("no BPF hook attached: {}", describe(hooks))]
    NoHookAttached {
        /// Every hook, each failed with its reason.
        hooks: Vec<HookStatus>,
    },
    /// The ring-buffer consumer could not be set up.
    #[error("setting up the BPF ring buffer consumer failed: {reason}")]
    RingBuffer {
        /// What libbpf said.
        reason: String,
    },
    /// A map could not be opened for reading from other threads.
    #[error("opening BPF map {map} failed: {reason}")]
    MapHandle {
        /// The map.
        map: &'static str,
        /// What libbpf said.
        reason: String,
    },
    /// A program descriptor could not be duplicated.
    #[error("duplicating the program descriptor of hook {hook} failed: {source}")]
    DuplicateFd {
        /// The hook.
        hook: &'static str,
        /// The system error.
        source: std::io::Error,
    },
    /// The BPF thread could not be spawned.
    #[error("spawning the BPF thread failed: {source}")]
    SpawnThread {
        /// The system error.
        source: std::io::Error,
    },
    /// The BPF thread ended before reporting whether its hooks attached.
    #[error("the BPF thread ended before reporting its hooks (it panicked)")]
    ThreadEnded,
    /// The kernel's run-time accounting could not be turned on.
    #[error("enabling BPF run-time statistics failed: {source}")]
    EnableRunTimeStats {
        /// The system error.
        source: std::io::Error,
    },
    /// A program's run counters could not be read.
    #[error("reading the run counters of hook {hook} failed: {source}")]
    ProgramInfo {
        /// The hook.
        hook: &'static str,
        /// The system error.
        source: std::io::Error,
    },
}

fn describe(hooks: &[HookStatus]) -> String {
    let failed = hooks.iter().filter_map(|h| match &h.state {
        HookState::Failed { reason } => Some(format!("{} ({}): {reason}", h.name, h.attach_point)),
        HookState::Attached => None,
    });
    failed.collect::<Vec<_>>().join("; ")
}

/// The running kernel side: attached hooks and a channel of event batches.
pub struct KernelSource {
    events: Receiver<Vec<Event>>,
    /// Lets other event producers (cgroup programs, /proc samplers) feed the same stream.
    sender: crossbeam_channel::Sender<Vec<Event>>,
    hooks: Vec<HookStatus>,
    lost_map: MapHandle,
    /// Highest kernel-side lost count read so far, so a failed read never
    /// makes the total go backwards.
    kernel_lost_seen: AtomicU64,
    suppressed_map: MapHandle,
    /// Highest suppressed-summary count read so far, likewise.
    suppressed_seen: AtomicU64,
    programs: Vec<(&'static str, OwnedFd)>,
    shared: Arc<drain::Shared>,
    /// Written to wake the thread, which sleeps until records or this.
    wake: std::os::unix::net::UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl KernelSource {
    /// Loads and attaches on a dedicated thread (skeleton/RingBuffer are
    /// !Send) and returns once every hook is attached or has failed.
    ///
    /// Fails only if nothing at all can run (no BTF, no permission, every
    /// hook refused); a hook that fails alone shows in [`Self::hooks`].
    pub fn start(config: BpfConfig) -> Result<KernelSource, BpfError> {
        config.validate()?;
        if !Path::new(KERNEL_BTF).exists() {
            return Err(BpfError::NoKernelBtf { path: KERNEL_BTF });
        }
        let (events_tx, events) = crossbeam_channel::bounded(config.channel_capacity);
        let (ready_tx, ready) = crossbeam_channel::bounded(1);
        let shared = Arc::new(drain::Shared::default());
        let thread_shared = Arc::clone(&shared);
        let sender = events_tx.clone();
        let (wake, woken) =
            std::os::unix::net::UnixStream::pair().map_err(|source| BpfError::SpawnThread { source })?;
        let thread = std::thread::Builder::new()
            .name("wasmtune-bpf".to_string())
            .spawn(move || drain::run(config, thread_shared, woken, ready_tx, events_tx))
            .map_err(|source| BpfError::SpawnThread { source })?;
        let started = match ready.recv() {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(BpfError::ThreadEnded);
            }
        };
        Ok(KernelSource {
            events,
            sender,
            hooks: started.hooks,
            lost_map: started.lost_map,
            kernel_lost_seen: AtomicU64::new(0),
            suppressed_map: started.suppressed_map,
            suppressed_seen: AtomicU64::new(0),
            programs: started.programs,
            shared,
            wake,
            thread: Some(thread),
        })
    }

    /// Batches of events, one per drain, in kernel order.
    pub fn events(&self) -> &crossbeam_channel::Receiver<Vec<Event>> {
        &self.events
    }

    /// A sender into the stream [`Self::events`] yields, for events that do
    /// not come from this source's ring buffer.
    pub fn event_sender(&self) -> crossbeam_channel::Sender<Vec<Event>> {
        self.sender.clone()
    }

    /// Every hook and whether it is attached, in a fixed order.
    pub fn hooks(&self) -> &[HookStatus] {
        &self.hooks
    }

    /// Events that never reached the channel: ring-buffer reserve failures
    /// in the kernel, connection summaries over their per-netns cap
    /// ([`Self::suppressed_summaries`]), records that did not decode, and
    /// events of batches dropped because the channel was full. Never
    /// decreases.
    pub fn lost_events(&self) -> u64 {
        let kernel = latest(&self.kernel_lost_seen, read_per_cpu_sum(&self.lost_map, "lost"));
        kernel
            + self.suppressed_summaries()
            + self.shared.dropped_full_channel.load(Ordering::Relaxed)
            + self.shared.malformed.load(Ordering::Relaxed)
    }

    /// Connection summaries the kernel did not post because their netns had
    /// already posted `connection_summaries_per_second` that second. Never
    /// decreases; part of [`Self::lost_events`].
    pub fn suppressed_summaries(&self) -> u64 {
        latest(&self.suppressed_seen, read_per_cpu_sum(&self.suppressed_map, "suppressed"))
    }

    /// Run counters of each attached hook (zero unless a
    /// [`RunTimeAccounting`] is alive while the hooks run).
    pub fn run_stats(&self) -> Result<Vec<HookRunStats>, BpfError> {
        self.programs.iter().map(|(hook, fd)| stats::read(hook, fd.as_fd())).collect()
    }

    /// Detaches everything and joins the thread (also done on drop).
    pub fn stop(self) {}
}

/// The highest of `seen` and `now` (a failed read keeps the last count).
fn latest(seen: &AtomicU64, now: Option<u64>) -> u64 {
    match now {
        Some(now) => seen.fetch_max(now, Ordering::Relaxed).max(now),
        None => seen.load(Ordering::Relaxed),
    }
}

/// The sum over CPUs of a per-CPU `u64` counter at index 0.
fn read_per_cpu_sum(map: &MapHandle, name: &str) -> Option<u64> {
    let per_cpu = match map.lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY) {
        Ok(Some(values)) => values,
        Ok(None) => return Some(0),
        Err(error) => {
            tracing::debug!(%error, map = name, "reading a BPF counter failed");
            return None;
        }
    };
    let counts = per_cpu.iter().filter_map(|v| v.get(..8)?.try_into().ok().map(u64::from_ne_bytes));
    Some(counts.sum())
}

impl Drop for KernelSource {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Err(error) = std::io::Write::write_all(&mut &self.wake, &[1]) {
            tracing::warn!(%error, "cannot wake the BPF thread to stop it");
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the BPF thread panicked while stopping");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_source_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<KernelSource>();
    }

    #[test]
    fn default_config_matches_the_documented_values() {
        let c = BpfConfig::default();
        assert_eq!(c.near_limit_shift, 2);
        assert_eq!(c.min_interval, Duration::from_millis(25));
        assert_eq!(c.signal_interval, Duration::from_millis(100));
        assert_eq!(c.drain_interval, Duration::from_millis(100));
        assert_eq!(c.channel_capacity, 1024);
        assert_eq!(c.connection_summaries_per_second, 500);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_out_of_range_config() {
        let bad = [
            BpfConfig { near_limit_shift: 0, ..BpfConfig::default() },
            BpfConfig { near_limit_shift: 31, ..BpfConfig::default() },
            BpfConfig { drain_interval: Duration::ZERO, ..BpfConfig::default() },
            BpfConfig { channel_capacity: 0, ..BpfConfig::default() },
        ];
        for config in bad {
            assert!(
                matches!(KernelSource::start(config.clone()), Err(BpfError::InvalidConfig { .. })),
                "{config:?} was accepted"
            );
        }
    }
}
