//! # wasmtune-sdk: write wasmtune tuning policies
//!
//! A wasmtune policy is a WebAssembly component that the wasmtune daemon
//! feeds kernel events and lets change only the sysctls its manifest
//! declares, within the bounds declared there (and narrowed by the
//! administrator). This crate hides the component plumbing behind one trait,
//! [`Policy`], and one macro, [`export_policy!`], and adds the arithmetic
//! most tuners need: [learning-rate steps](rate), a streaming
//! [`Correlation`], typed [`sysctl`] access, per-destination [`tcp`]
//! settings, [`system`] facts (memory, page size, CPUs), [`log`] helpers,
//! and [`Tunables`]: the bookkeeping around every change (administrator
//! [`Overrides`], requests still [settling](Settle), problems said once).
//!
//! ## A complete policy
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "grow-send-buffers"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! wasmtune-sdk = "0.1"
//! ```
//!
//! `policy.toml`, beside `Cargo.toml`; [`export_policy!`] embeds it in the
//! component, and the host grants exactly what it declares:
//!
//! ```toml
//! # Top-level keys first: after `[policy]` they would belong to that table.
//! events = ["tcp-buffer-limit", "admin-override"]
//!
//! [policy]
//! name = "grow-send-buffers"
//! version = "0.1.0"
//! description = "Raises tcp_wmem[2] when send buffers reach it"
//!
//! [[sysctl]]
//! name = "net.ipv4.tcp_wmem"
//! fields = [2]
//! max = 67108864
//! ```
//!
//! `src/lib.rs`:
//!
//! ```ignore
//! use wasmtune_sdk::{rate, BufferDirection, Change, Config, Event, Info, Policy, Reading, Tunables};
//!
//! const WMEM: &str = "net.ipv4.tcp_wmem";
//!
//! struct GrowSendBuffers {
//!     learning_rate: u8,
//!     tunables: Tunables,
//! }
//!
//! impl Policy for GrowSendBuffers {
//!     fn init(config: &Config) -> Result<(Self, Info), String> {
//!         let policy = GrowSendBuffers { learning_rate: config.learning_rate, tunables: Tunables::new(&[WMEM]) };
//!         // The `events` of policy.toml, read when the policy is compiled.
//!         Ok((policy, Info::events(wasmtune_sdk::declared_events!())))
//!     }
//!
//!     fn on_event(&mut self, event: &Event) {
//!         // Administrator overrides and namespaces go to `Tunables`.
//!         let Event::TcpBufferLimit(hit) = event else { return self.tunables.observe(event) };
//!         if hit.direction != BufferDirection::Send {
//!             return;
//!         }
//!         // Held while the administrator owns it or the last raise has not shown yet.
//!         let Reading::Ready(mut wmem) = self.tunables.reading(hit.netns, WMEM, 3) else { return };
//!         // An event about a limit that has since been raised is stale.
//!         if i64::from(hit.limit_bytes) < wmem[2] {
//!             return;
//!         }
//!         wmem[2] += rate::step(wmem[2].unsigned_abs(), self.learning_rate) as i64;
//!         let reason = format!("send buffers reach tcp_wmem[2] ({} bytes)", hit.limit_bytes);
//!         let change = Change::new(WMEM, wmem, "need to increase TCP buffer size(s)", reason);
//!         // A refusal is logged once per namespace and kind; the next event retries.
//!         let _ = self.tunables.request(hit.netns, &change);
//!     }
//! }
//!
//! wasmtune_sdk::export_policy!(GrowSendBuffers);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and drop the
//! `.wasm` into a directory the daemon watches (`wasmtune run --policy-dir
//! DIR`); `wasmtune policy info FILE` shows what it declares.
//!
//! ## What the host guarantees, and what it expects
//!
//! - Every [`sysctl::request`] is checked against the grant when it is made
//!   and applied after the export call returns, in order: a value read right
//!   after a request still shows the old one. A refusal is a [`Denial`]
//!   value, never a trap. [`Denial::explain`] turns it into a sentence.
//! - Each call has a time and memory budget. A trap (a panic included) or an
//!   exhausted budget fails that call; repeated faults quarantine the policy.
//! - Logs are rate-limited and truncated by the host: log decisions, not
//!   events.

#![deny(missing_docs)]

#[allow(clippy::all, missing_docs)]
pub mod bindings;

pub mod change;
pub mod correlation;
pub mod denial;
#[doc(hidden)]
pub mod export;
pub mod host;
pub mod log;
pub mod manifest;
pub mod netns;
pub mod overrides;
pub mod policy;
pub mod rate;
pub mod settle;
pub mod state;
pub mod sysctl;
pub mod system;
pub mod tcp;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tunables;

pub use bindings::exports::wasmtune::policy::handler::{Config, Info};
pub use bindings::wasmtune::policy::clock::now;
pub use bindings::wasmtune::policy::tcp::{IpPrefix, PeerSettings};
pub use bindings::wasmtune::policy::types::{
    AddressFamily, AdminOverride, AdminRelease, BacklogDrops, Bounds, BufferDirection, ConnectionSummary, Denial,
    Event, EventKind, FragmentMemory, InstantMs, IpAddr, MemoryLevel, MemoryPressure, NamespaceChange, NeighbourTable,
    NetnsId, Protocol, RetransmitBurst, RouteTable, SoftnetSqueeze, SynOverflow, SysctlValue, TcpBufferLimit, UdpDrop,
    UdpDropCause,
};
pub use change::{Change, LogOnce, log_denial};
pub use correlation::Correlation;
pub use denial::Explanation;
pub use host::{Host, Imports};
pub use log::Level;
pub use netns::init_netns;
pub use overrides::Overrides;
pub use policy::Policy;
pub use settle::Settle;
pub use sysctl::Tunable;
pub use tunables::{Reading, Tunables};
