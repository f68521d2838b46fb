//! Per-destination TCP settings through the host's sockops program: which
//! congestion control algorithms this kernel offers, and setting or clearing
//! what new connections to a peer prefix get.
//!
//! Every call is checked against the manifest's `[tcp]` grant (algorithms,
//! prefixes, bounds); a refusal is a [`Denial`], never a trap.

use crate::bindings::wasmtune::policy::tcp as imports;
use crate::{Denial, IpAddr, NetnsId};

pub use imports::{IpPrefix, PeerChange, PeerSettings};

/// Congestion control algorithms this kernel really offers.
pub fn available_congestion() -> Vec<String> {
    imports::available_congestion()
}

/// Replaces the settings new connections to `peer` in `netns` get.
/// `scenario` and `reason` are logged by the host with the change.
pub fn set_peer(
    netns: NetnsId,
    peer: IpPrefix,
    settings: PeerSettings,
    scenario: &str,
    reason: &str,
) -> Result<(), Denial> {
    imports::set_peer(&PeerChange { netns, peer, settings, scenario: scenario.to_string(), reason: reason.to_string() })
}

/// Forgets the settings for `peer` in `netns`.
pub fn clear_peer(netns: NetnsId, peer: IpPrefix, reason: &str) -> Result<(), Denial> {
    imports::clear_peer(netns, peer, reason)
}

impl IpPrefix {
    /// The prefix holding exactly `addr` (/32 or /128).
    pub fn host(addr: IpAddr) -> IpPrefix {
        let len = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        IpPrefix { addr, len }
    }
}

impl PeerSettings {
    /// Settings that leave every choice to the kernel.
    pub fn none() -> PeerSettings {
        PeerSettings {
            congestion: None,
            initial_cwnd: None,
            window_clamp: None,
            no_delay: None,
            syn_rto_ms: None,
            on_loss_congestion: None,
        }
    }
}

/// `addr` as people write it: `10.0.0.2`, or eight hex groups for IPv6.
pub fn format_addr(addr: &IpAddr) -> String {
    match addr {
        IpAddr::V4((a, b, c, d)) => format!("{a}.{b}.{c}.{d}"),
        IpAddr::V6((high, low)) => {
            let groups: Vec<String> = [high, low]
                .iter()
                .flat_map(|half| (0..4).rev().map(move |i| format!("{:x}", (**half >> (i * 16)) & 0xffff)))
                .collect();
            groups.join(":")
        }
    }
}

/// `prefix` as people write it: `10.0.0.0/24`.
pub fn format_prefix(prefix: &IpPrefix) -> String {
    format!("{}/{}", format_addr(&prefix.addr), prefix.len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_prefixes_cover_one_address() {
        assert_eq!(IpPrefix::host(IpAddr::V4((10, 0, 0, 2))).len, 32);
        assert_eq!(IpPrefix::host(IpAddr::V6((1, 2))).len, 128);
    }

    #[test]
    fn addresses_format_as_people_write_them() {
        assert_eq!(format_addr(&IpAddr::V4((10, 0, 0, 2))), "10.0.0.2");
        assert_eq!(format_addr(&IpAddr::V6((0xfd00_0000_0000_0001, 2))), "fd00:0:0:1:0:0:0:2");
        assert_eq!(format_prefix(&IpPrefix { addr: IpAddr::V4((10, 1, 0, 0)), len: 16 }), "10.1.0.0/16");
    }

    #[test]
    fn empty_settings_leave_everything_to_the_kernel() {
        let settings = PeerSettings::none();
        assert_eq!(settings.congestion, None);
        assert_eq!(settings.on_loss_congestion, None);
    }
}
