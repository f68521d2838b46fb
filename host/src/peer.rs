//! Per-destination vocabulary: a peer prefix and the settings new
//! connections to it get, as policies ask for them, grants bound them, the
//! journal records them and the sockops `peers` map (`bpf/sockops.bpf.c`)
//! stores them: its key and value layouts, prefixes normalised to
//! IPv4-mapped IPv6. The map handle itself is [`crate::bpf::cgroup::PeerMap`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::wit::IpAddr;

/// Size of `struct wasmtune_peer_key`.
pub const PEER_KEY_LEN: usize = 28;
/// Size of `struct wasmtune_peer_settings`.
pub const PEER_SETTINGS_LEN: usize = 52;
/// `TCP_CA_NAME_MAX`: the longest algorithm name, with its NUL.
pub const CA_NAME_MAX: usize = 16;

const SET_CONGESTION: u32 = 1 << 0;
const SET_INITIAL_CWND: u32 = 1 << 1;
const SET_WINDOW_CLAMP: u32 = 1 << 2;
const SET_NO_DELAY: u32 = 1 << 3;
const SET_SYN_RTO: u32 = 1 << 4;
const SET_ON_LOSS_CONGESTION: u32 = 1 << 5;

/// Why a prefix or settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerError {
    /// The prefix length is beyond the address family's width.
    #[error("prefix length {len} is too long for {family} (at most {max})")]
    PrefixTooLong { family: &'static str, len: u8, max: u8 },
    /// A congestion control name that does not fit the kernel's limit or is empty.
    #[error("congestion control name {name:?} must be 1..={} bytes of [a-z0-9_-]", CA_NAME_MAX - 1)]
    BadAlgorithmName { name: String },
    /// The kernel refused a map update or delete.
    #[error("the per-destination map refused the {operation} of {prefix}: {reason}")]
    Map { operation: &'static str, prefix: String, reason: String },
}

/// A peer prefix as the map stores it: an IPv6 address (IPv4 mapped into
/// `::ffff:0:0/96`) with its host bits cleared, and the IPv6 prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerPrefix {
    addr: Ipv6Addr,
    len: u8,
}

impl PeerPrefix {
    /// From the WIT form: `len` counts bits of the family's own address.
    pub fn new(addr: &IpAddr, len: u8) -> Result<PeerPrefix, PeerError> {
        let (v6, len) = match *addr {
            IpAddr::V4((a, b, c, d)) => {
                if len > 32 {
                    return Err(PeerError::PrefixTooLong { family: "IPv4", len, max: 32 });
                }
                (Ipv4Addr::new(a, b, c, d).to_ipv6_mapped(), 96 + len)
            }
            IpAddr::V6((high, low)) => {
                if len > 128 {
                    return Err(PeerError::PrefixTooLong { family: "IPv6", len, max: 128 });
                }
                (Ipv6Addr::from((u128::from(high) << 64) | u128::from(low)), len)
            }
        };
        let mask = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
        Ok(PeerPrefix { addr: Ipv6Addr::from(u128::from(v6) & mask), len })
    }

    /// Whether this is an IPv4 prefix (inside `::ffff:0:0/96`).
    pub fn is_ipv4(&self) -> bool {
        self.len >= 96 && self.addr.to_ipv4_mapped().is_some()
    }

    /// Whether `other` lies entirely inside this prefix.
    pub fn contains(&self, other: &PeerPrefix) -> bool {
        if other.len < self.len {
            return false;
        }
        let mask = if self.len == 0 { 0 } else { u128::MAX << (128 - u32::from(self.len)) };
        u128::from(other.addr) & mask == u128::from(self.addr)
    }

    /// The LPM-trie key for this prefix in one namespace.
    pub fn key(&self, netns: u64) -> [u8; PEER_KEY_LEN] {
        let mut key = [0u8; PEER_KEY_LEN];
        key[0..4].copy_from_slice(&(64 + u32::from(self.len)).to_ne_bytes());
        // The trie compares bytes from the first: the cookie goes in big-endian.
        key[4..12].copy_from_slice(&netns.to_be_bytes());
        key[12..28].copy_from_slice(&self.addr.octets());
        key
    }
}

impl fmt::Display for PeerPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => write!(f, "{v4}/{}", self.len - 96),
            _ => write!(f, "{}/{}", self.addr, self.len),
        }
    }
}

/// What to set on new connections to a peer; `None` leaves the kernel's choice.
/// Journaled as it is (see `crate::ledger::record::PeerIntent`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct PeerSettings {
    pub congestion: Option<String>,
    pub initial_cwnd: Option<u32>,
    pub window_clamp: Option<u32>,
    pub no_delay: Option<bool>,
    pub syn_rto_ms: Option<u32>,
    pub on_loss_congestion: Option<String>,
}

