//! Random components loaded as policies must never crash or stall the host.
//!
//! `wasm-smith` generates core modules with exactly the imports and exports
//! `wit-component` expects of a core module implementing the
//! `wasmtune:policy/policy` world (their shape taken from
//! `wit_component::dummy_module`); `wit-component` makes each a component,
//! and a manifest section makes it a policy file. Each is then loaded
//! (compiled as the runtime process does, [`CompiledPolicy::compile`], and
//! read as the host does, [`PolicyImage::read`]), instantiated and called — `init`, `on-events`,
//! `on-tick` — the way the policy thread does, with the host's real linker,
//! capabilities, memory cap, fuel and deadline. Random bytes, random core
//! modules and built-in policies with bytes changed are loaded too.
//!
//! Whatever the guest does, every step must answer (a value, an error or a
//! fault) without a panic, the load within [`LOAD_LIMIT`] and each call
//! within [`CALL_LIMIT`] (its deadline is 250 ms). The default suite runs a
//! short, fixed set of cases; `WASMTUNE_RANDOM_POLICIES=N` runs `N` generated
//! components (and proportionally more of the rest) from
//! `WASMTUNE_RANDOM_SEED` (default fixed), for longer runs:
//!
//! ```text
//! WASMTUNE_RANDOM_POLICIES=2000 cargo nextest run --release -p wasmtune-tests -E 'test(/random_policies/)'
//! ```
//!
//! Needs root, like the daemon: the actuator enters network namespaces to
//! answer a policy's reads.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use wit_component::{ComponentEncoder, StringEncoding};
use wit_parser::{LiftLowerAbi, ManglingAndAbi, Resolve, WorldId};

use wasmtune::actuate::{Actuator, ActuatorConfig};
use wasmtune::caps::clock::ClockCap;
use wasmtune::caps::kernel::LiveKernel;
use wasmtune::caps::log::LogCap;
use wasmtune::caps::state::StateCap;
use wasmtune::caps::sysctl::{RequestCounters, SysctlCap};
use wasmtune::config::PolicySettings;
use wasmtune::grants::{Arbiter, EffectiveGrant, HostLimits};
use wasmtune::manifest::SECTION;
use wasmtune::netns::NetnsRegistry;
use wasmtune::runtime::calls::LocalHost;
use wasmtune::runtime::engine::PolicyEngine;
use wasmtune::runtime::image::{CompiledPolicy, PolicyImage, PolicySource};
use wasmtune::runtime::instance::PolicyInstance;
use wasmtune::runtime::state::{DEFAULT_MEMORY_LIMIT, PolicyState};
use wasmtune::wit::{AdminOverride, Event, NamespaceChange, PolicyConfig};
use wasmtune_tests::harness::{self, Requirement};

/// Generated policy components in the default suite.
const DEFAULT_CASES: usize = 64;
/// Loading (checking and compiling) one file; a generated module has at
/// most a few thousand instructions.
const LOAD_LIMIT: Duration = Duration::from_secs(10);
/// One call into the guest, instantiation included: its deadline is
/// 250 ms (5 ticks of 50 ms); the rest is room for a loaded machine.
const CALL_LIMIT: Duration = Duration::from_secs(2);

/// The policy world, as the host binds it.
const POLICY_WIT: &str = include_str!("../../../../wit/policy.wit");

/// A manifest any generated policy carries: every event kind, one readable
/// sysctl (so random reads reach the actuator), nothing writable.
const MANIFEST: &str = r#"
events = ["tcp-buffer-limit", "memory-pressure", "namespace-change", "admin-override"]

[policy]
name = "random"
version = "0.1.0"
description = "a generated component"

[[sysctl]]
name = "net.ipv4.tcp_rmem"
access = "read"
"#;

/// splitmix64: a small seeded generator, so every case can be replayed from
/// its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// The world a policy implements, and the core module shape of it.
struct PolicyWorld {
    resolve: Resolve,
    world: WorldId,
    shape: Vec<u8>,
}

impl PolicyWorld {
    fn new() -> PolicyWorld {
        let mut resolve = Resolve::default();
        let package = resolve.push_str("policy.wit", POLICY_WIT).expect("wit/policy.wit parses");
        let world = resolve.select_world(&[package], Some("policy")).expect("the policy world");
        let shape = wit_component::dummy_module(&resolve, world, ManglingAndAbi::Legacy(LiftLowerAbi::Sync));
        PolicyWorld { resolve, world, shape }
    }

