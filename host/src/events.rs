//! Kernel records, typed: decodes what the BPF programs post into the ring
//! buffer (the layout of `bpf/wasmtune.h`) into the contract's [`Event`]s, and
//! answers the two questions the router asks of an event (its kind, its netns).

use crate::wit::{BufferDirection, Event, EventKind, IpAddr, TcpBufferLimit};

/// Size of a `struct wasmtune_tcp_buffer_record`.
pub const TCP_BUFFER_RECORD_LEN: usize = 48;

/// `enum wasmtune_record_kind` values.
const KIND_TCP_BUFFER_LIMIT: u16 = 1;

/// `enum wasmtune_direction` values.
const DIRECTION_RECEIVE: u8 = 0;
const DIRECTION_SEND: u8 = 1;

/// Address families as the kernel numbers them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Why a ring-buffer record could not be decoded. Any of these means the BPF
/// object and this decoder disagree about the layout.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The record is too short to hold even its kind.
    #[error("record of {len} bytes is too short to hold a kind")]
    TooShort {
        /// Bytes received.
        len: usize,
    },
    /// The record's length does not match the length of its kind.
    #[error("record of kind {kind} has {len} bytes, expected {expected}")]
    WrongLength {
        /// The record's kind.
        kind: u16,
        /// Bytes received.
        len: usize,
        /// Bytes a record of this kind has.
        expected: usize,
    },
    /// The record's kind is not one this host knows.
    #[error("unknown record kind {kind}")]
    UnknownKind {
        /// The kind found.
        kind: u16,
    },
    /// The buffer direction is neither receive nor send.
    #[error("unknown buffer direction {direction}")]
    UnknownDirection {
        /// The direction found.
        direction: u8,
    },
    /// The address family is neither IPv4 nor IPv6.
    #[error("unknown address family {family}")]
    UnknownFamily {
        /// The family found.
        family: u8,
    },
}

/// Decodes one raw ring-buffer record into an [`Event`].
///
/// Records are in the host's byte order (the kernel wrote them); addresses
/// are in network order. An IPv4-mapped IPv6 peer (`::ffff:a.b.c.d`, a
/// dual-stack socket talking to an IPv4 host) is reported as the IPv4
/// address it is, so a policy sees one peer under one name.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let kind = match bytes {
        [a, b, ..] => u16::from_ne_bytes([*a, *b]),
        _ => return Err(DecodeError::TooShort { len: bytes.len() }),
    };
    match kind {
        KIND_TCP_BUFFER_LIMIT => decode_tcp_buffer_limit(bytes).map(Event::TcpBufferLimit),
        kind => Err(DecodeError::UnknownKind { kind }),
    }
}

fn decode_tcp_buffer_limit(bytes: &[u8]) -> Result<TcpBufferLimit, DecodeError> {
    let record: &[u8; TCP_BUFFER_RECORD_LEN] = bytes.try_into().map_err(|_| DecodeError::WrongLength {
        kind: KIND_TCP_BUFFER_LIMIT,
        len: bytes.len(),
        expected: TCP_BUFFER_RECORD_LEN,
    })?;
    let direction = match record[2] {
        DIRECTION_RECEIVE => BufferDirection::Receive,
        DIRECTION_SEND => BufferDirection::Send,
        direction => return Err(DecodeError::UnknownDirection { direction }),
    };
    let address = array::<16>(record, 32);
    let remote = match record[3] {
        AF_INET => ipv4(array::<4>(&address, 0)),
        AF_INET6 => ipv6(address),
        family => return Err(DecodeError::UnknownFamily { family }),
    };
    Ok(TcpBufferLimit {
        netns: u64::from_ne_bytes(array(record, 8)),
        direction,
        buffer_bytes: u32::from_ne_bytes(array(record, 16)),
        limit_bytes: u32::from_ne_bytes(array(record, 20)),
        queued_bytes: u32::from_ne_bytes(array(record, 24)),
        srtt_us: u32::from_ne_bytes(array(record, 28)),
        remote,
        remote_port: u16::from_ne_bytes(array(record, 4)),
    })
}

/// `N` bytes of `bytes` from `offset`; callers pass offsets inside the
/// fixed-size record, so this cannot run off its end.
fn array<const N: usize>(bytes: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0; N];
    out.copy_from_slice(&bytes[offset..offset + N]);
    out
}

