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
//! TCP memory ([`memory`]): under pressure (`tcp_mem[1]`) all three
//! `tcp_mem` values are raised a step, the highest no more than a quarter of
//! RAM; when exhausted (`tcp_mem[2]`) the high limit is raised within that
//! cap, and once it is at the cap the rmem/wmem maxima are lowered a step and
//! a low-memory mode is entered (`tcp_no_metrics_save=1`,
//! `tcp_no_ssthresh_metrics_save=1`, `high_order_alloc_disable=1`,
//! `tcp_max_syn_backlog` −25 %, floor 128), undone when the kernel reports
//! the pressure relieved.
//!
//! SYN floods ([`syn`]): a listener overflowing its SYN queue while it
//! completes connections gets a bigger `tcp_max_syn_backlog`; one overflowing
//! with nothing completing is flooded: SYN cookies are turned on and the
//! backlog cut back toward its starting value.
//!
//! Kernels differ, so each decision needs only its own tunables: one that
//! does not exist here (the host says so once, `tunable-missing`) or cannot
//! be read disables only what depends on it. `tcp_mem` is raised under
//! pressure whatever else is readable; low-memory mode changes the settings
//! that exist (without `high_order_alloc_disable`, before Linux 5.2, the
//! others still apply and are restored) and, when `tcp_mem` itself is out of
//! reach, is entered on exhaustion as if `tcp_mem` were at its cap; a SYN
//! flood turns cookies on without a readable `tcp_max_syn_backlog`, and the
//! backlog is grown or cut without a readable `tcp_syncookies`.
//!
//! A tunable the administrator changed is left alone in that namespace
//! until they hand it back (`wasmtune override clear`).
//! The decisions are the pure [`tuner`], [`memory`] and [`syn`] modules;
//! [`policy`] carries them out through a [`policy::Host`], implemented here
//! with the SDK's imports.

pub mod memory;
pub mod policy;
pub mod syn;
pub mod tuner;

use wasmtune_sdk::{Config, Event, Imports, Info, Policy};

use crate::policy::{Host, TcpBuffer};

impl Host for Imports {
    fn memory_cap_pages(&mut self) -> u64 {
        wasmtune_sdk::system::memory_cap_pages()
    }
}

impl Policy for TcpBuffer<Imports> {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        Ok((TcpBuffer::new(Imports, config.learning_rate), Info::events(wasmtune_sdk::declared_events!())))
    }

    fn on_event(&mut self, event: &Event) {
        self.handle(event);
    }
}

wasmtune_sdk::export_policy!(TcpBuffer<Imports>);