    /// A policy component whose core module wasm-smith generated from
    /// `data`; `None` when the data does not make one (too short, or a
    /// module the encoder refuses).
    fn component(&self, data: &[u8]) -> Option<Vec<u8>> {
        let mut u = Unstructured::new(data);
        let mut config: wasm_smith::Config = u.arbitrary().ok()?;
        config.module_shape = Some(self.shape.clone());
        // Proposals the host's engine does not enable would only be refused
        // at compile time; keep most cases running code instead.
        config.gc_enabled = false;
        // externref is a GC type to wasmtime, which the host builds without.
        config.reference_types_enabled = false;
        config.exceptions_enabled = false;
        config.threads_enabled = false;
        config.shared_everything_threads_enabled = false;
        config.memory64_enabled = false;
        config.custom_page_sizes_enabled = false;
        config.wide_arithmetic_enabled = false;
        config.max_funcs = config.max_funcs.min(40);
        config.max_instructions = config.max_instructions.min(400);
        config.max_memory32_bytes = config.max_memory32_bytes.min(32 << 20);
        config.max_table_elements = config.max_table_elements.min(100_000);
        let mut module = wasm_smith::Module::new(config, &mut u).ok()?.to_bytes();
        wit_component::embed_component_metadata(&mut module, &self.resolve, self.world, StringEncoding::UTF8).ok()?;
        let mut component = ComponentEncoder::default().module(&module).ok()?.validate(true).encode().ok()?;
        append_custom_section(&mut component, SECTION, MANIFEST.as_bytes());
        Some(component)
    }
}

