//! A policy file turned into something that can run, in two steps. The
//! host reads it ([`PolicyImage::read`]: a component, its manifest, its
//! digest) and never compiles it; the runtime process compiles it
//! ([`CompiledPolicy::compile`]: checked to be of this contract's world and
//! version, compiled or loaded from the cache, linked against the
//! capabilities).

use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmparser::{Encoding, Parser, Payload};
use wasmtime::component::types::ComponentItem;

use crate::manifest::{Manifest, ManifestError};
use crate::runtime::engine::{PolicyEngine, hex};
use crate::runtime::protocol::{CacheFile, CacheUse};
use crate::runtime::state::PolicyState;
use crate::wit::PolicyPre;

/// The export every policy must provide, with the contract version.
pub const HANDLER_EXPORT: &str = "wasmtune:policy/handler@0.1.0";

/// Where a policy came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PolicySource {
    /// Embedded in the host binary.
    Builtin(&'static str),
    /// A file in a policy directory.
    File(PathBuf),
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySource::Builtin(_) => f.write_str("builtin"),
            PolicySource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why a policy could not be loaded. Always reported with the source.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The policy's thread could not be started.
    #[error("cannot start the policy thread: {0}")]
    Spawn(std::io::Error),
    /// Not WebAssembly at all.
    #[error("not a WebAssembly file ({reason})")]
    NotWasm { reason: String },
    /// A core module, not a component.
    #[error(
        "a core WebAssembly module, not a component: build the policy for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// A component of another contract version.
    #[error("built against {found}; this host speaks {HANDLER_EXPORT}: rebuild it with a matching wasmtune-sdk")]
    WrongVersion { found: String },
    /// A component of another world altogether.
    #[error("not a wasmtune policy: it exports [{exports}] but not {HANDLER_EXPORT}")]
    WrongWorld { exports: String },
    /// Compilation failed.
    #[error("cannot compile: {0:#}")]
    Compile(wasmtime::Error),
    /// The component imports something the host does not provide.
    #[error("cannot link: {0:#}")]
    Link(wasmtime::Error),
    /// The manifest is missing or malformed.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The policy's own `init` refused to start or faulted.
    #[error("policy `init` failed: {0}")]
    Init(String),
    /// The policy asked to subscribe to an event its manifest does not grant.
    #[error("init asked for event `{event}`, which its manifest does not declare")]
    UngrantedSubscription { event: String },
    /// The manifest asks for a tunable only the administrator may grant.
    #[error("{0}")]
    NotAllowed(String),
    /// The runtime process refused the file (its compile, world or link
    /// check), in its words.
    #[error("{0}")]
    InRuntime(String),
    /// The runtime process could not be reached.
    #[error("the runtime process: {0}")]
    Runtime(String),
    /// Disabled in the administrator's config.
    #[error("disabled in the administrator's config")]
    Disabled,
}

/// A policy file as the host holds it: its manifest, where it came from,
/// its digest and its bytes, for the runtime process to compile.
pub struct PolicyImage {
    pub manifest: Manifest,
    pub source: PolicySource,
    /// SHA-256 of the component bytes.
    pub digest: String,
    pub bytes: Arc<[u8]>,
}

impl PolicyImage {
    /// Checks that `bytes` are a component and reads its manifest; compiles
    /// nothing.
    pub fn read(bytes: &[u8], source: PolicySource) -> Result<PolicyImage, LoadError> {
        check_encoding(bytes)?;
        let manifest = Manifest::from_component(bytes)?;
        Ok(PolicyImage { manifest, source, digest: hex(&Sha256::digest(bytes)), bytes: Arc::from(bytes) })
    }

    pub fn name(&self) -> &str {
        &self.manifest.policy.name
    }
}

/// A policy compiled and linked; instances are made from it.
pub struct CompiledPolicy {
    pub pre: PolicyPre<PolicyState>,
}

impl CompiledPolicy {
    /// Checks, compiles (or loads from the cache) and links `bytes`.
    pub fn compile(engine: &PolicyEngine, bytes: &[u8]) -> Result<CompiledPolicy, LoadError> {
        check_encoding(bytes)?;
        let component = engine.compile(bytes).map_err(LoadError::Compile)?;
        CompiledPolicy::link(engine, &component)
    }

    fn link(engine: &PolicyEngine, component: &wasmtime::component::Component) -> Result<CompiledPolicy, LoadError> {
        check_world(engine, component)?;
        let instance_pre = engine.linker.instantiate_pre(component).map_err(LoadError::Link)?;
        let pre = PolicyPre::new(instance_pre).map_err(LoadError::Link)?;
        Ok(CompiledPolicy { pre })
    }
}

impl CompiledPolicy {
    /// In the runtime process: as [`CompiledPolicy::compile`], with the
    /// cache file the host handed over; says what became of it.
    pub fn compile_handed(
        engine: &PolicyEngine,
        bytes: &[u8],
        handed: Option<(CacheFile, OwnedFd)>,
    ) -> Result<(CompiledPolicy, CacheUse), LoadError> {
        check_encoding(bytes)?;
        let (component, used) = engine.compile_handed(bytes, handed).map_err(LoadError::Compile)?;
        Ok((CompiledPolicy::link(engine, &component)?, used))
    }
}

fn check_encoding(bytes: &[u8]) -> Result<(), LoadError> {
    match Parser::new(0).parse_all(bytes).next() {
        _ if bytes.is_empty() => Err(LoadError::NotWasm { reason: "empty file".into() }),
        Some(Ok(Payload::Version { encoding: Encoding::Component, .. })) => Ok(()),
        Some(Ok(Payload::Version { encoding: Encoding::Module, .. })) => Err(LoadError::CoreModule),
        _ if !bytes.starts_with(b"\0asm") => {
            Err(LoadError::NotWasm { reason: "it does not begin with the WebAssembly magic number".into() })
        }
        Some(Ok(_)) => Err(LoadError::NotWasm { reason: "no WebAssembly header".into() }),
        Some(Err(e)) => Err(LoadError::NotWasm { reason: e.message().to_string() }),
        None => Err(LoadError::NotWasm { reason: "empty file".into() }),
    }
}

/// Names the mismatch precisely instead of leaving it to a link error.
fn check_world(engine: &PolicyEngine, component: &wasmtime::component::Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(&engine.engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_) | ComponentItem::ComponentFunc(_)))
        .map(|(name, _)| name.to_string())
        .collect();
    if exports.iter().any(|e| e == HANDLER_EXPORT) {
        return Ok(());
    }
    if let Some(found) = exports.iter().find(|e| e.starts_with("wasmtune:policy/handler")) {
        return Err(LoadError::WrongVersion { found: found.clone() });
    }
    Err(LoadError::WrongWorld { exports: exports.join(", ") })
}
