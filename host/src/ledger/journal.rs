//! The journal file: `<state dir>/journal.jsonl`, JSON lines appended and
//! synced one record at a time, locked by the one process that writes it.
//!
//! A crash can cut the last line short (or leave zeros where the file system
//! had not written data yet). Replay keeps every record before such a torn
//! tail, says it found one, and the writer cuts it off before appending, so
//! the next record starts on a line of its own. An unreadable line followed
//! by readable ones is not a crash artefact, and replay refuses it.

use std::fs::{DirBuilder, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::LedgerError;
use super::record::Record;

/// The journal's file name inside the state directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// Only root reads the state directory and the journal: it names namespaces
/// and the reasons of every change.
const STATE_DIR_MODE: u32 = 0o700;
const JOURNAL_MODE: u32 = 0o600;

/// The records read from a journal.
#[derive(Debug, Default, PartialEq)]
pub struct Replay {
    pub records: Vec<Record>,
    /// A torn last line (a crash mid-write), ignored.
    pub torn_tail: Option<TornTail>,
    /// Bytes of the file that hold whole records.
    valid_len: u64,
    /// The last record is whole but its newline was never written.
    missing_newline: bool,
}

/// Where the torn tail starts and how long it is.
#[derive(Debug, PartialEq, Eq)]
pub struct TornTail {
    /// 1-based line number.
    pub line: usize,
    pub bytes: usize,
}

/// Where a compacted journal is written before it is renamed into place.
const COMPACTING_FILE: &str = "journal.jsonl.compacting";

/// The open, locked journal.
pub struct Journal {
    file: Flock<File>,
    path: PathBuf,
    /// The state directory, checked once: every later open and rename is
    /// relative to it.
    dir: OwnedFd,
    /// Bytes in the file.
    len: u64,
}

impl Journal {
    /// The journal's path in a state directory.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(JOURNAL_FILE)
    }

    /// Opens (creating if needed: directory 0700, file 0600) and locks the
    /// journal, replays it, and cuts off a torn tail so appends start clean.
    /// Fails if another process holds the journal.
    pub fn open(state_dir: &Path) -> Result<(Journal, Replay), LedgerError> {
        let dir = ensure_state_dir(state_dir)?;
        let path = Journal::path_in(state_dir);
        let open_error = |source| LedgerError::Open { path: path.clone(), source };
        // Left by a compaction that stopped before its rename: the journal
        // beside it is whole.
        let _ = nix::unistd::unlinkat(&dir, COMPACTING_FILE, nix::unistd::UnlinkatFlags::NoRemoveDir);
        // Relative to the checked directory, never through a symlink: the
        // path cannot be swapped between the check and the open.
        let fd = nix::fcntl::openat(
            &dir,
            JOURNAL_FILE,
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_APPEND
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(JOURNAL_MODE),
        )
        .map_err(|errno| open_error(std::io::Error::from(errno)))?;
        let file = File::from(fd);
        let facts = file.metadata().map_err(open_error)?;
        if !facts.file_type().is_file() || facts.nlink() > 1 || facts.uid() != nix::unistd::geteuid().as_raw() {
            return Err(LedgerError::Unsafe {
                path: path.clone(),
                problem: "the journal must be a regular file of this user's, with no other name".to_string(),
            });
        }
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((_, Errno::EWOULDBLOCK)) => return Err(LedgerError::InUse { path }),
            Err((_, errno)) => return Err(LedgerError::Lock { path, errno }),
        };
        // A compaction by the process that held the lock may have renamed a
        // new journal over the one opened here.
        let now_named = nix::sys::stat::fstatat(&dir, JOURNAL_FILE, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| open_error(std::io::Error::from(errno)))?;
        if now_named.st_ino != facts.ino() || now_named.st_dev != facts.dev() {
            return Err(LedgerError::InUse { path });
        }
        // A journal created by hand or by an older install may be readable by others.
        let metadata = file.metadata().map_err(open_error)?;
        if metadata.permissions().mode() & 0o777 != JOURNAL_MODE {
            file.set_permissions(std::fs::Permissions::from_mode(JOURNAL_MODE)).map_err(open_error)?;
        }
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(|source| LedgerError::Read { path: path.clone(), source })?;
        let replay = parse(&text, &path)?;
        if let Some(torn) = &replay.torn_tail {
            tracing::warn!(
                journal = %path.display(),
                line = torn.line,
                bytes = torn.bytes,
                "the journal ends in a torn record (the previous run stopped mid-write); ignoring it"
            );
            file.set_len(replay.valid_len).map_err(|source| LedgerError::Repair { path: path.clone(), source })?;
        }
        let mut journal = Journal { file, path, dir, len: replay.valid_len };
        if replay.missing_newline {
            journal.write_synced(b"\n")?;
        }
        Ok((journal, replay))
    }

    /// Reads a journal without locking or repairing it.
    pub fn replay(path: &Path) -> Result<Replay, LedgerError> {
        let text = std::fs::read(path).map_err(|source| LedgerError::Read { path: path.to_path_buf(), source })?;
        parse(&text, path)
    }

    /// Appends one record and waits until it is on disk.
    pub fn append(&mut self, record: &Record) -> Result<(), LedgerError> {
        let mut line = serde_json::to_vec(record).map_err(|source| LedgerError::Encode { source })?;
        line.push(b'\n');
        self.write_synced(&line)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the journal now.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Replaces the journal with `records` (a snapshot of what it adds up
    /// to), so that it does not grow without end. A crash at any point
    /// leaves either the old journal or the whole new one: the new file is
    /// written, locked and synced under another name, then renamed over the
    /// old one.
    pub fn replace_with(&mut self, records: &[Record]) -> Result<(), LedgerError> {
        let compact_error = |source| LedgerError::Compact { path: self.path.clone(), source };
        let fd = nix::fcntl::openat(
            &self.dir,
            COMPACTING_FILE,
            nix::fcntl::OFlag::O_RDWR
                | nix::fcntl::OFlag::O_APPEND
                | nix::fcntl::OFlag::O_CREAT
                | nix::fcntl::OFlag::O_TRUNC
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(JOURNAL_MODE),
        )
        .map_err(|errno| compact_error(std::io::Error::from(errno)))?;
        // Locked before it has its name, so no other process can take it.
        let mut file = Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| compact_error(std::io::Error::from(errno)))?;
        let mut text = Vec::new();
        for record in records {
            serde_json::to_writer(&mut text, record).map_err(|source| LedgerError::Encode { source })?;
            text.push(b'\n');
        }
        file.write_all(&text).map_err(compact_error)?;
        file.sync_data().map_err(compact_error)?;
        nix::fcntl::renameat(&self.dir, COMPACTING_FILE, &self.dir, JOURNAL_FILE)
            .map_err(|errno| compact_error(std::io::Error::from(errno)))?;
        nix::unistd::fsync(&self.dir).map_err(|errno| compact_error(std::io::Error::from(errno)))?;
        self.file = file;
        self.len = text.len() as u64;
        Ok(())
    }

    fn write_synced(&mut self, bytes: &[u8]) -> Result<(), LedgerError> {
        let append_error = |source| LedgerError::Append { path: self.path.clone(), source };
        // One write per record: appends are atomic with respect to other
        // appenders, and a crash tears at most this line.
        self.file.write_all(bytes).map_err(append_error)?;
        self.file.sync_data().map_err(append_error)?;
        self.len += bytes.len() as u64;
        Ok(())
    }
}

