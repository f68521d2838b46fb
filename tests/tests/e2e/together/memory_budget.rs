//! The memory cap is one budget per policy, not per memory: a component
//! cannot multiply it with many core instances, many memories or big tables.
//! Each hostile component here is built from its text and instantiated in a
//! store wired to the daemon's limiter the way `runtime::instance` wires it,
//! on the daemon's own engine configuration.
//!
//! nextest runs each test in a process of its own, so the resident-set
//! figures are this test's alone.

use wasmtime::Store;
use wasmtime::component::{Component, Linker};
use wasmtune::runtime::engine::PolicyEngine;
use wasmtune::runtime::instance::{Fault, FaultKind};
use wasmtune::runtime::state::{DEFAULT_MEMORY_LIMIT, MemoryCap};

const MIB: u64 = 1 << 20;
/// Enough fuel for every start function below (one store per 4 KiB page).
const TEST_FUEL: u64 = 1_000_000_000;

/// A core module with one 16 MiB memory whose start function writes one
/// byte to every 4 KiB page, so each instance really costs 16 MiB of RSS.
const TOUCHING_MODULE: &str = r#"
    (core module $m
      (memory 256)
      (func $touch_every_page
        (local $addr i32)
        (loop $next
          (i32.store8 (local.get $addr) (i32.const 1))
          (local.set $addr (i32.add (local.get $addr) (i32.const 4096)))
          (br_if $next (i32.lt_u (local.get $addr) (i32.const 16777216)))))
      (start $touch_every_page))
"#;

/// A component that instantiates `module` (which defines `$m`) `times` times.
fn component_text(module: &str, times: usize) -> String {
    let instances: String = (0..times).map(|i| format!("(core instance $i{i} (instantiate $m))\n")).collect();
    format!("(component {module} {instances})")
}

fn engine() -> PolicyEngine {
    PolicyEngine::new(None).expect("the daemon's engine")
}

fn store(engine: &PolicyEngine) -> Store<MemoryCap> {
    let mut store = Store::new(&engine.engine, MemoryCap::new(DEFAULT_MEMORY_LIMIT));
    store.limiter(|cap| cap);
    store.set_fuel(TEST_FUEL).expect("fuel is on");
    store.set_epoch_deadline(u64::MAX / 2);
    store
}

/// Compiles `text` and instantiates it with no imports.
fn instantiate(engine: &PolicyEngine, store: &mut Store<MemoryCap>, text: &str) -> wasmtime::Result<()> {
    let bytes = wat::parse_str(text).expect("valid component text");
    let component = Component::new(&engine.engine, bytes)?;
    Linker::<MemoryCap>::new(&engine.engine).instantiate(&mut *store, &component).map(|_| ())
}

/// This process's resident set, from /proc/self/status.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("a VmRSS line in kB");
    kib * 1024
}

/// Checks that `result` is a refusal the worker reports as a `memory`
/// fault, for the reason `because`.
fn assert_refused_as_memory(result: wasmtime::Result<()>, what: &str, because: &str) {
    let error = match result {
        Ok(()) => panic!("{what} was instantiated: the per-policy cap did not hold"),
        Err(error) => error,
    };
    let fault = Fault::from_error(&error);
    println!("{what}: refused: {fault}");
    assert_eq!(fault.kind, FaultKind::Memory, "{what}: refused, but not as a memory fault: {fault}");
    assert!(fault.detail.contains(because), "{what}: refused for another reason than {because:?}: {fault}");
}

const OVER_BUDGET: &str = "policy memory limit reached";

#[test]
fn sixty_four_instances_of_a_16_mib_module_are_refused_and_rss_stays_low() {
    let engine = engine();
    let mut store = store(&engine);
    let text = component_text(TOUCHING_MODULE, 64);
    let before = rss_bytes();
    let result = instantiate(&engine, &mut store, &text);
    let grown = rss_bytes().saturating_sub(before);
    println!("64 x 16 MiB instances: RSS grew by {:.1} MiB", grown as f64 / MIB as f64);
    assert_refused_as_memory(result, "64 instances of a 16 MiB module", OVER_BUDGET);
    assert!(grown < 64 * MIB, "RSS grew by {} MiB", grown / MIB);
}

#[test]
fn many_small_instances_are_refused() {
    let engine = engine();
    let mut store = store(&engine);
    let text = component_text("(core module $m)", 64);
    assert_refused_as_memory(instantiate(&engine, &mut store, &text), "64 core instances", "instance count");
}

#[test]
fn many_memories_are_refused_even_when_small() {
    let engine = engine();
    let mut store = store(&engine);
    let module =
        "(core module $m (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1) (memory 1))";
    assert_refused_as_memory(
        instantiate(&engine, &mut store, &component_text(module, 1)),
        "8 memories",
        "memory count",
    );
}

#[test]
fn table_elements_count_against_the_same_budget() {
    let engine = engine();
    let mut store = store(&engine);
    // Two million elements: far more than the budget at any realistic
    // per-element size, in one table (so no count limit is what stops it).
    let module = "(core module $m (table 2000000 funcref))";
    assert_refused_as_memory(
        instantiate(&engine, &mut store, &component_text(module, 1)),
        "a 2M-element table",
        OVER_BUDGET,
    );
}

#[test]
fn memories_and_tables_share_one_budget() {
    let engine = engine();
    let mut store = store(&engine);
    // Each fits alone; together they do not.
    let module = "(core module $m (memory 255) (table 131072 funcref))";
    assert_refused_as_memory(
        instantiate(&engine, &mut store, &component_text(module, 1)),
        "memory plus table",
        OVER_BUDGET,
    );
}
