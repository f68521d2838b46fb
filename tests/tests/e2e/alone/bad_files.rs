//! End to end: malformed policy files dropped into a watched policy
//! directory, one after another, and handed to `wasmtune policy info`. Each
//! is rejected with a reason that names the file (and, for manifests, the
//! line and field); the daemon keeps running and tuning throughout.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use wasmtune_tests::guests::guest_wasm;
use wasmtune_tests::harness::{self, BufferBed, Daemon, Requirement, Side};

const BAD_RMEM: &str = "4096 131072 98304";
/// Time for the watcher to notice a file and the loader to reject it.
const REJECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Keys the contract's manifest format knows, per table.
const POLICY_KEYS: [&str; 4] = ["name", "version", "description", "events"];
const SYSCTL_KEYS: [&str; 7] = ["name", "access", "fields", "min", "max", "values", "purpose"];

/// What a rejection must mention besides the file.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Only that it failed, with a reason.
    Reason,
    /// A manifest error: its line and the offending field.
    ManifestField,
    /// A manifest error: its line.
    ManifestLine,
}

/// One malformed file: the name it is installed under, its bytes, and what
/// its rejection must say.
struct BadFile {
    file_name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
    /// For manifest errors: the key the contract does not know, if any.
    unknown_key: Option<String>,
}

/// 4 KiB of deterministic noise (xorshift64), so a failure can be replayed.
fn noise() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// The first key of `fixture`'s embedded manifest that the contract does
/// not know (or the name of an unknown table).
fn unknown_key_of(fixture: &Path) -> Option<String> {
    let manifest = harness::embedded_manifest(fixture).ok()??;
    manifest.keys.into_iter().find_map(|(table, key)| match table.as_str() {
        "policy" if !POLICY_KEYS.contains(&key.as_str()) => Some(key),
        "sysctl" if !SYSCTL_KEYS.contains(&key.as_str()) => Some(key),
        "policy" | "sysctl" => None,
        // `events` may stand before the first table or inside [policy].
        "" if key == "events" => None,
        "" => Some(key),
        other => Some(other.to_string()),
    })
}

fn fixture_bytes(name: &str) -> (PathBuf, Vec<u8>) {
    let path = guest_wasm(name);
    let bytes = fs::read(&path).unwrap_or_else(|e| panic!("read fixture {}: {e}", path.display()));
    (path, bytes)
}

fn bad_files() -> Vec<BadFile> {
    let mut files = vec![
        BadFile { file_name: "junk.wasm", bytes: noise(), expect: Expect::Reason, unknown_key: None },
        BadFile {
            file_name: "core-module.wasm",
            bytes: b"\0asm\x01\0\0\0".to_vec(),
            expect: Expect::Reason,
            unknown_key: None,
        },
    ];
    for (fixture, file_name) in [("other-world", "other-world.wasm"), ("other-version", "other-version.wasm")] {
        files.push(BadFile { file_name, bytes: fixture_bytes(fixture).1, expect: Expect::Reason, unknown_key: None });
    }
    let (path, bytes) = fixture_bytes("bad-manifest-unknown-field");
    files.push(BadFile {
        file_name: "bad-manifest-unknown-field.wasm",
        bytes,
        expect: Expect::ManifestField,
        unknown_key: unknown_key_of(&path),
    });
    files.push(BadFile {
        file_name: "bad-manifest-type.wasm",
        bytes: fixture_bytes("bad-manifest-type").1,
        expect: Expect::ManifestLine,
        unknown_key: None,
    });
    files
}

/// Checks a rejection message against what `file` must make it say.
fn assert_reason(file: &BadFile, error: &str, context: &str) {
    let lower = error.to_lowercase();
    assert!(!error.trim().is_empty(), "{context}: empty error for {}", file.file_name);
    match file.expect {
        Expect::Reason => {}
        Expect::ManifestLine => {
            assert!(lower.contains("line"), "{context}: manifest error without a line: {error}");
        }
        Expect::ManifestField => {
            assert!(lower.contains("line"), "{context}: manifest error without a line: {error}");
            assert!(lower.contains("field"), "{context}: manifest error does not say `field`: {error}");
            if let Some(key) = &file.unknown_key {
                assert!(error.contains(key.as_str()), "{context}: error does not name the field `{key}`: {error}");
            }
        }
    }
}

