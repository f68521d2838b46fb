//! The same policy written in two languages, side by side in one run: the
//! C policy `policies/c/grow-rmem-c` and the Rust example `wasmtune new`
//! scaffolds (`grow-rmem`). For each component: its size, the time to
//! compile it (validate, compile with Cranelift, link against the policy
//! world), to instantiate it and to run `init`, the memory it is charged,
//! and the cost per event of `on-events`, in wall time and in fuel (which
//! does not depend on the machine), for three kinds of event:
//!
//! - `lost`: delivered to every policy and ignored by both, so the cost of
//!   a call, of lifting the batch into the guest and of dispatching;
//! - stale: a receive buffer at a limit below `tcp_rmem[2]`: one sysctl
//!   read through the host's checks, and a decision to do nothing;
//! - raise: a receive buffer at `tcp_rmem[2]`: the read, the decision, a
//!   change request through the host's checks (grant, bounds, ownership,
//!   rate limit) and the settle bookkeeping, every event.
//!
//! The kernel behind the host's checks is a stand-in that holds one
//! `tcp_rmem`, applies an accepted change at once (so the next event
//! raises again) and lets time run an hour per request (so the rate limit
//! never refuses); past 32 MiB it refuses one request as a full queue and
//! starts again from 6 MiB (the grant stops at 64 MiB). The figures are the
//! policies' and the host path's, not the kernel's. Needs no root. Prints
//! numbers; asserts nothing.
//!
//! The components are read from (defaults in brackets):
//!
//! - `WASMTUNE_BENCH_C_POLICY` [`target/c-policy/grow-rmem-c.wasm`]:
//!   `policies/c/grow-rmem-c/build.sh` builds it there;
//! - `WASMTUNE_BENCH_RUST_POLICY`
//!   [`target/scaffold/wasm32-wasip2/release/grow_rmem.wasm`]: the e2e test
//!   `alone::scaffold` leaves it there; or `wasmtune new grow-rmem --dir DIR
//!   --sdk sdk`, then `cargo build --release --target wasm32-wasip2` in
//!   `DIR/grow-rmem`.
//!
//! `cargo bench -p wasmtune --bench policy_languages`

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use wasmtune::actuate::{ActuateError, PeerEntryChange, SysctlChange};
use wasmtune::caps::clock::ClockCap;
use wasmtune::caps::kernel::KernelSide;
use wasmtune::caps::log::LogCap;
use wasmtune::caps::state::StateCap;
use wasmtune::caps::sysctl::{RequestCounters, SysctlCap};
use wasmtune::config::PolicySettings;
use wasmtune::grants::{Arbiter, EffectiveGrant, HostLimits};
use wasmtune::runtime::calls::LocalHost;
use wasmtune::runtime::engine::PolicyEngine;
use wasmtune::runtime::image::{CompiledPolicy, PolicyImage, PolicySource};
use wasmtune::runtime::instance::{FUEL_PER_CALL, PolicyInstance};
use wasmtune::runtime::state::{DEFAULT_MEMORY_LIMIT, PolicyState};
use wasmtune::sysctl::Value;
use wasmtune::wit::{BufferDirection, Event, IpAddr, PolicyConfig, TcpBufferLimit};

const ROUNDS: usize = 5;
const NETNS: u64 = 4026531840;
const RMEM: &str = "net.ipv4.tcp_rmem";
/// Where the stand-in kernel's `tcp_rmem[2]` starts, and goes back to when
/// a request passes [`RESET_ABOVE`] (the grant stops at 64 MiB).
const START_MAX: i64 = 6 << 20;
const RESET_ABOVE: i64 = 32 << 20;

/// One policy component under test.
struct Subject {
    label: &'static str,
    path: PathBuf,
    bytes: Vec<u8>,
    image: PolicyImage,
}

