//! One wasmtime engine for every policy: fuel and epoch interruption for
//! per-call budgets, no async machinery (a sync call costs about a third of
//! an async-capable one), and a cache of compiled components so restarts do
//! not pay compilation again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, OptLevel};

use crate::runtime::protocol::{CacheFile, CacheUse};
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
        let engine = Engine::new(&engine_config()).map_err(EngineError::Create)?;
        let cache = cache_dir.and_then(|dir| match ComponentCache::open(dir, &engine) {
            Ok(cache) => Some(cache),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), "compiled-policy cache disabled: {e}");
                None
            }
        });
        PolicyEngine::finish(engine, cache)
    }

    /// The runtime process's engine: it opens no cache itself; the host
    /// hands it each cache file ([`PolicyEngine::compile_handed`]).
    pub fn confined() -> Result<PolicyEngine, EngineError> {
        let engine = Engine::new(&engine_config()).map_err(EngineError::Create)?;
        PolicyEngine::finish(engine, None)
    }

    /// The key compiled components are kept under: wasmtime's version and
    /// this engine's settings.
    pub fn engine_key(&self) -> String {
        engine_key(&self.engine)
    }

    /// Compiles a component, using the cache file the host handed over:
    /// loads a compiled one, or writes what it compiled into an empty one.
    pub fn compile_handed(
        &self,
        bytes: &[u8],
        handed: Option<(CacheFile, OwnedFd)>,
    ) -> wasmtime::Result<(Component, CacheUse)> {
        use std::io::{Read, Write};
        match handed {
            Some((CacheFile::Compiled, fd)) => {
                let mut compiled = Vec::new();
                std::fs::File::from(fd).read_to_end(&mut compiled)?;
                // SAFETY: the host hands over only a regular file of root's,
                // private to it, that a runtime process wrote from this
                // engine's own output under this engine's key (see
                // `cache_broker`); wasmtime re-checks the header. A file a
                // compromised runtime wrote compromises at most this
                // process, which has no more than that one had.
                match unsafe { Component::deserialize(&self.engine, &compiled) } {
                    Ok(component) => Ok((component, CacheUse::Loaded)),
                    Err(e) => {
                        tracing::warn!("recompiling: the cached compiled policy is unusable: {e:#}");
                        Ok((Component::new(&self.engine, bytes)?, CacheUse::Unused))
                    }
                }
            }
            Some((CacheFile::Empty, fd)) => {
                let component = Component::new(&self.engine, bytes)?;
                let stored = component.serialize().and_then(|serialized| {
                    let mut file = std::fs::File::from(fd);
                    file.write_all(&serialized)?;
                    file.sync_all()?;
                    Ok(())
                });
                match stored {
                    Ok(()) => Ok((component, CacheUse::Stored)),
                    Err(e) => {
                        tracing::warn!("cannot cache the compiled policy: {e:#}");
                        Ok((component, CacheUse::Unused))
                    }
                }
            }
            _ => Ok((Component::new(&self.engine, bytes)?, CacheUse::Unused)),
        }
    }

    fn finish(engine: Engine, cache: Option<ComponentCache>) -> Result<PolicyEngine, EngineError> {
        let mut linker = Linker::new(&engine);
        crate::runtime::linker::add_to_linker(&mut linker).map_err(EngineError::Link)?;
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

/// Address space reserved for one linear memory: four times the default
/// policy budget, so a policy's memory never moves as it grows, and small
/// enough that the runtime process can live under an address-space limit
/// (wasmtime's default reserves 4 GiB per memory). Accesses are bounds-checked
/// in code instead of by guard pages past 4 GiB.
pub const MEMORY_RESERVATION: u64 = 64 << 20;

fn engine_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .concurrency_support(false)
        .memory_reservation(MEMORY_RESERVATION)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .cranelift_opt_level(OptLevel::Speed);
    config
}

