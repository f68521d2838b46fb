//! The authors' and packagers' side: a key pair, and a policy file's
//! detached signature, in minisign's formats — so `minisign -V` checks what
//! `wasmtune policy sign` signed, and the daemon trusts what `minisign -S`
//! signed. The daemon itself never signs; it verifies with the smaller
//! `minisign-verify` ([`super::verify_signature`]).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::keys::KeyId;

/// How a secret key is protected.
#[derive(Debug, Clone)]
pub enum Password {
    /// Asked on the terminal (minisign's prompt).
    Prompt,
    /// Read from a file, for scripts and build systems.
    Given(String),
    /// Not protected (`keygen --no-password`): for keys kept in a secret
    /// store or a throw-away test key.
    Unprotected,
}

impl Password {
    /// The first line of `path`: a password file, as packaging tools keep one.
    pub fn from_file(path: &Path) -> Result<Password, SignError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SignError::Read { path: path.to_path_buf(), source })?;
        Ok(Password::Given(text.lines().next().unwrap_or_default().to_string()))
    }
}

/// Why a key pair or a signature could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path}: {problem}")]
    Key { path: PathBuf, problem: String },
    #[error("{path} is not a policy: {problem}")]
    NotAPolicy { path: PathBuf, problem: String },
    #[error("cannot sign {path}: {problem}")]
    Sign { path: PathBuf, problem: String },
}

/// A new key pair: the secret key (mode 0600) and the public key to put
/// in the daemon's key directory. Neither file may exist yet: a key
/// overwritten by mistake is a signing identity lost.
pub fn keygen(secret: &Path, public: &Path, password: Password) -> Result<KeyId, SignError> {
    let key_error =
        |problem: minisign::PError| SignError::Key { path: secret.to_path_buf(), problem: problem.to_string() };
    let pair = match password {
        Password::Unprotected => minisign::KeyPair::generate_unencrypted_keypair(),
        Password::Given(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password)),
        Password::Prompt => minisign::KeyPair::generate_encrypted_keypair(None),
    }
    .map_err(key_error)?;
    let id = KeyId::from_bytes(pair.pk.keynum())
        .ok_or_else(|| SignError::Key { path: public.to_path_buf(), problem: "no key id".into() })?;
    let secret_box = pair.sk.to_box(Some(&format!("wasmtune secret key {id}"))).map_err(key_error)?;
    let public_box = pair.pk.to_box().map_err(key_error)?;
    write_new(secret, &secret_box.to_bytes(), 0o600)?;
    write_new(public, &public_box.to_bytes(), 0o644)?;
    Ok(id)
}

/// What [`sign`] made.
#[derive(Debug, Clone)]
pub struct Signed {
    pub signature: PathBuf,
    pub key: KeyId,
    pub trusted_comment: String,
}

/// Signs the policy file `file` with the secret key in `secret`, writing
/// `FILE.sig` beside it (under a hidden name, then renamed: a watched
/// directory never sees half a signature). The trusted comment, covered by
/// the signature, says which policy, version and content were signed.
pub fn sign(file: &Path, secret: &Path, password: Password) -> Result<Signed, SignError> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(file).map_err(|source| SignError::Read { path: file.to_path_buf(), source })?;
    // Signing vouches for a policy: refuse what is not one.
    let manifest = crate::manifest::Manifest::from_component(&bytes)
        .map_err(|e| SignError::NotAPolicy { path: file.to_path_buf(), problem: e.to_string() })?;
    let secret_key = read_secret_key(secret, password)?;
    let key = KeyId::from_bytes(secret_key.keynum())
        .ok_or_else(|| SignError::Key { path: secret.to_path_buf(), problem: "no key id".into() })?;
    // The file name is the one part not checked by the manifest: made
    // printable, as a newline would break the signature's format.
    let file_name =
        crate::text::printable(&file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(), 255);
    let timestamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // Tab-separated, as minisign writes its own trusted comments.
    let trusted_comment = format!(
        "timestamp:{timestamp}\tfile:{file_name}\tpolicy:{} {}\tsha256:{}",
        manifest.policy.name,
        manifest.policy.version,
        crate::runtime::engine::hex(&Sha256::digest(&bytes))
    );
    let untrusted_comment = format!("signature of policy {} by wasmtune key {key}", manifest.policy.name);
    let signature =
        minisign::sign(None, &secret_key, bytes.as_slice(), Some(&trusted_comment), Some(&untrusted_comment))
            .map_err(|e| SignError::Sign { path: file.to_path_buf(), problem: e.to_string() })?;
    let sig_path = super::signature_path(file);
    write_replacing(&sig_path, signature.to_string().as_bytes())?;
    Ok(Signed { signature: sig_path, key, trusted_comment })
}

/// A minisign secret key, protected or not.
fn read_secret_key(path: &Path, password: Password) -> Result<minisign::SecretKey, SignError> {
    let text = std::fs::read_to_string(path).map_err(|source| SignError::Read { path: path.to_path_buf(), source })?;
    let key_error =
        |problem: minisign::PError| SignError::Key { path: path.to_path_buf(), problem: problem.to_string() };
    let secret_box = minisign::SecretKeyBox::from_string(&text).map_err(key_error)?;
    // An unprotected key reads as it is; only a protected one needs the password.
    if let Ok(key) = minisign::SecretKey::from_unencrypted_box(secret_box.clone()) {
        return Ok(key);
    }
    let password = match password {
        Password::Given(password) => Some(password),
        Password::Prompt | Password::Unprotected => None,
    };
    minisign::SecretKey::from_box(secret_box, password).map_err(key_error)
}

/// Creates `path` with `mode`; an existing file is left alone and is an error.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SignError> {
    let write_error = |source| SignError::Write { path: path.to_path_buf(), source };
    let mut file =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(write_error)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(write_error)
}

/// Replaces `path` in one step: written under a hidden name in the same
/// directory (policy directories ignore hidden files), then renamed.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), SignError> {
    let write_error = |source| SignError::Write { path: path.to_path_buf(), source };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let hidden = path.with_file_name(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&hidden);
    write_new(&hidden, bytes, 0o644)?;
    std::fs::rename(&hidden, path).map_err(write_error)
}
