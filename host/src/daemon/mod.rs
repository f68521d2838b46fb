//! `wasmtune run`: wires the data path together — namespaces, actuator,
//! policies, BPF, router, directory watcher — runs until SIGINT or SIGTERM,
//! then stops in reverse order, rolls back when asked, and prints the summary.

mod canary_judge;
mod outside_changes;
mod reload;
mod service_manager;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use std::os::unix::fs::DirBuilderExt;

use anyhow::Context;

use crate::actuate::{Actuator, ActuatorConfig};
use crate::bpf::{BpfConfig, HookState, KernelSource};
use crate::config::{AdminConfig, LearningRate};
use crate::control::{ControlContext, ControlServer};
use crate::grants::{Arbiter, HostLimits};
use crate::metrics::MetricsServer;
use crate::netns::NetnsRegistry;
use crate::paths;
use crate::recording::writer::Recorder;
use crate::router::{PolicySet, Router};
use crate::runtime::quarantine::QuarantineList;
use crate::runtime::state::DEFAULT_MEMORY_LIMIT;
use crate::runtime::supervisor::{RuntimeOptions, RuntimeProcess};
use crate::runtime::worker::WorkerContext;
use crate::signals::{ProcSignals, ProcSignalsConfig};
use crate::sysctl_d::BootSettings;
use crate::watcher::{DirWatcher, Reconciler};
use outside_changes::CgroupAndNamespaces;

/// Everything `run` needs, resolved from the command line.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub policy_dirs: Vec<PathBuf>,
    pub state_dir: PathBuf,
    /// `Some` when the administrator named a config file (then it must exist).
    pub config: Option<PathBuf>,
    pub dry_run: bool,
    pub rollback: bool,
    pub learning_rate: Option<LearningRate>,
    pub netns: Vec<String>,
    /// Where the control socket listens.
    pub control_socket: PathBuf,
    /// What to do with changes an earlier run left in effect.
    pub on_crash: OnCrash,
    /// `--record FILE`: events and values read, for `policy test` and `replay`.
    pub record: Option<PathBuf>,
    /// The cap on one recording file, past which it rotates.
    pub record_max_bytes: u64,
    /// `--metrics ADDR`: serve `GET /metrics` there (else the configuration's).
    pub metrics: Option<std::net::SocketAddr>,
}

/// What to do at start with changes the journal says an earlier run left
/// in effect (it crashed, or stopped without `--rollback`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCrash {
    /// Keep the values, and their originals, so a later rollback restores them.
    #[default]
    Adopt,
    /// Restore the originals before any policy starts (only where the kernel
    /// still holds what the host last wrote).
    Rollback,
}

pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let mut signals = DaemonSignals::install()?;
    let running = start(&opts)?;
    service_manager::ready(&running.status_line());
    let watchdog = service_manager::Watchdog::start(service_manager::Liveness {
        actuator: running.actuator.clone(),
        router: running.router.pinger(),
        policies: running.policies.clone(),
    });
    let stop_signal = loop {
        match signals.wait() {
            DaemonSignal::Reload => {
                service_manager::reloading();
                let status = match reload::reload(&opts, &running.reconciler) {
                    true => running.status_line(),
                    false => format!("{}; the last reload was refused (see the log)", running.status_line()),
                };
                service_manager::ready(&status);
            }
            DaemonSignal::Stop(name) => break name,
        }
    };
    tracing::info!("{stop_signal} received: stopping");
    service_manager::stopping(&format!("{stop_signal} received: stopping"));
    if let Some(watchdog) = watchdog {
        watchdog.stop();
    }
    running.stop(opts.rollback);
    Ok(())
}

/// What `run` started, in the order it started them; [`Running::stop`]
/// stops them in reverse, so that nothing still feeds a part that stopped.
struct Running {
    actuator: Actuator,
    actuator_thread: JoinHandle<()>,
    runtime: Arc<RuntimeProcess>,
    policies: Arc<PolicySet>,
    kernel: Option<Arc<KernelSource>>,
    proc_signals: Option<Arc<ProcSignals>>,
    outside: CgroupAndNamespaces,
    router: Router,
    control: Option<ControlServer>,
    /// Shared with the directory watcher and the control socket; reloads
    /// go through it too.
    reconciler: Arc<Mutex<Reconciler>>,
    watcher: Option<DirWatcher>,
    /// For the status line the service manager shows.
    registry: Arc<NetnsRegistry>,
    dry_run: bool,
    metrics: Option<MetricsServer>,
    judge: Option<canary_judge::CanaryJudge>,
}

