//! Per-event cost of the host path — decode → route → policy thread → Wasm
//! call → grant check — against a bare wasmtime call into the same
//! component, measured side by side in one run. Prints numbers; asserts
//! nothing. Needs root (the actuator enters network namespaces).
//!
//! `cargo bench -p wasmtune --bench host_path`

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmtune::actuate::{Actuator, ActuatorConfig};
use wasmtune::caps::clock::ClockCap;
use wasmtune::caps::log::LogCap;
use wasmtune::caps::sysctl::{RequestCounters, SysctlCap};
use wasmtune::config::PolicySettings;
use wasmtune::grants::{Arbiter, EffectiveGrant, HostLimits};
use wasmtune::netns::NetnsRegistry;
use wasmtune::router::route;
use wasmtune::runtime::engine::PolicyEngine;
use wasmtune::runtime::image::{PolicyImage, PolicySource};
use wasmtune::runtime::instance::PolicyInstance;
use wasmtune::runtime::state::{DEFAULT_MEMORY_LIMIT, PolicyState};
use wasmtune::runtime::worker::{PolicyWorker, QUEUE_BATCHES, WorkerContext};
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
    let image = PolicyImage::load(&engine, bytes, PolicySource::Builtin("tcp-buffer"))?;
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

    let bare = {
        let state = PolicyState::new(
            LogCap::new("bench"),
            SysctlCap::new(
                grant.clone(),
                arbiter.clone(),
                actuator.clone(),
                registry.clone(),
                Arc::new(RequestCounters::default()),
                Arc::default(),
            ),
            ClockCap { started: Instant::now() },
            DEFAULT_MEMORY_LIMIT,
        );
        let mut instance =
            PolicyInstance::instantiate(&engine.engine, &image.pre, state).map_err(|f| anyhow::anyhow!("{f}"))?;
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

    let ctx = WorkerContext {
        engine: engine.clone(),
        arbiter,
        actuator: actuator.clone(),
        registry: registry.clone(),
        limits,
        learning_rate: 4,
        memory_limit: DEFAULT_MEMORY_LIMIT,
        started: Instant::now(),
        stores: Arc::default(),
        missing: Arc::default(),
        quarantine: Arc::default(),
    };
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
    for (batch, per_event, lost, accepted, denied) in results {
        println!(
            "  host path, batches of {batch:>3}                 {:>9.0} ns/event  = {:>6.1} x bare  (lost {lost}, requests accepted {accepted}, denied {denied})",
            per_event.as_nanos() as f64,
            per_event.as_nanos() as f64 / bare.as_nanos().max(1) as f64
        );
    }
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
