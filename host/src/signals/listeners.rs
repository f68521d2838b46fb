//! The listening TCP sockets of one namespace and how full their queues are,
//! asked of the kernel through a `NETLINK_SOCK_DIAG` socket (what `ss -lt`
//! uses). The socket is opened from inside the namespace and stays bound to
//! it, so a later dump never enters the namespace again.
//!
//! One dump per family asks for listeners (`TCP_LISTEN`: `idiag_rqueue` is
//! `sk_ack_backlog`, the accept queue; `idiag_wqueue` is
//! `sk_max_ack_backlog`) and request sockets (`TCP_SYN_RECV`: one per
//! half-open handshake in a SYN queue, `idiag_sport` the listener's port).

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SOCK_DIAG_BY_FAMILY` message type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLMSG_ERROR`, `NLMSG_DONE`.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP_REQUEST: u16 = 0x1 | 0x300;
/// TCP states as the kernel numbers them.
const TCP_SYN_RECV: u8 = 3;
const TCP_LISTEN: u8 = 10;
/// `sizeof(struct nlmsghdr)`.
const HEADER_LEN: usize = 16;
/// `sizeof(struct inet_diag_req_v2)`.
const REQUEST_LEN: usize = 56;
/// `sizeof(struct inet_diag_msg)`.
const MESSAGE_LEN: usize = 72;
/// Offsets in `struct inet_diag_msg`.
const STATE_AT: usize = 1;
const SPORT_AT: usize = 4;
const RQUEUE_AT: usize = 56;
const WQUEUE_AT: usize = 60;

/// One listening port of a namespace and its queues (summed over the
/// sockets listening on it: several addresses, `SO_REUSEPORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenerQueues {
    /// The port.
    pub port: u16,
    /// Half-open handshakes in its SYN queue (request sockets).
    pub syn_queued: u32,
    /// Completed connections waiting in its accept queue (`sk_ack_backlog`).
    pub established: u32,
    /// Its backlog (`sk_max_ack_backlog`: the `listen()` backlog capped by
    /// `somaxconn`), which bounds both queues.
    pub max_queued: u32,
}

impl ListenerQueues {
    /// Whether either queue is at its bound (the kernel drops, or answers
    /// with a cookie, once it is over). A backlog of 0 still admits one.
    pub fn full(&self) -> bool {
        let bound = self.max_queued.max(1);
        self.established >= bound || self.syn_queued >= bound
    }
}

/// Why a dump failed.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum ListenersError {
    /// The netlink socket could not be made.
    #[error("opening a NETLINK_SOCK_DIAG socket failed: {source}")]
    Open {
        /// The system error.
        source: std::io::Error,
    },
    /// The dump request could not be sent.
    #[error("sending a sock_diag dump request failed: {source}")]
    Send {
        /// The system error.
        source: std::io::Error,
    },
    /// Reading the answer failed (or timed out).
    #[error("reading the sock_diag dump failed: {source}")]
    Receive {
        /// The system error.
        source: std::io::Error,
    },
    /// The kernel refused the dump.
    #[error("the kernel refused a sock_diag dump of family {family}: errno {errno}")]
    Refused {
        /// The address family asked for.
        family: u8,
        /// The kernel's error number.
        errno: i32,
    },
}

/// A `NETLINK_SOCK_DIAG` socket bound to the namespace it was opened in.
#[derive(Debug)]
pub struct DiagSocket {
    fd: OwnedFd,
    sequence: u32,
}

