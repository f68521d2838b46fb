//! The host's side of the compiled-component cache: it opens the files, the
//! runtime process only reads or writes the descriptors it is handed (its
//! system-call filter refuses every call that names a path).
//!
//! The directory is root's, mode 0700. An entry is `<sha256 of the
//! component>-<engine key>.cwasm`, root's, mode 0600. For a component
//! compiled before, the host hands over the entry open for reading; else a
//! fresh temporary file open for writing, renamed into place only when the
//! runtime says it wrote the compiled component. The host never reads an
//! entry: loading one runs it as native code, which only the unprivileged
//! runtime does.
//!
//! What a poisoned entry can do: only the runtime process writes entries,
//! so a compromised runtime can leave one that compromises the next
//! runtime, which has the same user and the same confinement and no more.
//! Entries written by a runtime that the host killed or that died are
//! removed, so one that misbehaved leaves nothing behind.

use std::collections::HashMap;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::UnlinkatFlags;
use sha2::{Digest, Sha256};

use crate::runtime::engine::hex;
use crate::runtime::protocol::{CacheFile, CacheUse};

/// Longest engine key accepted from the runtime (it is a 16-digit hex hash).
const MAX_ENGINE_KEY: usize = 32;

pub struct CacheBroker {
    dir: OwnedFd,
    path: PathBuf,
    /// Entries each runtime process wrote, by its number.
    stored_by: Mutex<HashMap<u64, Vec<String>>>,
    temporaries: AtomicU64,
}

/// What the host hands over with one `Load`.
pub struct Offer {
    kind: CacheFile,
    fd: Option<OwnedFd>,
    /// The entry's name, and for `Empty` the temporary file's.
    entry: String,
    temporary: Option<String>,
}

impl Offer {
    pub fn none() -> Offer {
        Offer { kind: CacheFile::None, fd: None, entry: String::new(), temporary: None }
    }

    pub fn kind(&self) -> CacheFile {
        self.kind
    }

    pub fn descriptor(&self) -> Option<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.fd.as_ref().map(|fd| fd.as_fd())
    }
}

