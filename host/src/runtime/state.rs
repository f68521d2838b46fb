//! What one policy's `Store` holds: the link to its host capabilities, an
//! empty WASI context and its memory cap. Deny by default: the WASI context has no preopened
//! directories, no environment, no arguments, and its socket check refuses
//! every address; stdout and stderr go nowhere. Its memories and tables
//! share one budget.

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::caps::clock::ClockCap;
use crate::caps::system::SystemCap;
use crate::runtime::calls::{HostCalls, HostLink};

/// Default budget for one policy: all of its linear memories and tables
/// together, however many core instances define them.
pub const DEFAULT_MEMORY_LIMIT: usize = 16 << 20;
/// Core instances one policy may create. A Rust wasm32-wasip2 policy built
/// with wit-bindgen has 3 (its own module and the shim and fix-up modules
/// that wire its indirect calls; every built-in and test policy measured 3).
/// 16 leaves room for other toolchains' extra modules (a WASI adapter, a
/// language runtime) while keeping wasmtime's per-instance bookkeeping and
/// address-space reservations small (its default is 10 000).
pub const INSTANCE_LIMIT: usize = 16;
/// Linear memories one policy may define: the built-ins define 1.
pub const MEMORY_COUNT_LIMIT: usize = 4;
/// Tables one policy may define: the built-ins define 2 (about 100
/// elements in all).
pub const TABLE_COUNT_LIMIT: usize = 8;
/// What one table element costs against the budget: twice the pointer
/// wasmtime keeps per element, so a table is never the cheaper way to hold
/// memory.
pub const TABLE_ELEMENT_BYTES: usize = 16;

pub struct PolicyState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: MemoryCap,
    /// The capabilities that the host answers: log, sysctl, tcp, state.
    pub link: HostLink,
    pub clock: ClockCap,
    pub system: SystemCap,
    /// Epoch ticks the current call's deadline moved on for host time.
    pub host_credit_ticks: u64,
}

impl PolicyState {
    pub fn new(calls: Box<dyn HostCalls>, clock: ClockCap, memory_limit: usize) -> PolicyState {
        PolicyState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: MemoryCap::new(memory_limit),
            link: HostLink::new(calls),
            clock,
            system: SystemCap,
            host_credit_ticks: 0,
        }
    }

    /// The state for a rebuilt instance: a fresh WASI context, resource
    /// table and memory budget, with the same link to the host (whose
    /// capabilities keep their counters, rate limits and store).
    pub fn for_rebuild(self) -> PolicyState {
        PolicyState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: MemoryCap::new(self.limits.limit),
            link: self.link,
            clock: self.clock,
            system: self.system,
            host_credit_ticks: 0,
        }
    }
}

impl WasiView for PolicyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A policy asked for more memory than its budget.
#[derive(Debug, thiserror::Error)]
#[error("policy memory limit reached: its memories and tables would take {desired} bytes in all, limit {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

/// One budget per store, charged for every linear memory and table of
/// every core instance in it: wasmtime asks per memory and per table (at
/// instantiation too, from size 0), so a component with many instances or
/// memories would otherwise multiply the cap. Nothing is ever given back:
/// a store's memories and tables live as long as the store.
///
/// Refuses growth past the budget with a typed error (rather than a failed
/// `memory.grow`, which a Rust guest turns into an opaque `unreachable`).
/// The numbers of instances, memories and tables are capped as well.
pub struct MemoryCap {
    pub limit: usize,
    /// Bytes charged so far: memory sizes plus table elements at
    /// [`TABLE_ELEMENT_BYTES`] each.
    used: usize,
}

impl MemoryCap {
    pub fn new(limit: usize) -> MemoryCap {
        MemoryCap { limit, used: 0 }
    }

    /// Bytes charged to the budget so far.
    pub fn used(&self) -> usize {
        self.used
    }

    fn charge(&mut self, current: usize, desired: usize) -> wasmtime::Result<bool> {
        let total = self.used.saturating_add(desired.saturating_sub(current));
        if total > self.limit {
            return Err(MemoryLimitExceeded { desired: total, limit: self.limit }.into());
        }
        self.used = total;
        Ok(true)
    }
}

/// Growth past a memory's or table's declared maximum fails in wasmtime
/// whatever the limiter says; declining it here keeps it off the budget.
fn beyond_declared_maximum(desired: usize, maximum: Option<usize>) -> bool {
    maximum.is_some_and(|maximum| desired > maximum)
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if beyond_declared_maximum(desired, maximum) {
            return Ok(false);
        }
        self.charge(current, desired)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if beyond_declared_maximum(desired, maximum) {
            return Ok(false);
        }
        self.charge(current.saturating_mul(TABLE_ELEMENT_BYTES), desired.saturating_mul(TABLE_ELEMENT_BYTES))
    }

    fn instances(&self) -> usize {
        INSTANCE_LIMIT
    }

    fn memories(&self) -> usize {
        MEMORY_COUNT_LIMIT
    }

    fn tables(&self) -> usize {
        TABLE_COUNT_LIMIT
    }
}
