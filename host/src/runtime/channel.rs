//! The host's end of one policy's channel to the runtime process: each
//! request sent, then the runtime's capability calls answered with the
//! host's own checks ([`LocalHost`]) until the answer comes, all within a
//! deadline. Anything from the runtime that is not what may come next is
//! a broken channel, never a value the host uses.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::cache_broker::{CacheBroker, Offer};
use crate::runtime::calls::{HostCalls, LocalHost};
use crate::runtime::protocol::{
    self, CacheFile, FromRuntime, MAX_FROM_RUNTIME, ProtocolError, RemoteFault, ToRuntime, VERSION,
};
use crate::wit::{Event, PolicyConfig, PolicyInfo};

/// The longest the runtime may take over a call, not counting the time the
/// host spends answering its capability calls: many times the per-call
/// budget the runtime enforces (250 ms), so only a runtime that is stuck or
/// hostile misses it.
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
    /// The runtime engine's compatibility key, from its hello.
    engine: String,
    cache: Option<Arc<CacheBroker>>,
}

impl PolicyChannel {
    /// Says hello on a fresh channel.
    pub fn open(
        stream: UnixStream,
        process: u64,
        cache: Option<Arc<CacheBroker>>,
    ) -> Result<PolicyChannel, ChannelBroken> {
        let mut channel = PolicyChannel { stream, process, engine: String::new(), cache };
        channel.send(&ToRuntime::Hello { version: VERSION }, Instant::now() + CALL_DEADLINE)?;
        match channel.receive(Instant::now() + CALL_DEADLINE)? {
            FromRuntime::Hello { version, engine } if version == VERSION => {
                channel.engine = engine;
                Ok(channel)
            }
            FromRuntime::Hello { version, .. } => Err(ProtocolError::Version(version).into()),
            _ => Err(ProtocolError::Unexpected("a message before hello").into()),
        }
    }

    /// Compiles `bytes` in the runtime, with the cache file the host opens
    /// for it; `Err` inside: the runtime's reason.
    pub fn load(
        &mut self,
        name: &str,
        bytes: &[u8],
        memory_limit: usize,
        clock_ms: u64,
    ) -> Result<Result<(), String>, ChannelBroken> {
        let offer = match &self.cache {
            Some(cache) => cache.offer(bytes, &self.engine, self.process),
            None => Offer::none(),
        };
        let deadline = Instant::now() + LOAD_DEADLINE;
        self.send(
            &ToRuntime::Load {
                name: name.to_string(),
                bytes: Cow::Borrowed(bytes),
                memory_limit: memory_limit as u64,
                clock_ms,
                cache: offer.kind(),
            },
            deadline,
        )?;
        if let Some(fd) = offer.descriptor() {
            protocol::send_descriptor(&self.stream, fd.as_fd())?;
        }
        let answer = self.receive(deadline)?;
        let FromRuntime::Loaded(result) = answer else {
            return Err(ProtocolError::Unexpected("an answer other than loaded").into());
        };
        if let Some(cache) = &self.cache {
            let used = result.as_ref().ok().copied();
            cache.settle(offer, used, self.process);
        } else if offer.kind() != CacheFile::None {
            return Err(ProtocolError::Unexpected("a cache use with no cache").into());
        }
        Ok(result.map(drop))
    }

    /// A fresh instance and its `init`, serving its host calls.
    pub fn start(
        &mut self,
        config: &PolicyConfig,
        host: &mut LocalHost,
    ) -> Result<Result<Result<PolicyInfo, String>, RemoteFault>, ChannelBroken> {
        self.send(&ToRuntime::Start { config: config.clone() }, Instant::now() + CALL_DEADLINE)?;
        self.serve(host, |answer| match answer {
            FromRuntime::Started(result) => Some(result),
            _ => None,
        })
    }

    /// `on-events`, serving its host calls; the fuel it used.
    pub fn on_events(
        &mut self,
        batch: &[Event],
        kernel: u64,
        host: &mut LocalHost,
    ) -> Result<Result<u64, RemoteFault>, ChannelBroken> {
        self.send(&ToRuntime::Events { batch: Cow::Borrowed(batch), kernel }, Instant::now() + CALL_DEADLINE)?;
        self.serve(host, done)
    }

