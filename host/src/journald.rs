//! Logging natively to the systemd journal: every field of a log line
//! becomes a journal field (`policy` → `POLICY=`), and every kind of line
//! (its `event` field) gets a `MESSAGE_ID` of its own, so that
//! `journalctl -u wasmtune POLICY=tcp-buffer` or `MESSAGE_ID=…` select
//! lines without parsing text.
//!
//! Used when the daemon's standard error is the journal (systemd sets
//! `JOURNAL_STREAM` to that stream's device and inode) or when asked with
//! `--log-format journal`. The protocol is the journal's native one: one
//! datagram per entry to `/run/systemd/journal/socket`; an entry too big
//! for a datagram goes through a sealed memory file, as systemd's own
//! `sd_journal_send` does.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use sha2::{Digest, Sha256};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// Where journald listens for native entries.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// What every entry is filed under (`journalctl -t wasmtune`).
const IDENTIFIER: &str = "wasmtune";

/// Sends each event to the journal as one entry.
pub struct JournaldLayer {
    socket: UnixDatagram,
}

impl JournaldLayer {
    /// Connects to journald's native socket.
    pub fn connect() -> std::io::Result<JournaldLayer> {
        JournaldLayer::connect_to(Path::new(JOURNAL_SOCKET))
    }

    fn connect_to(path: &Path) -> std::io::Result<JournaldLayer> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        Ok(JournaldLayer { socket })
    }

    fn send(&self, entry: &[u8]) {
        match self.socket.send(entry) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) || e.raw_os_error() == Some(libc::ENOBUFS) => {
                if let Err(e) = self.send_through_memfd(entry) {
                    // The journal is where this would have been said.
                    eprintln!("wasmtune: a log entry of {} bytes could not reach the journal: {e}", entry.len());
                }
            }
            // A journal that is restarting loses the entry; saying so on
            // stderr would land in the journal's stream anyway.
            Err(_) => {}
        }
    }

    /// An entry too big for one datagram: written to a sealed memory file
    /// whose descriptor is sent instead.
    fn send_through_memfd(&self, entry: &[u8]) -> std::io::Result<()> {
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        // SAFETY: a valid NUL-terminated name; the returned descriptor is
        // owned from here on.
        let fd =
            unsafe { libc::memfd_create(c"wasmtune-journal".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(owned);
        file.write_all(entry)?;
        let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fds = [file.as_raw_fd()];
        sendmsg::<()>(self.socket.as_raw_fd(), &[], &[ControlMessage::ScmRights(&fds)], MsgFlags::empty(), None)
            .map_err(std::io::Error::from)?;
        Ok(())
    }
}

impl<S: Subscriber> Layer<S> for JournaldLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = EntryFields::default();
        event.record(&mut fields);
        let metadata = event.metadata();
        let mut entry = Vec::with_capacity(256);
        put_field(&mut entry, "MESSAGE", fields.message.as_deref().unwrap_or(""));
        put_field(&mut entry, "PRIORITY", priority(*metadata.level()));
        put_field(&mut entry, "SYSLOG_IDENTIFIER", IDENTIFIER);
        if let Some(kind) = &fields.event {
            put_field(&mut entry, "MESSAGE_ID", &message_id(kind));
        }
        if let Some(file) = metadata.file() {
            put_field(&mut entry, "CODE_FILE", file);
        }
        if let Some(line) = metadata.line() {
            put_field(&mut entry, "CODE_LINE", &line.to_string());
        }
        put_field(&mut entry, "TARGET", metadata.target());
        for (name, value) in &fields.others {
            put_field(&mut entry, name, value);
        }
        self.send(&entry);
    }
}

/// The fields of one event, named as the journal wants them.
#[derive(Default)]
struct EntryFields {
    message: Option<String>,
    event: Option<String>,
    others: Vec<(String, String)>,
}

impl Visit for EntryFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl EntryFields {
    fn record(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = Some(value),
            name => {
                if name == "event" {
                    self.event = Some(value.clone());
                }
                if let Some(name) = journal_name(name) {
                    self.others.push((name, value));
                }
            }
        }
    }
}

/// A field name as the journal accepts it: upper case letters, digits and
/// underscores, not starting with an underscore or a digit (those are the
/// journal's own), and none of the names this layer sets itself.
fn journal_name(name: &str) -> Option<String> {
    let upper: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
    let upper = upper.trim_start_matches(|c: char| c == '_' || c.is_ascii_digit()).to_string();
    let reserved = ["MESSAGE", "MESSAGE_ID", "PRIORITY", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "TARGET"];
    (!upper.is_empty() && !reserved.contains(&upper.as_str())).then_some(upper)
}

/// syslog's priority for a level.
fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        Level::DEBUG | Level::TRACE => "7",
    }
}