/// What was measured for one component.
struct Figures {
    compile: Duration,
    instantiate: Duration,
    init: Duration,
    memory_bytes: usize,
    /// (scenario, batch size, wall time per event, fuel per event, change
    /// requests the host answered per event).
    events: Vec<(&'static str, usize, Duration, u64, f64)>,
}

fn main() -> anyhow::Result<()> {
    // `cargo test --benches` runs bench binaries without `--bench`: this one
    // measures, it tests nothing, so it only runs under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        println!("policy_languages: a benchmark; run it with `cargo bench -p wasmtune --bench policy_languages`");
        return Ok(());
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let subjects = [
        subject(
            "C",
            "WASMTUNE_BENCH_C_POLICY",
            root.join("target/c-policy/grow-rmem-c.wasm"),
            "build it with policies/c/grow-rmem-c/build.sh",
        )?,
        subject(
            "Rust",
            "WASMTUNE_BENCH_RUST_POLICY",
            root.join("target/scaffold/wasm32-wasip2/release/grow_rmem.wasm"),
            "run the e2e test alone::scaffold, or build `wasmtune new grow-rmem` for wasm32-wasip2",
        )?,
    ];

    let engine = PolicyEngine::new(None)?;
    let mut all = Vec::new();
    for subject in &subjects {
        all.push(measure(&engine, subject).with_context(|| format!("{} ({})", subject.label, subject.path.display()))?);
    }

    println!("the same policy in C and in Rust (best of {ROUNDS}; stand-in kernel, in this process)");
    for subject in &subjects {
        println!("  {:<5} {} ({})", subject.label, subject.image.name(), subject.path.display());
    }
    let labels: Vec<&str> = subjects.iter().map(|s| s.label).collect();
    let row = |what: &str, cells: Vec<String>| {
        let cells: Vec<String> = cells.iter().map(|c| format!("{c:>14}")).collect();
        println!("  {what:<38}{}", cells.join(""));
    };
    row("", labels.iter().map(|l| l.to_string()).collect());
    row("component, bytes", subjects.iter().map(|s| s.bytes.len().to_string()).collect());
    row("compile, ms", all.iter().map(|f| format!("{:.1}", ms(f.compile))).collect());
    row("instantiate, ms", all.iter().map(|f| format!("{:.3}", ms(f.instantiate))).collect());
    row("init, ms", all.iter().map(|f| format!("{:.3}", ms(f.init))).collect());
    row("memory after init, KiB", all.iter().map(|f| (f.memory_bytes / 1024).to_string()).collect());
    let Some(first) = all.first() else { return Ok(()) };
    for (i, (scenario, batch, ..)) in first.events.iter().enumerate() {
        let per_event = |f: &Figures| f.events.get(i).map(|e| e.2.as_nanos() as f64).unwrap_or(f64::NAN);
        row(
            &format!("{scenario}, batches of {batch}, ns/event"),
            all.iter().map(|f| format!("{:.0}", per_event(f))).collect(),
        );
    }
    for (i, (scenario, batch, ..)) in first.events.iter().enumerate() {
        let fuel = |f: &Figures| f.events.get(i).map(|e| e.3.to_string()).unwrap_or_default();
        row(&format!("{scenario}, batches of {batch}, fuel/event"), all.iter().map(fuel).collect());
    }
    for (i, (scenario, batch, ..)) in first.events.iter().enumerate() {
        let asked = |f: &Figures| f.events.get(i).map(|e| format!("{:.2}", e.4)).unwrap_or_default();
        row(&format!("{scenario}, batches of {batch}, requests/event"), all.iter().map(asked).collect());
    }
    Ok(())
}

fn subject(label: &'static str, var: &str, default: PathBuf, how: &str) -> anyhow::Result<Subject> {
    let path = std::env::var_os(var).map(PathBuf::from).unwrap_or(default);
    let bytes = std::fs::read(&path)
        .with_context(|| format!("the {label} policy, {} (set {var}, or {how})", path.display()))?;
    let image = PolicyImage::read(&bytes, PolicySource::File(path.clone()))
        .with_context(|| format!("the {label} policy, {}", path.display()))?;
    Ok(Subject { label, path, bytes, image })
}

fn measure(engine: &PolicyEngine, subject: &Subject) -> anyhow::Result<Figures> {
    let compile = best_of(|| {
        let t = Instant::now();
        CompiledPolicy::compile(engine, &subject.bytes)?;
        Ok(t.elapsed())
    })?;
    let compiled = CompiledPolicy::compile(engine, &subject.bytes)?;
    let grant = Arc::new(
        EffectiveGrant::resolve(&subject.image.manifest, &PolicySettings::default(), &HostLimits::detect())
            .map_err(|e| anyhow!("no grant: {e}"))?,
    );
    let kernel = Arc::new(StandIn::new());
    let counters = Arc::new(RequestCounters::default());
    let state = || {
        let sysctl = SysctlCap::new(
            grant.clone(),
            Arc::new(Arbiter::default()),
            kernel.clone(),
            counters.clone(),
            Arc::default(),
        );
        let host = LocalHost::new(LogCap::new(subject.image.name()), sysctl, StateCap { store: Arc::default() });
        PolicyState::new(Box::new(host), ClockCap::since(Instant::now()), DEFAULT_MEMORY_LIMIT)
    };
    let instantiate = |state: PolicyState| {
        PolicyInstance::instantiate(&engine.engine, &compiled.pre, state).map_err(|f| anyhow!("instantiate: {f}"))
    };
    let config = PolicyConfig { learning_rate: 4, settings: Vec::new() };
    let init = |instance: &mut PolicyInstance| -> anyhow::Result<()> {
        instance.init(&config).map_err(|f| anyhow!("init: {f}"))?.map_err(|e| anyhow!("init refused: {e}"))?;
        Ok(())
    };

    const INSTANCES: u32 = 200;
    let instantiate_time = best_of(|| {
        let states: Vec<PolicyState> = (0..INSTANCES).map(|_| state()).collect();
        let t = Instant::now();
        for state in states {
            drop(instantiate(state)?);
        }
        Ok(t.elapsed() / INSTANCES)
    })?;
    let init_time = best_of(|| {
        let mut instances = (0..INSTANCES).map(|_| instantiate(state())).collect::<anyhow::Result<Vec<_>>>()?;
        let t = Instant::now();
        for instance in &mut instances {
            init(instance)?;
        }
        Ok(t.elapsed() / INSTANCES)
    })?;
    let fresh = || -> anyhow::Result<PolicyInstance> {
        let mut instance = instantiate(state())?;
        init(&mut instance)?;
        Ok(instance)
    };
    let memory_bytes = fresh()?.into_state().limits.used();

    let mut events = Vec::new();
    for (scenario, event) in [
        ("lost", Event::Lost(1)),
        ("stale", buffer_at((START_MAX / 2) as u32)),
        // A buffer at (or past) any limit: never stale.
        ("raise", buffer_at(u32::MAX)),
    ] {
        for batch_size in [1usize, 64] {
            // A new instance and kernel value: no request of the previous
            // run still waits to show.
            kernel.reset();
            let mut instance = fresh()?;
            let batch = vec![event.clone(); batch_size];
            let calls = if batch_size == 1 { 20_000 } else { 1_000 };
            let requests = || counters.accepted.load(Ordering::Relaxed) + counters.denied.load(Ordering::Relaxed);
            let before = requests();
            let per_event = best_of(|| {
                let t = Instant::now();
                for _ in 0..calls {
                    instance.on_events(&batch).map_err(|f| anyhow!("on-events ({scenario}): {f}"))?;
                }
                Ok(t.elapsed() / (calls * batch_size) as u32)
            })?;
            let asked = (requests() - before) as f64 / (ROUNDS * calls * batch_size) as f64;
            instance.on_events(&batch).map_err(|f| anyhow!("on-events ({scenario}): {f}"))?;
            let fuel = (FUEL_PER_CALL - instance.fuel_left()) / batch_size as u64;
            events.push((scenario, batch_size, per_event, fuel, asked));
        }
    }
    Ok(Figures { compile, instantiate: instantiate_time, init: init_time, memory_bytes, events })
}

/// A receive buffer that reached `limit` bytes.
fn buffer_at(limit: u32) -> Event {
    Event::TcpBufferLimit(TcpBufferLimit {
        netns: NETNS,
        direction: BufferDirection::Receive,
        buffer_bytes: limit,
        limit_bytes: limit,
        queued_bytes: limit / 2,
        srtt_us: 50,
        remote: IpAddr::V4((127, 0, 0, 1)),
        remote_port: 5201,
    })
}

fn best_of(mut f: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        best = best.min(f()?);
    }
    Ok(best)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The kernel behind the host's checks: one namespace with one `tcp_rmem`
/// that takes an accepted change at once, and a clock that moves an hour
/// per request, so that neither settling nor the rate limit stops a raise.
/// A request past [`RESET_ABOVE`] is refused and the value starts again.
struct StandIn {
    rmem: Mutex<Vec<i64>>,
    hours: AtomicU64,
    started: Instant,
}

impl StandIn {
    fn new() -> StandIn {
        StandIn { rmem: Mutex::new(Vec::new()), hours: AtomicU64::new(0), started: Instant::now() }
    }

