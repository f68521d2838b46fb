//! # tcp-buffer: grow TCP buffer limits when sockets reach them
//!
//! When a TCP socket's receive (send) buffer has grown to within one
//! learning-rate step of `net.ipv4.tcp_rmem[2]` (`tcp_wmem[2]`) in its
//! network namespace, and the application did not fix its own buffer size,
//! the maximum is raised by one step (25 % at the default learning rate),
//! up to 256 MiB or the administrator's narrower cap. After a receive-side
//! raise the policy makes sure `tcp_moderate_rcvbuf` is on, since without it
//! the kernel never grows receive buffers toward the new limit.
//!
//! Latency guard: per namespace and direction the policy correlates the
//! buffer limit with the sockets' smoothed RTT. When they rise together
//! (correlation above 0.75 over at least 10 events) and the RTT has really
//! grown — more than doubled and more than 1 ms above the lowest seen, so
//! that fast local paths never trip it — the maximum is lowered by a step
//! instead, never below `tcp_*mem[1]`: a bigger buffer there only queues.
//!
//! The decision is the pure [`tuner`] module; [`policy`] carries it out
//! through a [`policy::Host`], implemented here with the SDK's imports.

pub mod policy;
pub mod tuner;

use wasmtune_sdk::{Config, Denial, Event, EventKind, Info, InstantMs, Level, NetnsId, Policy, log, sysctl};

use crate::policy::{Host, TcpBuffer};

/// The host as the component sees it: the SDK's imports.
pub struct ComponentHost;

impl Host for ComponentHost {
    fn read_integers(&mut self, netns: NetnsId, name: &str) -> Result<Vec<i64>, Denial> {
        sysctl::read_integers(netns, name)
    }

    fn request(
        &mut self,
        netns: NetnsId,
        name: &str,
        fields: &[i64],
        scenario: &str,
        reason: &str,
    ) -> Result<(), Denial> {
        sysctl::request_integers(netns, name, fields, scenario, reason)
    }

    fn log(&mut self, level: Level, message: &str) {
        log::log(level, message);
    }

    fn now(&mut self) -> InstantMs {
        wasmtune_sdk::now()
    }
}

impl Policy for TcpBuffer<ComponentHost> {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        Ok((TcpBuffer::new(ComponentHost, config.learning_rate), Info::events(&[EventKind::TcpBufferLimit])))
    }

    fn on_event(&mut self, event: &Event) {
        self.handle(event);
    }
}

wasmtune_sdk::export_policy!(TcpBuffer<ComponentHost>);
