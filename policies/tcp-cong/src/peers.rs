//! Which peer a connection belongs to: its remote address cut to a prefix
//! (a /32 per IPv4 host and a /64 per IPv6 site by default), never the
//! gateway — peers behind one router can need different algorithms.

use wasmtune_sdk::{IpAddr, IpPrefix};

/// Prefix lengths used as peer keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixLengths {
    pub ipv4: u8,
    pub ipv6: u8,
}

impl Default for PrefixLengths {
    fn default() -> PrefixLengths {
        PrefixLengths { ipv4: 32, ipv6: 64 }
    }
}

/// A peer key that orders: (family, address bits, length).
pub type PeerKey = (u8, u128, u8);

/// `addr` cut to the configured prefix length, with its key.
pub fn peer_of(addr: &IpAddr, lengths: PrefixLengths) -> (IpPrefix, PeerKey) {
    match *addr {
        IpAddr::V4((a, b, c, d)) => {
            let len = lengths.ipv4.min(32);
            let bits = u32::from_be_bytes([a, b, c, d]);
            let masked = if len == 0 { 0 } else { bits & (u32::MAX << (32 - u32::from(len))) };
            let [a, b, c, d] = masked.to_be_bytes();
            (IpPrefix { addr: IpAddr::V4((a, b, c, d)), len }, (4, u128::from(masked), len))
        }
        IpAddr::V6((high, low)) => {
            let len = lengths.ipv6.min(128);
            let bits = (u128::from(high) << 64) | u128::from(low);
            let masked = if len == 0 { 0 } else { bits & (u128::MAX << (128 - u32::from(len))) };
            let prefix = IpPrefix { addr: IpAddr::V6(((masked >> 64) as u64, masked as u64)), len };
            (prefix, (6, masked, len))
        }
    }
}

/// Parses a prefix length setting within `0..=max`.
pub fn parse_length(value: &str, max: u8) -> Result<u8, String> {
    match value.trim().parse::<u8>() {
        Ok(len) if len <= max => Ok(len),
        _ => Err(format!("prefix length {value:?} is not a number from 0 to {max}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_hosts_are_their_own_peers_by_default() {
        let (prefix, key) = peer_of(&IpAddr::V4((10, 0, 1, 2)), PrefixLengths::default());
        assert_eq!(prefix, IpPrefix { addr: IpAddr::V4((10, 0, 1, 2)), len: 32 });
        assert_eq!(key, (4, 0x0a00_0102, 32));
    }

    #[test]
    fn shorter_prefixes_group_hosts() {
        let lengths = PrefixLengths { ipv4: 24, ipv6: 48 };
        let (a, ka) = peer_of(&IpAddr::V4((10, 0, 1, 2)), lengths);
        let (_, kb) = peer_of(&IpAddr::V4((10, 0, 1, 200)), lengths);
        assert_eq!(a.addr, IpAddr::V4((10, 0, 1, 0)));
        assert_eq!(ka, kb);
        let (v6, _) = peer_of(&IpAddr::V6((0xfd00_0001_0002_0003, 5)), lengths);
        assert_eq!(v6, IpPrefix { addr: IpAddr::V6((0xfd00_0001_0002_0000, 0)), len: 48 });
        let (all, _) = peer_of(&IpAddr::V4((10, 0, 1, 2)), PrefixLengths { ipv4: 0, ipv6: 0 });
        assert_eq!(all.addr, IpAddr::V4((0, 0, 0, 0)));
    }

    #[test]
    fn prefix_settings_are_checked() {
        assert_eq!(parse_length("24", 32), Ok(24));
        assert!(parse_length("33", 32).is_err());
        assert!(parse_length("x", 128).is_err());
    }
}