impl PeerSettings {
    /// The map value (`struct wasmtune_peer_settings`).
    pub fn encode(&self) -> Result<[u8; PEER_SETTINGS_LEN], PeerError> {
        let mut value = [0u8; PEER_SETTINGS_LEN];
        let mut set = 0u32;
        let mut put_u32 = |offset: usize, v: u32| value[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        if let Some(cwnd) = self.initial_cwnd {
            set |= SET_INITIAL_CWND;
            put_u32(4, cwnd);
        }
        if let Some(clamp) = self.window_clamp {
            set |= SET_WINDOW_CLAMP;
            put_u32(8, clamp);
        }
        if let Some(rto) = self.syn_rto_ms {
            set |= SET_SYN_RTO;
            put_u32(12, rto);
        }
        if let Some(no_delay) = self.no_delay {
            set |= SET_NO_DELAY;
            put_u32(16, u32::from(no_delay));
        }
        if let Some(name) = &self.congestion {
            set |= SET_CONGESTION;
            value[20..36].copy_from_slice(&algorithm_name(name)?);
        }
        if let Some(name) = &self.on_loss_congestion {
            set |= SET_ON_LOSS_CONGESTION;
            value[36..52].copy_from_slice(&algorithm_name(name)?);
        }
        value[0..4].copy_from_slice(&set.to_ne_bytes());
        Ok(value)
    }
}

impl fmt::Display for PeerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(v) = &self.congestion {
            parts.push(format!("congestion={v}"));
        }
        if let Some(v) = self.initial_cwnd {
            parts.push(format!("initial-cwnd={v}"));
        }
        if let Some(v) = self.window_clamp {
            parts.push(format!("window-clamp={v}"));
        }
        if let Some(v) = self.no_delay {
            parts.push(format!("no-delay={v}"));
        }
        if let Some(v) = self.syn_rto_ms {
            parts.push(format!("syn-rto-ms={v}"));
        }
        if let Some(v) = &self.on_loss_congestion {
            parts.push(format!("on-loss-congestion={v}"));
        }
        if parts.is_empty() { f.write_str("(kernel defaults)") } else { f.write_str(&parts.join(" ")) }
    }
}

/// A NUL-padded algorithm name, refused if it cannot be one.
fn algorithm_name(name: &str) -> Result<[u8; CA_NAME_MAX], PeerError> {
    let valid = !name.is_empty()
        && name.len() < CA_NAME_MAX
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid {
        return Err(PeerError::BadAlgorithmName { name: name.to_string() });
    }
    let mut out = [0u8; CA_NAME_MAX];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// A prefix as written in a manifest ("10.0.0.0/8", "fd00::/8", or an
/// address alone for a single host): the address and the prefix length.
pub fn parse_prefix(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((addr, len)) => (addr.parse::<std::net::IpAddr>().ok()?, Some(len.parse::<u8>().ok()?)),
        None => (text.parse::<std::net::IpAddr>().ok()?, None),
    };
    let width = if addr.is_ipv4() { 32 } else { 128 };
    let len = len.unwrap_or(width);
    (len <= width).then_some((addr, len))
}

/// A prefix as written in a manifest or the configuration, as the map keys it.
pub fn peer_prefix(text: &str) -> Option<PeerPrefix> {
    let (addr, len) = parse_prefix(text)?;
    let addr = match addr {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            IpAddr::V4((a, b, c, d))
        }
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            IpAddr::V6(((bits >> 64) as u64, bits as u64))
        }
    };
    PeerPrefix::new(&addr, len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_prefixes_are_mapped_and_masked() {
        let p = PeerPrefix::new(&IpAddr::V4((10, 1, 2, 3)), 24).expect("valid");
        assert_eq!(p.to_string(), "10.1.2.0/24");
        assert!(p.is_ipv4());
        let key = p.key(0x0102_0304_0506_0708);
        assert_eq!(u32::from_ne_bytes(key[0..4].try_into().unwrap()), 64 + 96 + 24);
        assert_eq!(&key[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&key[12..28], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 0]);
        assert!(PeerPrefix::new(&IpAddr::V4((10, 1, 2, 3)), 33).is_err());
        let host = PeerPrefix::new(&IpAddr::V4((10, 1, 2, 3)), 32).expect("valid");
        assert!(p.contains(&host));
        assert!(!host.contains(&p));
        assert!(!p.contains(&PeerPrefix::new(&IpAddr::V4((10, 1, 3, 3)), 32).expect("valid")));
    }

    #[test]
    fn ipv6_prefixes_keep_their_length() {
        let p = PeerPrefix::new(&IpAddr::V6((0xfd00_0000_0000_0001, 5)), 64).expect("valid");
        assert_eq!(p.to_string(), "fd00:0:0:1::/64");
        assert!(!p.is_ipv4());
        assert!(PeerPrefix::new(&IpAddr::V6((0, 0)), 129).is_err());
    }

    #[test]
    fn settings_encode_only_what_is_set() {
        let s = PeerSettings { congestion: Some("reno".into()), initial_cwnd: Some(20), ..Default::default() };
        let v = s.encode().expect("valid");
        assert_eq!(u32::from_ne_bytes(v[0..4].try_into().unwrap()), SET_CONGESTION | SET_INITIAL_CWND);
        assert_eq!(u32::from_ne_bytes(v[4..8].try_into().unwrap()), 20);
        assert_eq!(&v[20..25], b"reno\0");
        assert_eq!(s.to_string(), "congestion=reno initial-cwnd=20");
        let bad = PeerSettings { congestion: Some("a-very-long-algorithm".into()), ..Default::default() };
        assert!(bad.encode().is_err());
    }
}
