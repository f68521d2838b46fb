//! One live policy instance: a `Store` with its capabilities, armed with a
//! fresh fuel and wall-clock budget before every call. A call that traps,
//! runs out of budget, hits the memory cap or tries to wait in a WASI call
//! fails that call only and leaves the instance poisoned; the worker
//! rebuilds it.

use std::fmt;
use std::time::Duration;

use wasmtime::{Engine, Store, Trap, UpdateDeadline};

use crate::caps::no_blocking::PolicyBlocked;
use crate::runtime::engine::{EPOCH_TICK, call_in_flight};
use crate::runtime::state::{MemoryLimitExceeded, PolicyState};
use crate::wit::{Event, Policy, PolicyConfig, PolicyInfo, PolicyPre};

/// Fuel for one call: roughly 100 million Wasm instructions.
pub const FUEL_PER_CALL: u64 = 100_000_000;
/// Wall-clock budget for one call, in epoch ticks (50 ms each: 250 ms, met
/// to within one tick): the guest's own time; time spent waiting for the
/// host's answers moves it on (at most [`MAX_HOST_CREDIT_TICKS`]).
pub const DEADLINE_TICKS: u64 = 5;
/// The most a call's deadline moves on for time spent waiting for the host
/// (2 s, the host's own deadline for a call): a guest cannot stretch a call
/// without bound by asking the host for slow things.
pub const MAX_HOST_CREDIT_TICKS: u64 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum FaultKind {
    /// The guest trapped (panic, `unreachable`, out-of-bounds access, ...).
    Trap,
    /// The guest used up its fuel for the call.
    Fuel,
    /// The guest ran past its wall-clock deadline.
    Deadline,
    /// The guest went past its memory budget (memories and tables), or
    /// past its number of core instances, memories or tables.
    Memory,
    /// The guest called a WASI function that would have waited (a sleep, a
    /// poll, a stream that is not ready): refused, since neither fuel nor
    /// the deadline can interrupt a wait inside the host.
    Blocked,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Fuel => "fuel",
            FaultKind::Deadline => "deadline",
            FaultKind::Memory => "memory",
            FaultKind::Blocked => "blocked",
        }
    }
}

/// Why a call into a policy failed.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kind: FaultKind,
    pub detail: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

impl Fault {
    pub fn from_error(error: &wasmtime::Error) -> Fault {
        let kind = if error.chain().any(|e| e.is::<MemoryLimitExceeded>()) || exceeds_count_limit(error) {
            FaultKind::Memory
        } else if error.chain().any(|e| e.is::<PolicyBlocked>()) {
            FaultKind::Blocked
        } else {
            match error.downcast_ref::<Trap>() {
                Some(Trap::OutOfFuel) => FaultKind::Fuel,
                Some(Trap::Interrupt) => FaultKind::Deadline,
                _ => FaultKind::Trap,
            }
        };
        Fault { kind, detail: format!("{:#}", error).replace('\n', " ") }
    }
}

/// How wasmtime words its refusal of an instance, memory or table past the
/// counts the store's limiter allows; the error carries no type to test.
const COUNT_LIMIT_MESSAGE: &str = "resource limit exceeded";

/// Too many instances, memories or tables is the memory cap at work, like
/// going past the byte budget.
fn exceeds_count_limit(error: &wasmtime::Error) -> bool {
    error.chain().any(|e| e.to_string().starts_with(COUNT_LIMIT_MESSAGE))
}

pub struct PolicyInstance {
    store: Store<PolicyState>,
    bindings: Policy,
}

impl PolicyInstance {
    pub fn instantiate(engine: &Engine, pre: &PolicyPre<PolicyState>, state: PolicyState) -> Result<Self, Fault> {
        let _ticking = call_in_flight();
        let mut store = Store::new(engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_callback(deadline_reached);
        arm(&mut store)?;
        let bindings = pre.instantiate(&mut store).map_err(|e| Fault::from_error(&e))?;
        Ok(PolicyInstance { store, bindings })
    }

    pub fn init(&mut self, config: &PolicyConfig) -> Result<Result<PolicyInfo, String>, Fault> {
        let _ticking = call_in_flight();
        arm(&mut self.store)?;
        self.bindings.wasmtune_policy_handler().call_init(&mut self.store, config).map_err(|e| Fault::from_error(&e))
    }

    pub fn on_events(&mut self, batch: &[Event]) -> Result<(), Fault> {
        let _ticking = call_in_flight();
        arm(&mut self.store)?;
        self.bindings
            .wasmtune_policy_handler()
            .call_on_events(&mut self.store, batch)
            .map_err(|e| Fault::from_error(&e))
    }

    pub fn on_tick(&mut self, now: u64) -> Result<(), Fault> {
        let _ticking = call_in_flight();
        arm(&mut self.store)?;
        self.bindings.wasmtune_policy_handler().call_on_tick(&mut self.store, now).map_err(|e| Fault::from_error(&e))
    }

    /// Fuel left from the last call's budget (for measurements).
    pub fn fuel_left(&self) -> u64 {
        self.store.get_fuel().unwrap_or(0)
    }

    pub fn into_state(self) -> PolicyState {
        self.store.into_data()
    }
}

/// A fresh budget before every call: the epoch deadline is relative and
/// persists, and leftover fuel must not carry over.
fn arm(store: &mut Store<PolicyState>) -> Result<(), Fault> {
    store.set_fuel(FUEL_PER_CALL).map_err(|e| Fault::from_error(&e))?;
    store.set_epoch_deadline(DEADLINE_TICKS);
    store.data_mut().link.take_waited();
    store.data_mut().host_credit_ticks = 0;
    Ok(())
}

/// At the deadline: the time the guest spent waiting for the host's
/// answers (a busy actuator, a starved host thread) is the host's, so the
/// deadline moves on by it, up to [`MAX_HOST_CREDIT_TICKS`] a call; only
/// the guest's own time ends the call.
fn deadline_reached(mut store: wasmtime::StoreContextMut<'_, PolicyState>) -> wasmtime::Result<UpdateDeadline> {
    let state = store.data_mut();
    let waited = state.link.take_waited();
    let tick = EPOCH_TICK.as_nanos().max(1);
    let ticks = u64::try_from(waited.as_nanos() / tick).unwrap_or(u64::MAX);
    let allowed = ticks.min(MAX_HOST_CREDIT_TICKS.saturating_sub(state.host_credit_ticks));
    // What is under a tick stays for the next look.
    let used = Duration::from_nanos(u64::try_from(u128::from(allowed) * tick).unwrap_or(u64::MAX));
    state.link.give_back(waited.saturating_sub(used));
    if allowed == 0 {
        return Ok(UpdateDeadline::Interrupt);
    }
    state.host_credit_ticks += allowed;
    Ok(UpdateDeadline::Continue(allowed))
}