/// Creates the state directory (0700) if it is missing, and opens it. An
/// existing one may be a directory the administrator chose, but it must be
/// a real directory (not a symlink) of this user's that nobody else can
/// write; one that others can read only is used, with a warning.
fn ensure_state_dir(state_dir: &Path) -> Result<OwnedFd, LedgerError> {
    let create_error = |source| LedgerError::StateDir { path: state_dir.to_path_buf(), source };
    if let Err(error) = std::fs::symlink_metadata(state_dir) {
        if error.kind() != std::io::ErrorKind::NotFound {
            return Err(create_error(error));
        }
        DirBuilder::new().recursive(true).mode(STATE_DIR_MODE).create(state_dir).map_err(create_error)?;
        // The umask may have narrowed the mode; it cannot have widened it.
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(STATE_DIR_MODE)).map_err(create_error)?;
    }
    let dir = nix::fcntl::open(
        state_dir,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|errno| match errno {
        Errno::ELOOP | Errno::ENOTDIR => LedgerError::Unsafe {
            path: state_dir.to_path_buf(),
            problem: "it is a symlink or not a directory".to_string(),
        },
        other => create_error(std::io::Error::from(other)),
    })?;
    let facts = File::from(dir.try_clone().map_err(create_error)?).metadata().map_err(create_error)?;
    let mode = facts.permissions().mode() & 0o7777;
    let unsafe_because = |problem: String| LedgerError::Unsafe { path: state_dir.to_path_buf(), problem };
    if facts.uid() != nix::unistd::geteuid().as_raw() {
        return Err(unsafe_because(format!("it belongs to uid {}, not to this user", facts.uid())));
    }
    if mode & 0o022 != 0 {
        return Err(unsafe_because(format!("others may write to it (mode {mode:o}); chmod go-w it")));
    }
    if mode & 0o077 != 0 {
        tracing::warn!(state_dir = %state_dir.display(), mode = format!("{mode:o}"), "the state directory is readable by users other than its owner");
    }
    Ok(dir)
}

