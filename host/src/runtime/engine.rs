//! One wasmtime engine for every policy: fuel and epoch interruption for
//! per-call budgets, no async machinery (a sync call costs about a third of
//! an async-capable one), and a cache of compiled components so restarts do
//! not pay compilation again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, OptLevel};

use crate::runtime::state::PolicyState;

/// How often the epoch advances; deadlines are counted in these ticks. A
/// coarse tick keeps the daemon quiet: every wake-up of one of its threads
/// can preempt the traffic it watches (1 ms ticks cost ~2 % of a core, and
/// ~1 000 wake-ups a second cost a CPU-bound iperf3 ~10 % of its throughput).
pub const EPOCH_TICK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The engine could not be configured (a wasmtime feature is missing).
    #[error("cannot create the Wasm engine: {0:#}")]
    Create(wasmtime::Error),
    /// The host imports could not be added to the linker.
    #[error("cannot link host capabilities: {0:#}")]
    Link(wasmtime::Error),
    /// The epoch ticker thread could not start.
    #[error("cannot start the epoch thread: {0}")]
    Thread(std::io::Error),
}

/// The engine, the linker holding every host capability, and the cache.
pub struct PolicyEngine {
    pub engine: Engine,
    pub linker: Linker<PolicyState>,
    cache: Option<ComponentCache>,
    ticker_stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl PolicyEngine {
    /// `cache_dir`: where compiled components are kept (root-only); `None`
    /// compiles every time.
    pub fn new(cache_dir: Option<&Path>) -> Result<PolicyEngine, EngineError> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .concurrency_support(false)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&config).map_err(EngineError::Create)?;
        let mut linker = Linker::new(&engine);
        crate::caps::add_to_linker(&mut linker).map_err(EngineError::Link)?;
        let cache = cache_dir.and_then(|dir| match ComponentCache::open(dir, &engine) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "compiled-policy cache disabled: {e}");
                None
            }
        });
        let ticker_stop = Arc::new(AtomicBool::new(false));
        let ticker = spawn_epoch_ticker(&engine, ticker_stop.clone()).map_err(EngineError::Thread)?;
        Ok(PolicyEngine { engine, linker, cache, ticker_stop, ticker: Some(ticker) })
    }

    /// Compiles a component, or loads it from the cache.
    pub fn compile(&self, bytes: &[u8]) -> wasmtime::Result<Component> {
        match &self.cache {
            Some(cache) => cache.get_or_compile(&self.engine, bytes),
            None => Component::new(&self.engine, bytes),
        }
    }
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

fn spawn_epoch_ticker(engine: &Engine, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let weak = engine.weak();
    std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        }
    })
}

/// Compiled components on disk, keyed by content hash and the engine's
/// compatibility hash (wasmtime version and configuration), so a `.cwasm`
/// is only ever loaded into the engine that wrote it.
struct ComponentCache {
    dir: PathBuf,
    engine_key: String,
}

impl ComponentCache {
    fn open(dir: &Path, engine: &Engine) -> std::io::Result<ComponentCache> {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let meta = std::fs::metadata(dir)?;
        // Deserializing is only safe for files this daemon wrote.
        if meta.uid() != nix::unistd::geteuid().as_raw() || meta.mode() & 0o022 != 0 {
            return Err(std::io::Error::other(format!(
                "{} must be owned by this user and not writable by others",
                dir.display()
            )));
        }
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ComponentCache { dir: dir.to_path_buf(), engine_key: format!("{:016x}", hasher.finish()) })
    }

    fn get_or_compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let digest = hex(&Sha256::digest(bytes));
        let path = self.dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: the file sits in a directory only this user can write, was
            // written by `store` below from this engine's own output, and is keyed
            // by the engine's compatibility hash; wasmtime re-checks the header.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(file = %path.display(), "recompiling: cached policy unusable: {e:#}"),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&component, &path) {
            tracing::warn!(file = %path.display(), "cannot cache compiled policy: {e}");
        }
        Ok(component)
    }

    fn store(&self, component: &Component, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let serialized = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        file.write_all(&serialized)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
