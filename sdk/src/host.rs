//! The part of the host that [`Tunables`](crate::Tunables) talks to, as a
//! trait: the component's imports in production ([`Imports`]), a fake in
//! native unit tests ([`crate::testing::FakeHost`], feature `testing`), so
//! that a policy written against `H: Host` is tested without a host.

use crate::{Change, Denial, InstantMs, Level, NetnsId, SysctlValue, log, state, sysctl};

/// Reading and changing sysctls, logging and the clock.
pub trait Host {
    /// The current value of `name` in `netns` ([`sysctl::read`]).
    fn read(&mut self, netns: NetnsId, name: &str) -> Result<SysctlValue, Denial>;
    /// Asks for `change` in `netns` ([`Change::request`]).
    fn request(&mut self, netns: NetnsId, change: &Change) -> Result<(), Denial>;
    /// Writes one line to the policy's log ([`log::log`]).
    fn log(&mut self, level: Level, message: &str);
    /// The host's monotonic clock, milliseconds ([`crate::now`]).
    fn now(&mut self) -> InstantMs;
    /// The value the state store holds under `key` ([`state::get`]).
    fn state_get(&mut self, key: &str) -> Option<Vec<u8>> {
        state::get(key)
    }
    /// Stores `value` under `key` ([`state::set`]).
    fn state_set(&mut self, key: &str, value: &[u8]) -> Result<(), Denial> {
        state::set(key, value)
    }
    /// Removes `key` from the state store ([`state::delete`]).
    fn state_delete(&mut self, key: &str) {
        state::delete(key)
    }
}

/// The host as a component sees it: the SDK's imports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Imports;

impl Host for Imports {
    fn read(&mut self, netns: NetnsId, name: &str) -> Result<SysctlValue, Denial> {
        sysctl::read(netns, name)
    }

    fn request(&mut self, netns: NetnsId, change: &Change) -> Result<(), Denial> {
        change.request(netns)
    }

    fn log(&mut self, level: Level, message: &str) {
        log::log(level, message);
    }

    fn now(&mut self) -> InstantMs {
        crate::now()
    }
}