fn ipv4([a, b, c, d]: [u8; 4]) -> IpAddr {
    IpAddr::V4((a, b, c, d))
}

fn ipv6(address: [u8; 16]) -> IpAddr {
    if let Some(v4) = std::net::Ipv6Addr::from(address).to_ipv4_mapped() {
        return ipv4(v4.octets());
    }
    IpAddr::V6((u64::from_be_bytes(array(&address, 0)), u64::from_be_bytes(array(&address, 8))))
}

/// The kind a policy subscribes to for this event; `None` for `lost`, which
/// every policy receives.
pub fn event_kind(event: &Event) -> Option<EventKind> {
    Some(match event {
        Event::TcpBufferLimit(_) => EventKind::TcpBufferLimit,
        Event::MemoryPressure(_) => EventKind::MemoryPressure,
        Event::SynOverflow(_) => EventKind::SynOverflow,
        Event::ConnectionSummary(_) => EventKind::ConnectionSummary,
        Event::RetransmitBurst(_) => EventKind::RetransmitBurst,
        Event::BacklogDrops(_) => EventKind::BacklogDrops,
        Event::SoftnetSqueeze(_) => EventKind::SoftnetSqueeze,
        Event::NeighbourTable(_) => EventKind::NeighbourTable,
        Event::RouteTable(_) => EventKind::RouteTable,
        Event::FragmentMemory(_) => EventKind::FragmentMemory,
        Event::UdpDrop(_) => EventKind::UdpDrop,
        Event::NamespaceChange(_) => EventKind::NamespaceChange,
        Event::AdminOverride(_) => EventKind::AdminOverride,
        Event::Lost(_) => return None,
    })
}