impl Drop for PolicyEngine {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        // Under the lock, so the ticker cannot miss it between its check and its wait.
        drop(CALLS.count.lock().unwrap_or_else(PoisonError::into_inner));
        CALLS.changed.notify_all();
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Guest calls running in this process. The epoch ticker runs only while
/// there is one: an idle daemon's runtime process never wakes for it.
static CALLS: CallsInFlight = CallsInFlight { count: Mutex::new(0), changed: Condvar::new() };

struct CallsInFlight {
    count: Mutex<usize>,
    changed: Condvar,
}

/// Held for the length of a guest call (instantiation included): the
/// deadline's ticks are counted only meanwhile.
pub struct CallInFlight(());

/// Marks a guest call as running until the guard drops.
pub fn call_in_flight() -> CallInFlight {
    *CALLS.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    CALLS.changed.notify_all();
    CallInFlight(())
}

impl Drop for CallInFlight {
    fn drop(&mut self) {
        let mut count = CALLS.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
    }
}

fn spawn_epoch_ticker(engine: &Engine, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let weak = engine.weak();
    std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            {
                let mut count = CALLS.count.lock().unwrap_or_else(PoisonError::into_inner);
                while *count == 0 && !stop.load(Ordering::Relaxed) {
                    count = CALLS.changed.wait(count).unwrap_or_else(PoisonError::into_inner);
                }
            }
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
///
/// Deserializing runs the file as native code, so it is only done for files
/// this user wrote: the directory is checked once and then only used
/// through its descriptor, and every entry is opened without following
/// symlinks and checked (regular, this user's, not writable by others)
/// through its own descriptor before it is read.
struct ComponentCache {
    dir: PathBuf,
    dir_fd: OwnedFd,
    engine_key: String,
}

/// Whether a file is this user's and writable by nobody else.
fn owned_and_private(meta: &std::fs::Metadata) -> bool {
    meta.uid() == nix::unistd::geteuid().as_raw() && meta.mode() & 0o022 == 0
}

impl ComponentCache {
    fn open(dir: &Path, engine: &Engine) -> std::io::Result<ComponentCache> {
        std::fs::create_dir_all(dir)?;
        let dir_fd = nix::fcntl::open(dir, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|errno| std::io::Error::other(format!("{}: {errno} (a symlink is refused)", dir.display())))?;
        nix::sys::stat::fchmod(&dir_fd, Mode::from_bits_truncate(0o700)).map_err(std::io::Error::from)?;
        let meta = std::fs::File::from(dir_fd.try_clone()?).metadata()?;
        if !owned_and_private(&meta) {
            return Err(std::io::Error::other(format!(
                "{} must be owned by this user and not writable by others",
                dir.display()
            )));
        }
        Ok(ComponentCache { dir: dir.to_path_buf(), dir_fd, engine_key: engine_key(engine) })
    }

    fn get_or_compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let digest = hex(&Sha256::digest(bytes));
        let name = format!("{digest}-{}.cwasm", self.engine_key);
        let path = self.dir.join(&name);
        match self.read_entry(&name) {
            Ok(Some(compiled)) => {
                // SAFETY: the bytes come from a regular file of this user's,
                // writable by nobody else, in a directory only this user can
                // write, written by `store` below from this engine's own
                // output and keyed by its compatibility hash; wasmtime
                // re-checks the header.
                match unsafe { Component::deserialize(engine, &compiled) } {
                    Ok(component) => return Ok(component),
                    Err(e) => tracing::warn!(file = %path.display(), "recompiling: cached policy unusable: {e:#}"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(file = %path.display(), "recompiling: cached policy refused: {e}"),
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&component, &name) {
            tracing::warn!(file = %path.display(), "cannot cache compiled policy: {e}");
        }
        Ok(component)
    }

    /// The entry's bytes; `None` when there is none.
    fn read_entry(&self, name: &str) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let fd = match nix::fcntl::openat(
            &self.dir_fd,
            name,
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(errno) => return Err(std::io::Error::from(errno)),
        };
        let mut file = std::fs::File::from(fd);
        let meta = file.metadata()?;
        if !meta.file_type().is_file() || !owned_and_private(&meta) {
            return Err(std::io::Error::other("not a regular file of this user's, private to it"));
        }
        let mut compiled = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.read_to_end(&mut compiled)?;
        Ok(Some(compiled))
    }

    fn store(&self, component: &Component, name: &str) -> std::io::Result<()> {
        use std::io::Write;
        let serialized = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        let tmp = format!("{name}.tmp{}", std::process::id());
        let _ = nix::unistd::unlinkat(&self.dir_fd, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(&self.dir_fd, tmp.as_str(), flags, Mode::from_bits_truncate(0o600))
            .map_err(std::io::Error::from)?;
        let mut file = std::fs::File::from(fd);
        file.write_all(&serialized)?;
        file.sync_all()?;
        nix::fcntl::renameat(&self.dir_fd, tmp.as_str(), &self.dir_fd, name).map_err(std::io::Error::from)
    }
}

fn engine_key(engine: &Engine) -> String {
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_planted_cache_entry_is_never_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache_dir = dir.path().join("cache");
        let engine = PolicyEngine::new(Some(&cache_dir)).expect("engine");
        let cache = engine.cache.as_ref().expect("a cache");

        let elsewhere = dir.path().join("elsewhere.cwasm");
        std::fs::write(&elsewhere, b"planted").expect("write");
        std::os::unix::fs::symlink(&elsewhere, cache_dir.join("link.cwasm")).expect("symlink");
        assert!(cache.read_entry("link.cwasm").is_err(), "a symlinked entry is refused");

        let loose = cache_dir.join("loose.cwasm");
        std::fs::write(&loose, b"planted").expect("write");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(cache.read_entry("loose.cwasm").is_err(), "an entry others may write is refused");

        let own = cache_dir.join("own.cwasm");
        std::fs::write(&own, b"mine").expect("write");
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(cache.read_entry("own.cwasm").expect("read"), Some(b"mine".to_vec()));
        assert_eq!(cache.read_entry("absent.cwasm").expect("read"), None);
    }
}