/// Appends a custom section (id 0) to a module or component.
fn append_custom_section(wasm: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut body = leb128(name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    wasm.push(0);
    wasm.extend(leb128(body.len()));
    wasm.extend(body);
}

fn leb128(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// What the cases came to, for the test's output.
#[derive(Debug, Default)]
struct Tally {
    generated: usize,
    not_generated: usize,
    refused: usize,
    /// Why files were refused, by the start of the error, with a count.
    refusals: std::collections::BTreeMap<String, usize>,
    loaded: usize,
    instantiated: usize,
    calls_ok: usize,
    faults: usize,
    slowest_load: Duration,
    slowest_call: Duration,
}

/// The host's side of a policy: an engine, a dry-run actuator, the host's
/// limits; what the policy thread builds a store from.
struct Host {
    engine: PolicyEngine,
    actuator: Actuator,
    registry: Arc<NetnsRegistry>,
    arbiter: Arc<Arbiter>,
    limits: HostLimits,
    _state_dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let registry = Arc::new(NetnsRegistry::discover(&["init".to_string()]).expect("registry"));
        let state_dir = tempfile::tempdir().expect("tempdir");
        let (actuator, _thread) = Actuator::spawn(ActuatorConfig {
            dry_run: true,
            state_dir: state_dir.path().into(),
            registry: registry.clone(),
            journal_max_bytes: wasmtune::ledger::COMPACT_AT_BYTES,
        })
        .expect("actuator");
        Host {
            engine: PolicyEngine::new(None).expect("engine"),
            actuator,
            registry,
            arbiter: Arc::new(Arbiter::default()),
            limits: HostLimits::detect(),
            _state_dir: state_dir,
        }
    }

    /// Loads `bytes` as a policy file and, if that works, runs it as the
    /// policy thread would. `what` names the case in failure messages.
    fn exercise(&self, bytes: &[u8], what: &str, tally: &mut Tally) {
        let started = Instant::now();
        let loaded = CompiledPolicy::compile(&self.engine, bytes)
            .and_then(|compiled| Ok((PolicyImage::read(bytes, PolicySource::File("random.wasm".into()))?, compiled)));
        let took = started.elapsed();
        assert!(took < LOAD_LIMIT, "{what}: loading took {took:?}");
        tally.slowest_load = tally.slowest_load.max(took);
        let (image, compiled) = match loaded {
            Ok(loaded) => loaded,
            Err(error) => {
                tally.refused += 1;
                let why: String = error.to_string().chars().take(140).collect();
                *tally.refusals.entry(why).or_default() += 1;
                return;
            }
        };
        tally.loaded += 1;
        let Ok(grant) = EffectiveGrant::resolve(&image.manifest, &PolicySettings::default(), &self.limits) else {
            return;
        };
        let host = LocalHost::new(
            LogCap::new("random"),
            SysctlCap::new(
                Arc::new(grant),
                self.arbiter.clone(),
                Arc::new(LiveKernel { actuator: self.actuator.clone(), registry: self.registry.clone() }),
                Arc::new(RequestCounters::default()),
                Arc::default(),
            ),
            StateCap { store: Arc::default() },
        );
        let state = PolicyState::new(Box::new(host), ClockCap::since(Instant::now()), DEFAULT_MEMORY_LIMIT);
        let instance = timed(tally, what, "instantiation", || {
            PolicyInstance::instantiate(&self.engine.engine, &compiled.pre, state).ok()
        });
        let Some(mut instance) = instance else { return };
        tally.instantiated += 1;
        let config = PolicyConfig {
            learning_rate: 4,
            settings: vec![("step".to_string(), "x".repeat(100)), (String::new(), "é".to_string())],
        };
        let batch = events();
        // A fault poisons the instance: the policy thread rebuilds it, so
        // nothing more is called on this one.
        let _ = timed(tally, what, "init", || instance.init(&config).ok())
            .and_then(|_| timed(tally, what, "on-events", || instance.on_events(&batch).ok()))
            .and_then(|_| timed(tally, what, "on-tick", || instance.on_tick(1_000).ok()));
    }
}

/// Runs one step into the guest: it must end within [`CALL_LIMIT`], with
/// a value (`Some`) or a fault (`None`).
fn timed<T>(tally: &mut Tally, what: &str, step: &str, call: impl FnOnce() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    let result = call();
    let took = started.elapsed();
    assert!(took < CALL_LIMIT, "{what}: {step} took {took:?}");
    tally.slowest_call = tally.slowest_call.max(took);
    match result {
        Some(_) => tally.calls_ok += 1,
        None => tally.faults += 1,
    }
    result
}

/// A batch with strings and lists, so the guest's allocator is called.
fn events() -> Vec<Event> {
    vec![
        Event::NamespaceChange(NamespaceChange { netns: 1, name: "ns-one".into(), created: true }),
        Event::AdminOverride(AdminOverride {
            netns: 1,
            sysctl: "net.ipv4.tcp_rmem".into(),
            pid: 7,
            comm: "sysctl".into(),
        }),
        Event::Lost(3),
    ]
}

fn cases_and_seed() -> (usize, u64) {
    let cases = std::env::var("WASMTUNE_RANDOM_POLICIES").ok().and_then(|n| n.parse().ok()).unwrap_or(DEFAULT_CASES);
    let seed = std::env::var("WASMTUNE_RANDOM_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or(0x5eed);
    (cases, seed)
}

#[test]
fn random_policy_components_load_and_run_within_their_budget_or_are_refused() {
    if harness::skip_without(&[Requirement::Root]) {
        return;
    }
    let (cases, seed) = cases_and_seed();
    let world = PolicyWorld::new();
    let host = Host::new();
    let mut tally = Tally::default();
    let started = Instant::now();
    for case in 0..cases as u64 {
        let mut rng = Rng(seed ^ case.wrapping_mul(0x1000_0000_01b3));
        let len = 256 + rng.below(16 << 10);
        let data = rng.bytes(len);
        match world.component(&data) {
            Some(component) => {
                tally.generated += 1;
                host.exercise(&component, &format!("generated component (seed {seed}, case {case})"), &mut tally);
            }
            None => tally.not_generated += 1,
        }
    }
    println!("{cases} cases in {:?}: {tally:?}", started.elapsed());
    assert!(tally.generated * 2 >= cases, "too few cases made a component: {tally:?}");
    assert!(tally.instantiated > 0 && tally.calls_ok > 0, "no generated policy ran any code: {tally:?}");
}

#[test]
fn random_bytes_and_core_modules_are_refused_without_a_panic() {
    if harness::skip_without(&[Requirement::Root]) {
        return;
    }
    let (cases, seed) = cases_and_seed();
    let host = Host::new();
    let mut tally = Tally::default();
    for case in 0..cases as u64 {
        let mut rng = Rng(seed.rotate_left(17) ^ case);
        let len = rng.below(4096);
        let mut bytes = rng.bytes(len);
        // Half of them start like a component, so they get past the magic number.
        if case % 2 == 0 && bytes.len() >= 8 {
            bytes[..8].copy_from_slice(b"\0asm\x0d\0\x01\0");
        }
        host.exercise(&bytes, &format!("random bytes (seed {seed}, case {case})"), &mut tally);

        let data = rng.bytes(4096);
        let Ok(module) = wasm_smith::Module::new(wasm_smith::Config::default(), &mut Unstructured::new(&data)) else {
            continue;
        };
        let module = module.to_bytes();
        let refused = PolicyImage::read(&module, PolicySource::File("core.wasm".into()));
        assert!(
            matches!(refused, Err(wasmtune::runtime::image::LoadError::CoreModule)),
            "a core module (seed {seed}, case {case}) was not refused as one: {:?}",
            refused.map(|image| image.digest)
        );
    }
    assert_eq!(tally.loaded, 0, "random bytes loaded as a policy: {tally:?}");
}

#[test]
fn built_in_policies_with_bytes_changed_load_and_run_or_are_refused() {
    if harness::skip_without(&[Requirement::Root]) {
        return;
    }
    let (cases, seed) = cases_and_seed();
    let host = Host::new();
    let mut tally = Tally::default();
    let builtins = wasmtune::builtin::BUILTIN_POLICIES;
    // Each case compiles a whole policy: a few of them.
    for case in 0..(cases / 8).max(2) as u64 {
        let mut rng = Rng(seed.rotate_left(31) ^ case);
        let (file, bytes) = builtins[rng.below(builtins.len())];
        let mut bytes = bytes.to_vec();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        host.exercise(&bytes, &format!("{file} with bytes changed (seed {seed}, case {case})"), &mut tally);
    }
    println!("{tally:?}");
}