/// Starts the data path from the actuator up: the journal and the
/// administrator's settings first, then the policies, the event sources,
/// the router between them, and the control socket and directory watcher.
fn start(opts: &RunOptions) -> anyhow::Result<Running> {
    let started = Instant::now();
    let config_path = opts.config.clone().unwrap_or_else(|| PathBuf::from(paths::DEFAULT_CONFIG));
    let config = AdminConfig::load(&config_path, opts.config.is_some())?;
    // Before anything starts: signatures asked for with no key to check
    // them would refuse every file, so the daemon does not start.
    let trust = crate::trust::Trust::from_config(&config)?;
    let rate = opts.learning_rate.or(config.learning_rate).unwrap_or(LearningRate::DEFAULT);
    let metrics_addr = opts.metrics.or_else(|| config.metrics.as_ref().and_then(|m| m.listen).map(|a| a.0));

    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&opts.state_dir)
        .with_context(|| format!("cannot create state directory {}", opts.state_dir.display()))?;
    let registry = Arc::new(NetnsRegistry::discover(&opts.netns).context("cannot discover network namespaces")?);
    let (actuator, actuator_thread) = Actuator::spawn(ActuatorConfig {
        dry_run: opts.dry_run,
        state_dir: opts.state_dir.clone(),
        registry: registry.clone(),
        journal_max_bytes: config.journal_max_bytes.unwrap_or(crate::ledger::COMPACT_AT_BYTES),
    })
    .context("cannot start the actuator")?;
    recover_earlier_run(&actuator, opts.on_crash, opts.dry_run);
    let respect_sysctl_d = read_boot_settings(&config, &actuator);

    let runtime = RuntimeProcess::start(RuntimeOptions {
        program: None,
        cache_dir: Some(paths::component_cache_dir(&opts.state_dir)),
    })
    .context("cannot start the runtime process")?;
    let arbiter = Arc::new(Arbiter::default());
    let missing = Arc::new(crate::missing::MissingTunables::default());
    let quarantine = Arc::new(load_quarantine(&opts.state_dir, opts.dry_run)?);
    let recorder = match &opts.record {
        Some(path) => {
            let recorder = Recorder::create(path, opts.record_max_bytes).context("cannot start the recording")?;
            tracing::info!(event = "recording", file = %path.display(), max_bytes = opts.record_max_bytes, "recording every event routed and every value read to {} (rotated past {} bytes)", path.display(), opts.record_max_bytes);
            Some(Arc::new(recorder))
        }
        None => None,
    };
    let ctx = WorkerContext {
        runtime: runtime.clone(),
        arbiter: arbiter.clone(),
        actuator: actuator.clone(),
        registry: registry.clone(),
        limits: HostLimits::detect(),
        learning_rate: rate.get(),
        memory_limit: DEFAULT_MEMORY_LIMIT,
        started,
        stores: Arc::default(),
        missing: missing.clone(),
        quarantine,
        recorder: recorder.clone(),
        shadows: Arc::default(),
        canaries: Arc::default(),
    };
    let policies = Arc::new(PolicySet::default());
    if let Some(recorder) = recorder {
        policies.record_to(recorder);
    }
    let builtins = crate::builtin::load_all();
    let mut reconciler = Reconciler::new(builtins, opts.policy_dirs.clone(), ctx, config, trust, policies.clone());
    if !opts.dry_run {
        reconciler.keep_reverted_canaries_in(&opts.state_dir);
    }
    // Nothing runs yet, so nothing is retired; stopped all the same.
    reconciler.reconcile().stop();
    let offered = reconciler.offered();
    say_boot_settings(respect_sysctl_d, &actuator, &policies);
    let reconciler = Arc::new(Mutex::new(reconciler));

    let kernel = start_kernel_source(rate);
    if let Some(kernel) = &kernel {
        crate::metrics::hooks::watch(kernel);
    }
    let (events_tx, events_rx) = match &kernel {
        Some(kernel) => (kernel.event_sender(), kernel.events().clone()),
        None => crossbeam_channel::bounded(BpfConfig::default().channel_capacity),
    };
    let proc_signals = ProcSignals::start(
        ProcSignalsConfig { near_limit_shift: rate.near_limit_shift(), ..ProcSignalsConfig::default() },
        registry.clone(),
        events_tx,
    )
    .map_err(|e| tracing::warn!("/proc signals (softnet, route table, fragments) are off: {e}"))
    .ok()
    .map(Arc::new);
    let outside = outside_changes::start_cgroup_and_namespaces(
        &actuator,
        &arbiter,
        &registry,
        &policies,
        rate.near_limit_shift(),
    );
    let router = {
        let kernel_for_loss = kernel.clone();
        let proc_for_loss = proc_signals.clone();
        Router::spawn(
            events_rx,
            move || {
                kernel_for_loss.as_ref().map_or(0, |k| k.lost_events())
                    + proc_for_loss.as_ref().map_or(0, |p| p.dropped_events())
            },
            registry.clone(),
            policies.clone(),
        )
        .context("cannot start the router thread")?
    };
    let control_ctx = ControlContext {
        policies: policies.clone(),
        offered,
        reconciler: reconciler.clone(),
        actuator: actuator.clone(),
        arbiter,
        registry: registry.clone(),
        started,
        dry_run: opts.dry_run,
        state_dir: opts.state_dir.clone(),
        missing,
        runtime: runtime.clone(),
    };
    let metrics_ctx = metrics_addr.map(|addr| (addr, control_ctx.clone()));
    let control = start_control(&opts.control_socket, control_ctx);
    let watcher = match DirWatcher::spawn(reconciler.clone()) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!("policy directories are not watched: {e}");
            None
        }
    };
    let metrics = metrics_ctx.and_then(|(addr, ctx)| start_metrics(addr, ctx));
    let judge = match canary_judge::CanaryJudge::spawn(policies.clone(), reconciler.clone()) {
        Ok(judge) => Some(judge),
        Err(e) => {
            tracing::warn!("canaries are not judged (no automatic revert): {e}");
            None
        }
    };
    say_ready(&policies, &registry, kernel.as_deref(), rate, opts.dry_run);
    Ok(Running {
        actuator,
        actuator_thread,
        runtime,
        policies,
        kernel,
        proc_signals,
        outside,
        router,
        control,
        reconciler,
        watcher,
        registry: registry.clone(),
        dry_run: opts.dry_run,
        metrics,
        judge,
    })
}