/// The network namespace (cookie) an event is about; `None` for `lost`.
pub fn event_netns(event: &Event) -> Option<u64> {
    Some(match event {
        Event::TcpBufferLimit(e) => e.netns,
        Event::MemoryPressure(e) => e.netns,
        Event::SynOverflow(e) => e.netns,
        Event::ConnectionSummary(e) => e.netns,
        Event::RetransmitBurst(e) => e.netns,
        Event::BacklogDrops(e) => e.netns,
        Event::SoftnetSqueeze(e) => e.netns,
        Event::NeighbourTable(e) => e.netns,
        Event::RouteTable(e) => e.netns,
        Event::FragmentMemory(e) => e.netns,
        Event::UdpDrop(e) => e.netns,
        Event::NamespaceChange(e) => e.netns,
        Event::AdminOverride(e) => e.netns,
        Event::Lost(_) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record laid out as `bpf/wasmtune.h` describes it, built by hand.
    struct Record {
        kind: u16,
        direction: u8,
        family: u8,
        remote_port: u16,
        netns_cookie: u64,
        buffer_bytes: u32,
        limit_bytes: u32,
        queued_bytes: u32,
        srtt_us: u32,
        remote_addr: [u8; 16],
    }

    impl Record {
        fn receive_v4() -> Self {
            let mut remote_addr = [0; 16];
            remote_addr[..4].copy_from_slice(&[192, 0, 2, 7]);
            Record {
                kind: KIND_TCP_BUFFER_LIMIT,
                direction: DIRECTION_RECEIVE,
                family: AF_INET,
                remote_port: 40000,
                netns_cookie: 0x1122_3344_5566_7788,
                buffer_bytes: 6_291_456,
                limit_bytes: 6_291_456,
                queued_bytes: 123_456,
                srtt_us: 250,
                remote_addr,
            }
        }

        fn bytes(&self) -> Vec<u8> {
            let mut b = Vec::with_capacity(TCP_BUFFER_RECORD_LEN);
            b.extend_from_slice(&self.kind.to_ne_bytes());
            b.push(self.direction);
            b.push(self.family);
            b.extend_from_slice(&self.remote_port.to_ne_bytes());
            b.extend_from_slice(&0u16.to_ne_bytes());
            b.extend_from_slice(&self.netns_cookie.to_ne_bytes());
            b.extend_from_slice(&self.buffer_bytes.to_ne_bytes());
            b.extend_from_slice(&self.limit_bytes.to_ne_bytes());
            b.extend_from_slice(&self.queued_bytes.to_ne_bytes());
            b.extend_from_slice(&self.srtt_us.to_ne_bytes());
            b.extend_from_slice(&self.remote_addr);
            assert_eq!(b.len(), TCP_BUFFER_RECORD_LEN);
            b
        }
    }

    fn limit(event: Event) -> TcpBufferLimit {
        match event {
            Event::TcpBufferLimit(limit) => limit,
            other => panic!("expected tcp-buffer-limit, got {other:?}"),
        }
    }

    #[test]
    fn decodes_an_ipv4_receive_record_field_by_field() {
        let event = limit(decode(&Record::receive_v4().bytes()).unwrap());
        assert_eq!(event.netns, 0x1122_3344_5566_7788);
        assert_eq!(event.direction, BufferDirection::Receive);
        assert_eq!(event.buffer_bytes, 6_291_456);
        assert_eq!(event.limit_bytes, 6_291_456);
        assert_eq!(event.queued_bytes, 123_456);
        assert_eq!(event.srtt_us, 250);
        assert_eq!(event.remote_port, 40000);
        assert!(matches!(event.remote, IpAddr::V4((192, 0, 2, 7))), "{:?}", event.remote);
    }

    #[test]
    fn decodes_an_ipv6_send_record_as_high_and_low_halves_in_network_order() {
        let mut record = Record::receive_v4();
        record.direction = DIRECTION_SEND;
        record.family = AF_INET6;
        record.remote_addr = "2001:db8::1:2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        record.queued_bytes = 4_194_304;
        let event = limit(decode(&record.bytes()).unwrap());
        assert_eq!(event.direction, BufferDirection::Send);
        assert_eq!(event.queued_bytes, 4_194_304);
        match event.remote {
            IpAddr::V6((hi, lo)) => {
                assert_eq!(hi, 0x2001_0db8_0000_0000);
                assert_eq!(lo, 0x0000_0000_0001_0002);
            }
            other => panic!("expected v6, got {other:?}"),
        }
    }

    #[test]
    fn reports_an_ipv4_mapped_ipv6_peer_as_ipv4() {
        let mut record = Record::receive_v4();
        record.family = AF_INET6;
        record.remote_addr = "::ffff:10.1.2.3".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let event = limit(decode(&record.bytes()).unwrap());
        assert!(matches!(event.remote, IpAddr::V4((10, 1, 2, 3))), "{:?}", event.remote);
    }

    #[test]
    fn loopback_ipv6_stays_ipv6() {
        let mut record = Record::receive_v4();
        record.family = AF_INET6;
        record.remote_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        let event = limit(decode(&record.bytes()).unwrap());
        assert!(matches!(event.remote, IpAddr::V6((0, 1))), "{:?}", event.remote);
    }

    #[test]
    fn rejects_truncated_and_overlong_records() {
        let bytes = Record::receive_v4().bytes();
        assert_eq!(decode(&[]), Err(DecodeError::TooShort { len: 0 }));
        assert_eq!(decode(&bytes[..1]), Err(DecodeError::TooShort { len: 1 }));
        assert_eq!(
            decode(&bytes[..TCP_BUFFER_RECORD_LEN - 1]),
            Err(DecodeError::WrongLength { kind: 1, len: 47, expected: TCP_BUFFER_RECORD_LEN })
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer),
            Err(DecodeError::WrongLength { kind: 1, len: 49, expected: TCP_BUFFER_RECORD_LEN })
        );
    }

    #[test]
    fn rejects_unknown_kind_direction_and_family() {
        let mut record = Record::receive_v4();
        record.kind = 7;
        assert_eq!(decode(&record.bytes()), Err(DecodeError::UnknownKind { kind: 7 }));
        let mut record = Record::receive_v4();
        record.direction = 2;
        assert_eq!(decode(&record.bytes()), Err(DecodeError::UnknownDirection { direction: 2 }));
        let mut record = Record::receive_v4();
        record.family = 1;
        assert_eq!(decode(&record.bytes()), Err(DecodeError::UnknownFamily { family: 1 }));
    }

    #[test]
    fn kind_and_netns_of_events() {
        let event = decode(&Record::receive_v4().bytes()).unwrap();
        assert_eq!(event_kind(&event), Some(EventKind::TcpBufferLimit));
        assert_eq!(event_netns(&event), Some(0x1122_3344_5566_7788));
        assert_eq!(event_kind(&Event::Lost(3)), None);
        assert_eq!(event_netns(&Event::Lost(3)), None);
    }
}
