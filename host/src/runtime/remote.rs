//! In the runtime process: a policy's host calls, sent across its channel
//! to the host and answered there ([`RemoteHost`]). Sysctl reads are kept
//! until the host says the kernel's values may have changed (the `kernel`
//! number that comes with every call), so a policy that reads the same
//! tunable for every event in a batch costs one round trip, not one per
//! event. A call too large for a frame is refused here, as the host would.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::caps::log::MAX_MESSAGE_BYTES;
use crate::caps::state::QUOTA_BYTES;
use crate::runtime::calls::HostCalls;
use crate::runtime::protocol::{self, FromRuntime, HostCall, MAX_FROM_RUNTIME, MAX_TO_RUNTIME, Reply, ToRuntime};
use crate::wit::{Denial, SysctlValue};

/// Sysctl reads kept at most; past it the cache starts again.
const MAX_CACHED_READS: usize = 4096;

pub struct RemoteHost {
    channel: UnixStream,
    /// The host's kernel number for the call in progress.
    kernel: Arc<AtomicU64>,
    reads_at: u64,
    reads: HashMap<(u64, String), Result<SysctlValue, Denial>>,
}

impl RemoteHost {
    pub fn new(channel: UnixStream, kernel: Arc<AtomicU64>) -> RemoteHost {
        RemoteHost { channel, kernel, reads_at: u64::MAX, reads: HashMap::new() }
    }

    fn ask(&mut self, call: HostCall) -> wasmtime::Result<Option<Reply>> {
        let call = match fit(call) {
            Ok(call) => call,
            Err(refused) => return Ok(refused),
        };
        let wants_reply = call.wants_reply();
        let message = FromRuntime::Call(call);
        let frame = protocol::encode_frame(&message)?;
        if frame.len() > MAX_FROM_RUNTIME {
            let FromRuntime::Call(call) = message else { return Ok(None) };
            return Ok(wants_reply.then(|| too_large(&call)));
        }
        std::io::Write::write_all(&mut self.channel, &frame)?;
        if !wants_reply {
            return Ok(None);
        }
        match protocol::read_frame::<ToRuntime>(&mut self.channel, MAX_TO_RUNTIME, 0)? {
            ToRuntime::Reply(reply) => Ok(Some(reply)),
            _ => Err(protocol::ProtocolError::Unexpected("a request in the middle of a host call").into()),
        }
    }
}

impl HostCalls for RemoteHost {
    fn call(&mut self, call: HostCall) -> wasmtime::Result<Option<Reply>> {
        let HostCall::Read { netns, name } = call else { return self.ask(call) };
        let kernel = self.kernel.load(Ordering::Relaxed);
        if kernel != self.reads_at || self.reads.len() >= MAX_CACHED_READS {
            self.reads.clear();
            self.reads_at = kernel;
        }
        if let Some(known) = self.reads.get(&(netns, name.clone())) {
            return Ok(Some(Reply::Read(known.clone())));
        }
        let reply = self.ask(HostCall::Read { netns, name: name.clone() })?;
        if let Some(Reply::Read(value)) = &reply {
            self.reads.insert((netns, name), value.clone());
        }
        Ok(reply)
    }
}

/// The call as it can be sent, or the answer the host would give to one
/// that cannot: a log line is cut, a state value over the quota refused.
/// (Anything else too large for a frame is refused as invalid.)
fn fit(call: HostCall) -> Result<HostCall, Option<Reply>> {
    match call {
        HostCall::Log { level, mut message } => {
            if message.len() > MAX_MESSAGE_BYTES {
                let mut end = MAX_MESSAGE_BYTES;
                while !message.is_char_boundary(end) {
                    end -= 1;
                }
                message.truncate(end);
            }
            Ok(HostCall::Log { level, message })
        }
        HostCall::StateSet(key, value) if key.len() + value.len() > QUOTA_BYTES => {
            Err(Some(Reply::Outcome(Err(Denial::QuotaExceeded(QUOTA_BYTES as u32)))))
        }
        call => Ok(call),
    }
}

fn too_large(call: &HostCall) -> Reply {
    let denial = Denial::InvalidValue(format!("the request is larger than {MAX_FROM_RUNTIME} bytes"));
    match call {
        HostCall::Read { .. } => Reply::Read(Err(denial)),
        HostCall::StateGet(_) => Reply::StateValue(None),
        HostCall::AvailableCongestion => Reply::Congestion(Vec::new()),
        _ => Reply::Outcome(Err(denial)),
    }
}
