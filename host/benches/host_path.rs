//! Per-event cost of the host path — decode → route → policy thread → Wasm
//! call → grant check — against a bare wasmtime call into the same
//! component, measured side by side in one run, two ways: the daemon's
//! (policies in the confined runtime process, host calls across its
//! socket) and, for comparison, the same component called on a thread of
//! this process with the same capabilities (how the daemon ran policies
//! before the runtime process). Prints numbers; asserts nothing. Needs root
//! (the actuator enters network namespaces; the runtime takes its own uid).
//!
//! `cargo bench -p wasmtune --bench host_path`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtune::actuate::{Actuator, ActuatorConfig};
use wasmtune::caps::clock::ClockCap;
use wasmtune::caps::kernel::LiveKernel;
use wasmtune::caps::log::LogCap;
use wasmtune::caps::state::StateCap;
use wasmtune::caps::sysctl::{RequestCounters, SysctlCap};
use wasmtune::config::PolicySettings;
use wasmtune::grants::{Arbiter, EffectiveGrant, HostLimits};
use wasmtune::netns::NetnsRegistry;
use wasmtune::router::route;
use wasmtune::runtime::calls::LocalHost;
use wasmtune::runtime::engine::PolicyEngine;
use wasmtune::runtime::image::{CompiledPolicy, PolicyImage, PolicySource};
use wasmtune::runtime::instance::PolicyInstance;
use wasmtune::runtime::state::{DEFAULT_MEMORY_LIMIT, PolicyState};
use wasmtune::runtime::supervisor::{RuntimeOptions, RuntimeProcess};
use wasmtune::runtime::worker::{MAX_BATCH, PolicyWorker, QUEUE_BATCHES, WorkerContext};
use wasmtune::sysctl::Value;
use wasmtune::wit::PolicyConfig;

const ROUNDS: usize = 5;

