//! The `relieved` level of memory-pressure: the kernel reports pressure as it
//! happens (`sock:sock_exceed_buf_limit`), but nothing fires when it ends. The
//! drain thread remembers every (netns, protocol) it reported pressure for and
//! checks, on a slow timer, the protocol's allocated pages
//! (`/proc/net/sockstat`, a global count) against its limits in force now
//! (`tcp_mem`/`udp_mem`, global sysctls that a policy may just have raised);
//! once below `[1]`, one `relieved` event goes out per remembered namespace.

use std::collections::HashSet;

use crate::wit::{Event, MemoryLevel, MemoryPressure, Protocol};

const SOCKSTAT: &str = "/proc/net/sockstat";
const TCP_MEM: &str = "/proc/sys/net/ipv4/tcp_mem";
const UDP_MEM: &str = "/proc/sys/net/ipv4/udp_mem";

/// Namespaces under memory pressure, per protocol.
#[derive(Debug, Default)]
pub(super) struct Relief {
    pressured: HashSet<(u64, ProtocolKey)>,
}

/// `Protocol` as a map key (the generated type is not `Hash`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ProtocolKey {
    Tcp,
    Udp,
}

impl Relief {
    /// Remembers a namespace that reported pressure or exhaustion.
    pub fn note(&mut self, event: &Event) {
        if let Event::MemoryPressure(pressure) = event
            && !matches!(pressure.level, MemoryLevel::Relieved)
        {
            self.pressured.insert((pressure.netns, key(pressure.protocol)));
        }
    }

    /// Whether some namespace is under pressure, so relief must be checked
    /// for on a timer.
    pub fn waiting(&self) -> bool {
        !self.pressured.is_empty()
    }

    /// `relieved` events for the namespaces whose protocol is back below
    /// pressure; they are forgotten until the next pressure event.
    pub fn check(&mut self) -> Vec<Event> {
        if self.pressured.is_empty() {
            return Vec::new();
        }
        let Ok(sockstat) = std::fs::read_to_string(SOCKSTAT) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (protocol, label, limits_path) in [(ProtocolKey::Tcp, "TCP:", TCP_MEM), (ProtocolKey::Udp, "UDP:", UDP_MEM)]
        {
            let Some(pages) = sockstat_mem(&sockstat, label) else { continue };
            let Some(limits) = std::fs::read_to_string(limits_path).ok().and_then(|s| parse_triple(&s)) else {
                continue;
            };
            if pages >= limits.1 {
                continue;
            }
            let relieved: Vec<u64> =
                self.pressured.iter().filter(|(_, p)| *p == protocol).map(|(netns, _)| *netns).collect();
            for netns in relieved {
                self.pressured.remove(&(netns, protocol));
                out.push(Event::MemoryPressure(MemoryPressure {
                    netns,
                    protocol: match protocol {
                        ProtocolKey::Tcp => Protocol::Tcp,
                        ProtocolKey::Udp => Protocol::Udp,
                    },
                    level: MemoryLevel::Relieved,
                    pages,
                    limits,
                }));
            }
        }
        out
    }
}

fn key(protocol: Protocol) -> ProtocolKey {
    match protocol {
        Protocol::Tcp => ProtocolKey::Tcp,
        Protocol::Udp => ProtocolKey::Udp,
    }
}

/// The `mem N` of the line starting with `label` (`TCP:` or `UDP:`).
fn sockstat_mem(sockstat: &str, label: &str) -> Option<u64> {
    crate::procfs::labelled_field(sockstat, label, "mem")
}

fn parse_triple(text: &str) -> Option<(u64, u64, u64)> {
    let mut it = text.split_whitespace().map(|f| f.parse::<u64>());
    match (it.next(), it.next(), it.next()) {
        (Some(Ok(a)), Some(Ok(b)), Some(Ok(c))) => Some((a, b, c)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_mem_of_each_protocol_from_sockstat() {
        let text =
            "sockets: used 180\nTCP: inuse 5 orphan 0 tw 2 alloc 7 mem 12\nUDP: inuse 3 mem 4\nUDPLITE: inuse 0\n";
        assert_eq!(sockstat_mem(text, "TCP:"), Some(12));
        assert_eq!(sockstat_mem(text, "UDP:"), Some(4));
        assert_eq!(sockstat_mem(text, "RAW:"), None);
        assert_eq!(parse_triple("1 2 3\n"), Some((1, 2, 3)));
        assert_eq!(parse_triple("1 2\n"), None);
    }

    #[test]
    fn only_pressured_namespaces_are_relieved_and_only_once() {
        let mut relief = Relief::default();
        assert!(relief.check().is_empty());
        relief.note(&Event::MemoryPressure(MemoryPressure {
            netns: 9,
            protocol: Protocol::Tcp,
            level: MemoryLevel::Pressure,
            pages: 10,
            limits: (1, 2, 3),
        }));
        // This host is not under TCP memory pressure while the test runs.
        let first = relief.check();
        assert_eq!(first.len(), 1, "{first:?}");
        assert!(
            matches!(&first[0], Event::MemoryPressure(p) if p.netns == 9 && matches!(p.level, MemoryLevel::Relieved))
        );
        assert!(relief.check().is_empty());
    }
}