    /// `on-tick`, serving its host calls; the fuel it used.
    pub fn on_tick(
        &mut self,
        now: u64,
        kernel: u64,
        host: &mut LocalHost,
    ) -> Result<Result<u64, RemoteFault>, ChannelBroken> {
        self.send(&ToRuntime::Tick { now, kernel }, Instant::now() + CALL_DEADLINE)?;
        self.serve(host, done)
    }

    fn send(&mut self, message: &ToRuntime<'_>, deadline: Instant) -> Result<(), ChannelBroken> {
        let mut stream = ByDeadline { stream: &self.stream, deadline };
        Ok(protocol::write_frame(&mut stream, message)?)
    }

    fn receive(&mut self, deadline: Instant) -> Result<FromRuntime, ChannelBroken> {
        let mut stream = ByDeadline { stream: &self.stream, deadline };
        Ok(protocol::read_frame(&mut stream, MAX_FROM_RUNTIME, millis(CALL_DEADLINE))?)
    }

    /// Answers host calls until the answer `accept` takes arrives. The time
    /// the host spends answering (an actuator busy entering a namespace)
    /// moves the deadline on: only the runtime's own time counts.
    fn serve<T>(
        &mut self,
        host: &mut LocalHost,
        accept: impl Fn(FromRuntime) -> Option<T>,
    ) -> Result<T, ChannelBroken> {
        let mut deadline = Instant::now() + CALL_DEADLINE;
        loop {
            match self.receive(deadline)? {
                FromRuntime::Call(call) => {
                    let wants_reply = call.wants_reply();
                    let answering = Instant::now();
                    let reply =
                        host.call(call).map_err(|e| ProtocolError::Io(std::io::Error::other(format!("{e:#}"))))?;
                    deadline += answering.elapsed();
                    match (wants_reply, reply) {
                        (true, Some(reply)) => self.send(&ToRuntime::Reply(reply), deadline)?,
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

fn done(answer: FromRuntime) -> Option<Result<u64, RemoteFault>> {
    match answer {
        FromRuntime::Done(result) => Some(result),
        _ => None,
    }
}

/// A stream whose every read and write ends by one instant: each waits at
/// most what is left, so a runtime that trickles a frame a byte at a time
/// (or reads one that slowly) cannot stretch a call past its deadline.
struct ByDeadline<'a> {
    stream: &'a UnixStream,
    deadline: Instant,
}

impl ByDeadline<'_> {
    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() { Err(std::io::ErrorKind::TimedOut.into()) } else { Ok(left) }
    }
}

impl Read for ByDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.set_read_timeout(Some(self.left()?))?;
        (&mut &*self.stream).read(buf)
    }
}

impl Write for ByDeadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stream.set_write_timeout(Some(self.left()?))?;
        (&mut &*self.stream).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer that sends a valid frame one byte every 200 ms: every single
    /// read is quick, the whole frame is not; the deadline still holds.
    #[test]
    fn a_frame_trickled_byte_by_byte_misses_the_deadline() {
        let (host, mut runtime) = UnixStream::pair().expect("socket pair");
        let frame = protocol::encode_frame(&FromRuntime::Done(Ok(0))).expect("encode");
        let writer = std::thread::spawn(move || {
            for byte in frame.iter().chain([0u8; 16].iter()) {
                if runtime.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        // Each byte comes well within 400 ms, so a per-read timeout would
        // wait out the whole trickle and return the frame.
        let mut stream = ByDeadline { stream: &host, deadline: Instant::now() + Duration::from_millis(400) };
        let read = protocol::read_frame::<FromRuntime>(&mut stream, MAX_FROM_RUNTIME, 400);
        assert!(matches!(read, Err(ProtocolError::Timeout(_))), "{read:?}");
        drop(host);
        let _ = writer.join();
    }
}