impl Running {
    /// What runs, for `systemctl status`: policies, namespaces, hooks.
    fn status_line(&self) -> String {
        let attached = self
            .kernel
            .as_ref()
            .map_or(0, |k| k.hooks().iter().filter(|h| matches!(h.state, HookState::Attached)).count());
        format!(
            "tuning: {} policies, {} network namespaces, {attached}/{} kernel hooks attached{}",
            self.policies.names().len(),
            self.registry.list().len(),
            crate::bpf::HOOKS.len(),
            if self.dry_run { " (dry run: nothing is changed)" } else { "" }
        )
    }

    /// Stops what [`start`] started, in reverse: nothing is fed once what
    /// feeds it has stopped, and the event sources and the namespace
    /// watcher stop before the actuator they tell. Rolls back when asked,
    /// then says the summary.
    fn stop(self, rollback: bool) {
        if let Some(metrics) = self.metrics {
            metrics.stop();
        }
        if let Some(judge) = self.judge {
            judge.stop();
        }
        if let Some(w) = self.watcher {
            w.stop();
        }
        if let Some(control) = self.control {
            control.stop();
        }
        self.router.stop();
        self.outside.stop();
        // The /proc poller stops when dropped (the router held its other handle).
        drop(self.proc_signals);
        if let Some(kernel) = self.kernel {
            match Arc::try_unwrap(kernel) {
                Ok(kernel) => kernel.stop(),
                Err(_) => tracing::warn!("BPF programs are detached at exit"),
            }
        }
        // One shared deadline: a policy stuck in a call cannot hold up the
        // rollback and the summary.
        crate::runtime::worker::stop_all(&self.policies.clear_shadows());
        let canaries: Vec<_> = self.policies.clear_canaries().iter().map(|c| c.worker.clone()).collect();
        crate::runtime::worker::stop_all(&canaries);
        crate::runtime::worker::stop_all(&self.policies.clear());
        self.runtime.stop();
        if rollback {
            let report = self.actuator.rollback();
            for line in report.lines() {
                tracing::info!("{line}");
            }
        }
        for line in self.actuator.summary().lines() {
            tracing::info!(event = "summary", "{line}");
        }
        self.actuator.shutdown();
        let _ = self.actuator_thread.join();
    }
}