fn make_dir(path: &Path) {
    fs::create_dir(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

#[test]
fn malformed_policy_files_are_rejected_with_a_reason_and_the_daemon_keeps_tuning() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let bed = BufferBed::new("badfiles", Side::Receiver, BAD_RMEM).expect("build the test bed");
    let scratch = harness::scratch_dir("bad-files").expect("scratch dir");
    let (watched, staging) = (scratch.path().join("policies"), scratch.path().join("staging"));
    make_dir(&watched);
    make_dir(&staging);

    let mut daemon = Daemon::builder()
        .netns(bed.rx())
        .policy_dir(&watched)
        .enable_policy_files()
        .start_ready()
        .expect("daemon ready");

    let mut rejections = serde_json::Map::new();
    for file in bad_files() {
        // Written beside the watched directory and renamed in, so the
        // daemon never sees a half-written file.
        let staged = staging.join(file.file_name);
        fs::write(&staged, &file.bytes).unwrap_or_else(|e| panic!("write {}: {e}", staged.display()));
        fs::rename(&staged, watched.join(file.file_name)).expect("move into the watched directory");
        let line = daemon
            .wait_for(&format!("policy-load-failed for {}", file.file_name), REJECT_TIMEOUT, |l| {
                l.is_event("policy-load-failed") && l.field("source").is_some_and(|s| s.contains(file.file_name))
            })
            .expect("the file is rejected");
        let error = line.field("error").unwrap_or_default();
        assert_reason(&file, &error, "policy-load-failed");
        assert!(daemon.is_running(), "the daemon exited after {}", file.file_name);
        println!("{}: {error}", file.file_name);
        rejections.insert(file.file_name.to_string(), json!(error));
    }
    let loaded_bad: Vec<String> = daemon
        .events("policy-loaded")
        .into_iter()
        .filter(|l| l.field("source").is_some_and(|s| s.starts_with(&*watched.to_string_lossy())))
        .map(|l| l.raw)
        .collect();
    assert!(loaded_bad.is_empty(), "malformed files were loaded: {loaded_bad:?}");

    // Still tuning.
    bed.transfer(6).expect("bulk transfer into rx");
    daemon
        .wait_quiet(
            "tcp_rmem changes",
            Duration::from_millis(1500),
            Duration::from_secs(20),
            bed.matcher("sysctl-change"),
        )
        .expect("tuning settles once the traffic stops");
    let tuned = bed.current_fields().expect("read rx tcp_rmem");
    assert!(tuned[2] > 98304, "tcp-buffer stopped tuning after the bad files: rx tcp_rmem {tuned:?}");
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    harness::record("bad_files::watched_dir", json!({ "rejections": rejections, "tcp_rmem_max_after": tuned[2] }))
        .expect("record figures");
}

#[test]
fn policy_info_rejects_malformed_files_and_describes_a_valid_one() {
    if harness::skip_without(&[Requirement::Daemon]) {
        return;
    }
    let scratch = harness::scratch_dir("policy-info").expect("scratch dir");
    for file in bad_files() {
        let path = scratch.path().join(file.file_name);
        fs::write(&path, &file.bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        let output = harness::wasmtune_command()
            .expect("wasmtune binary")
            .args(["policy", "info"])
            .arg(&path)
            .output()
            .expect("run wasmtune policy info");
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(!output.status.success(), "policy info accepted {}:\n{text}", file.file_name);
        assert!(text.contains(file.file_name), "policy info does not name {}:\n{text}", file.file_name);
        assert_reason(&file, &text, "policy info");
    }

    let valid = guest_wasm("hostile-trap");
    let manifest = harness::embedded_manifest(&valid).expect("read fixture").expect("hostile-trap has a manifest");
    let output = harness::wasmtune_command()
        .expect("wasmtune binary")
        .args(["policy", "info"])
        .arg(&valid)
        .output()
        .expect("run wasmtune policy info");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("wasmtune policy info {}:\n{text}", valid.display());
    assert!(output.status.success(), "policy info rejected a valid policy ({}):\n{text}", output.status);
    let name = manifest.name.expect("hostile-trap's manifest has a name");
    assert!(text.contains(&name), "policy info does not print the name {name}:\n{text}");
    for grant in &manifest.sysctls {
        assert!(text.contains(grant.as_str()), "policy info does not print the grant {grant}:\n{text}");
    }
}

/// Opens of `path` seen by inotify over `window`.
fn opens_of(path: &Path, window: Duration) -> usize {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).expect("inotify");
    inotify.add_watch(path, AddWatchFlags::IN_OPEN).expect("watch the file");
    let deadline = std::time::Instant::now() + window;
    let mut opens = 0;
    while std::time::Instant::now() < deadline {
        match inotify.read_events() {
            Ok(events) => opens += events.len(),
            Err(nix::errno::Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => panic!("read inotify events: {e}"),
        }
    }
    opens
}

fn move_in(staging: &Path, watched: &Path, name: &str, bytes: &[u8]) {
    let staged = staging.join(name);
    fs::write(&staged, bytes).unwrap_or_else(|e| panic!("write {}: {e}", staged.display()));
    fs::rename(&staged, watched.join(name)).expect("move into the watched directory");
}

fn rejection(daemon: &Daemon, name: &str) -> String {
    let line = daemon
        .wait_for(&format!("policy-load-failed for {name}"), REJECT_TIMEOUT, |l| {
            l.is_event("policy-load-failed") && l.field("source").is_some_and(|s| s.contains(name))
        })
        .unwrap_or_else(|e| panic!("{name} is not rejected: {e}\n{}", daemon.dump()));
    line.field("error").unwrap_or_default()
}

/// The directory watcher reacts to changes, not to its own reads: an idle
/// policy file is not opened again. A file over the size limit, and any file
/// once its directory is writable by others, is refused before it is read.
#[test]
fn an_idle_policy_file_is_not_reopened_and_unsafe_files_are_refused_unread() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let scratch = harness::scratch_dir("idle-files").expect("scratch dir");
    let (watched, staging) = (scratch.path().join("policies"), scratch.path().join("staging"));
    make_dir(&watched);
    make_dir(&staging);
    let idle = watched.join("idle.wasm");
    fs::copy(guest_wasm("hostile-ungranted"), &idle).expect("install a policy");
    // Tuning a namespace of the test's own only: no other test's values.
    let own = harness::Netns::new("idle").expect("netns");
    let mut daemon =
        Daemon::builder().netns(&own).policy_dir(&watched).enable_policy_files().start_ready().expect("daemon ready");
    std::thread::sleep(Duration::from_secs(1));
    let opens = opens_of(&idle, Duration::from_secs(3));
    assert_eq!(opens, 0, "an idle policy file was opened {opens} times in 3 s");

    let huge = vec![0u8; (16 << 20) + 1];
    move_in(&staging, &watched, "huge.wasm", &huge);
    let too_large = rejection(&daemon, "huge.wasm");
    assert!(too_large.contains("more than"), "{too_large}");

    fs::set_permissions(&watched, fs::Permissions::from_mode(0o777)).expect("chmod");
    move_in(&staging, &watched, "after-chmod.wasm", &fs::read(guest_wasm("hostile-ungranted")).expect("read"));
    let loose = rejection(&daemon, "after-chmod.wasm");
    assert!(loose.contains("writable by group or others"), "{loose}");
    fs::set_permissions(&watched, fs::Permissions::from_mode(0o755)).expect("chmod back");
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");
    harness::record(
        "bad_files::idle_and_unsafe",
        json!({ "idle_opens_in_3s": opens, "too_large": too_large, "loose_directory": loose }),
    )
    .expect("record figures");
}
