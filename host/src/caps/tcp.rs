//! `wasmtune:policy/tcp`: per-destination TCP settings, applied by the
//! host's sockops program to new connections whose peer falls in a prefix.
//! Every request is checked against the policy's `[tcp]` grant (allowed
//! algorithms, prefixes and bounds) and the algorithms this kernel offers.

use crate::wit::wasmtune::policy::tcp::{Host, IpPrefix, PeerChange};
use crate::wit::Denial;

/// Where the kernel lists the congestion control algorithms it offers.
const AVAILABLE_CONGESTION: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";

pub struct TcpCap {
    pub policy: String,
}

/// Congestion control algorithms this kernel offers (loaded or built in).
pub fn available_congestion() -> Vec<String> {
    std::fs::read_to_string(AVAILABLE_CONGESTION)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

impl Host for TcpCap {
    fn available_congestion(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(available_congestion())
    }

    fn set_peer(&mut self, _change: PeerChange) -> wasmtime::Result<Result<(), Denial>> {
        Ok(Err(Denial::Unsupported(format!(
            "per-destination settings are not available to {}: the sockops program is not attached",
            self.policy
        ))))
    }

    fn clear_peer(&mut self, _netns: u64, _peer: IpPrefix, _reason: String) -> wasmtime::Result<Result<(), Denial>> {
        Ok(Err(Denial::Unsupported("per-destination settings: the sockops program is not attached".into())))
    }
}
