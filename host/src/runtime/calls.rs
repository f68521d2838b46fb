//! A guest's calls into the host's capabilities, as values
//! ([`HostCall`] in, [`Reply`] out), so that the same guest-facing imports
//! work whether the capabilities sit in this process ([`LocalHost`]: the
//! host answering the runtime process, tests, benchmarks) or across the
//! runtime socket (`runtime::remote`). The checks themselves live in
//! [`crate::caps`], once.

use std::time::{Duration, Instant};

use crate::caps::log::LogCap;
use crate::caps::state::StateCap;
use crate::caps::sysctl::SysctlCap;
use crate::caps::tcp::TcpCap;
use crate::runtime::protocol::{HostCall, Reply};
use crate::wit::wasmtune::policy::log::{Host as _, Level};
use crate::wit::wasmtune::policy::sysctl::{Change, Host as _};
use crate::wit::wasmtune::policy::tcp::{Host as _, IpPrefix, PeerChange};
use crate::wit::wasmtune::policy::{state, sysctl, tcp};
use crate::wit::{Denial, SysctlValue};

/// Whatever answers a guest's host calls.
pub trait HostCalls: Send {
    /// `Ok(None)` for the calls that have no answer; an error traps the
    /// guest's call.
    fn call(&mut self, call: HostCall) -> wasmtime::Result<Option<Reply>>;
}

/// The host's capabilities for one policy, answering in this process.
pub struct LocalHost {
    pub log: LogCap,
    pub sysctl: SysctlCap,
    pub tcp: TcpCap,
    pub state: StateCap,
}

impl LocalHost {
    pub fn new(log: LogCap, sysctl: SysctlCap, state: StateCap) -> LocalHost {
        let tcp = TcpCap::new(&sysctl);
        LocalHost { log, sysctl, tcp, state }
    }
}

impl HostCalls for LocalHost {
    fn call(&mut self, call: HostCall) -> wasmtime::Result<Option<Reply>> {
        use state::Host as _;
        let reply = match call {
            HostCall::Log { level, message } => {
                self.log.log(level, message)?;
                return Ok(None);
            }
            HostCall::Read { netns, name } => Reply::Read(self.sysctl.read(netns, name)?),
            HostCall::RequestChange(change) => Reply::Outcome(self.sysctl.request_change(change)?),
            HostCall::AvailableCongestion => Reply::Congestion(self.tcp.available_congestion()?),
            HostCall::SetPeer(change) => Reply::Outcome(self.tcp.set_peer(change)?),
            HostCall::ClearPeer { netns, peer, reason } => Reply::Outcome(self.tcp.clear_peer(netns, peer, reason)?),
            HostCall::StateGet(key) => Reply::StateValue(self.state.get(key)?),
            HostCall::StateSet(key, value) => Reply::Outcome(self.state.set(key, value)?),
            HostCall::StateDelete(key) => {
                self.state.delete(key)?;
                return Ok(None);
            }
        };
        Ok(Some(reply))
    }
}

/// The guest-facing end: the WIT imports, each turned into a [`HostCall`].
pub struct HostLink {
    calls: Box<dyn HostCalls>,
    /// Time spent waiting for the host's answers since the last
    /// [`HostLink::take_waited`]: the host's time, not the guest's, so the
    /// call's deadline is moved on by it (see `instance`).
    waited: Duration,
}

/// A reply of the wrong kind: the other side is broken or hostile.
#[derive(Debug, thiserror::Error)]
#[error("the host answered a {call} call with {reply}")]
pub struct WrongReply {
    call: &'static str,
    reply: String,
}

impl HostLink {
    pub fn new(calls: Box<dyn HostCalls>) -> HostLink {
        HostLink { calls, waited: Duration::ZERO }
    }

    /// The time spent waiting for the host since the last take.
    pub fn take_waited(&mut self) -> Duration {
        std::mem::take(&mut self.waited)
    }

    /// Gives back time [`HostLink::take_waited`] took but did not use.
    pub fn give_back(&mut self, unused: Duration) {
        self.waited += unused;
    }

    /// One host call, its time counted as the host's.
    fn call(&mut self, call: HostCall) -> wasmtime::Result<Option<Reply>> {
        let started = Instant::now();
        let reply = self.calls.call(call);
        self.waited += started.elapsed();
        reply
    }

    fn ask(&mut self, call: HostCall, name: &'static str) -> wasmtime::Result<Reply> {
        match self.call(call)? {
            Some(reply) => Ok(reply),
            None => Err(WrongReply { call: name, reply: "nothing".into() }.into()),
        }
    }

    fn outcome(&mut self, call: HostCall, name: &'static str) -> wasmtime::Result<Result<(), Denial>> {
        match self.ask(call, name)? {
            Reply::Outcome(outcome) => Ok(outcome),
            other => Err(wrong(name, &other)),
        }
    }
}

fn wrong(call: &'static str, reply: &Reply) -> wasmtime::Error {
    let reply = match reply {
        Reply::Read(_) => "a read",
        Reply::Outcome(_) => "an outcome",
        Reply::Congestion(_) => "a list of algorithms",
        Reply::StateValue(_) => "a state value",
    };
    WrongReply { call, reply: reply.into() }.into()
}

impl crate::wit::wasmtune::policy::log::Host for HostLink {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        self.call(HostCall::Log { level, message }).map(|_| ())
    }
}

impl sysctl::Host for HostLink {
    fn read(&mut self, netns: u64, name: String) -> wasmtime::Result<Result<SysctlValue, Denial>> {
        match self.ask(HostCall::Read { netns, name }, "read")? {
            Reply::Read(value) => Ok(value),
            other => Err(wrong("read", &other)),
        }
    }

    fn request_change(&mut self, change: Change) -> wasmtime::Result<Result<(), Denial>> {
        self.outcome(HostCall::RequestChange(change), "request-change")
    }
}

impl tcp::Host for HostLink {
    fn available_congestion(&mut self) -> wasmtime::Result<Vec<String>> {
        match self.ask(HostCall::AvailableCongestion, "available-congestion")? {
            Reply::Congestion(list) => Ok(list),
            other => Err(wrong("available-congestion", &other)),
        }
    }

    fn set_peer(&mut self, change: PeerChange) -> wasmtime::Result<Result<(), Denial>> {
        self.outcome(HostCall::SetPeer(change), "set-peer")
    }

    fn clear_peer(&mut self, netns: u64, peer: IpPrefix, reason: String) -> wasmtime::Result<Result<(), Denial>> {
        self.outcome(HostCall::ClearPeer { netns, peer, reason }, "clear-peer")
    }
}

impl state::Host for HostLink {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        match self.ask(HostCall::StateGet(key), "state get")? {
            Reply::StateValue(value) => Ok(value),
            other => Err(wrong("state get", &other)),
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), Denial>> {
        self.outcome(HostCall::StateSet(key, value), "state set")
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.call(HostCall::StateDelete(key)).map(|_| ())
    }
}
