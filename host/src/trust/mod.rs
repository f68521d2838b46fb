//! Which policy files the administrator trusts, checked on the bytes the
//! watcher read once, before anything parses them: a pinned digest
//! (`[policies.NAME] digest`) and a detached minisign signature (`FILE.sig`)
//! by a key of the key directory, when `require-signatures` or
//! `[policies.NAME] signed` asks for one. A file that fails is refused
//! with the reason; what runs stays.
//!
//! Requirements are per policy name, and a file's policy name is in its
//! manifest, so a file is checked twice: under its file name (`NAME.wasm`)
//! before a byte of it is parsed, and under the name its manifest gives
//! once that is read, before anything is compiled. Built-ins are part of
//! the binary and are never checked: a pin or `signed` on a built-in's
//! name binds only a file that replaces it.
//!
//! Authors and packagers sign with [`sign`] (`wasmtune policy sign`).

pub mod keys;
pub mod sign;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::config::{AdminConfig, ConfigError, PolicyDigest};
use keys::{KeyId, Keyring};

/// A minisign signature is four short lines; a trusted comment of a few
/// kilobytes is already more than any signer writes.
const MAX_SIGNATURE_BYTES: u64 = 8192;

/// What the administrator's configuration asks of policy files.
#[derive(Debug, Default)]
pub struct Trust {
    /// `require-signatures = true`: every file.
    require_all: bool,
    /// `[policies.NAME] signed = true`.
    signed: BTreeSet<String>,
    /// `[policies.NAME] digest`.
    pins: BTreeMap<String, PolicyDigest>,
    /// Loaded when some signature is required, and then never empty.
    keyring: Option<Keyring>,
}

/// Why a signature is asked of a file: said with the refusal, so the
/// administrator knows which line to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Every,
    Policy(String),
}

impl std::fmt::Display for Requirement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requirement::Every => {
                write!(f, "the configuration requires every policy file to be signed (require-signatures = true)")
            }
            Requirement::Policy(name) => {
                write!(f, "the configuration requires policy {name} to be signed ([policies.{name}] signed = true)")
            }
        }
    }
}

/// Why a signature does not vouch for a file.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignatureError {
    #[error("no trusted key is loaded to check its signature")]
    NoKeys,
    #[error("it has no signature ({sig} does not exist)")]
    Missing { sig: PathBuf },
    #[error("its signature {sig} cannot be used: {problem}")]
    Unusable { sig: PathBuf, problem: String },
    #[error("its signature {sig} is by key {key}, which is not among the trusted keys ({keys})")]
    UnknownKey { sig: PathBuf, key: KeyId, keys: PathBuf },
    #[error(
        "its signature {sig} by key {key} ({key_file}) does not match its content: the file is not what was signed"
    )]
    Mismatch { sig: PathBuf, key: KeyId, key_file: PathBuf },
}

/// Why a file is refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Untrusted {
    #[error("refused: its digest sha256:{found} is not the one the configuration pins for policy {policy} ({pinned})")]
    DigestMismatch { policy: String, found: String, pinned: PolicyDigest },
    #[error("refused: {problem}; {why}")]
    Signature { problem: SignatureError, why: Requirement },
}

/// A signature that vouches for a file: by which key, with what the signer
/// said about it (the trusted comment is covered by the signature).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodSignature {
    pub key: KeyId,
    pub key_file: PathBuf,
    pub trusted_comment: String,
}

/// What the checks of one file found so far: the signature is verified
/// once, under whichever name first asks for it.
#[derive(Debug, Clone, Default)]
pub struct Checked {
    pub signature: Option<GoodSignature>,
    pub pinned: bool,
}

impl Trust {
    /// The configuration's requirements, with the keys they need. Asking
    /// for signatures with no usable key is an error at start, placed at
    /// the line that asks: every file would be refused otherwise.
    pub fn from_config(config: &AdminConfig) -> Result<Trust, ConfigError> {
        let require_all = config.require_signatures.as_ref().is_some_and(|r| *r.get_ref());
        let signed = config
            .policies
            .iter()
            .filter(|(_, p)| p.signed.as_ref().is_some_and(|s| *s.get_ref()))
            .map(|(name, _)| name.clone())
            .collect();
        let pins = config.policies.iter().filter_map(|(name, p)| Some((name.clone(), p.digest.clone()?))).collect();
        let keyring = match config.first_signature_requirement() {
            None => None,
            Some((span, field)) => {
                let dir = config.keys_dir();
                let keyring = Keyring::load_dir(&dir).map_err(|e| {
                    config.error_at(span, &field, format!("signatures are required, but {e} (keys-dir)"))
                })?;
                Some(keyring)
            }
        };
        Ok(Trust { require_all, signed, pins, keyring })
    }

    /// Whether any file check is asked for at all.
    pub fn is_active(&self) -> bool {
        self.require_all || !self.signed.is_empty() || !self.pins.is_empty()
    }

