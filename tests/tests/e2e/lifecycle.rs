//! What the policy-lifecycle tests share: talking to the daemon's control
//! socket, making new versions of the built-in tcp-buffer policy (its bytes
//! plus a custom section, so each has its own digest), installing them with
//! write-then-rename, and reading a process's memory and open descriptors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use wasmtune::control::{ControlClient, Request};
use wasmtune_tests::harness::{self, Daemon, DaemonBuilder};

/// The built-in tcp-buffer's component bytes.
pub fn tcp_buffer_bytes() -> Vec<u8> {
    wasmtune::builtin::bytes_of("tcp-buffer").expect("tcp-buffer is built in").to_vec()
}

/// The built-in tcp-buffer with a custom section carrying `nonce` appended:
/// the same policy, a different file digest.
pub fn tcp_buffer_variant(nonce: u64) -> Vec<u8> {
    with_nonce(&tcp_buffer_bytes(), nonce)
}

/// `component` with a custom section carrying `nonce` appended.
pub fn with_nonce(component: &[u8], nonce: u64) -> Vec<u8> {
    let mut bytes = component.to_vec();
    let name = b"wasmtune-test-nonce";
    let payload = nonce.to_le_bytes();
    let mut section = Vec::new();
    leb128(&mut section, name.len() as u64);
    section.extend_from_slice(name);
    section.extend_from_slice(&payload);
    bytes.push(0); // custom section id
    leb128(&mut bytes, section.len() as u64);
    bytes.extend_from_slice(&section);
    bytes
}

fn leb128(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// The fixture whose init traps; its manifest says it is tcp-buffer 0.9.9.
pub fn trap_in_init_bytes() -> Vec<u8> {
    let path = wasmtune_tests::guests::guest_wasm("trap-in-init");
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Installs `bytes` as `dir/file` the way an administrator should: written
/// to a hidden file (ignored), then renamed into place in one step.
pub fn install(dir: &Path, file: &str, bytes: &[u8]) -> PathBuf {
    let hidden = dir.join(format!(".{file}.tmp"));
    std::fs::write(&hidden, bytes).expect("write the hidden file");
    let target = dir.join(file);
    std::fs::rename(&hidden, &target).expect("rename into place");
    target
}

/// The hex SHA-256 of `bytes`, as status reports a policy's digest.
pub fn sha256(bytes: &[u8]) -> String {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), bytes).expect("write");
    let out = Command::new("sha256sum").arg(file.path()).output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// A daemon tuning `netns` (by name), watching `policy_dir`, answering on
/// `socket`, with `extra` arguments; returned once ready. Its administrator
/// runs the files installed there and lets them replace the built-in
/// tcp-buffer: these tests are about hot swap, ownership and state, not
/// about whether a file may run at all (`policy_files.rs` is).
pub fn start_daemon(builder: DaemonBuilder, policy_dir: &Path, socket: &Path, extra: &[&str]) -> Daemon {
    let mut builder =
        builder.enable_policy_files().replace_builtin("tcp-buffer").policy_dir(policy_dir).control_socket(socket);
    for arg in extra {
        builder = builder.arg(arg);
    }
    builder.start_ready().expect("daemon ready")
}

/// Sends one request; panics when the daemon does not answer.
pub fn ask(socket: &Path, request: &Request) -> Json {
    let mut client = ControlClient::connect(socket).unwrap_or_else(|e| panic!("{e}"));
    let response = client.ask(request).unwrap_or_else(|e| panic!("{e}"));
    serde_json::to_value(&response).expect("encode")
}

/// The `result` of a successful request.
pub fn result(socket: &Path, request: &Request) -> Json {
    let answer = ask(socket, request);
    assert_eq!(answer["ok"], Json::Bool(true), "request {request:?} failed: {answer}");
    answer["result"].clone()
}

/// The status entry of policy `name`, if it is on offer or running.
pub fn find_policy(socket: &Path, name: &str) -> Option<Json> {
    let list = result(socket, &Request::PolicyList);
    list["policies"].as_array().and_then(|p| p.iter().find(|p| p["name"] == name).cloned())
}

/// The status entry of policy `name`.
pub fn policy(socket: &Path, name: &str) -> Json {
    find_policy(socket, name).unwrap_or_else(|| panic!("no policy {name} in the daemon's list"))
}

pub fn count(value: &Json) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("not a count: {value}"))
}