fn main() -> anyhow::Result<()> {
    let registry = Arc::new(NetnsRegistry::discover(&["init".to_string()])?);
    let cookie = registry.cookie_of("init").ok_or_else(|| anyhow::anyhow!("init netns has no cookie"))?;
    let state_dir = tempfile::tempdir()?;
    let (actuator, actuator_thread) = Actuator::spawn(ActuatorConfig {
        dry_run: true,
        state_dir: state_dir.path().into(),
        registry: registry.clone(),
        journal_max_bytes: wasmtune::ledger::COMPACT_AT_BYTES,
    })?;
    let engine = Arc::new(PolicyEngine::new(None)?);
    let bytes =
        wasmtune::builtin::bytes_of("tcp-buffer").ok_or_else(|| anyhow::anyhow!("tcp-buffer is not built in"))?;
    let image = PolicyImage::read(bytes, PolicySource::Builtin("tcp-buffer"))?;
    let compiled = CompiledPolicy::compile(&engine, bytes)?;
    let limits = HostLimits::detect();
    let grant =
        Arc::new(EffectiveGrant::resolve(&image.manifest, &PolicySettings::default(), &limits).expect("a grant"));
    let arbiter = Arc::new(Arbiter::default());

    // Events the policy must look at: init's real tcp_rmem limit, buffer nearly full.
    let limit = match wasmtune::sysctl::read("net.ipv4.tcp_rmem")? {
        Value::Integers(v) if v.len() == 3 => v[2] as u32,
        other => anyhow::bail!("unexpected tcp_rmem {other}"),
    };
    let record = tcp_buffer_record(cookie, limit, limit);

    let local_host = |counters: Arc<RequestCounters>| {
        LocalHost::new(
            LogCap::new("bench"),
            SysctlCap::new(
                grant.clone(),
                arbiter.clone(),
                Arc::new(LiveKernel { actuator: actuator.clone(), registry: registry.clone() }),
                counters,
                Arc::default(),
            ),
            StateCap { store: Arc::default() },
        )
    };
    let in_process = |counters: Arc<RequestCounters>| -> anyhow::Result<PolicyInstance> {
        let state =
            PolicyState::new(Box::new(local_host(counters)), ClockCap::since(Instant::now()), DEFAULT_MEMORY_LIMIT);
        PolicyInstance::instantiate(&engine.engine, &compiled.pre, state).map_err(|f| anyhow::anyhow!("{f}"))
    };
    let bare = {
        let mut instance = in_process(Arc::default())?;
        let _ = instance.init(&PolicyConfig { learning_rate: 4, settings: Vec::new() });
        let n = 200_000;
        best_of(|| {
            let t = Instant::now();
            for i in 0..n {
                instance.on_tick(i).map_err(|f| anyhow::anyhow!("{f}"))?;
            }
            Ok(t.elapsed() / n as u32)
        })?
    };

    // The part of the path every event of this policy pays: one sysctl read
    // through the actuator thread (channel hop, setns, /proc read, hop back).
    let read = best_of(|| {
        let n = 2_000;
        let t = Instant::now();
        for _ in 0..n {
            actuator.read(cookie, "net.ipv4.tcp_rmem")?;
        }
        Ok(t.elapsed() / n)
    })?;

    let runtime = RuntimeProcess::start(RuntimeOptions {
        program: Some(env!("CARGO_BIN_EXE_wasmtune").into()),
        cache_dir: None,
    })?;
    let ctx = WorkerContext {
        runtime: runtime.clone(),
        arbiter: arbiter.clone(),
        actuator: actuator.clone(),
        registry: registry.clone(),
        limits,
        learning_rate: 4,
        memory_limit: DEFAULT_MEMORY_LIMIT,
        started: Instant::now(),
        stores: Arc::default(),
        missing: Arc::default(),
        quarantine: Arc::default(),
        recorder: None,
        shadows: Arc::default(),
        canaries: Arc::default(),
    };
    // The same component on a thread of this process, fed the same way.
    let mut earlier = Vec::new();
    for batch_size in [1usize, 64] {
        let counters = Arc::new(RequestCounters::default());
        let mut instance = in_process(counters.clone())?;
        instance
            .init(&PolicyConfig { learning_rate: 4, settings: Vec::new() })
            .map_err(|f| anyhow::anyhow!("{f}"))?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let handled = Arc::new(AtomicU64::new(0));
        let (tx, rx) = crossbeam_channel::bounded::<Vec<wasmtune::wit::Event>>(QUEUE_BATCHES);
        let counted = handled.clone();
        let thread = std::thread::spawn(move || {
            for batch in rx {
                for chunk in batch.chunks(MAX_BATCH) {
                    if instance.on_events(chunk).is_ok() {
                        counted.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    }
                }
            }
        });
        let raw: Vec<Vec<u8>> = (0..batch_size).map(|_| record.clone()).collect();
        let batches = if batch_size == 1 { 20_000 } else { 1_000 };
        let per_event = best_of(|| {
            let before = handled.load(Ordering::Relaxed);
            let t = Instant::now();
            for _ in 0..batches {
                let batch: Vec<_> = raw.iter().filter_map(|r| wasmtune::events::decode(r).ok()).collect();
                tx.send(batch)?;
            }
            let want = before + (batches * batch_size) as u64;
            while handled.load(Ordering::Relaxed) < want {
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(t.elapsed() / (batches * batch_size) as u32)
        })?;
        drop(tx);
        let _ = thread.join();
        earlier.push((batch_size, per_event, counters.accepted.load(Ordering::Relaxed)));
    }

    let mut results = Vec::new();
    for batch_size in [1usize, 64] {
        let worker = Arc::new(PolicyWorker::start(&image, &ctx, &PolicySettings::default())?);
        let workers = vec![worker.clone()];
        let raw: Vec<Vec<u8>> = (0..batch_size).map(|_| record.clone()).collect();
        let batches = if batch_size == 1 { 20_000 } else { 1_000 };
        let per_event = best_of(|| {
            let before = worker.stats.events_handled.load(Ordering::Relaxed);
            let t = Instant::now();
            let mut delivered = 0u64;
            let window = (QUEUE_BATCHES as u64 / 2) * batch_size as u64;
            for _ in 0..batches {
                let batch: Vec<_> = raw.iter().filter_map(|r| wasmtune::events::decode(r).ok()).collect();
                for (w, events) in workers.iter().zip(route(&batch, &registry, &workers)) {
                    // Wait for room rather than lose events: this measures cost, not overload.
                    while before + delivered > w.stats.events_handled.load(Ordering::Relaxed) + window {
                        std::thread::yield_now();
                    }
                    delivered += events.len() as u64;
                    w.deliver(events);
                }
            }
            let want = before + (batches * batch_size) as u64;
            let deadline = Instant::now() + Duration::from_secs(120);
            while worker.stats.events_handled.load(Ordering::Relaxed) + worker.stats.events_lost.load(Ordering::Relaxed)
                < want
            {
                if Instant::now() > deadline {
                    anyhow::bail!("policy did not keep up");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(t.elapsed() / (batches * batch_size) as u32)
        })?;
        let lost = worker.stats.events_lost.load(Ordering::Relaxed);
        let accepted = worker.stats.requests.accepted.load(Ordering::Relaxed);
        let denied = worker.stats.requests.denied.load(Ordering::Relaxed);
        results.push((batch_size, per_event, lost, accepted, denied));
    }

    println!("host path benchmark (tcp-buffer policy, init netns, dry-run actuator), best of {ROUNDS}");
    println!("  bare wasmtime call (on-tick, no work)        {:>9.0} ns/call", bare.as_nanos() as f64);
    println!("  sysctl read through the actuator              {:>9.0} ns/read", read.as_nanos() as f64);
    for (batch, per_event, accepted) in earlier {
        println!(
            "  in this process, batches of {batch:>3}           {:>9.0} ns/event  = {:>6.1} x bare  (requests accepted {accepted})",
            per_event.as_nanos() as f64,
            per_event.as_nanos() as f64 / bare.as_nanos().max(1) as f64
        );
    }
    for (batch, per_event, lost, accepted, denied) in results {
        println!(
            "  runtime process, batches of {batch:>3}           {:>9.0} ns/event  = {:>6.1} x bare  (lost {lost}, requests accepted {accepted}, denied {denied})",
            per_event.as_nanos() as f64,
            per_event.as_nanos() as f64 / bare.as_nanos().max(1) as f64
        );
    }
    runtime.stop();
    actuator.shutdown();
    let _ = actuator_thread.join();
    Ok(())
}

fn best_of(mut f: impl FnMut() -> anyhow::Result<Duration>) -> anyhow::Result<Duration> {
    let mut best = Duration::MAX;
    for _ in 0..ROUNDS {
        best = best.min(f()?);
    }
    Ok(best)
}

/// A `struct wasmtune_tcp_buffer_record` (bpf/wasmtune.h), receive side, IPv4 loopback peer.
fn tcp_buffer_record(netns: u64, buffer: u32, limit: u32) -> Vec<u8> {
    let mut r = Vec::with_capacity(wasmtune::events::TCP_BUFFER_RECORD_LEN);
    r.extend_from_slice(&1u16.to_ne_bytes());
    r.push(0); // receive
    r.push(2); // AF_INET
    r.extend_from_slice(&5201u16.to_ne_bytes());
    r.extend_from_slice(&0u16.to_ne_bytes());
    r.extend_from_slice(&netns.to_ne_bytes());
    r.extend_from_slice(&buffer.to_ne_bytes());
    r.extend_from_slice(&limit.to_ne_bytes());
    r.extend_from_slice(&0u32.to_ne_bytes());
    r.extend_from_slice(&50u32.to_ne_bytes());
    r.extend_from_slice(&[127, 0, 0, 1]);
    r.extend_from_slice(&[0; 12]);
    r
}
