//! The start-up walk of established TCP sockets (`iter/tcp`): decodes the
//! `struct wasmtune_existing_socket` records and turns sockets whose buffer
//! already sits near its namespace's limit into `tcp-buffer-limit` events,
//! which no tracepoint would report until the connection's next growth.

use crate::wit::{BufferDirection, Event, IpAddr, TcpBufferLimit};

/// Size of `struct wasmtune_existing_socket`.
pub const EXISTING_SOCKET_LEN: usize = 56;
const SOCK_SNDBUF_LOCK: u8 = 1;
const SOCK_RCVBUF_LOCK: u8 = 2;
const AF_INET6: u8 = 10;

/// One established socket as the walk saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExistingSocket {
    pub netns: u64,
    pub rcvbuf: u32,
    pub sndbuf: u32,
    pub rmem_max: u32,
    pub wmem_max: u32,
    pub rcv_queued: u32,
    pub snd_queued: u32,
    pub srtt_us: u32,
    pub remote_port: u16,
    pub remote: IpAddr,
    pub userlocks: u8,
}

/// What the walk found.
#[derive(Debug, Default, Clone)]
pub struct WalkReport {
    /// Established TCP sockets, all namespaces.
    pub sockets: usize,
    /// Distinct namespaces they live in.
    pub namespaces: usize,
    /// `tcp-buffer-limit` events for sockets already near a limit.
    pub events: Vec<Event>,
}

/// Decodes the iterator's output (a sequence of fixed-size records).
pub fn decode_all(bytes: &[u8]) -> Vec<ExistingSocket> {
    bytes.chunks_exact(EXISTING_SOCKET_LEN).map(decode).collect()
}

fn decode(r: &[u8]) -> ExistingSocket {
    let u32_at = |o: usize| u32::from_ne_bytes([r[o], r[o + 1], r[o + 2], r[o + 3]]);
    let addr = &r[40..56];
    let remote = if r[38] == AF_INET6 {
        let high = u64::from_be_bytes([addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7]]);
        let low = u64::from_be_bytes([addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15]]);
        IpAddr::V6((high, low))
    } else {
        IpAddr::V4((addr[0], addr[1], addr[2], addr[3]))
    };
    ExistingSocket {
        netns: u64::from_ne_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]),
        rcvbuf: u32_at(8),
        sndbuf: u32_at(12),
        rmem_max: u32_at(16),
        wmem_max: u32_at(20),
        rcv_queued: u32_at(24),
        snd_queued: u32_at(28),
        srtt_us: u32_at(32),
        remote_port: u16::from_ne_bytes([r[36], r[37]]),
        remote,
        userlocks: r[39],
    }
}

/// Summarises the walk; a socket near a limit (`buffer >= limit - (limit >>
/// near_limit_shift)`, size not fixed by its application) becomes one event per
/// direction, at most one per (namespace, direction), as the kernel side
/// rate-limits.
pub fn report(sockets: &[ExistingSocket], near_limit_shift: u32) -> WalkReport {
    let near = |buffer: u32, limit: u32| limit > 0 && buffer >= limit - (limit >> near_limit_shift.min(31));
    let mut seen = std::collections::HashSet::new();
    let mut namespaces = std::collections::HashSet::new();
    let mut events = Vec::new();
    for s in sockets {
        namespaces.insert(s.netns);
        let sides = [
            (BufferDirection::Receive, s.userlocks & SOCK_RCVBUF_LOCK == 0, s.rcvbuf, s.rmem_max, s.rcv_queued),
            (BufferDirection::Send, s.userlocks & SOCK_SNDBUF_LOCK == 0, s.sndbuf, s.wmem_max, s.snd_queued),
        ];
        for (direction, growable, buffer, limit, queued) in sides {
            if growable && near(buffer, limit) && seen.insert((s.netns, direction as u8)) {
                events.push(Event::TcpBufferLimit(TcpBufferLimit {
                    netns: s.netns,
                    direction,
                    buffer_bytes: buffer,
                    limit_bytes: limit,
                    queued_bytes: queued,
                    srtt_us: s.srtt_us,
                    remote: s.remote,
                    remote_port: s.remote_port,
                }));
            }
        }
    }
    WalkReport { sockets: sockets.len(), namespaces: namespaces.len(), events }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(rcvbuf: u32, rmem_max: u32, userlocks: u8) -> Vec<u8> {
        let mut r = vec![0u8; EXISTING_SOCKET_LEN];
        r[0..8].copy_from_slice(&7u64.to_ne_bytes());
        r[8..12].copy_from_slice(&rcvbuf.to_ne_bytes());
        r[12..16].copy_from_slice(&1000u32.to_ne_bytes());
        r[16..20].copy_from_slice(&rmem_max.to_ne_bytes());
        r[20..24].copy_from_slice(&1_000_000u32.to_ne_bytes());
        r[36..38].copy_from_slice(&5201u16.to_ne_bytes());
        r[38] = 2;
        r[39] = userlocks;
        r[40..44].copy_from_slice(&[10, 0, 0, 2]);
        r
    }

    #[test]
    fn sockets_near_their_limit_become_events_once_per_namespace() {
        let mut bytes = record(98_000, 98_304, 0);
        bytes.extend(record(98_300, 98_304, 0));
        bytes.extend(record(98_300, 98_304, SOCK_RCVBUF_LOCK));
        bytes.extend(record(10_000, 98_304, 0));
        let sockets = decode_all(&bytes);
        assert_eq!(sockets.len(), 4);
        assert_eq!(sockets[0].remote, IpAddr::V4((10, 0, 0, 2)));
        let report = report(&sockets, 2);
        assert_eq!((report.sockets, report.namespaces), (4, 1));
        assert_eq!(report.events.len(), 1, "{:?}", report.events);
        let Event::TcpBufferLimit(hit) = &report.events[0] else { panic!("not a buffer event") };
        assert_eq!((hit.buffer_bytes, hit.limit_bytes, hit.remote_port), (98_000, 98_304, 5201));
    }
}
