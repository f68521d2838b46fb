//! The host's end of one policy's channel to the runtime process: each
//! request sent, then the runtime's capability calls answered with the
//! host's own checks ([`LocalHost`]) until the answer comes, all within a
//! deadline. Anything from the runtime that is not what may come next is
//! a broken channel, never a value the host uses.

use std::borrow::Cow;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::runtime::calls::{HostCalls, LocalHost};
use crate::runtime::protocol::{self, FromRuntime, MAX_FROM_RUNTIME, ProtocolError, RemoteFault, ToRuntime, VERSION};
use crate::wit::{Event, PolicyConfig, PolicyInfo};

/// The longest a call may take, host calls included: many times the
/// per-call budget the runtime enforces (250 ms), so only a runtime that is
/// stuck or hostile misses it.
pub const CALL_DEADLINE: Duration = Duration::from_secs(2);
/// The longest a policy file may take to compile.
pub const LOAD_DEADLINE: Duration = Duration::from_secs(60);

/// Why a channel can no longer be used; the runtime process is then
/// restarted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ChannelBroken(#[from] pub ProtocolError);

pub struct PolicyChannel {
    stream: UnixStream,
    /// Which runtime process it leads to.
    pub process: u64,
}

impl PolicyChannel {
    /// Says hello on a fresh channel.
    pub fn open(stream: UnixStream, process: u64) -> Result<PolicyChannel, ChannelBroken> {
        let mut channel = PolicyChannel { stream, process };
        channel.send(&ToRuntime::Hello { version: VERSION })?;
        match channel.receive(Instant::now() + CALL_DEADLINE)? {
            FromRuntime::Hello { version } if version == VERSION => Ok(channel),
            FromRuntime::Hello { version } => Err(ProtocolError::Version(version).into()),
            _ => Err(ProtocolError::Unexpected("a message before hello").into()),
        }
    }

    /// Compiles `bytes` in the runtime; `Err` inside: the runtime's reason.
    pub fn load(
        &mut self,
        name: &str,
        bytes: &[u8],
        memory_limit: usize,
        clock_ms: u64,
    ) -> Result<Result<(), String>, ChannelBroken> {
        self.send(&ToRuntime::Load {
            name: name.to_string(),
            bytes: Cow::Borrowed(bytes),
            memory_limit: memory_limit as u64,
            clock_ms,
        })?;
        match self.receive(Instant::now() + LOAD_DEADLINE)? {
            FromRuntime::Loaded(result) => Ok(result),
            _ => Err(ProtocolError::Unexpected("an answer other than loaded").into()),
        }
    }

    /// A fresh instance and its `init`, serving its host calls.
    pub fn start(
        &mut self,
        config: &PolicyConfig,
        host: &mut LocalHost,
    ) -> Result<Result<Result<PolicyInfo, String>, RemoteFault>, ChannelBroken> {
        self.send(&ToRuntime::Start { config: config.clone() })?;
        self.serve(host, |answer| match answer {
            FromRuntime::Started(result) => Some(result),
            _ => None,
        })
    }

    /// `on-events`, serving its host calls.
    pub fn on_events(
        &mut self,
        batch: &[Event],
        kernel: u64,
        host: &mut LocalHost,
    ) -> Result<Result<(), RemoteFault>, ChannelBroken> {
        self.send(&ToRuntime::Events { batch: Cow::Borrowed(batch), kernel })?;
        self.serve(host, done)
    }

    /// `on-tick`, serving its host calls.
    pub fn on_tick(
        &mut self,
        now: u64,
        kernel: u64,
        host: &mut LocalHost,
    ) -> Result<Result<(), RemoteFault>, ChannelBroken> {
        self.send(&ToRuntime::Tick { now, kernel })?;
        self.serve(host, done)
    }

    fn send(&mut self, message: &ToRuntime<'_>) -> Result<(), ChannelBroken> {
        self.stream.set_write_timeout(Some(CALL_DEADLINE)).map_err(ProtocolError::Io)?;
        Ok(protocol::write_frame(&mut self.stream, message)?)
    }

    fn receive(&mut self, deadline: Instant) -> Result<FromRuntime, ChannelBroken> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProtocolError::Timeout(millis(CALL_DEADLINE)).into());
        }
        self.stream.set_read_timeout(Some(left)).map_err(ProtocolError::Io)?;
        Ok(protocol::read_frame(&mut self.stream, MAX_FROM_RUNTIME, millis(left))?)
    }

    /// Answers host calls until the answer `accept` takes arrives.
    fn serve<T>(
        &mut self,
        host: &mut LocalHost,
        accept: impl Fn(FromRuntime) -> Option<T>,
    ) -> Result<T, ChannelBroken> {
        let deadline = Instant::now() + CALL_DEADLINE;
        loop {
            match self.receive(deadline)? {
                FromRuntime::Call(call) => {
                    let wants_reply = call.wants_reply();
                    let reply =
                        host.call(call).map_err(|e| ProtocolError::Io(std::io::Error::other(format!("{e:#}"))))?;
                    match (wants_reply, reply) {
                        (true, Some(reply)) => self.send(&ToRuntime::Reply(reply))?,
                        (false, None) => {}
                        _ => return Err(ProtocolError::Unexpected("a host call answered out of kind").into()),
                    }
                }
                answer => match accept(answer) {
                    Some(value) => return Ok(value),
                    None => return Err(ProtocolError::Unexpected("an answer of another kind").into()),
                },
            }
        }
    }
}

fn done(answer: FromRuntime) -> Option<Result<(), RemoteFault>> {
    match answer {
        FromRuntime::Done(result) => Some(result),
        _ => None,
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
