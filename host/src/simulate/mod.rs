//! A policy run against a simulated kernel: the real component in the real
//! runtime (wasmtime, fuel, memory cap), its calls answered by the real
//! capabilities with their real checks (grant, bounds, fields, order, rate
//! limits, ownership), and a kernel in memory behind them
//! ([`kernel::SimulatedKernel`]). Time comes from the input, so a run is
//! the same every time. For `wasmtune policy test` and `wasmtune replay`;
//! needs no root and no BPF.
//!
//! - [`kernel`]: the kernel in memory.
//! - [`report`]: what a run did, as text or JSON, and two runs compared.

pub mod kernel;
pub mod report;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

use crate::caps::clock::ClockCap;
use crate::caps::log::LogCap;
use crate::caps::state::StateCap;
use crate::caps::sysctl::{RequestCounters, SysctlCap};
use crate::config::PolicySettings;
use crate::events::event_kind;
use crate::grants::{Arbiter, EffectiveGrant, HostLimits, denial_detail, denial_kind};
use crate::manifest::event_kind_name;
use crate::peer::PeerSettings;
use crate::recording::{Input, Timed};
use crate::runtime::calls::{HostCalls, LocalHost};
use crate::runtime::engine::PolicyEngine;
use crate::runtime::image::{CompiledPolicy, LoadError, PolicyImage, PolicySource};
use crate::runtime::instance::{Fault, PolicyInstance};
use crate::runtime::protocol::{HostCall, Reply};
use crate::runtime::state::{DEFAULT_MEMORY_LIMIT, PolicyState};
use crate::runtime::worker::{MAX_BATCH, TICK_RANGE_MS};
use crate::sysctl::Value;
use crate::wit::{Event, EventKind, PolicyConfig};
use kernel::{Applied, SimulatedKernel};

/// The most ticks fired for one silent stretch of input; past it the
/// earlier ones are skipped (and the step says how many).
pub const MAX_TICKS_PER_GAP: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    #[error("{what}: cannot read: {source}")]
    Read { what: String, source: std::io::Error },
    #[error("no built-in policy {0:?}")]
    NoBuiltin(String),
    #[error("{what}: not a usable policy: {source}")]
    Load { what: String, source: LoadError },
    #[error("{what}: the manifest asks for what this host does not grant: {why}")]
    Grant { what: String, why: String },
    #[error("{what}: init failed: {why}")]
    Init { what: String, why: String },
    #[error("{what}: subscribes to {event}, which its manifest does not declare")]
    Subscription { what: String, event: String },
}

/// A policy file (or `builtin:NAME`) read, checked and compiled.
pub struct PolicyUnderTest {
    /// As the user named it.
    pub label: String,
    pub image: PolicyImage,
    compiled: CompiledPolicy,
}

impl PolicyUnderTest {
    pub fn load(engine: &PolicyEngine, spec: &str) -> Result<PolicyUnderTest, SimulateError> {
        let (bytes, source) = match spec.strip_prefix("builtin:") {
            Some(name) => {
                let bytes = crate::builtin::bytes_of(name).ok_or_else(|| SimulateError::NoBuiltin(name.into()))?;
                (bytes.to_vec(), PolicySource::Builtin("builtin"))
            }
            None => {
                let bytes =
                    std::fs::read(spec).map_err(|source| SimulateError::Read { what: spec.to_string(), source })?;
                (bytes, PolicySource::File(Path::new(spec).into()))
            }
        };
        let load = |source| SimulateError::Load { what: spec.to_string(), source };
        let image = PolicyImage::read(&bytes, source).map_err(load)?;
        let compiled = CompiledPolicy::compile(engine, &bytes).map_err(load)?;
        Ok(PolicyUnderTest { label: spec.to_string(), image, compiled })
    }

    pub fn name(&self) -> &str {
        self.image.name()
    }
}

/// What the administrator's configuration and the command line say.
#[derive(Clone)]
pub struct RunSettings {
    pub learning_rate: u8,
    pub policy: PolicySettings,
    pub limits: HostLimits,
}

/// One thing a policy did in a step.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Happening {
    /// A change checked, queued and applied to the simulated kernel.
    Change {
        netns: String,
        tunable: String,
        from: Option<String>,
        to: String,
        scenario: String,
        reason: String,
    },
    /// Accepted, but the kernel held another value by the time it was applied.
    Superseded {
        netns: String,
        tunable: String,
        found: Option<String>,
        wanted: String,
    },
    /// Refused by the checks.
    Denied {
        netns: String,
        target: String,
        denial: &'static str,
        detail: String,
    },
    /// Per-destination settings set (or, `settings: None`, cleared).
    Peer {
        netns: String,
        prefix: String,
        settings: Option<PeerSettings>,
        reason: String,
    },
    Log {
        level: &'static str,
        message: String,
    },
}

