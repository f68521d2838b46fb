use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::keys::Keyring;
use super::sign::{self, Password};
use super::*;
use crate::config::AdminConfig;

fn parse(text: &str) -> AdminConfig {
    AdminConfig::parse(text, Path::new("/etc/wasmtune/config.toml")).expect("valid configuration")
}

fn digest_of(bytes: &[u8]) -> String {
    crate::runtime::engine::hex(&Sha256::digest(bytes))
}

/// A key pair made as an author would (`policy keygen --no-password`),
/// its public key alone in a key directory of the test's own.
struct Author {
    _dir: tempfile::TempDir,
    secret: PathBuf,
    keys_dir: PathBuf,
}

fn author() -> Author {
    let dir = tempfile::tempdir().expect("temp dir");
    let keys_dir = dir.path().join("keys");
    std::fs::create_dir(&keys_dir).expect("keys dir");
    std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let secret = dir.path().join("author.key");
    sign::keygen(&secret, &keys_dir.join("author.pub"), Password::Unprotected).expect("keygen");
    Author { _dir: dir, secret, keys_dir }
}

/// A policy file (the built-in tcp-buffer's bytes) in a directory of its own.
fn policy_file() -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = crate::builtin::bytes_of("tcp-buffer").expect("built in").to_vec();
    let path = dir.path().join("tcp-buffer.wasm");
    std::fs::write(&path, &bytes).expect("write policy");
    (dir, path, bytes)
}

fn trust_requiring_signatures(keys_dir: &Path) -> Trust {
    let config = parse(&format!("require-signatures = true\nkeys-dir = {:?}\n", keys_dir.display().to_string()));
    Trust::from_config(&config).expect("keys are there")
}

#[test]
fn a_pinned_digest_admits_that_content_only() {
    let bytes = b"policy bytes";
    let digest = digest_of(bytes);
    let trust = Trust::from_config(&parse(&format!(
        "[policies.vendor-tuner]\nenabled = true\ndigest = \"sha256:{}\"\n",
        digest.to_uppercase()
    )))
    .expect("no keys needed");
    let file = Path::new("/nonexistent/vendor-tuner.wasm");
    let mut checked = Checked::default();
    trust.check("vendor-tuner", file, bytes, &digest, &mut checked).expect("the pinned content");
    assert!(checked.pinned && checked.signature.is_none());

    let other = digest_of(b"other bytes");
    let refused = trust.check("vendor-tuner", file, b"other bytes", &other, &mut Checked::default());
    let Err(Untrusted::DigestMismatch { policy, found, pinned }) = &refused else {
        panic!("expected a digest mismatch, got {refused:?}")
    };
    assert_eq!((policy.as_str(), found.as_str(), pinned.hex()), ("vendor-tuner", other.as_str(), digest.as_str()));
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("vendor-tuner") && message.contains(&format!("sha256:{other}")), "{message}");

    // A pin binds its own policy only; nothing is asked of the others.
    trust.check("other-vendor", file, b"other bytes", &other, &mut Checked::default()).expect("not pinned");
    assert!(trust.is_active() && trust.keyring().is_none());
}

#[test]
fn a_file_signed_by_a_trusted_key_verifies_round_trip() {
    let author = author();
    let (_dir, file, bytes) = policy_file();
    let signed = sign::sign(&file, &author.secret, Password::Unprotected).expect("sign");
    assert_eq!(signed.signature, signature_path(&file));
    assert!(signed.trusted_comment.contains("policy:tcp-buffer"), "{}", signed.trusted_comment);
    assert!(signed.trusted_comment.contains(&format!("sha256:{}", digest_of(&bytes))), "{}", signed.trusted_comment);

    let trust = trust_requiring_signatures(&author.keys_dir);
    let mut checked = Checked::default();
    trust.check("tcp-buffer", &file, &bytes, &digest_of(&bytes), &mut checked).expect("good signature");
    let good = checked.signature.expect("verified");
    assert_eq!(good.key, signed.key);
    assert_eq!(good.key_file, author.keys_dir.join("author.pub"));
    assert_eq!(good.trusted_comment, crate::text::printable(&signed.trusted_comment, 400));
}

