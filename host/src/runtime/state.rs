//! What one policy's `Store` holds: its capabilities, an empty WASI context
//! and its memory cap. Deny by default: the WASI context has no preopened
//! directories, no environment, no arguments, and its socket check refuses
//! every address; stdout and stderr go nowhere.

use std::sync::Arc;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::caps::clock::ClockCap;
use crate::caps::log::LogCap;
use crate::caps::state::{PolicyStore, StateCap};
use crate::caps::sysctl::SysctlCap;
use crate::caps::system::SystemCap;
use crate::caps::tcp::TcpCap;

/// Default cap on a policy's linear memory.
pub const DEFAULT_MEMORY_LIMIT: usize = 16 << 20;
/// Cap on table elements, far above what a real policy uses.
const TABLE_ELEMENTS_LIMIT: usize = 100_000;

pub struct PolicyState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: MemoryCap,
    pub log: LogCap,
    pub sysctl: SysctlCap,
    pub tcp: TcpCap,
    pub clock: ClockCap,
    pub system: SystemCap,
    pub state: StateCap,
}

impl PolicyState {
    pub fn new(log: LogCap, sysctl: SysctlCap, clock: ClockCap, memory_limit: usize) -> PolicyState {
        let tcp = TcpCap::new(&sysctl);
        PolicyState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: MemoryCap { limit: memory_limit },
            log,
            sysctl,
            tcp,
            clock,
            system: SystemCap,
            state: StateCap { store: Arc::new(PolicyStore::default()) },
        }
    }

    /// Uses the policy name's shared store instead of a private one.
    pub fn with_store(mut self, store: Arc<PolicyStore>) -> PolicyState {
        self.state = StateCap { store };
        self
    }

    /// Takes the capabilities back out of a store that is being rebuilt, so
    /// counters and rate limits survive the rebuild.
    pub fn into_caps(self) -> (LogCap, SysctlCap, ClockCap, usize) {
        (self.log, self.sysctl, self.clock, self.limits.limit)
    }
}

impl WasiView for PolicyState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A policy asked for more memory than its cap.
#[derive(Debug, thiserror::Error)]
#[error("policy memory limit reached: growing to {desired} bytes, limit {limit} bytes")]
pub struct MemoryLimitExceeded {
    pub desired: usize,
    pub limit: usize,
}

/// Refuses growth past the cap with a typed error (rather than a failed
/// `memory.grow`, which a Rust guest turns into an opaque `unreachable`).
pub struct MemoryCap {
    pub limit: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            return Err(MemoryLimitExceeded { desired, limit: self.limit }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= TABLE_ELEMENTS_LIMIT)
    }
}