impl Happening {
    /// A decision, as opposed to a log line.
    pub fn is_decision(&self) -> bool {
        !matches!(self, Happening::Log { .. })
    }
}

/// One call into the policy and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at_ms: u64,
    /// The input line that caused it (none for `init` and ticks).
    pub line: Option<usize>,
    /// What the policy was given: "init", "tick", "3 events: tcp-buffer-limit".
    pub input: String,
    pub happened: Vec<Happening>,
    pub fault: Option<String>,
}

/// The capabilities' answers, witnessed: every log line, and every denial
/// with what was asked.
struct Witness {
    host: LocalHost,
    seen: Arc<Mutex<Vec<Happening>>>,
    kernel: Arc<SimulatedKernel>,
}

impl HostCalls for Witness {
    fn call(&mut self, call: HostCall) -> wasmtime::Result<Option<Reply>> {
        use crate::caps::kernel::KernelSide as _;
        let denied_target = match &call {
            HostCall::Log { level, message } => {
                let happening = Happening::Log { level: level_name(*level), message: message.clone() };
                self.seen.lock().unwrap_or_else(PoisonError::into_inner).push(happening);
                return Ok(None);
            }
            HostCall::RequestChange(change) => Some((change.netns, change.name.clone())),
            HostCall::SetPeer(change) => Some((change.netns, prefix_text(&change.peer))),
            HostCall::ClearPeer { netns, peer, .. } => Some((*netns, prefix_text(peer))),
            _ => None,
        };
        let reply = self.host.call(call)?;
        if let (Some((netns, target)), Some(Reply::Outcome(Err(denial)))) = (denied_target, &reply) {
            let happening = Happening::Denied {
                netns: self.kernel.netns_name(netns),
                target,
                denial: denial_kind(denial),
                detail: denial_detail(denial),
            };
            self.seen.lock().unwrap_or_else(PoisonError::into_inner).push(happening);
        }
        Ok(reply)
    }
}

fn level_name(level: crate::wit::wasmtune::policy::log::Level) -> &'static str {
    use crate::wit::wasmtune::policy::log::Level;
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}

fn prefix_text(prefix: &crate::wit::IpPrefix) -> String {
    crate::peer::PeerPrefix::new(&prefix.addr, prefix.len)
        .map_or_else(|_| format!("(invalid prefix /{})", prefix.len), |p| format!("tcp-peer:{p}"))
}

/// A policy running against a simulated kernel, fed input by input.
pub struct Simulation {
    pub label: String,
    pub name: String,
    engine: Arc<PolicyEngine>,
    policy: Arc<PolicyUnderTest>,
    instance: Option<PolicyInstance>,
    /// The capabilities, kept across rebuilds (counters, rate limits, store).
    spare_state: Option<PolicyState>,
    pub kernel: Arc<SimulatedKernel>,
    seen: Arc<Mutex<Vec<Happening>>>,
    config: PolicyConfig,
    pub subscriptions: Vec<EventKind>,
    pub tick_ms: Option<u64>,
    next_tick: u64,
    pub faults: u64,
    pub denials: u64,
    pub changes: u64,
}

impl Simulation {
    /// Instantiates the policy and calls its `init`; the first step is that call.
    pub fn start(
        engine: Arc<PolicyEngine>,
        policy: Arc<PolicyUnderTest>,
        kernel: Arc<SimulatedKernel>,
        settings: &RunSettings,
    ) -> Result<(Simulation, Step), SimulateError> {
        let what = policy.label.clone();
        let grant = EffectiveGrant::resolve(&policy.image.manifest, &settings.policy, &settings.limits)
            .map_err(|e| SimulateError::Grant { what: what.clone(), why: e.to_string() })?;
        let grant = Arc::new(grant);
        let name = policy.name().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sysctl = SysctlCap::new(
            grant.clone(),
            Arc::new(Arbiter::default()),
            kernel.clone(),
            Arc::new(RequestCounters::default()),
            Arc::default(),
        );
        let host = LocalHost::new(LogCap::new(&name), sysctl, StateCap { store: Arc::default() });
        let witness = Witness { host, seen: seen.clone(), kernel: kernel.clone() };
        let state = PolicyState::new(Box::new(witness), ClockCap::Simulated(kernel.clock()), DEFAULT_MEMORY_LIMIT);
        let config = PolicyConfig {
            learning_rate: settings.learning_rate,
            settings: settings.policy.settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        };
        let mut simulation = Simulation {
            label: what.clone(),
            name,
            engine,
            policy,
            instance: None,
            spare_state: Some(state),
            kernel,
            seen,
            config,
            subscriptions: Vec::new(),
            tick_ms: None,
            next_tick: 0,
            faults: 0,
            denials: 0,
            changes: 0,
        };
        let info = simulation.build().map_err(|why| SimulateError::Init { what: what.clone(), why })?;
        for kind in &info.subscriptions {
            if !grant.may_subscribe(*kind) {
                return Err(SimulateError::Subscription { what, event: event_kind_name(*kind).to_string() });
            }
        }
        simulation.subscriptions = info.subscriptions;
        simulation.tick_ms = info.tick_ms.map(|ms| u64::from(ms.clamp(TICK_RANGE_MS.0, TICK_RANGE_MS.1)));
        simulation.next_tick = simulation.tick_ms.unwrap_or(u64::MAX);
        let step = simulation.finish_step(0, None, "init".into(), None);
        Ok((simulation, step))
    }