/// Reads the boot-time sysctl files, unless the administrator said not to,
/// and makes what they set the administrator's; returns whether they count.
fn read_boot_settings(config: &AdminConfig, actuator: &Actuator) -> bool {
    let respect_sysctl_d = config.respect_sysctl_d.unwrap_or(true);
    if respect_sysctl_d {
        let boot = match &config.sysctl_d_dirs {
            Some(dirs) => BootSettings::read(dirs, None),
            None => BootSettings::read_default(),
        };
        for warning in &boot.warnings {
            tracing::warn!(event = "sysctl-d", "{warning}");
        }
        actuator.overrides().set_boot(boot);
    }
    respect_sysctl_d
}

/// The tracepoint programs. Without any BPF hook the /proc signals, the
/// actuator, rollback and the control socket still serve: run with what
/// works and say what does not.
fn start_kernel_source(rate: LearningRate) -> Option<Arc<KernelSource>> {
    match KernelSource::start(BpfConfig { near_limit_shift: rate.near_limit_shift(), ..BpfConfig::default() }) {
        Ok(kernel) => Some(Arc::new(kernel)),
        Err(error) => {
            tracing::warn!(
                event = "hooks-unavailable",
                %error,
                "no BPF tracepoint hook runs ({error}); tuning goes on from the /proc signals, \
                 and `wasmtune support` tells what this kernel lacks"
            );
            None
        }
    }
}

/// The control socket. The daemon tunes without it, rather than not at all.
fn start_control(socket: &Path, ctx: ControlContext) -> Option<ControlServer> {
    match ControlServer::start(socket, ctx) {
        Ok(control) => Some(control),
        Err(e) => {
            tracing::warn!(
                "no control socket, so `wasmtune status` and the other queries cannot reach this daemon: {e}"
            );
            None
        }
    }
}

/// `GET /metrics`, when asked for. Like the control socket, the daemon
/// tunes without it rather than not at all.
fn start_metrics(addr: std::net::SocketAddr, ctx: ControlContext) -> Option<MetricsServer> {
    let source: crate::metrics::http::Source = Arc::new(move |format| ctx.metrics_text(format));
    match MetricsServer::start(addr, source) {
        Ok(server) => Some(server),
        Err(error) => {
            tracing::warn!(event = "metrics-unavailable", %error, "no metrics endpoint: {error}");
            None
        }
    }
}

/// The `ready` line: what runs, where, with how many kernel hooks.
fn say_ready(
    policies: &PolicySet,
    registry: &NetnsRegistry,
    kernel: Option<&KernelSource>,
    rate: LearningRate,
    dry_run: bool,
) {
    let attached = kernel.map_or(0, |k| k.hooks().iter().filter(|h| matches!(h.state, HookState::Attached)).count());
    let names = policies.names().join(",");
    let namespaces = registry.list().iter().map(|n| n.name.clone()).collect::<Vec<_>>().join(",");
    tracing::info!(
        event = "ready",
        policies = %names,
        netns = %namespaces,
        hooks = attached,
        learning_rate = rate.get(),
        dry_run,
        "wasmtune running: policies [{names}], namespaces [{namespaces}], {attached}/{} kernel hooks attached{}",
        crate::bpf::HOOKS.len(),
        if dry_run { ", dry run: nothing will be changed" } else { "" }
    );
}

