//! The host ↔ runtime-process protocol: what crosses the socket between
//! the privileged host and the unprivileged process that compiles and runs
//! policies. One stream socket per policy, strictly alternating: the host
//! sends one request; the runtime answers it, and while a guest call runs it
//! may ask the host for capability calls, each answered before the next.
//!
//! A frame is a little-endian `u32` length and a postcard-encoded message.
//! Every frame from the runtime is hostile until decoded: its length is
//! checked against [`MAX_FROM_RUNTIME`] before a byte of it is read, and a
//! frame that does not decode, or does not fit where it arrives, ends the
//! channel (the host then restarts the runtime process).

use std::borrow::Cow;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::runtime::instance::FaultKind;
use crate::wit::wasmtune::policy::log::Level;
use crate::wit::wasmtune::policy::sysctl::Change;
use crate::wit::{Denial, Event, IpPrefix, PeerChange, PolicyConfig, PolicyInfo, SysctlValue};

/// Bumped on any change to the messages below; both ends say theirs first.
pub const VERSION: u32 = 3;
/// Largest frame the host sends: a policy file (at most 16 MiB) and room.
pub const MAX_TO_RUNTIME: usize = 17 << 20;
/// Largest frame the runtime may send: a state-store value (at most 64 KiB)
/// with its key, or a log line, with room.
pub const MAX_FROM_RUNTIME: usize = 160 << 10;

/// The host's side of a policy channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToRuntime<'a> {
    /// The first message on every channel.
    Hello { version: u32 },
    /// Compile and link this component (answered with `Loaded`). When
    /// `cache` says so, a descriptor follows the frame ([`send_descriptor`]).
    Load { name: String, bytes: Cow<'a, [u8]>, memory_limit: u64, clock_ms: u64, cache: CacheFile },
    /// A fresh instance, then its `init` (answered with `Started`).
    Start { config: PolicyConfig },
    /// Call `on-events` (answered with `Done`). `kernel` changes whenever
    /// sysctl values read before may have changed.
    Events { batch: Cow<'a, [Event]>, kernel: u64 },
    /// Call `on-tick` (answered with `Done`).
    Tick { now: u64, kernel: u64 },
    /// The answer to a capability call.
    Reply(Reply),
}

/// The answer to a [`HostCall`], of the same kind.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Read(Result<SysctlValue, Denial>),
    Outcome(Result<(), Denial>),
    Congestion(Vec<String>),
    StateValue(Option<Vec<u8>>),
}

/// The compiled-component cache file the host hands over with a `Load`:
/// the runtime opens no file itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheFile {
    /// No cache: compile.
    None,
    /// This component, compiled before by this engine: load it.
    Compiled,
    /// An empty file: compile, and write the compiled component into it.
    Empty,
}

/// What the runtime did with the file it was handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheUse {
    /// Loaded the compiled component from it.
    Loaded,
    /// Compiled, and wrote the result into it.
    Stored,
    /// Did not use it (none, unusable, or not written): it compiled.
    Unused,
}

/// The runtime's side of a policy channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum FromRuntime {
    Hello {
        version: u32,
        /// The engine's compatibility key (wasmtime version and settings):
        /// compiled files are kept per key.
        engine: String,
    },
    /// The file compiled and linked, or why not (the host shows it as is).
    Loaded(Result<CacheUse, String>),
    /// `init` returned (its info or its refusal), or the call faulted.
    Started(Result<Result<PolicyInfo, String>, RemoteFault>),
    /// `on-events` or `on-tick` returned (with the fuel it used), or faulted.
    Done(Result<u64, RemoteFault>),
    /// The guest called the host, mid-call.
    Call(HostCall),
}

/// A guest call into a host capability, made on the guest's behalf.
#[derive(Debug, Serialize, Deserialize)]
pub enum HostCall {
    /// No answer.
    Log {
        level: Level,
        message: String,
    },
    Read {
        netns: u64,
        name: String,
    },
    RequestChange(Change),
    AvailableCongestion,
    SetPeer(PeerChange),
    ClearPeer {
        netns: u64,
        peer: IpPrefix,
        reason: String,
    },
    StateGet(String),
    StateSet(String, Vec<u8>),
    /// No answer.
    StateDelete(String),
}

impl HostCall {
    /// Whether the guest waits for a [`Reply`].
    pub fn wants_reply(&self) -> bool {
        !matches!(self, HostCall::Log { .. } | HostCall::StateDelete(_))
    }
}

/// A fault, as the runtime classified it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteFault {
    pub kind: FaultKind,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the channel closed")]
    Closed,
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("channel: {0}")]
    Io(std::io::Error),
    #[error("a frame of {len} bytes, over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("a frame that does not decode: {0}")]
    Malformed(postcard::Error),
    #[error("cannot encode a frame: {0}")]
    Encode(postcard::Error),
    #[error("the other side speaks protocol version {0}, this one {VERSION}")]
    Version(u32),
    #[error("{0} where it cannot come")]
    Unexpected(&'static str),
}

impl ProtocolError {
    fn from_io(error: std::io::Error) -> ProtocolError {
        match error.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionReset => ProtocolError::Closed,
            _ => ProtocolError::Io(error),
        }
    }
}