    /// A new instance from the kept capabilities, and its `init`.
    fn build(&mut self) -> Result<crate::wit::PolicyInfo, String> {
        let state = match (self.instance.take(), self.spare_state.take()) {
            (Some(old), _) => old.into_state().for_rebuild(),
            (None, Some(state)) => state,
            (None, None) => return Err("no state to build from".into()),
        };
        let mut instance = PolicyInstance::instantiate(&self.engine.engine, &self.policy.compiled.pre, state)
            .map_err(|fault| fault.to_string())?;
        let info = match instance.init(&self.config) {
            Ok(Ok(info)) => info,
            Ok(Err(message)) => return Err(message),
            Err(fault) => return Err(fault.to_string()),
        };
        self.instance = Some(instance);
        Ok(info)
    }

    /// Ticks due up to `at_ms`, then the input itself.
    pub fn feed(&mut self, input: &Timed) -> Vec<Step> {
        let mut steps = self.ticks_until(input.at_ms);
        self.kernel.set_time(input.at_ms);
        match &input.input {
            Input::Sysctl { netns, name, value } => self.kernel.observe(*netns, name, value.clone()),
            Input::Events(events) => {
                for event in events {
                    self.kernel_notices(event);
                }
                let mine: Vec<Event> = events
                    .iter()
                    .filter(|e| event_kind(e).is_none_or(|kind| self.subscriptions.contains(&kind)))
                    .cloned()
                    .collect();
                for batch in mine.chunks(MAX_BATCH) {
                    let what = describe(batch);
                    let step = self.call(input.at_ms, Some(input.line), what, |i| i.on_events(batch));
                    steps.push(step);
                }
            }
        }
        steps
    }

    /// What the kernel side learns from an event, as the daemon's would.
    fn kernel_notices(&self, event: &Event) {
        match event {
            Event::NamespaceChange(change) if change.created => self.kernel.namespace_came(change.netns),
            Event::NamespaceChange(change) => self.kernel.namespace_went(change.netns),
            Event::AdminOverride(o) => self.kernel.set_overridden(o.netns, &o.sysctl, true),
            Event::AdminRelease(r) => self.kernel.set_overridden(r.netns, &r.sysctl, false),
            _ => {}
        }
    }

    fn ticks_until(&mut self, at_ms: u64) -> Vec<Step> {
        let Some(tick) = self.tick_ms else { return Vec::new() };
        let mut steps = Vec::new();
        let due = if self.next_tick <= at_ms { (at_ms - self.next_tick) / tick + 1 } else { 0 };
        let skipped = due.saturating_sub(MAX_TICKS_PER_GAP);
        self.next_tick = self.next_tick.saturating_add(skipped.saturating_mul(tick));
        let mut first = true;
        while self.next_tick <= at_ms {
            let now = self.next_tick;
            self.kernel.set_time(now);
            let what = if first && skipped > 0 {
                format!("tick ({skipped} earlier ticks skipped: the input was silent for long)")
            } else {
                "tick".to_string()
            };
            first = false;
            steps.push(self.call(now, None, what, |i| i.on_tick(now)));
            self.next_tick = now.saturating_add(tick);
        }
        steps
    }

    fn call(
        &mut self,
        at_ms: u64,
        line: Option<usize>,
        input: String,
        f: impl FnOnce(&mut PolicyInstance) -> Result<(), Fault>,
    ) -> Step {
        // The daemon rebuilds a faulted instance after a back-off; here at
        // the next call, so that a replay goes on.
        let ready = match self.instance {
            Some(_) => Ok(()),
            None => self.build().map(|_| ()),
        };
        let fault = match (ready, self.instance.as_mut()) {
            (Err(why), _) => Some(format!("rebuild failed: {why}")),
            (Ok(()), Some(instance)) => f(instance).err().map(|fault| fault.to_string()),
            (Ok(()), None) => Some("no instance".to_string()),
        };
        if fault.is_some() {
            self.faults += 1;
            if let Some(instance) = self.instance.take() {
                self.spare_state = Some(instance.into_state().for_rebuild());
            }
        }
        self.finish_step(at_ms, line, input, fault)
    }