/// Reads journal bytes as [`Journal::open`] and [`Journal::replay`] do,
/// without a file: what a start, `wasmtune rollback` or the exit summary
/// would make of a journal holding them (errors name the file
/// `journal.jsonl`). The fuzz targets and property tests read journals
/// through this.
pub fn parse_journal(bytes: &[u8]) -> Result<Replay, LedgerError> {
    parse(bytes, Path::new(JOURNAL_FILE))
}

/// Parses journal text into records; see the module documentation for what
/// counts as a torn tail.
fn parse(text: &[u8], path: &Path) -> Result<Replay, LedgerError> {
    let mut replay = Replay::default();
    // The first unreadable line, held until a later readable line proves it
    // is corruption rather than a torn tail.
    let mut unreadable: Option<(usize, usize, serde_json::Error)> = None;
    let mut offset = 0usize;
    for (index, raw) in text.split_inclusive(|byte| *byte == b'\n').enumerate() {
        let line_number = index + 1;
        let line_start = offset;
        offset += raw.len();
        let terminated = raw.ends_with(b"\n");
        let content = raw.strip_suffix(b"\n").unwrap_or(raw);
        if content.iter().all(u8::is_ascii_whitespace) {
            if unreadable.is_none() {
                replay.valid_len = offset as u64;
            }
            continue;
        }
        match serde_json::from_slice::<Record>(content) {
            Ok(record) => {
                if let Some((line, _, source)) = unreadable.take() {
                    return Err(LedgerError::Corrupt { path: path.to_path_buf(), line, source });
                }
                replay.records.push(record);
                replay.valid_len = offset as u64;
                replay.missing_newline = !terminated;
            }
            Err(source) => {
                if unreadable.is_none() {
                    unreadable = Some((line_number, line_start, source));
                }
            }
        }
    }
    if let Some((line, start, _)) = unreadable {
        replay.torn_tail = Some(TornTail { line, bytes: text.len() - start });
        replay.valid_len = start as u64;
        replay.missing_newline = false;
    }
    Ok(replay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    const A: &str = r#"{"kind":"session-start","pid":1,"time":5}"#;
    const B: &str = r#"{"kind":"applied","seq":1,"time":6}"#;

    fn parse_str(text: &str) -> Result<Replay, LedgerError> {
        parse(text.as_bytes(), Path::new("journal.jsonl"))
    }

    #[test]
    fn replays_whole_lines() {
        let replay = parse_str(&format!("{A}\n{B}\n")).expect("parse");
        assert_eq!(replay.records.len(), 2);
        assert_eq!(replay.records[1], Record::Applied { seq: 1, time: 6 });
        assert_eq!(replay.torn_tail, None);
        assert_eq!(replay.valid_len as usize, A.len() + B.len() + 2);
    }

    #[test]
    fn tolerates_a_truncated_last_line_and_says_where() {
        let torn = r#"{"kind":"intent","seq":2,"ti"#;
        let replay = parse_str(&format!("{A}\n{B}\n{torn}")).expect("parse");
        assert_eq!(replay.records.len(), 2);
        assert_eq!(replay.torn_tail, Some(TornTail { line: 3, bytes: torn.len() }));
        assert_eq!(replay.valid_len as usize, A.len() + B.len() + 2);
    }

    #[test]
    fn tolerates_zeros_left_by_a_crash_after_the_last_record() {
        let text = format!("{A}\n\0\0\0\0\n\0\0");
        let replay = parse_str(&text).expect("parse");
        assert_eq!(replay.records.len(), 1);
        assert_eq!(replay.torn_tail.map(|t| t.line), Some(2));
        assert_eq!(replay.valid_len as usize, A.len() + 1);
    }

    #[test]
    fn keeps_a_whole_last_record_whose_newline_is_missing() {
        let replay = parse_str(&format!("{A}\n{B}")).expect("parse");
        assert_eq!(replay.records.len(), 2);
        assert!(replay.missing_newline);
        assert_eq!(replay.torn_tail, None);
    }

    #[test]
    fn refuses_an_unreadable_line_in_the_middle() {
        let error = parse_str(&format!("{A}\nnot json\n{B}\n")).expect_err("corrupt");
        assert!(matches!(error, LedgerError::Corrupt { line: 2, .. }), "{error}");
    }

    #[test]
    fn creates_a_private_journal_and_cuts_a_torn_tail_before_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state_dir = dir.path().join("state");
        {
            let (mut journal, replay) = Journal::open(&state_dir).expect("open");
            assert!(replay.records.is_empty());
            journal.append(&Record::RollbackComplete { time: 1 }).expect("append");
        }
        let mode = |path: &Path| std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&state_dir), 0o700);
        assert_eq!(mode(&Journal::path_in(&state_dir)), 0o600);

        let mut file = OpenOptions::new().append(true).open(Journal::path_in(&state_dir)).expect("reopen");
        file.write_all(br#"{"kind":"applied","se"#).expect("tear");
        drop(file);

        let (mut journal, replay) = Journal::open(&state_dir).expect("open torn");
        assert_eq!(replay.records, vec![Record::RollbackComplete { time: 1 }]);
        assert!(replay.torn_tail.is_some());
        journal.append(&Record::RollbackComplete { time: 2 }).expect("append after tear");
        drop(journal);
        let replay = Journal::replay(&Journal::path_in(&state_dir)).expect("replay");
        assert_eq!(replay.records, vec![Record::RollbackComplete { time: 1 }, Record::RollbackComplete { time: 2 }]);
        assert_eq!(replay.torn_tail, None);
    }

    #[test]
    fn refuses_a_second_writer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_journal, _) = Journal::open(dir.path()).expect("first");
        let error = Journal::open(dir.path()).err().expect("second must fail");
        assert!(matches!(error, LedgerError::InUse { .. }), "{error}");
    }

    #[test]
    fn refuses_a_state_directory_others_may_write_or_that_is_a_symlink() {
        let root = tempfile::tempdir().expect("tempdir");
        let loose = root.path().join("loose");
        std::fs::create_dir(&loose).expect("mkdir");
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let error = Journal::open(&loose).err().expect("refused").to_string();
        assert!(error.contains("others may write"), "{error}");
        assert!(!Journal::path_in(&loose).exists(), "nothing created in it");

        let real = root.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let error = Journal::open(&link).err().expect("refused").to_string();
        assert!(error.contains("symlink"), "{error}");
    }

    #[test]
    fn a_journal_that_is_a_symlink_is_refused_and_its_target_left_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let state_dir = root.path().join("state");
        std::fs::create_dir(&state_dir).expect("mkdir");
        std::fs::set_permissions(&state_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let victim = root.path().join("victim.conf");
        std::fs::write(&victim, "not a journal\nat all").expect("write");
        std::os::unix::fs::symlink(&victim, Journal::path_in(&state_dir)).expect("symlink");
        assert!(Journal::open(&state_dir).is_err(), "a symlinked journal is refused");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "not a journal\nat all");
    }
}