#[test]
fn content_changed_after_signing_is_refused() {
    let author = author();
    let (_dir, file, mut bytes) = policy_file();
    sign::sign(&file, &author.secret, Password::Unprotected).expect("sign");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let trust = trust_requiring_signatures(&author.keys_dir);
    let refused = trust.check("tcp-buffer", &file, &bytes, &digest_of(&bytes), &mut Checked::default());
    assert!(
        matches!(
            &refused,
            Err(Untrusted::Signature { problem: SignatureError::Mismatch { .. }, why: Requirement::Every })
        ),
        "{refused:?}"
    );
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("not what was signed") && message.contains("require-signatures = true"), "{message}");
}

#[test]
fn a_missing_or_garbled_signature_is_refused() {
    let author = author();
    let (_dir, file, bytes) = policy_file();
    let trust = trust_requiring_signatures(&author.keys_dir);
    let digest = digest_of(&bytes);
    let refused = trust.check("tcp-buffer", &file, &bytes, &digest, &mut Checked::default());
    assert!(
        matches!(&refused, Err(Untrusted::Signature { problem: SignatureError::Missing { .. }, .. })),
        "{refused:?}"
    );

    std::fs::write(signature_path(&file), "untrusted comment: x\nnot base64\n").expect("write");
    let refused = trust.check("tcp-buffer", &file, &bytes, &digest, &mut Checked::default());
    assert!(
        matches!(&refused, Err(Untrusted::Signature { problem: SignatureError::Unusable { .. }, .. })),
        "{refused:?}"
    );
}

#[test]
fn a_signature_by_a_key_not_trusted_is_refused_naming_the_key() {
    let trusted = author();
    let stranger = author();
    let (_dir, file, bytes) = policy_file();
    let signed = sign::sign(&file, &stranger.secret, Password::Unprotected).expect("sign");
    let trust = trust_requiring_signatures(&trusted.keys_dir);
    let refused = trust.check("tcp-buffer", &file, &bytes, &digest_of(&bytes), &mut Checked::default());
    let Err(Untrusted::Signature { problem: SignatureError::UnknownKey { key, keys, .. }, .. }) = &refused else {
        panic!("expected an unknown key, got {refused:?}")
    };
    assert_eq!((*key, keys.as_path()), (signed.key, trusted.keys_dir.as_path()));
    assert!(refused.expect_err("refused").to_string().contains(&signed.key.to_string()));
}

#[test]
fn signed_names_one_policy_and_is_verified_once() {
    let author = author();
    let (_dir, file, bytes) = policy_file();
    let config = parse(&format!(
        "keys-dir = {:?}\n[policies.tcp-buffer]\nreplace-builtin = true\nsigned = true\n",
        author.keys_dir.display().to_string()
    ));
    let trust = Trust::from_config(&config).expect("keys are there");
    let digest = digest_of(&bytes);
    // Another policy's file needs no signature.
    trust.check("vendor-tuner", &file, &bytes, &digest, &mut Checked::default()).expect("not asked");
    let refused = trust.check("tcp-buffer", &file, &bytes, &digest, &mut Checked::default());
    assert!(
        matches!(&refused, Err(Untrusted::Signature { why: Requirement::Policy(name), .. }) if name == "tcp-buffer"),
        "{refused:?}"
    );
    sign::sign(&file, &author.secret, Password::Unprotected).expect("sign");
    let mut checked = Checked::default();
    trust.check("tcp-buffer", &file, &bytes, &digest, &mut checked).expect("signed now");
    // Under a second name the verified signature stands, even if the file
    // beside it is gone since.
    std::fs::remove_file(signature_path(&file)).expect("remove");
    trust.check("tcp-buffer", &file, &bytes, &digest, &mut checked).expect("verified once");
}

