//! The control socket: a running daemon answers `wasmtune status`, `policy
//! list|enable|disable`, `summary` and `rollback` over a Unix socket, one
//! JSON request and one JSON response per line (schema: `docs/control.md`).
//!
//! - [`protocol`]: the request and response types (the stable schema);
//! - [`server`]: the listening thread and its peer-credential check;
//! - [`queries`]: answering each request from the daemon's live state;
//! - [`client`]: what the command line uses to ask;
//! - [`render`]: the answers as text.

pub mod client;
pub mod protocol;
pub mod queries;
pub mod render;
pub mod server;

pub use client::{ClientError, ControlClient};
pub use protocol::{Request, Response, SCHEMA_VERSION};
pub use queries::ControlContext;
pub use server::{ControlServer, ServerError};

/// Where the daemon listens unless told otherwise (`--control-socket`).
pub const DEFAULT_SOCKET: &str = "/run/wasmtune/control.sock";
