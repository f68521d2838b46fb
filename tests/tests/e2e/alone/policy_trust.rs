//! End to end: the administrator decides which policy files are trusted. A
//! file whose content is not the digest pinned for its policy is refused
//! and whatever runs under that name stays (the built-in, or the pinned
//! version); with signatures required, a file signed by a key of the key
//! directory loads and an unsigned or altered one is refused; and a daemon
//! asked for signatures with no key to check them does not start.

use crate::lifecycle;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use lifecycle::{install, policy, sha256, socket_in};
use wasmtune_tests::guests::guest_wasm;
use wasmtune_tests::harness::{self, Daemon, LogLine, READY_TIMEOUT, Requirement};

/// How long a reconcile after an install may take (250 ms settle, compile).
const RECONCILE: Duration = Duration::from_secs(20);

fn source_is(line: &LogLine, file: &str) -> bool {
    line.field("source").is_some_and(|s| s.ends_with(file))
}

fn refusal_of(daemon: &Daemon, file: &str, says: &str) -> LogLine {
    daemon
        .wait_for(&format!("{file} refused: {says}"), RECONCILE, |l| {
            l.is_event("policy-load-failed") && source_is(l, file) && l.field("error").is_some_and(|e| e.contains(says))
        })
        .unwrap_or_else(|e| panic!("{e}"))
}

fn loaded_from(daemon: &Daemon, name: &str, file: &str) -> LogLine {
    daemon
        .wait_for(&format!("{name} loaded from {file}"), RECONCILE, |l| {
            l.is_event("policy-loaded") && l.field_is("policy", name) && source_is(l, file)
        })
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `wasmtune policy keygen --no-password`: the secret key under `secret_dir`,
/// the public key in `keys_dir`; the key id.
fn keygen(secret_dir: &Path, keys_dir: &Path) -> (std::path::PathBuf, String) {
    let secret = secret_dir.join("author.key");
    let (ok, out, err) = harness::cli(&[
        "policy",
        "keygen",
        "--secret-key",
        &secret.to_string_lossy(),
        "--public-key",
        &keys_dir.join("author.pub").to_string_lossy(),
        "--no-password",
    ]);
    assert!(ok, "keygen failed: {err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("key id"))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no key id in {out}"));
    (secret, id)
}

fn sign(file: &Path, secret: &Path) {
    let (ok, _, err) = harness::cli(&["policy", "sign", &file.to_string_lossy(), "--key", &secret.to_string_lossy()]);
    assert!(ok, "signing {} failed: {err}", file.display());
}

#[test]
fn a_file_not_matching_its_pinned_digest_is_refused_and_what_runs_stays() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let own = harness::Netns::new("pin").expect("netns");
    let dir = harness::scratch_dir("pin-policies").expect("policy dir");
    let (_sock_dir, socket) = socket_in("pin-sock");
    let pinned = lifecycle::tcp_buffer_variant(11);
    let pinned_digest = sha256(&pinned);
    let wrong = lifecycle::tcp_buffer_variant(12);
    install(dir.path(), "tcp-buffer.wasm", &wrong);

    let daemon = Daemon::builder()
        .netns(&own)
        .policy_dir(dir.path())
        .config(&format!("[policies.tcp-buffer]\ndigest = \"sha256:{pinned_digest}\"\n"))
        .replace_builtin("tcp-buffer")
        .arg("--control-socket")
        .arg(&socket.to_string_lossy())
        .start()
        .expect("spawn wasmtune run");
    daemon.wait_for_event("ready", READY_TIMEOUT).expect("daemon ready");

    // A declared replacement, but not the pinned content: refused, and the
    // built-in keeps running from the binary.
    let first = refusal_of(&daemon, "tcp-buffer.wasm", "pins for policy tcp-buffer");
    let error = first.field("error").unwrap_or_default();
    assert!(error.contains(&sha256(&wrong)) && error.contains(&pinned_digest), "{error}");
    assert_eq!(policy(&socket, "tcp-buffer")["source"], "builtin");

    // The pinned content replaces the built-in.
    install(dir.path(), "tcp-buffer.wasm", &pinned);
    loaded_from(&daemon, "tcp-buffer", "tcp-buffer.wasm");
    let verified = daemon
        .wait_for("policy-verified", RECONCILE, |l| l.is_event("policy-verified") && l.field_is("policy", "tcp-buffer"))
        .expect("the pin is said to hold");
    assert!(verified.field_is("pinned", "true"), "{}", verified.raw);
    assert_eq!(policy(&socket, "tcp-buffer")["digest"], pinned_digest);

    // Another content again: refused, the pinned version stays in charge.
    let later = lifecycle::tcp_buffer_variant(13);
    install(dir.path(), "tcp-buffer.wasm", &later);
    let second = refusal_of(&daemon, "tcp-buffer.wasm", &sha256(&later));
    assert!(second.raw.contains("the running version stays in charge"), "{}", second.raw);
    std::thread::sleep(Duration::from_millis(500));
    let entry = policy(&socket, "tcp-buffer");
    assert_eq!(entry["digest"], pinned_digest, "{entry}");
    assert_eq!(
        daemon.events("policy-loaded").iter().filter(|l| source_is(l, "tcp-buffer.wasm")).count(),
        1,
        "only the pinned file was ever loaded"
    );
    harness::record("policy_trust.pin", serde_json::json!({ "refused": error, "refused_later": second.raw }))
        .expect("record figures");
}