    fn finish_step(&mut self, at_ms: u64, line: Option<usize>, input: String, fault: Option<String>) -> Step {
        let mut happened = std::mem::take(&mut *self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        happened.extend(self.kernel.apply_queued().into_iter().map(|applied| self.describe_applied(applied)));
        self.denials += happened.iter().filter(|h| matches!(h, Happening::Denied { .. })).count() as u64;
        self.changes +=
            happened.iter().filter(|h| matches!(h, Happening::Change { .. } | Happening::Peer { .. })).count() as u64;
        Step { at_ms, line, input, happened, fault }
    }

    fn describe_applied(&self, applied: Applied) -> Happening {
        use crate::caps::kernel::KernelSide as _;
        let shown = |value: &Value| value.to_string();
        match applied {
            Applied::Sysctl { change, old } => Happening::Change {
                netns: self.kernel.netns_name(change.netns),
                tunable: change.tunable,
                from: old.as_ref().map(shown),
                to: shown(&change.value),
                scenario: change.scenario,
                reason: change.reason,
            },
            Applied::Superseded { change, found } => Happening::Superseded {
                netns: self.kernel.netns_name(change.netns),
                tunable: change.tunable,
                found: found.as_ref().map(shown),
                wanted: shown(&change.value),
            },
            Applied::Peer(change) => Happening::Peer {
                netns: self.kernel.netns_name(change.netns),
                prefix: change.prefix.to_string(),
                settings: change.settings,
                reason: change.reason,
            },
        }
    }
}

/// "3 events: tcp-buffer-limit ×2, lost".
fn describe(batch: &[Event]) -> String {
    let mut kinds: Vec<(&'static str, usize)> = Vec::new();
    for event in batch {
        let name = event_kind(event).map_or("lost", event_kind_name);
        match kinds.iter_mut().find(|(k, _)| *k == name) {
            Some((_, n)) => *n += 1,
            None => kinds.push((name, 1)),
        }
    }
    let list: Vec<String> =
        kinds.into_iter().map(|(k, n)| if n > 1 { format!("{k} ×{n}") } else { k.to_string() }).collect();
    let plural = if batch.len() == 1 { "" } else { "s" };
    format!("{} event{plural}: {}", batch.len(), list.join(", "))
}

/// Values the simulated kernel starts with: (namespace, tunable, value).
pub type StartingValues = Vec<(String, String, Value)>;

/// A `--sysctl NETNS:NAME=VALUE` argument: (namespace, tunable, value).
pub fn parse_sysctl_arg(arg: &str) -> Result<(String, String, Value), String> {
    let usage =
        || format!("--sysctl {arg:?}: expected NETNS:NAME=VALUE, e.g. init:net.ipv4.tcp_rmem=4096 131072 6291456");
    // A namespace name may itself hold a colon (`pid:42`); the tunable starts at ":net.".
    let split = arg.find(":net.").ok_or_else(usage)?;
    let (netns, rest) = (&arg[..split], &arg[split + 1..]);
    let (name, value) = rest.split_once('=').ok_or_else(usage)?;
    if netns.is_empty() {
        return Err(usage());
    }
    crate::sysctl::validate_name(name).map_err(|e| format!("--sysctl {arg:?}: {e}"))?;
    Ok((netns.to_string(), name.to_string(), Value::parse(value)))
}

/// Runs `policy` through every input of `recording`, its kernel starting
/// with `initial` values (then the file's own).
pub fn run_recording(
    engine: Arc<PolicyEngine>,
    policy: Arc<PolicyUnderTest>,
    recording: &crate::recording::Recording,
    initial: &[(String, String, Value)],
    settings: &RunSettings,
) -> Result<report::RunReport, SimulateError> {
    let kernel = Arc::new(SimulatedKernel::new(recording.namespaces.clone()));
    // A recording writes a value down when a policy first reads it, which
    // is after the batch that made it read: the first value of each
    // tunable is what the kernel held from the start.
    let mut seeded = std::collections::BTreeSet::new();
    for input in &recording.inputs {
        if let Input::Sysctl { netns, name, value } = &input.input
            && seeded.insert((*netns, name.clone()))
        {
            kernel.observe(*netns, name, value.clone());
        }
    }
    for (netns, name, value) in initial {
        let cookie = kernel.netns_cookie(netns);
        kernel.observe(cookie, name, Some(value.clone()));
    }
    let (mut simulation, first) = Simulation::start(engine, policy, kernel, settings)?;
    let mut steps = vec![first];
    for input in &recording.inputs {
        steps.extend(simulation.feed(input));
    }
    Ok(report::RunReport::new(&simulation, steps))
}