/// One frame, length first.
pub fn encode_frame<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let mut frame = postcard::to_extend(message, vec![0u8; 4]).map_err(ProtocolError::Encode)?;
    let len = u32::try_from(frame.len() - 4)
        .map_err(|_| ProtocolError::TooLong { len: frame.len(), max: u32::MAX as usize })?;
    frame[..4].copy_from_slice(&len.to_le_bytes());
    Ok(frame)
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> Result<(), ProtocolError> {
    out.write_all(&encode_frame(message)?).map_err(ProtocolError::from_io)
}

/// Reads one frame of at most `max` bytes. A timeout set on the socket
/// surfaces as [`ProtocolError::Timeout`] with `waited_ms`.
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
    max: usize,
    waited_ms: u64,
) -> Result<T, ProtocolError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).map_err(|e| timeout_or(e, waited_ms))?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(ProtocolError::TooLong { len, max });
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).map_err(|e| timeout_or(e, waited_ms))?;
    decode(&body)
}

/// Sends one descriptor, on one byte of its own (after the frame it goes
/// with): a read of frames never takes it by mistake, since the reader
/// reads exactly a frame's length.
pub fn send_descriptor(
    stream: &std::os::unix::net::UnixStream,
    fd: std::os::fd::BorrowedFd<'_>,
) -> Result<(), ProtocolError> {
    use std::os::fd::AsRawFd;
    let fds = [fd.as_raw_fd()];
    let control = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
    nix::sys::socket::sendmsg::<()>(
        stream.as_raw_fd(),
        &[std::io::IoSlice::new(b"d")],
        &control,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
    .map_err(|errno| ProtocolError::from_io(errno.into()))
}

/// Receives the descriptor [`send_descriptor`] sent.
pub fn receive_descriptor(stream: &std::os::unix::net::UnixStream) -> Result<std::os::fd::OwnedFd, ProtocolError> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let message = loop {
        match recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|errno| ProtocolError::from_io(errno.into()))?,
        }
    };
    if message.bytes == 0 {
        return Err(ProtocolError::Closed);
    }
    let mut received = None;
    for cmsg in message.cmsgs().map_err(|errno| ProtocolError::from_io(errno.into()))? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: the kernel just installed `fd` in this process for
                // this message; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                received.get_or_insert(owned);
            }
        }
    }
    received.ok_or(ProtocolError::Unexpected("a byte without the descriptor it should carry"))
}

/// Decodes one frame's body; the whole body must be one message.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ProtocolError> {
    match postcard::take_from_bytes(body) {
        Ok((message, [])) => Ok(message),
        Ok(_) => Err(ProtocolError::Unexpected("bytes after a message")),
        Err(error) => Err(ProtocolError::Malformed(error)),
    }
}

fn timeout_or(error: std::io::Error, waited_ms: u64) -> ProtocolError {
    match error.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => ProtocolError::Timeout(waited_ms),
        _ => ProtocolError::from_io(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_lengths_are_checked_before_reading() {
        let mut wire = Vec::new();
        let call = FromRuntime::Call(HostCall::Read { netns: 7, name: "net.ipv4.tcp_rmem".into() });
        write_frame(&mut wire, &call).expect("encode");
        let back: FromRuntime = read_frame(&mut wire.as_slice(), MAX_FROM_RUNTIME, 0).expect("decode");
        assert!(matches!(back, FromRuntime::Call(HostCall::Read { netns: 7, .. })));

        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        let refused = read_frame::<FromRuntime>(&mut huge.as_slice(), MAX_FROM_RUNTIME, 0);
        assert!(matches!(refused, Err(ProtocolError::TooLong { .. })), "{refused:?}");

        let garbage = [3u8, 0, 0, 0, 0xff, 0xff, 0xff];
        assert!(read_frame::<FromRuntime>(&mut garbage.as_slice(), MAX_FROM_RUNTIME, 0).is_err());
        let truncated = [9u8, 0, 0, 0, 1];
        assert!(matches!(
            read_frame::<FromRuntime>(&mut truncated.as_slice(), MAX_FROM_RUNTIME, 0),
            Err(ProtocolError::Closed)
        ));
    }

    /// A short run of what the `runtime` fuzz target does at length: any
    /// bytes, half of them framed with a length that fits, read without a
    /// panic, as one frame or an error.
    #[test]
    fn random_bytes_never_panic_the_reader() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut read, mut refused) = (0, 0);
        for case in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if case % 2 == 0 && bytes.len() >= 4 {
                let body = (bytes.len() - 4) as u32;
                bytes[..4].copy_from_slice(&body.to_le_bytes());
                // A message kind the reader knows, half the time.
                if bytes.len() > 4 {
                    bytes[4] %= 5;
                }
                // And a small first field (a variant or a short length).
                if bytes.len() > 5 {
                    bytes[5] %= 4;
                }
            }
            match read_frame::<FromRuntime>(&mut bytes.as_slice(), MAX_FROM_RUNTIME, 0) {
                Ok(_) => read += 1,
                Err(_) => refused += 1,
            }
        }
        assert_eq!(read + refused, 20_000);
        assert!(read > 0, "no random frame ever read: the reader is not exercised");
    }
}