#[test]
fn with_signatures_required_a_signed_file_loads_and_an_unsigned_or_altered_one_is_refused() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let own = harness::Netns::new("signed").expect("netns");
    let dir = harness::scratch_dir("signed-policies").expect("policy dir");
    let keys = harness::scratch_dir("signed-keys").expect("key dir");
    let secrets = harness::private_dir("signed-secret").expect("secret key dir");
    let (_sock_dir, socket) = socket_in("signed-sock");
    let (secret, key_id) = keygen(secrets.path(), keys.path());

    let counter = std::fs::read(guest_wasm("state-counter")).expect("fixture");
    let counter_file = install(dir.path(), "state-counter.wasm", &counter);
    sign(&counter_file, &secret);
    // A declared replacement of the built-in tcp-buffer, not signed (yet).
    let variant = lifecycle::tcp_buffer_variant(21);
    let variant_file = install(dir.path(), "tcp-buffer.wasm", &variant);

    let daemon = Daemon::builder()
        .netns(&own)
        .policy_dir(dir.path())
        .config(&format!("require-signatures = true\nkeys-dir = {:?}\n", keys.path().display().to_string()))
        .enable_policy_files()
        .replace_builtin("tcp-buffer")
        .arg("--control-socket")
        .arg(&socket.to_string_lossy())
        .start()
        .expect("spawn wasmtune run");
    daemon.wait_for_event("ready", READY_TIMEOUT).expect("daemon ready");

    // The signed file loads, vouched for by the author's key.
    loaded_from(&daemon, "state-counter", "state-counter.wasm");
    let verified = daemon
        .wait_for("state-counter verified", RECONCILE, |l| {
            l.is_event("policy-verified") && l.field_is("policy", "state-counter")
        })
        .expect("the signature is said to hold");
    assert!(verified.field_is("key", &key_id), "{}", verified.raw);

    // The unsigned one is refused before it is read as a policy; the
    // built-in runs.
    let unsigned = refusal_of(&daemon, "tcp-buffer.wasm", "no signature");
    let error = unsigned.field("error").unwrap_or_default();
    assert!(error.contains("require-signatures = true"), "{error}");
    assert_eq!(policy(&socket, "tcp-buffer")["source"], "builtin");

    // Signed afterwards: the signature appearing beside it is enough.
    sign(&variant_file, &secret);
    loaded_from(&daemon, "tcp-buffer", "tcp-buffer.wasm");
    assert_eq!(policy(&socket, "tcp-buffer")["digest"], sha256(&variant));

    // Altered after signing (the old signature left beside it): refused,
    // the signed version stays in charge.
    let altered = lifecycle::tcp_buffer_variant(22);
    install(dir.path(), "tcp-buffer.wasm", &altered);
    let refused = refusal_of(&daemon, "tcp-buffer.wasm", "not what was signed");
    assert!(refused.raw.contains("the running version stays in charge"), "{}", refused.raw);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(policy(&socket, "tcp-buffer")["digest"], sha256(&variant));
    harness::record(
        "policy_trust.signatures",
        serde_json::json!({ "verified": verified.raw, "unsigned": error, "altered": refused.raw }),
    )
    .expect("record figures");
}

#[test]
fn signatures_required_without_a_key_stop_the_daemon_at_start() {
    let scratch = harness::private_dir("nokeys").expect("scratch dir");
    let config = scratch.path().join("config.toml");
    let missing = scratch.path().join("no-keys-here");
    std::fs::write(&config, format!("\nrequire-signatures = true\nkeys-dir = {:?}\n", missing.display().to_string()))
        .expect("write config");
    let mut child = harness::wasmtune_command()
        .expect("wasmtune")
        .args(["run", "--netns", "init", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(scratch.path().join("state"))
        .arg("--control-socket")
        .arg(scratch.path().join("control.sock"))
        .arg("--policy-dir")
        .arg(scratch.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wasmtune run");
    // It must refuse before starting anything; should it start after all,
    // it is stopped rather than left running.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon started although no key can check the signatures it requires");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr).expect("read stderr");
    }
    assert!(!status.success(), "{stderr}");
    let expected =
        format!("{}: line 2, column 22 (`require-signatures = true`): require-signatures:", config.display());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
    assert!(!scratch.path().join("state").exists(), "nothing was started: {stderr}");
}
