//! The trusted public keys: minisign `.pub` files in the key directory
//! (`/etc/wasmtune/keys` unless `keys-dir` says otherwise). Whoever can add
//! a key can sign any policy, so the directory and every key in it must be
//! as trustworthy as the daemon: root's (or the daemon's user's), writable
//! by nobody else.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A public key file is two short lines; anything longer is not one.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// A minisign key id: eight bytes, shown as minisign shows them (16
/// upper-case hex digits of the little-endian number), so the id in a
/// refusal is the one `minisign -V` and the key file's comment print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// The id from its eight bytes, as minisign's key types hand them out.
    pub fn from_bytes(bytes: &[u8]) -> Option<KeyId> {
        Some(KeyId(bytes.try_into().ok()?))
    }

    /// The id inside a minisign base64 blob (public key or signature line):
    /// two bytes of algorithm, then the eight of the id.
    pub fn of_base64(line: &str) -> Option<KeyId> {
        use ct_codecs::{Base64, Decoder};
        let bytes = Base64::decode_to_vec(line.trim(), None).ok()?;
        let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
        Some(KeyId(id))
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

/// One trusted key and the file it came from (named in log lines, so the
/// administrator knows which key vouched for a policy).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub id: KeyId,
    pub file: PathBuf,
    pub key: minisign_verify::PublicKey,
}

/// The keys a signature may be by.
#[derive(Debug, Clone)]
pub struct Keyring {
    /// Where they were read from, or what was named on the command line.
    pub origin: PathBuf,
    keys: Vec<TrustedKey>,
}

/// Why the keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("the key directory {dir} does not exist")]
    Missing { dir: PathBuf },
    #[error("cannot read the key directory {dir}: {source}")]
    Read { dir: PathBuf, source: std::io::Error },
    #[error("the key directory {dir} is {problem}; whoever can write it could add a key")]
    UnsafeDir { dir: PathBuf, problem: String },
    #[error("key file {file}: {problem}")]
    BadKey { file: PathBuf, problem: String },
    #[error("the key directory {dir} holds no public key (no *.pub file)")]
    Empty { dir: PathBuf },
}

impl Keyring {
    /// Every `*.pub` file of `dir` (hidden files skipped, as in policy
    /// directories). A key that cannot be read is an error, not skipped:
    /// the administrator put it there to be used.
    pub fn load_dir(dir: &Path) -> Result<Keyring, KeyringError> {
        let meta = match std::fs::metadata(dir) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyringError::Missing { dir: dir.to_path_buf() });
            }
            Err(source) => return Err(KeyringError::Read { dir: dir.to_path_buf(), source }),
        };
        if !meta.is_dir() {
            return Err(KeyringError::UnsafeDir { dir: dir.to_path_buf(), problem: "not a directory".into() });
        }
        check_owner_and_mode(&meta).map_err(|problem| KeyringError::UnsafeDir { dir: dir.to_path_buf(), problem })?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|source| KeyringError::Read { dir: dir.to_path_buf(), source })?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .filter(|p| p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.')))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(KeyringError::Empty { dir: dir.to_path_buf() });
        }
        let keys = files.iter().map(|file| read_key(file)).collect::<Result<Vec<_>, _>>()?;
        Ok(Keyring { origin: dir.to_path_buf(), keys })
    }

    /// The keys named one by one (`wasmtune policy verify --key`), held to
    /// the same file checks as those of a key directory.
    pub fn load_files(files: &[PathBuf]) -> Result<Keyring, KeyringError> {
        let keys = files.iter().map(|file| read_key(file)).collect::<Result<Vec<_>, _>>()?;
        let origin = match files {
            [one] => one.clone(),
            _ => PathBuf::from("the keys named"),
        };
        Ok(Keyring { origin, keys })
    }

    /// The key with this id, if it is trusted.
    pub fn find(&self, id: KeyId) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }
}

/// Root's (or the daemon's user's), and writable by nobody else.
fn check_owner_and_mode(meta: &std::fs::Metadata) -> Result<(), String> {
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!("owned by uid {}, not by root or the daemon's user", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("writable by group or others (mode {:o})", meta.mode() & 0o7777));
    }
    Ok(())
}

/// Reads one key file, checked through the descriptor it was read from.
fn read_key(file: &Path) -> Result<TrustedKey, KeyringError> {
    let bad = |problem: String| KeyringError::BadKey { file: file.to_path_buf(), problem };
    // O_NONBLOCK: a FIFO put in place of a key cannot stall the start.
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(file)
        .map_err(|e| bad(format!("cannot open: {e}")))?;
    let meta = opened.metadata().map_err(|e| bad(format!("cannot inspect: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(bad("not a regular file".into()));
    }
    check_owner_and_mode(&meta).map_err(bad)?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(bad(format!("{} bytes: not a minisign public key", meta.len())));
    }
    let mut text = String::new();
    opened.take(MAX_KEY_FILE_BYTES).read_to_string(&mut text).map_err(|e| bad(format!("cannot read: {e}")))?;
    let (id, key) = parse_public_key(&text).map_err(bad)?;
    Ok(TrustedKey { id, file: file.to_path_buf(), key })
}

/// A minisign public key: the `minisign.pub` format (an untrusted comment
/// line, then the key), or the base64 key line alone.
pub fn parse_public_key(text: &str) -> Result<(KeyId, minisign_verify::PublicKey), String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .ok_or("no key in it: expected a minisign public key (`minisign -G`, `wasmtune policy keygen`)")?;
    let key =
        minisign_verify::PublicKey::from_base64(line).map_err(|e| format!("not a minisign Ed25519 public key: {e}"))?;
    let id = KeyId::of_base64(line).ok_or("not a minisign Ed25519 public key: no key id")?;
    Ok((id, key))
}