impl DiagSocket {
    /// Opens the socket in the calling thread's namespace.
    pub fn open() -> Result<DiagSocket, ListenersError> {
        // SAFETY: socket(2) with constant arguments; the result is checked
        // and owned at once.
        let raw =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_SOCK_DIAG) };
        if raw < 0 {
            return Err(ListenersError::Open { source: std::io::Error::last_os_error() });
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // A dump that never ends must not stall the poller.
        let timeout = libc::timeval { tv_sec: 1, tv_usec: 0 };
        // SAFETY: setsockopt(2) on our descriptor with a timeval of the size passed.
        let set = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(ListenersError::Open { source: std::io::Error::last_os_error() });
        }
        Ok(DiagSocket { fd, sequence: 0 })
    }

    /// Every listening port of the namespace (IPv4 and IPv6) with its
    /// queues, by port. A family the namespace lacks contributes nothing.
    pub fn listeners(&mut self) -> Result<Vec<ListenerQueues>, ListenersError> {
        let mut ports = BTreeMap::new();
        self.dump(libc::AF_INET as u8, &mut ports)?;
        if let Err(error) = self.dump(libc::AF_INET6 as u8, &mut ports) {
            tracing::debug!(%error, "no IPv6 listeners to read in this namespace");
        }
        Ok(ports.into_values().collect())
    }

    fn dump(&mut self, family: u8, ports: &mut BTreeMap<u16, ListenerQueues>) -> Result<(), ListenersError> {
        self.sequence = self.sequence.wrapping_add(1);
        let request = dump_request(family, self.sequence);
        // SAFETY: send(2) of an initialised buffer of the length passed.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), request.as_ptr().cast(), request.len(), 0) };
        if sent < 0 {
            return Err(ListenersError::Send { source: std::io::Error::last_os_error() });
        }
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            // SAFETY: recv(2) into a buffer we own, of the length passed.
            let read = unsafe { libc::recv(self.fd.as_raw_fd(), buffer.as_mut_ptr().cast(), buffer.len(), 0) };
            let Ok(read) = usize::try_from(read) else {
                return Err(ListenersError::Receive { source: std::io::Error::last_os_error() });
            };
            if read == 0 {
                return Ok(());
            }
            match parse_messages(&buffer[..read], self.sequence, family, ports)? {
                Parsed::Done => return Ok(()),
                Parsed::More => {}
            }
        }
    }
}

/// `struct nlmsghdr` + `struct inet_diag_req_v2` asking for the TCP
/// listeners and request sockets of `family`.
fn dump_request(family: u8, sequence: u32) -> [u8; HEADER_LEN + REQUEST_LEN] {
    let mut request = [0u8; HEADER_LEN + REQUEST_LEN];
    request[0..4].copy_from_slice(&((HEADER_LEN + REQUEST_LEN) as u32).to_ne_bytes());
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request[6..8].copy_from_slice(&DUMP_REQUEST.to_ne_bytes());
    request[8..12].copy_from_slice(&sequence.to_ne_bytes());
    request[HEADER_LEN] = family;
    request[HEADER_LEN + 1] = libc::IPPROTO_TCP as u8;
    let states = (1u32 << TCP_LISTEN) | (1u32 << TCP_SYN_RECV);
    request[HEADER_LEN + 4..HEADER_LEN + 8].copy_from_slice(&states.to_ne_bytes());
    request
}

enum Parsed {
    Done,
    More,
}

/// Adds the sockets of one datagram of netlink messages to `ports`.
fn parse_messages(
    mut bytes: &[u8],
    sequence: u32,
    family: u8,
    ports: &mut BTreeMap<u16, ListenerQueues>,
) -> Result<Parsed, ListenersError> {
    let u32_at = |b: &[u8], at: usize| b.get(at..at + 4).and_then(|s| s.try_into().ok()).map(u32::from_ne_bytes);
    while bytes.len() >= HEADER_LEN {
        let Some(length) = u32_at(bytes, 0).map(|l| l as usize) else { break };
        if length < HEADER_LEN || length > bytes.len() {
            break;
        }
        let kind = u16::from_ne_bytes([bytes[4], bytes[5]]);
        let from_this_dump = u32_at(bytes, 8) == Some(sequence);
        let body = &bytes[HEADER_LEN..length];
        if from_this_dump {
            match kind {
                NLMSG_DONE => return Ok(Parsed::Done),
                NLMSG_ERROR => {
                    let errno = u32_at(body, 0).map_or(0, |e| (e as i32).wrapping_neg());
                    return if errno == 0 { Ok(Parsed::Done) } else { Err(ListenersError::Refused { family, errno }) };
                }
                SOCK_DIAG_BY_FAMILY if body.len() >= MESSAGE_LEN => add_socket(body, ports),
                _ => {}
            }
        }
        // Messages are aligned to 4 bytes.
        let next = (length + 3) & !3;
        bytes = bytes.get(next..).unwrap_or_default();
    }
    Ok(Parsed::More)
}