/// Waits until `check` holds for policy `name`'s status entry; returns it.
pub fn wait_policy(socket: &Path, name: &str, timeout: Duration, check: impl Fn(&Json) -> bool) -> Json {
    let deadline = Instant::now() + timeout;
    loop {
        let entry = find_policy(socket, name).unwrap_or(Json::Null);
        if !entry.is_null() && check(&entry) {
            return entry;
        }
        assert!(Instant::now() < deadline, "policy {name} did not reach the expected state in {timeout:?}: {entry}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until every event routed to `name` has been dealt with (no batch
/// queued, and routed = handled + lost + failed stable for 300 ms); returns
/// the totals.
pub fn settled_totals(socket: &Path, name: &str) -> Json {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last: Option<Json> = None;
    loop {
        let entry = policy(socket, name);
        let totals = entry["totals"].clone();
        let balanced =
            count(&totals["routed"]) == count(&totals["handled"]) + count(&totals["lost"]) + count(&totals["failed"]);
        if balanced && count(&entry["queued-batches"]) == 0 && last.as_ref() == Some(&totals) {
            return totals;
        }
        assert!(Instant::now() < deadline, "the totals of {name} never settled: {entry}");
        last = Some(totals);
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Resident memory (kB) and open descriptors of process `pid`.
pub fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd directory").count();
    (rss, fds)
}

/// A fresh directory for the control socket (the daemon makes it 0700 when
/// missing); the socket path inside.
pub fn socket_in(label: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = harness::private_dir(label).expect("socket directory");
    let path = dir.path().join("run").join("control.sock");
    (dir, path)
}

/// Percentile `p` (0..=100) of sorted `values`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// The name in the manifest of [`other_policy_bytes`].
pub const OTHER_POLICY: &str = "hostile-ungranted";

/// A second, harmless policy name to add and remove (its requests are all
/// denied): the `hostile-ungranted` fixture.
pub fn other_policy_bytes() -> Vec<u8> {
    std::fs::read(wasmtune_tests::guests::guest_wasm(OTHER_POLICY)).expect("fixture")
}

/// What each open descriptor of process `pid` refers to, sorted.
pub fn fd_targets(pid: u32) -> Vec<String> {
    let mut targets: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    targets.sort();
    targets
}

/// The line of tcp-buffer's grow decision the variant changes.
pub const ONE_STEP: &str = "let raised = current.max.saturating_add(step);";
pub const TWO_STEPS: &str = "let raised = current.max.saturating_add(step.saturating_mul(2));";

/// tcp-buffer's source, copied out of the repository with one decision
/// changed, built as a crate of its own against the SDK source.
pub fn build_tcp_buffer_variant(dir: &Path) -> std::path::PathBuf {
    build_policy_variant(dir, "tcp-buffer", "tcp-buffer-variant", &[("src/tuner.rs", ONE_STEP, TWO_STEPS)])
}

/// tcp-cong's choices in its `init`, which the reno variant changes.
pub const TCP_CONG_ARMS: &str = "let algorithms = arms(GRANTED, config.setting(\"algorithms\"), &available);";
pub const TCP_CONG_ON_LOSS: &str = "pub const ON_LOSS: &str = \"bbr\";";

/// A bad tcp-cong: it picks reno for every peer, lossy ones included, and
/// switches lossy connections to reno (not bbr).
pub fn build_tcp_cong_reno_variant(dir: &Path) -> std::path::PathBuf {
    build_policy_variant(
        dir,
        "tcp-cong",
        "tcp-cong-reno",
        &[
            ("src/lib.rs", TCP_CONG_ARMS, "let algorithms = arms(GRANTED, Some(\"reno\"), &available);"),
            ("src/lib.rs", TCP_CONG_ON_LOSS, "pub const ON_LOSS: &str = \"reno\";"),
        ],
    )
}

/// `policies/POLICY`'s source copied into `dir` with each `(file, from,
/// to)` replacement made, built for wasm32-wasip2 as crate `crate_name`
/// against the SDK source; the component's path.
pub fn build_policy_variant(dir: &Path, policy: &str, crate_name: &str, patches: &[(&str, &str, &str)]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let source = root.join("policies").join(policy);
    std::fs::create_dir_all(dir.join("src")).expect("variant directory");
    for entry in std::fs::read_dir(source.join("src")).expect("policy source") {
        let entry = entry.expect("a source file");
        std::fs::copy(entry.path(), dir.join("src").join(entry.file_name())).expect("copy a source file");
    }
    std::fs::copy(source.join("policy.toml"), dir.join("policy.toml")).expect("copy the manifest");
    for (file, from, to) in patches {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(text.contains(from), "{policy}'s {file} no longer has {from:?}; update this test's variant");
        std::fs::write(&path, text.replace(from, to)).expect("patch the variant");
    }
    let sdk = root.join("sdk");
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{crate_name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
             [lib]\ncrate-type = [\"cdylib\", \"rlib\"]\n\n[dependencies]\nwasmtune-sdk = {{ path = {:?} }}\n\n\
             [workspace]\n\n[profile.release]\nopt-level = \"s\"\nlto = true\npanic = \"abort\"\n",
            sdk.display().to_string()
        ),
    )
    .expect("variant Cargo.toml");
    let target_dir = root.join("target/scaffold");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .output()
        .expect("run cargo build of the variant");
    assert!(out.status.success(), "cargo build of the variant failed:\n{}", String::from_utf8_lossy(&out.stderr));
    target_dir.join(format!("wasm32-wasip2/release/{}.wasm", crate_name.replace('-', "_")))
}

/// A receiver maximum far below what a veth link needs (96 KiB).
pub const TINY_RMEM: &str = "4096 131072 98304";

/// Loads `wasm` as the policy file of `name` into a daemon over a new
/// namespace whose `tcp_rmem` is [`TINY_RMEM`], with the built-in
/// tcp-buffer (which owns `tcp_rmem`) off, and pushes traffic until the
/// policy's first change, which must be its own and say why. Returns the
/// policy directory (keep it: the daemon watches it), the bed and the
/// daemon, still running, for what the caller checks next.
pub fn tune_with_policy_file(wasm: &Path, name: &str, label: &str) -> (tempfile::TempDir, harness::BufferBed, Daemon) {
    use harness::{BufferBed, READY_TIMEOUT, Side};
    let policies = tempfile::tempdir().expect("policy directory");
    std::fs::copy(wasm, policies.path().join(format!("{name}.wasm"))).expect("install the policy");
    let bed = BufferBed::new(label, Side::Receiver, TINY_RMEM).expect("build the test bed");
    let daemon = Daemon::builder()
        .netns(bed.tuned_netns())
        .policy_dir(policies.path())
        .enable_policy_files()
        .config("[policies.tcp-buffer]\nenabled = false\n")
        .start()
        .expect("spawn the daemon");
    let ready = daemon.wait_for_event("ready", READY_TIMEOUT).expect("daemon ready");
    let running = ready.field("policies").unwrap_or_default();
    assert!(running.split(',').any(|p| p.trim() == name), "{name} not running: {}", ready.raw);
    let is_change = bed.matcher("sysctl-change");
    std::thread::scope(|scope| {
        let traffic = scope.spawn(|| bed.transfer(6));
        let change = daemon.wait_for(&format!("a change by {name}"), Duration::from_secs(15), &is_change);
        traffic.join().expect("traffic thread").expect("transfer");
        let change = change.unwrap_or_else(|e| panic!("{name} raises tcp_rmem: {e}"));
        assert_eq!(change.field("policy").as_deref(), Some(name), "{}", change.raw);
        let reason = change.field("reason").unwrap_or_default();
        assert!(reason.contains("receive buffers reach tcp_rmem[2]"), "{}", change.raw);
    });
    (policies, bed, daemon)
}