    pub fn keyring(&self) -> Option<&Keyring> {
        self.keyring.as_ref()
    }

    /// The digest pinned for policy `name`.
    pub fn pin(&self, name: &str) -> Option<&PolicyDigest> {
        self.pins.get(name)
    }

    /// Why a file of policy `name` must be signed, if it must.
    pub fn signature_required(&self, name: &str) -> Option<Requirement> {
        if self.require_all {
            Some(Requirement::Every)
        } else if self.signed.contains(name) {
            Some(Requirement::Policy(name.to_string()))
        } else {
            None
        }
    }

    /// Checks `bytes`, read from `file`, against what is asked of policy
    /// `name`: its pin, and a signature when one is required (verified
    /// once per file: `checked` remembers it for the second call).
    pub fn check(
        &self,
        name: &str,
        file: &Path,
        bytes: &[u8],
        digest: &str,
        checked: &mut Checked,
    ) -> Result<(), Untrusted> {
        if let Some(pinned) = self.pins.get(name) {
            if !pinned.matches(digest) {
                return Err(Untrusted::DigestMismatch {
                    policy: name.to_string(),
                    found: digest.to_string(),
                    pinned: pinned.clone(),
                });
            }
            checked.pinned = true;
        }
        if checked.signature.is_none()
            && let Some(why) = self.signature_required(name)
        {
            // Only a requirement loads the keyring, so it is there; were it
            // not, the file is refused rather than trusted.
            let Some(keyring) = &self.keyring else {
                return Err(Untrusted::Signature { problem: SignatureError::NoKeys, why });
            };
            let good =
                verify_signature(keyring, file, bytes).map_err(|problem| Untrusted::Signature { problem, why })?;
            checked.signature = Some(good);
        }
        Ok(())
    }
}

/// Where a policy file's detached signature is: beside it, `FILE.sig`.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut sig = file.as_os_str().to_owned();
    sig.push(".sig");
    PathBuf::from(sig)
}

/// Verifies `bytes` (the policy file's content as read once) against the
/// signature beside `file`, by one of the keys of `keyring`. Shared by the
/// daemon and `wasmtune policy verify`, so both give the same verdict.
pub fn verify_signature(keyring: &Keyring, file: &Path, bytes: &[u8]) -> Result<GoodSignature, SignatureError> {
    let sig = signature_path(file);
    let text = read_signature(&sig)?;
    let unusable = |problem: String| SignatureError::Unusable { sig: sig.clone(), problem };
    let signature =
        minisign_verify::Signature::decode(&text).map_err(|e| unusable(format!("not a minisign signature: {e}")))?;
    // The second line carries the id of the key that made it.
    let key = text.lines().nth(1).and_then(KeyId::of_base64).ok_or_else(|| unusable("no key id in it".into()))?;
    let trusted = keyring.find(key).ok_or_else(|| SignatureError::UnknownKey {
        sig: sig.clone(),
        key,
        keys: keyring.origin.clone(),
    })?;
    // Legacy (not prehashed) signatures are refused: minisign has made
    // prehashed ones by default since 0.8, and so does `policy sign`.
    match trusted.key.verify(bytes, &signature, false) {
        Ok(()) => Ok(GoodSignature {
            key,
            key_file: trusted.file.clone(),
            trusted_comment: crate::text::printable(signature.trusted_comment(), 400),
        }),
        Err(minisign_verify::Error::InvalidSignature) => {
            Err(SignatureError::Mismatch { sig: sig.clone(), key, key_file: trusted.file.clone() })
        }
        Err(minisign_verify::Error::UnexpectedAlgorithm) => Err(unusable(
            "a legacy minisign signature (not prehashed); sign again with minisign 0.8 or later, or \
             `wasmtune policy sign`"
                .into(),
        )),
        Err(e) => Err(unusable(e.to_string())),
    }
}

/// Reads a signature file: a small regular file. Who wrote it does not
/// matter (the key decides), but it must not stall or flood the reader.
fn read_signature(sig: &Path) -> Result<String, SignatureError> {
    let unusable = |problem: String| SignatureError::Unusable { sig: sig.to_path_buf(), problem };
    // O_NONBLOCK: a FIFO in place of a signature cannot block the reconcile.
    let file = match std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC).open(sig) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SignatureError::Missing { sig: sig.to_path_buf() });
        }
        Err(e) => return Err(unusable(format!("cannot open: {e}"))),
    };
    let meta = file.metadata().map_err(|e| unusable(format!("cannot inspect: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(unusable("not a regular file".into()));
    }
    if meta.len() > MAX_SIGNATURE_BYTES {
        return Err(unusable(format!("{} bytes, more than a signature has", meta.len())));
    }
    let mut text = String::new();
    file.take(MAX_SIGNATURE_BYTES).read_to_string(&mut text).map_err(|e| unusable(format!("cannot read: {e}")))?;
    Ok(text)
}

#[cfg(test)]
mod tests;