fn add_socket(message: &[u8], ports: &mut BTreeMap<u16, ListenerQueues>) {
    let at = |offset: usize| {
        u32::from_ne_bytes([message[offset], message[offset + 1], message[offset + 2], message[offset + 3]])
    };
    let port = u16::from_be_bytes([message[SPORT_AT], message[SPORT_AT + 1]]);
    let entry = ports.entry(port).or_insert(ListenerQueues { port, ..ListenerQueues::default() });
    match message[STATE_AT] {
        TCP_LISTEN => {
            entry.established = entry.established.saturating_add(at(RQUEUE_AT));
            entry.max_queued = entry.max_queued.saturating_add(at(WQUEUE_AT));
        }
        TCP_SYN_RECV => entry.syn_queued = entry.syn_queued.saturating_add(1),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(state: u8, port: u16, rqueue: u32, wqueue: u32, sequence: u32) -> Vec<u8> {
        let mut m = vec![0u8; HEADER_LEN + MESSAGE_LEN];
        m[0..4].copy_from_slice(&((HEADER_LEN + MESSAGE_LEN) as u32).to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m[8..12].copy_from_slice(&sequence.to_ne_bytes());
        let body = &mut m[HEADER_LEN..];
        body[STATE_AT] = state;
        body[SPORT_AT..SPORT_AT + 2].copy_from_slice(&port.to_be_bytes());
        body[RQUEUE_AT..RQUEUE_AT + 4].copy_from_slice(&rqueue.to_ne_bytes());
        body[WQUEUE_AT..WQUEUE_AT + 4].copy_from_slice(&wqueue.to_ne_bytes());
        m
    }

    #[test]
    fn listeners_and_request_sockets_add_up_per_port() {
        let mut datagram = message(TCP_LISTEN, 8080, 3, 2, 7);
        datagram.extend(message(TCP_SYN_RECV, 8080, 0, 0, 7));
        datagram.extend(message(TCP_SYN_RECV, 8080, 0, 0, 7));
        datagram.extend(message(TCP_LISTEN, 22, 0, 128, 7));
        // A stale answer to an earlier request is ignored.
        datagram.extend(message(TCP_LISTEN, 9999, 1, 1, 6));
        let mut ports = BTreeMap::new();
        assert!(matches!(parse_messages(&datagram, 7, 2, &mut ports), Ok(Parsed::More)));
        let busy = ports[&8080];
        assert_eq!((busy.established, busy.max_queued, busy.syn_queued), (3, 2, 2));
        assert!(busy.full());
        assert!(!ports[&22].full());
        assert!(!ports.contains_key(&9999));
    }

    #[test]
    fn done_and_errors_end_the_dump() {
        let mut done = vec![0u8; HEADER_LEN + 4];
        done[0..4].copy_from_slice(&20u32.to_ne_bytes());
        done[4..6].copy_from_slice(&NLMSG_DONE.to_ne_bytes());
        done[8..12].copy_from_slice(&1u32.to_ne_bytes());
        assert!(matches!(parse_messages(&done, 1, 2, &mut BTreeMap::new()), Ok(Parsed::Done)));
        let mut error = done.clone();
        error[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        error[16..20].copy_from_slice(&(-97i32).to_ne_bytes());
        assert!(matches!(
            parse_messages(&error, 1, 10, &mut BTreeMap::new()),
            Err(ListenersError::Refused { family: 10, errno: 97 })
        ));
    }

    #[test]
    fn a_backlog_of_zero_is_full_at_one() {
        let idle = ListenerQueues { port: 1, syn_queued: 0, established: 0, max_queued: 0 };
        assert!(!idle.full());
        assert!(ListenerQueues { established: 1, ..idle }.full());
    }

    #[test]
    fn dumps_this_namespace() {
        // Needs no privilege: any process may dump its own namespace.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut socket = DiagSocket::open().expect("open sock_diag");
        let found = socket.listeners().expect("dump");
        let mine = found.iter().find(|l| l.port == port).expect("our listener is listed");
        assert_eq!(mine.established, 0);
        assert!(mine.max_queued >= 1, "{mine:?}");
    }
}
