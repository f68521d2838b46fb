//! In the runtime process: a policy's host calls, sent across its channel
//! to the host and answered there ([`RemoteHost`]). Sysctl reads are kept
//! until the host says the kernel's values may have changed (the `kernel`
//! number that comes with every call), so a policy that reads the same
//! tunable for every event in a batch costs one round trip, not one per
//! event. Only values are kept, never a denial: a namespace or a tunable
//! that was missing may be there at the next read. A change the host
//! accepted drops what was kept of its tunable, so the policy reads its own
//! write (or the host's reason for not making it) at once. A call too large
//! for a frame is refused here, as the host would.

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
    /// Values read at `reads_at`, by namespace and name.
    reads: HashMap<(u64, String), SysctlValue>,
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
        match call {
            HostCall::Read { netns, name } => self.read(netns, name),
            HostCall::RequestChange(change) => {
                let key = (change.netns, change.name.clone());
                let reply = self.ask(HostCall::RequestChange(change))?;
                // Accepted means queued: the host applies it after this
                // call returns, or refuses it then. Either way the value
                // kept is no longer the one to answer with; a host read
                // waits for the queued change.
                if matches!(reply, Some(Reply::Outcome(Ok(())))) {
                    self.reads.remove(&key);
                }
                Ok(reply)
            }
            // Per-destination settings are not sysctls: nothing kept changes.
            call => self.ask(call),
        }
    }
}

impl RemoteHost {
    /// A sysctl read: the value kept for this kernel epoch, or the host's
    /// answer, kept only when it is a value.
    fn read(&mut self, netns: u64, name: String) -> wasmtime::Result<Option<Reply>> {
        let kernel = self.kernel.load(Ordering::Relaxed);
        if kernel != self.reads_at || self.reads.len() >= MAX_CACHED_READS {
            self.reads.clear();
            self.reads_at = kernel;
        }
        if let Some(known) = self.reads.get(&(netns, name.clone())) {
            return Ok(Some(Reply::Read(Ok(known.clone()))));
        }
        let reply = self.ask(HostCall::Read { netns, name: name.clone() })?;
        if let Some(Reply::Read(Ok(value))) = &reply {
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

#[cfg(test)]
mod tests {
    use std::thread::JoinHandle;

    use super::*;
    use crate::runtime::protocol::ProtocolError;
    use crate::wit::wasmtune::policy::sysctl::Change;

    const TUNED: u64 = 7;
    const GONE: u64 = 9;

    /// The host's end: a namespace `GONE` it does not tune, every read in
    /// `TUNED` a new value (1, 2, ...), every change accepted but one to
    /// `net.core.refused`. Returns the reads it was asked, by name.
    fn fake_host(mut stream: UnixStream) -> JoinHandle<Vec<String>> {
        std::thread::spawn(move || {
            let mut asked = Vec::new();
            loop {
                let call = match protocol::read_frame::<FromRuntime>(&mut stream, MAX_FROM_RUNTIME, 0) {
                    Ok(FromRuntime::Call(call)) => call,
                    Err(ProtocolError::Closed) => return asked,
                    other => panic!("not a host call: {other:?}"),
                };
                let reply = match call {
                    HostCall::Read { netns: GONE, name } => {
                        asked.push(name);
                        Reply::Read(Err(Denial::UnknownNetns(GONE)))
                    }
                    HostCall::Read { name, .. } => {
                        asked.push(name);
                        Reply::Read(Ok(SysctlValue::Integers(vec![asked.len() as i64])))
                    }
                    HostCall::RequestChange(change) if change.name == "net.core.refused" => {
                        Reply::Outcome(Err(Denial::RateLimited(1000)))
                    }
                    HostCall::RequestChange(_) => Reply::Outcome(Ok(())),
                    other => panic!("not a call this test makes: {other:?}"),
                };
                protocol::write_frame(&mut stream, &ToRuntime::Reply(reply)).expect("reply");
            }
        })
    }

    fn read(remote: &mut RemoteHost, netns: u64, name: &str) -> Result<SysctlValue, Denial> {
        match remote.call(HostCall::Read { netns, name: name.into() }).expect("call") {
            Some(Reply::Read(value)) => value,
            other => panic!("not a read: {other:?}"),
        }
    }

    fn change(remote: &mut RemoteHost, name: &str) -> Result<(), Denial> {
        let change = Change {
            netns: TUNED,
            name: name.into(),
            value: SysctlValue::Integers(vec![4096]),
            scenario: "test".into(),
            reason: "test".into(),
        };
        match remote.call(HostCall::RequestChange(change)).expect("call") {
            Some(Reply::Outcome(outcome)) => outcome,
            other => panic!("not an outcome: {other:?}"),
        }
    }

    fn remote_and_host() -> (RemoteHost, JoinHandle<Vec<String>>) {
        let (runtime_end, host_end) = UnixStream::pair().expect("socket pair");
        (RemoteHost::new(runtime_end, Arc::new(AtomicU64::new(1))), fake_host(host_end))
    }

    #[test]
    fn values_are_kept_for_the_epoch_and_denials_never() {
        let (mut remote, host) = remote_and_host();
        let one = Ok(SysctlValue::Integers(vec![1]));
        assert_eq!(read(&mut remote, TUNED, "net.core.somaxconn"), one);
        assert_eq!(read(&mut remote, TUNED, "net.core.somaxconn"), one, "a value was not kept");
        assert_eq!(read(&mut remote, GONE, "net.core.somaxconn"), Err(Denial::UnknownNetns(GONE)));
        assert_eq!(read(&mut remote, GONE, "net.core.somaxconn"), Err(Denial::UnknownNetns(GONE)));
        remote.kernel.store(2, Ordering::Relaxed);
        assert_eq!(read(&mut remote, TUNED, "net.core.somaxconn"), Ok(SysctlValue::Integers(vec![4])));
        drop(remote);
        let asked = host.join().expect("host");
        assert_eq!(asked.len(), 4, "a denial was kept, or a value read again in one epoch: {asked:?}");
    }

    #[test]
    fn an_accepted_change_drops_the_value_kept_of_its_tunable() {
        let (mut remote, host) = remote_and_host();
        assert_eq!(read(&mut remote, TUNED, "net.core.rmem_max"), Ok(SysctlValue::Integers(vec![1])));
        assert_eq!(read(&mut remote, TUNED, "net.core.refused"), Ok(SysctlValue::Integers(vec![2])));
        assert_eq!(change(&mut remote, "net.core.rmem_max"), Ok(()));
        assert_eq!(change(&mut remote, "net.core.refused"), Err(Denial::RateLimited(1000)));
        assert_eq!(
            read(&mut remote, TUNED, "net.core.rmem_max"),
            Ok(SysctlValue::Integers(vec![3])),
            "the policy does not read its own write"
        );
        assert_eq!(
            read(&mut remote, TUNED, "net.core.refused"),
            Ok(SysctlValue::Integers(vec![2])),
            "a refused change dropped the value kept"
        );
        drop(remote);
        assert_eq!(host.join().expect("host"), ["net.core.rmem_max", "net.core.refused", "net.core.rmem_max"]);
    }
}