#[test]
fn a_password_protected_key_signs_with_its_password() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (secret, public) = (dir.path().join("s.key"), dir.path().join("s.pub"));
    let password = || Password::Given("correct horse".into());
    let id = sign::keygen(&secret, &public, password()).expect("keygen");
    assert!(sign::keygen(&secret, &public, password()).is_err(), "an existing key is never overwritten");
    let (_pdir, file, bytes) = policy_file();
    assert!(sign::sign(&file, &secret, Password::Given("wrong".into())).is_err());
    let signed = sign::sign(&file, &secret, password()).expect("sign");
    assert_eq!(signed.key, id);
    let keyring = Keyring::load_files(&[public]).expect("key");
    let good = verify_signature(&keyring, &file, &bytes).expect("verifies");
    assert_eq!(good.key, id);
}

/// A signature made by the minisign tool (minisign-verify's own vector):
/// what packagers sign with `minisign -S` the daemon trusts.
#[test]
fn a_signature_made_by_the_minisign_tool_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = dir.path().join("minisign.pub");
    std::fs::write(
        &key,
        "untrusted comment: minisign public key E7620F1842B4E81F\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n",
    )
    .expect("write key");
    let file = dir.path().join("test");
    std::fs::write(
        signature_path(&file),
        "untrusted comment: signature from minisign secret key\n\
         RUQf6LRCGA9i559r3g7V1qNyJDApGip8MfqcadIgT9CuhV3EMhHoN1mGTkUidF/z7SrlQgXdy8ofjb7bNJJylDOocrCo8KLzZwo=\n\
         trusted comment: timestamp:1556193335\tfile:test\n\
         y/rUw2y8/hOUYjZU71eHp/Wo1KZ40fGy2VJEDl34XMJM+TX48Ss/17u3IvIfbVR1FkZZSNCisQbuQY+bHwhEBg==\n",
    )
    .expect("write signature");
    let keyring = Keyring::load_files(&[key]).expect("key");
    let good = verify_signature(&keyring, &file, b"test").expect("verifies");
    assert_eq!(good.key.to_string(), "E7620F1842B4E81F");
    assert_eq!(good.trusted_comment, "timestamp:1556193335\\tfile:test");
    assert!(matches!(verify_signature(&keyring, &file, b"Test"), Err(SignatureError::Mismatch { .. })));
}

#[test]
fn signatures_required_without_keys_stop_the_start_at_the_line_that_asks() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no-such-dir");
    let text =
        format!("learning-rate = 2\nrequire-signatures = true\nkeys-dir = {:?}\n", missing.display().to_string());
    let err = Trust::from_config(&parse(&text)).expect_err("no key directory");
    let ConfigError::Placed { line, field, problem, .. } = &err else { panic!("expected a placed error, got {err}") };
    assert_eq!((*line, field.as_str()), (2, "require-signatures"));
    assert!(problem.contains("does not exist"), "{problem}");
    let message = err.to_string();
    assert!(
        message.starts_with("/etc/wasmtune/config.toml: line 2, column 22 (`require-signatures = true`)"),
        "{message}"
    );

    // An empty key directory, asked for by one policy.
    let empty = dir.path().join("keys");
    std::fs::create_dir(&empty).expect("mkdir");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let text = format!("keys-dir = {:?}\n\n[policies.vendor-tuner]\nsigned = true\n", empty.display().to_string());
    let err = Trust::from_config(&parse(&text)).expect_err("no key");
    let ConfigError::Placed { line, field, problem, .. } = &err else { panic!("expected a placed error, got {err}") };
    assert_eq!((*line, field.as_str()), (4, "policies.vendor-tuner.signed"));
    assert!(problem.contains("holds no public key"), "{problem}");

    // A key directory others may write could be given any key.
    std::fs::write(empty.join("a.pub"), "x").expect("write");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let err = Trust::from_config(&parse(&text)).expect_err("unsafe").to_string();
    assert!(err.contains("writable by group or others"), "{err}");
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let err = Trust::from_config(&parse(&text)).expect_err("not a key").to_string();
    assert!(err.contains("a.pub") && err.contains("not a minisign"), "{err}");

    // Nothing asked, nothing read: a missing key directory is no error then.
    let quiet = Trust::from_config(&parse("require-signatures = false\n")).expect("nothing required");
    assert!(!quiet.is_active() && quiet.keyring().is_none());
}