    fn reset(&self) {
        *self.rmem.lock().unwrap_or_else(|p| p.into_inner()) = vec![4096, 131072, START_MAX];
    }
}

impl KernelSide for StandIn {
    fn is_known_tuned(&self, netns: u64) -> bool {
        netns == NETNS
    }

    fn netns_name(&self, _netns: u64) -> String {
        "bench".to_string()
    }

    fn read(&self, _netns: u64, _tunable: &str) -> Result<Value, ActuateError> {
        Ok(Value::Integers(self.rmem.lock().unwrap_or_else(|p| p.into_inner()).clone()))
    }

    fn is_overridden(&self, _netns: u64, _tunable: &str) -> bool {
        false
    }

    fn submit(&self, change: SysctlChange) -> bool {
        if change.tunable != RMEM {
            return false;
        }
        self.hours.fetch_add(1, Ordering::Relaxed);
        let Value::Integers(fields) = change.value else { return false };
        if fields.get(2).is_some_and(|max| *max > RESET_ABOVE) {
            // Refused (the host answers `rate-limited`), so that the policy
            // holds no request in flight and raises from the start again.
            self.reset();
            return false;
        }
        *self.rmem.lock().unwrap_or_else(|p| p.into_inner()) = fields;
        true
    }

    fn has_peer_map(&self) -> bool {
        false
    }

    fn submit_peer(&self, _change: PeerEntryChange) -> bool {
        false
    }

    fn available_congestion(&self) -> Vec<String> {
        Vec::new()
    }

    fn now(&self) -> Instant {
        self.started + Duration::from_secs(3600 * self.hours.load(Ordering::Relaxed))
    }
}