/// The `MESSAGE_ID` of one kind of line: the first 128 bits of
/// SHA-256("wasmtune:" + kind), as 32 hexadecimal digits. Stable across
/// versions and machines, so a filter or catalog written once keeps working.
pub fn message_id(kind: &str) -> String {
    let digest = Sha256::digest(format!("wasmtune:{kind}").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// One field in the native protocol: `NAME=value\n`, or, when the value
/// holds a newline, `NAME\n`, its length as 64-bit little endian, the value
/// and `\n`.
fn put_field(entry: &mut Vec<u8>, name: &str, value: &str) {
    entry.extend_from_slice(name.as_bytes());
    if value.contains('\n') {
        entry.push(b'\n');
        entry.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        entry.push(b'=');
    }
    entry.extend_from_slice(value.as_bytes());
    entry.push(b'\n');
}

/// Whether standard error is the journal: systemd then sets `JOURNAL_STREAM`
/// to `DEVICE:INODE` of the stream it connected, which a redirected stderr
/// no longer matches.
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else { return false };
    // fstat, not a path: the journal's stream is a socket, which
    // /proc/self/fd/2 cannot open.
    let Ok(stderr) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else { return false };
    stream_matches(&stream.to_string_lossy(), stderr.st_dev, stderr.st_ino)
}

fn stream_matches(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        .is_some_and(|(d, i)| d == dev && i == ino)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn field_names_become_journal_names() {
        assert_eq!(journal_name("policy").as_deref(), Some("POLICY"));
        assert_eq!(journal_name("learning_rate").as_deref(), Some("LEARNING_RATE"));
        assert_eq!(journal_name("dry-run").as_deref(), Some("DRY_RUN"));
        assert_eq!(journal_name("_pid").as_deref(), Some("PID"));
        assert_eq!(journal_name("1st").as_deref(), Some("ST"));
        assert_eq!(journal_name("priority"), None);
        assert_eq!(journal_name("__"), None);
    }

    #[test]
    fn values_with_newlines_use_the_length_prefixed_form() {
        let mut entry = Vec::new();
        put_field(&mut entry, "A", "one");
        put_field(&mut entry, "B", "two\nlines");
        let mut expected = b"A=one\nB\n".to_vec();
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(b"two\nlines\n");
        assert_eq!(entry, expected);
    }

    #[test]
    fn message_ids_are_stable_and_distinct() {
        let change = message_id("sysctl-change");
        assert_eq!(change.len(), 32);
        assert!(change.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(change, message_id("sysctl-change"));
        assert_ne!(change, message_id("ready"));
        // Documented in docs/operations.md; a change here breaks filters.
        assert_eq!(message_id("ready"), READY_ID);
    }

    const READY_ID: &str = "9034bfc7abb66b07f9374328470ca301";

    #[test]
    fn journal_stream_must_name_this_stderr() {
        assert!(stream_matches("8:42", 8, 42));
        assert!(!stream_matches("8:42", 8, 43));
        assert!(!stream_matches("garbage", 8, 42));
        assert!(!stream_matches("", 8, 42));
    }

    #[test]
    fn an_event_reaches_the_socket_as_one_entry_with_its_fields() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let path = dir.path().join("journal.sock");
        let journal = UnixDatagram::bind(&path).expect("bind");
        let layer = JournaldLayer::connect_to(&path).expect("connect");
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(event = "sysctl-change", policy = "tcp-buffer", netns = "rx", old = 4, "changed\nsomething");
        });
        let mut buf = vec![0u8; 65536];
        let n = journal.recv(&mut buf).expect("an entry");
        let entry = String::from_utf8_lossy(&buf[..n]).to_string();
        for field in ["PRIORITY=6", "SYSLOG_IDENTIFIER=wasmtune", "POLICY=tcp-buffer", "NETNS=rx", "OLD=4"] {
            assert!(entry.lines().any(|l| l == field), "{field} missing from {entry:?}");
        }
        assert!(entry.contains(&format!("MESSAGE_ID={}", message_id("sysctl-change"))), "{entry:?}");
        assert!(entry.contains("EVENT=sysctl-change"), "{entry:?}");
        assert!(entry.starts_with("MESSAGE\n"), "multi-line message is length-prefixed: {entry:?}");
    }

    #[test]
    fn an_entry_too_big_for_a_datagram_goes_through_a_memory_file() {
        let dir = tempfile::tempdir().expect("scratch dir");
        let path = dir.path().join("journal.sock");
        let journal = UnixDatagram::bind(&path).expect("bind");
        let layer = JournaldLayer::connect_to(&path).expect("connect");
        let big = "x".repeat(4 << 20);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || tracing::info!(blob = %big, "big"));
        let mut buf = [0u8; 16];
        let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let msg = nix::sys::socket::recvmsg::<()>(
            journal.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("a message");
        let fd = msg
            .cmsgs()
            .expect("control messages")
            .find_map(|c| match c {
                nix::sys::socket::ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
                _ => None,
            })
            .expect("a descriptor");
        // SAFETY: the descriptor was just received and is owned here.
        let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // The descriptor shares the sender's file offset, at the end:
        // journald reads from the start, as this does.
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).expect("rewind");
        let mut text = String::new();
        std::io::Read::read_to_string(&mut file, &mut text).expect("read the memory file");
        assert!(text.contains(&format!("BLOB={big}\n")), "the whole value arrived");
    }
}
