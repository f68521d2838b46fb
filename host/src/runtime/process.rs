//! The runtime process (`wasmtune runtime`): compiles and runs policies,
//! confined ([`crate::sandbox`]) before it reads a byte from the host. It
//! receives one channel per policy over its control socket (a descriptor
//! passed with `SCM_RIGHTS`) and serves each on a thread of its own: load,
//! start, calls, each answered in order ([`crate::runtime::protocol`]).
//! It holds nothing the host needs to keep: when it dies, the host starts
//! another and rebuilds every policy in it.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};

use crate::caps::clock::ClockCap;
use crate::runtime::engine::PolicyEngine;
use crate::runtime::image::CompiledPolicy;
use crate::runtime::instance::{Fault, FaultKind, PolicyInstance};
use crate::runtime::protocol::{
    self, CacheFile, FromRuntime, MAX_TO_RUNTIME, ProtocolError, RemoteFault, ToRuntime, VERSION,
};
use crate::runtime::remote::RemoteHost;
use crate::runtime::state::PolicyState;
use crate::wit::{PolicyConfig, PolicyInfo};

/// Runs the runtime process until the host closes its control socket.
pub fn run(control: OwnedFd) -> anyhow::Result<()> {
    // Read while files can still be opened: glibc counts CPUs from /sys.
    crate::machine::remember();
    crate::sandbox::confine_self()?;
    let engine = Arc::new(PolicyEngine::confined()?);
    tracing::debug!(pid = std::process::id(), "runtime process ready");
    while let Some(channel) = receive_channel(&control)? {
        let engine = engine.clone();
        let spawned = std::thread::Builder::new().name("policy".into()).spawn(move || {
            if let Err(error) = Serving::new(engine, channel).run() {
                tracing::warn!(%error, "a policy channel ended: {error}");
            }
        });
        if let Err(error) = spawned {
            // The host sees the channel close and says so.
            tracing::warn!(%error, "cannot start a policy thread");
        }
    }
    Ok(())
}

/// The next policy channel; `None` once the host has gone.
fn receive_channel(control: &OwnedFd) -> anyhow::Result<Option<UnixStream>> {
    loop {
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let message = match recvmsg::<()>(control.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Ok(message) => message,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(std::io::Error::from(errno).into()),
        };
        if message.bytes == 0 {
            return Ok(None);
        }
        let mut received = None;
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just installed `fd` in this
                    // process for this message; nothing else owns it.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    received.get_or_insert(owned);
                }
            }
        }
        if let Some(fd) = received {
            return Ok(Some(UnixStream::from(fd)));
        }
    }
}

/// One policy's channel, served in the runtime process.
struct Serving {
    engine: Arc<PolicyEngine>,
    channel: UnixStream,
    compiled: Option<CompiledPolicy>,
    instance: Option<PolicyInstance>,
    /// The host's kernel number for the call in progress.
    kernel: Arc<AtomicU64>,
    memory_limit: usize,
    started: Instant,
}

impl Serving {
    fn new(engine: Arc<PolicyEngine>, channel: UnixStream) -> Serving {
        Serving {
            engine,
            channel,
            compiled: None,
            instance: None,
            kernel: Arc::default(),
            memory_limit: 0,
            started: Instant::now(),
        }
    }

    fn run(mut self) -> Result<(), ProtocolError> {
        match protocol::read_frame::<ToRuntime>(&mut self.channel, MAX_TO_RUNTIME, 0)? {
            ToRuntime::Hello { version } => {
                let engine = self.engine.engine_key();
                protocol::write_frame(&mut self.channel, &FromRuntime::Hello { version: VERSION, engine })?;
                if version != VERSION {
                    return Err(ProtocolError::Version(version));
                }
            }
            _ => return Err(ProtocolError::Unexpected("a request before hello")),
        }
        loop {
            let request = match protocol::read_frame::<ToRuntime>(&mut self.channel, MAX_TO_RUNTIME, 0) {
                Ok(request) => request,
                Err(ProtocolError::Closed) => return Ok(()),
                Err(error) => return Err(error),
            };
            let answer = match request {
                ToRuntime::Load { name: _, bytes, memory_limit, clock_ms, cache } => {
                    let handed = match cache {
                        CacheFile::None => None,
                        kind => Some((kind, protocol::receive_descriptor(&self.channel)?)),
                    };
                    self.memory_limit = usize::try_from(memory_limit).unwrap_or(usize::MAX);
                    self.started =
                        Instant::now().checked_sub(Duration::from_millis(clock_ms)).unwrap_or_else(Instant::now);
                    self.instance = None;
                    let compiled = CompiledPolicy::compile_handed(&self.engine, &bytes, handed);
                    // Compiling leaves megabytes of freed heap in the
                    // allocator's arenas, which a long-lived process would
                    // otherwise keep resident for nothing.
                    // SAFETY: malloc_trim only returns free memory to the kernel.
                    unsafe { libc::malloc_trim(0) };
                    FromRuntime::Loaded(
                        compiled
                            .map(|(compiled, used)| {
                                self.compiled = Some(compiled);
                                used
                            })
                            .map_err(|e| e.to_string()),
                    )
                }
                ToRuntime::Start { config } => FromRuntime::Started(self.start(&config)),
                ToRuntime::Events { batch, kernel } => {
                    self.kernel.store(kernel, Ordering::Relaxed);
                    FromRuntime::Done(self.call(|instance| instance.on_events(&batch)))
                }
                ToRuntime::Tick { now, kernel } => {
                    self.kernel.store(kernel, Ordering::Relaxed);
                    FromRuntime::Done(self.call(|instance| instance.on_tick(now)))
                }
                ToRuntime::Hello { .. } => return Err(ProtocolError::Unexpected("a second hello")),
                ToRuntime::Reply(_) => return Err(ProtocolError::Unexpected("a reply with no call")),
            };
            protocol::write_frame(&mut self.channel, &answer)?;
        }
    }

    /// A fresh instance, then `init`: what the host's `Start` asks.
    fn start(&mut self, config: &PolicyConfig) -> Result<Result<PolicyInfo, String>, RemoteFault> {
        self.instance = None;
        let Some(compiled) = &self.compiled else {
            return Ok(Err("no policy was loaded on this channel".into()));
        };
        let link =
            self.channel.try_clone().map_err(|e| remote(Fault { kind: FaultKind::Trap, detail: e.to_string() }))?;
        let state = PolicyState::new(
            Box::new(RemoteHost::new(link, self.kernel.clone())),
            ClockCap::since(self.started),
            self.memory_limit,
        );
        let mut instance = PolicyInstance::instantiate(&self.engine.engine, &compiled.pre, state).map_err(remote)?;
        let info = instance.init(config).map_err(remote)?;
        if info.is_ok() {
            self.instance = Some(instance);
        }
        Ok(info)
    }

    /// One call into the instance, and the fuel it used; a fault leaves it
    /// for the host to rebuild.
    fn call(&mut self, f: impl FnOnce(&mut PolicyInstance) -> Result<(), Fault>) -> Result<u64, RemoteFault> {
        let Some(instance) = self.instance.as_mut() else {
            return Err(RemoteFault { kind: FaultKind::Trap, detail: "the policy is not started".into() });
        };
        match f(instance) {
            Ok(()) => Ok(crate::runtime::instance::FUEL_PER_CALL.saturating_sub(instance.fuel_left())),
            Err(fault) => {
                self.instance = None;
                Err(remote(fault))
            }
        }
    }
}

fn remote(fault: Fault) -> RemoteFault {
    RemoteFault { kind: fault.kind, detail: fault.detail }
}