/// Says at start which boot-time settings are the administrator's and which
/// of them a running policy would otherwise change.
fn say_boot_settings(respect: bool, actuator: &Actuator, policies: &PolicySet) {
    if !respect {
        tracing::info!(event = "sysctl-d", "respect-sysctl-d = false: boot-time sysctl files are not consulted");
        return;
    }
    let boot = actuator.overrides().boot_overrides();
    let writable = policies.with_workers(|workers| {
        workers
            .iter()
            .flat_map(|w| w.grant.sysctls.iter().filter(|(_, g)| g.access == crate::manifest::Access::Write))
            .map(|(name, _)| name.clone())
            .collect::<std::collections::BTreeSet<String>>()
    });
    let covered: Vec<String> = boot
        .iter()
        .filter(|o| writable.contains(&o.tunable))
        .map(|o| format!("{} = {} ({})", o.tunable, o.value.as_deref().unwrap_or(""), o.source))
        .collect();
    let list = if covered.is_empty() { "none a policy may change".to_string() } else { covered.join("; ") };
    tracing::info!(
        event = "sysctl-d",
        settings = boot.len(),
        covered = covered.len(),
        "boot-time sysctl files set {} network tunable(s), the administrator's in netns init \
         (respect-sysctl-d = true); left alone: {list}",
        boot.len()
    );
}

/// The policy files earlier runs quarantined, which stay unloaded; read
/// but never written under `--dry-run`, like the overrides.
fn load_quarantine(state_dir: &std::path::Path, dry_run: bool) -> anyhow::Result<QuarantineList> {
    let list = match dry_run {
        true => QuarantineList::load_read_only(state_dir),
        false => QuarantineList::load(state_dir),
    };
    let list = list.context("cannot read the quarantined policies")?;
    let kept = list.list();
    if !kept.is_empty() {
        let names: Vec<&str> = kept.iter().map(|e| e.name.as_str()).collect();
        tracing::info!(quarantined = kept.len(), "policy files quarantined by an earlier run: {}", names.join(", "));
    }
    Ok(list)
}

/// Adopts or rolls back what an earlier run left in effect.
fn recover_earlier_run(actuator: &Actuator, on_crash: OnCrash, dry_run: bool) {
    let state = actuator.ledger_state();
    let left = state.changed().len();
    if left == 0 || dry_run {
        return;
    }
    match on_crash {
        OnCrash::Adopt => tracing::info!(
            tunables = left,
            "adopting {left} tunable(s) an earlier run changed: their values stay, and their originals are kept for rollback"
        ),
        OnCrash::Rollback => {
            tracing::info!(tunables = left, "rolling back {left} tunable(s) an earlier run changed");
            for line in actuator.rollback().lines() {
                tracing::info!("{line}");
            }
        }
    }
}

/// What a signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DaemonSignal {
    /// SIGHUP: re-read the configuration, rescan the policy directories.
    Reload,
    /// SIGINT or SIGTERM, by name.
    Stop(&'static str),
}

/// SIGINT, SIGTERM and SIGHUP, caught from the very start of `run`: a
/// signal that arrives while the daemon is still starting is kept and acted
/// on once it is up, instead of killing it half-started (the default action).
struct DaemonSignals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl DaemonSignals {
    fn install() -> anyhow::Result<DaemonSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the signal runtime")?;
        let (term, int, hup) = {
            let _inside = runtime.enter();
            (
                signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
                signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
                signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
            )
        };
        Ok(DaemonSignals { runtime, term, int, hup })
    }

    /// Blocks until one of the signals comes.
    fn wait(&mut self) -> DaemonSignal {
        let (term, int, hup) = (&mut self.term, &mut self.int, &mut self.hup);
        self.runtime.block_on(async {
            tokio::select! {
                _ = term.recv() => DaemonSignal::Stop("SIGTERM"),
                _ = int.recv() => DaemonSignal::Stop("SIGINT"),
                _ = hup.recv() => DaemonSignal::Reload,
            }
        })
    }
}