impl CacheBroker {
    /// Opens (or creates) the directory, which must be root's; mode 0700.
    pub fn open(path: &Path) -> std::io::Result<CacheBroker> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() || !meta.is_dir() => {
                return Err(std::io::Error::other("not a directory (a symlink is refused)"));
            }
            Ok(_) => {}
            Err(_) => std::fs::create_dir_all(path)?,
        }
        let dir = nix::fcntl::open(path, OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(std::io::Error::from)?;
        let owner = std::fs::File::from(dir.try_clone()?).metadata()?.uid();
        if owner != nix::unistd::geteuid().as_raw() {
            return Err(std::io::Error::other(format!("owned by uid {owner}, not by the daemon's user")));
        }
        nix::sys::stat::fchmod(&dir, Mode::from_bits_truncate(0o700)).map_err(std::io::Error::from)?;
        Ok(CacheBroker { dir, path: path.to_path_buf(), stored_by: Mutex::default(), temporaries: AtomicU64::new(0) })
    }

    /// The file to hand over for `bytes` compiled by an engine with key
    /// `engine`: the entry when there is a sound one, else a fresh file.
    /// Any failure offers nothing: the runtime compiles.
    pub fn offer(&self, bytes: &[u8], engine: &str, process: u64) -> Offer {
        if engine.is_empty() || engine.len() > MAX_ENGINE_KEY || !engine.bytes().all(|b| b.is_ascii_hexdigit()) {
            tracing::warn!(engine, "compiled-policy cache not used: the runtime's engine key is not a hex hash");
            return Offer::none();
        }
        let entry = format!("{}-{engine}.cwasm", hex(&Sha256::digest(bytes)));
        match self.open_entry(&entry) {
            Ok(Some(fd)) => return Offer { kind: CacheFile::Compiled, fd: Some(fd), entry, temporary: None },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(file = %self.path.join(&entry).display(), "compiled policy removed, recompiling: {e}");
                self.remove(&entry);
            }
        }
        let n = self.temporaries.fetch_add(1, Ordering::Relaxed);
        let temporary = format!("{entry}.tmp-{}-{process}-{n}", std::process::id());
        self.remove(&temporary);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match nix::fcntl::openat(&self.dir, temporary.as_str(), flags, Mode::from_bits_truncate(0o600)) {
            Ok(fd) => Offer { kind: CacheFile::Empty, fd: Some(fd), entry, temporary: Some(temporary) },
            Err(errno) => {
                tracing::warn!(dir = %self.path.display(), "cannot cache a compiled policy: {errno}");
                Offer::none()
            }
        }
    }

    /// After the runtime answered: keeps what it wrote, drops what it could
    /// not use. `used`: `None` when the load failed.
    pub fn settle(&self, offer: Offer, used: Option<CacheUse>, process: u64) {
        drop(offer.fd);
        match (offer.kind, used, offer.temporary) {
            (CacheFile::Empty, Some(CacheUse::Stored), Some(temporary)) => {
                match nix::fcntl::renameat(&self.dir, temporary.as_str(), &self.dir, offer.entry.as_str()) {
                    Ok(()) => {
                        let mut stored = self.stored_by.lock().unwrap_or_else(PoisonError::into_inner);
                        stored.entry(process).or_default().push(offer.entry);
                    }
                    Err(errno) => {
                        tracing::warn!(dir = %self.path.display(), "cannot keep a compiled policy: {errno}");
                        self.remove(&temporary);
                    }
                }
            }
            (CacheFile::Empty, _, Some(temporary)) => self.remove(&temporary),
            // Loaded from an entry the runtime then found unusable (another
            // wasmtime build, a truncated file): gone, recompiled next time.
            (CacheFile::Compiled, Some(CacheUse::Unused), _) => self.remove(&offer.entry),
            _ => {}
        }
    }

    /// Removes every entry runtime process `process` wrote: it was killed
    /// for misbehaving, or died, and nothing it left is trusted.
    pub fn forget_process(&self, process: u64) {
        let entries = self.stored_by.lock().unwrap_or_else(PoisonError::into_inner).remove(&process);
        for entry in entries.unwrap_or_default() {
            self.remove(&entry);
        }
    }

    /// A sound entry, open for reading: a regular file of the daemon's
    /// user (root), private to it. Never follows a symlink and never blocks on a FIFO.
    fn open_entry(&self, entry: &str) -> std::io::Result<Option<OwnedFd>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match nix::fcntl::openat(&self.dir, entry, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        };
        let file = std::fs::File::from(fd);
        let meta = file.metadata()?;
        let own = nix::unistd::geteuid().as_raw();
        if !meta.file_type().is_file() || meta.uid() != own || meta.mode() & 0o077 != 0 || meta.nlink() != 1 {
            return Err(std::io::Error::other("not a regular file private to the daemon's user"));
        }
        Ok(Some(OwnedFd::from(file)))
    }

    fn remove(&self, name: &str) {
        let _ = nix::unistd::unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker() -> (tempfile::TempDir, CacheBroker) {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = CacheBroker::open(&dir.path().join("compiled")).expect("open the cache");
        (dir, broker)
    }

    #[test]
    fn a_stored_entry_is_offered_next_time_and_a_planted_one_never_is() {
        let (_dir, broker) = broker();
        let component = b"component bytes";
        let first = broker.offer(component, "00ff", 1);
        assert_eq!(first.kind(), CacheFile::Empty);
        let fd = first.descriptor().expect("a file to write").try_clone_to_owned().expect("dup");
        std::io::Write::write_all(&mut std::fs::File::from(fd), b"compiled").expect("write");
        broker.settle(first, Some(CacheUse::Stored), 1);
        let second = broker.offer(component, "00ff", 2);
        assert_eq!(second.kind(), CacheFile::Compiled);
        broker.settle(second, Some(CacheUse::Loaded), 2);

        // A runtime that died: what it wrote is gone.
        broker.forget_process(1);
        assert_eq!(broker.offer(component, "00ff", 3).kind(), CacheFile::Empty);

        // Planted: a symlink, a FIFO, a file others may write.
        let entry = format!("{}-00ff.cwasm", hex(&Sha256::digest(b"planted")));
        let path = broker.path.join(&entry);
        std::os::unix::fs::symlink("/etc/passwd", &path).expect("symlink");
        assert_eq!(broker.offer(b"planted", "00ff", 4).kind(), CacheFile::Empty);
        assert!(std::fs::symlink_metadata(&path).is_err(), "the planted symlink is removed");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).expect("fifo");
        assert_eq!(broker.offer(b"planted", "00ff", 4).kind(), CacheFile::Empty);
        std::fs::write(&path, b"x").expect("write");
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666)).expect("chmod");
        assert_eq!(broker.offer(b"planted", "00ff", 4).kind(), CacheFile::Empty);

        // A key that is not a hex hash could name any path: no cache.
        assert_eq!(broker.offer(component, "../../etc", 5).kind(), CacheFile::None);
    }
}
