//! End to end: the daemon under a service manager. The test stands in for
//! systemd where systemd would only listen (the `NOTIFY_SOCKET` datagrams:
//! READY, STATUS, RELOADING, STOPPING, WATCHDOG), and runs the real
//! systemd-journald, in a mount namespace of its own, where the daemon logs
//! natively. A real stuck actuator (its journal on a frozen file system)
//! must stop the watchdog pings.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtune_tests::harness::{self, BufferBed, Daemon, READY_TIMEOUT, Side};

use crate::lifecycle::TINY_RMEM;

/// One datagram the daemon sent, and when it arrived.
#[derive(Debug, Clone)]
struct Note {
    at: Instant,
    text: String,
}

/// The service manager's end of `NOTIFY_SOCKET`: every datagram, kept.
struct NotifyListener {
    path: PathBuf,
    notes: Arc<Mutex<Vec<Note>>>,
    _dir: tempfile::TempDir,
}

impl NotifyListener {
    fn bind() -> NotifyListener {
        let dir = tempfile::tempdir().expect("scratch dir");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let notes = Arc::new(Mutex::new(Vec::new()));
        let kept = notes.clone();
        // Ends with the test process; the socket file goes with `dir`.
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).to_string();
                kept.lock().expect("notes").push(Note { at: Instant::now(), text });
            }
        });
        NotifyListener { path, notes, _dir: dir }
    }

    fn notes(&self) -> Vec<Note> {
        self.notes.lock().expect("notes").clone()
    }

    /// Waits for a datagram after `since` carrying `line` (e.g. "READY=1").
    fn wait_for(&self, line: &str, since: Instant, timeout: Duration) -> Note {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(note) = self.notes().into_iter().find(|n| n.at >= since && n.text.lines().any(|l| l == line)) {
                return note;
            }
            assert!(Instant::now() < deadline, "no {line} within {timeout:?}; got {:#?}", self.notes());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pings_between(&self, from: Instant, to: Instant) -> usize {
        self.notes().iter().filter(|n| n.at >= from && n.at < to && n.text.lines().any(|l| l == "WATCHDOG=1")).count()
    }
}

fn status_of(note: &Note) -> String {
    note.text.lines().find_map(|l| l.strip_prefix("STATUS=")).unwrap_or_default().to_string()
}

#[test]
fn e2e_notify_ready_watchdog_reload_and_stopping() {
    if harness::skip_without(&[harness::Requirement::Root, harness::Requirement::Tool("ip")]) {
        return;
    }
    let manager = NotifyListener::bind();
    let netns = harness::Netns::new("wt-sd").expect("namespace");
    let (_socket_dir, socket) = crate::lifecycle::socket_in("sd");
    let started = Instant::now();
    let mut daemon = Daemon::builder()
        .netns(&netns)
        .arg("--dry-run")
        .control_socket(&socket)
        .config("[policies.neigh]\nenabled = true\n")
        .env("NOTIFY_SOCKET", &manager.path.to_string_lossy())
        .env("WATCHDOG_USEC", "1000000")
        .start_ready()
        .expect("daemon ready");

    let ready = manager.wait_for("READY=1", started, Duration::from_secs(5));
    let status = status_of(&ready);
    println!("READY=1 with STATUS={status}");
    assert!(status.starts_with("tuning: 7 policies, 1 network namespaces"), "{status}");
    // Pinged every half interval while everything answers.
    std::thread::sleep(Duration::from_millis(2600));
    let pings = manager.pings_between(ready.at, Instant::now());
    assert!(pings >= 3, "{pings} watchdog pings in 2.6 s at a 1 s watchdog: {:#?}", manager.notes());

    // A reload takes a good configuration: neigh stops, the rest stay.
    std::fs::write(daemon.config_path(), "[policies.neigh]\nenabled = false\n").expect("rewrite the config");
    let hup = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    manager.wait_for("RELOADING=1", hup, Duration::from_secs(5));
    let reloaded = manager.wait_for("READY=1", hup, Duration::from_secs(10));
    assert!(status_of(&reloaded).starts_with("tuning: 6 policies"), "{}", reloaded.text);
    let line = daemon.wait_for_event("reload", Duration::from_secs(5)).expect("reload line");
    println!("{}", line.message().unwrap_or_default());
    let list = harness::cli_json(&["status", "--json", "--socket", &socket.to_string_lossy()]);
    let state_of = |list: &serde_json::Value, name: &str| {
        list["result"]["policies"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == name))
            .map(|p| p["state"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(state_of(&list, "neigh").as_deref(), Some("disabled"), "{list}");
    assert_eq!(state_of(&list, "tcp-buffer").as_deref(), Some("running"), "{list}");

    // A bad one is refused with its place, and the one in force stays.
    std::fs::write(daemon.config_path(), "[policies.neigh]\nenabld = true\n").expect("rewrite the config");
    let (ok, out, err) = harness::cli(&["check-config", &daemon.config_path().to_string_lossy()]);
    assert!(!ok, "check-config takes a bad file: {out}");
    assert!(err.contains("line 2, column 1") && err.contains("enabld"), "{err}");
    let hup = Instant::now();
    daemon.signal(nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    let refused_ready = manager.wait_for("READY=1", hup, Duration::from_secs(10));
    assert!(status_of(&refused_ready).contains("the last reload was refused"), "{}", refused_ready.text);
    let refused = daemon.wait_for_event("reload-refused", Duration::from_secs(5)).expect("refusal line");
    let message = refused.message().unwrap_or_default();
    assert!(message.contains("line 2, column 1") && message.contains("stays in force"), "{message}");
    let list = harness::cli_json(&["status", "--json", "--socket", &socket.to_string_lossy()]);
    assert_eq!(state_of(&list, "neigh").as_deref(), Some("disabled"), "the old configuration stays: {list}");

    let (ok, out, err) = harness::cli(&["check-config", "/nonexistent/wasmtune.toml"]);
    assert!(!ok && err.contains("/nonexistent/wasmtune.toml"), "a named file must exist: {out}{err}");

    let term = Instant::now();
    let status = daemon.terminate().expect("clean stop");
    assert!(status.success(), "{status:?}");
    let stopping = manager.wait_for("STOPPING=1", term, Duration::from_secs(5));
    println!("STOPPING=1 with STATUS={}", status_of(&stopping));
    harness::record("systemd_notify", serde_json::json!({"pings_in_2_6_s": pings, "ready_status": status_of(&ready)}))
        .expect("record the figures");
}

/// A small ext4 file system on a loop device, which the test can freeze:
/// every write to it then blocks until it is thawed. Thawed, unmounted and
/// detached on drop, whatever the test did.
struct FreezableDir {
    image: tempfile::TempDir,
    mount: PathBuf,
    frozen: bool,
}

impl FreezableDir {
    /// `Err` with the reason when this machine cannot make one (no loop
    /// device in a container, say).
    fn new() -> Result<FreezableDir, String> {
        let image = tempfile::tempdir().expect("scratch dir");
        let file = image.path().join("fs.img");
        let mount = image.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        run(Command::new("truncate").args(["-s", "32M"]).arg(&file));
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&file));
        let mounted = Command::new("mount").args(["-o", "loop"]).arg(&file).arg(&mount).output();
        match mounted {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("mount -o loop: {}", String::from_utf8_lossy(&out.stderr).trim())),
            Err(e) => return Err(format!("mount: {e}")),
        }
        let state = mount.join("state");
        std::fs::create_dir(&state).expect("state dir");
        std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).expect("chmod");
        Ok(FreezableDir { image, mount, frozen: false })
    }

    fn state_dir(&self) -> PathBuf {
        self.mount.join("state")
    }

    fn freeze(&mut self) {
        run(Command::new("fsfreeze").arg("-f").arg(&self.mount));
        self.frozen = true;
    }

    fn thaw(&mut self) {
        if self.frozen {
            run(Command::new("fsfreeze").arg("-u").arg(&self.mount));
            self.frozen = false;
        }
    }
}

impl Drop for FreezableDir {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.mount).stderr(Stdio::null()).status();
        // Lazily: a daemon killed while blocked may still hold files there.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        let _ = &self.image;
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn e2e_a_stuck_actuator_stops_the_watchdog_pings() {
    if harness::skip_without(&harness::Requirement::NETWORK_E2E)
        || harness::skip_without(&[harness::Requirement::Tool("fsfreeze"), harness::Requirement::Tool("mkfs.ext4")])
    {
        return;
    }
    let mut disk = match FreezableDir::new() {
        Ok(disk) => disk,
        Err(reason) => {
            harness::skip_part("systemd_watchdog", "all", &format!("no file system to freeze here: {reason}"));
            return;
        }
    };
    let manager = NotifyListener::bind();
    let bed = BufferBed::new("wt-wd", Side::Receiver, TINY_RMEM).expect("test bed");
    let mut daemon = Daemon::builder()
        .netns(bed.tuned_netns())
        .state_dir(&disk.state_dir())
        .env("NOTIFY_SOCKET", &manager.path.to_string_lossy())
        .env("WATCHDOG_USEC", "1000000")
        .start()
        .expect("spawn the daemon");
    daemon.wait_for_event("ready", READY_TIMEOUT).expect("ready");
    let ready = manager.wait_for("READY=1", Instant::now() - Duration::from_secs(60), Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(1600));
    let before = manager.pings_between(ready.at, Instant::now());
    assert!(before >= 2, "pings before the freeze: {before}");

    // The journal's file system freezes: the first change the actuator
    // journals blocks it inside write(2), as a hung disk would.
    disk.freeze();
    let frozen_at = Instant::now();
    let traffic = bed.background_transfer(8).expect("traffic");
    let stuck = daemon
        .wait_for_event("watchdog-stuck", Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("the watchdog must notice the stuck actuator: {e}"));
    assert_eq!(stuck.field("part").as_deref(), Some("the actuator"), "{}", stuck.raw);
    let noticed = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let during = manager.pings_between(noticed, Instant::now());
    assert_eq!(during, 0, "no ping while the actuator is stuck: {:#?}", manager.notes());
    assert_eq!(harness::normalize(&bed.current().expect("read")), harness::normalize(TINY_RMEM), "nothing applied");
    println!("stuck noticed {:.1} s after the freeze; 0 pings in the 3 s after", (noticed - frozen_at).as_secs_f64());

    // Thawed, the change goes through and the pings come back.
    disk.thaw();
    let thawed = Instant::now();
    daemon.wait_for_event("watchdog-recovered", Duration::from_secs(10)).expect("recovery line");
    manager.wait_for("WATCHDOG=1", thawed, Duration::from_secs(5));
    let change = daemon.wait_for_event("sysctl-change", Duration::from_secs(10)).expect("the change, once thawed");
    println!("after the thaw: {}", change.message().unwrap_or_default());
    let _ = traffic.wait();
    let status = daemon.terminate().expect("clean stop");
    assert!(status.success(), "{status:?}");
    harness::record(
        "systemd_watchdog",
        serde_json::json!({
            "pings_before": before,
            "pings_while_stuck": during,
            "noticed_after_s": (noticed - frozen_at).as_secs_f64(),
        }),
    )
    .expect("record the figures");
}

/// A private mount namespace, held by a sleeping process, in which `/run/systemd`,
/// `/run/log` and `/var/log/journal` are empty tmpfs mounts: a journald
/// started there is the test's alone. Killed (and the mounts gone) on drop.
struct PrivateJournal {
    holder: Child,
    journald: Option<Child>,
}

impl PrivateJournal {
    fn start() -> PrivateJournal {
        let script = "set -e; mount -t tmpfs tmpfs /run/systemd 2>/dev/null || { mkdir -p /run/systemd; \
                      mount -t tmpfs tmpfs /run/systemd; }; mkdir -p /run/systemd/journal; \
                      mount -t tmpfs tmpfs /run/log; \
                      if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi; \
                      touch /run/systemd/.ready; exec sleep 600";
        let holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let mut journal = PrivateJournal { holder, journald: None };
        journal.wait_for_path("/run/systemd/.ready");
        let journald = journal
            .inside(Path::new("/lib/systemd/systemd-journald"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-journald");
        journal.journald = Some(journald);
        journal.wait_for_path("/run/systemd/journal/socket");
        journal
    }

    /// A command that runs in the private mount namespace.
    fn inside(&self, program: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.holder.id().to_string(), "-m", "--"]).arg(program);
        cmd
    }

    fn wait_for_path(&self, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.inside(Path::new("test")).args(["-e", path]).status().is_ok_and(|s| s.success()) {
            assert!(Instant::now() < deadline, "{path} never appeared in the private mount namespace");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `journalctl -o json MATCHES...`, one JSON object per entry.
    fn entries(&self, matches: &[&str]) -> Vec<serde_json::Value> {
        let out = self
            .inside(Path::new("journalctl"))
            .args(["--no-pager", "-o", "json"])
            .args(matches)
            .output()
            .expect("journalctl");
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for PrivateJournal {
    fn drop(&mut self) {
        if let Some(mut journald) = self.journald.take() {
            let _ = journald.kill();
            let _ = journald.wait();
        }
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

#[test]
fn e2e_journal_fields_select_the_lines_of_one_policy() {
    if harness::skip_without(&harness::Requirement::NETWORK_E2E)
        || harness::skip_without(&[harness::Requirement::Tool("unshare"), harness::Requirement::Tool("nsenter")])
    {
        return;
    }
    if !Path::new("/lib/systemd/systemd-journald").exists() {
        harness::skip_part("journald", "all", "no /lib/systemd/systemd-journald on this machine");
        return;
    }
    // The bed first: its namespace's mount under /run/netns must exist
    // when the private mount namespace copies the mounts.
    let bed = BufferBed::new("wt-jd", Side::Receiver, TINY_RMEM).expect("test bed");
    let journal = PrivateJournal::start();
    let state = tempfile::tempdir().expect("state dir");
    let (_socket_dir, socket) = crate::lifecycle::socket_in("jd");
    let config = state.path().join("config.toml");
    std::fs::write(&config, "").expect("an empty configuration");
    let mut daemon = journal
        .inside(&harness::wasmtune_bin().expect("daemon binary"))
        .args(["run", "--log-format", "journal", "--netns", bed.tuned_netns().name(), "--policy-dir"])
        .arg(state.path().join("no-policies"))
        .arg("--state-dir")
        .arg(state.path().join("state"))
        .arg("--control-socket")
        .arg(&socket)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon");
    let change_id = message_id("sysctl-change");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut found = Vec::new();
    while found.is_empty() && Instant::now() < deadline {
        let ready = journal.entries(&["SYSLOG_IDENTIFIER=wasmtune", &format!("MESSAGE_ID={}", message_id("ready"))]);
        if !ready.is_empty() {
            let _ = bed.transfer(2);
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
        found = journal.entries(&["POLICY=tcp-buffer", &format!("MESSAGE_ID={change_id}")]);
    }
    let _ = nix_kill_term(daemon.id());
    let exit = daemon.wait().expect("daemon exit");
    let stderr = std::io::read_to_string(daemon.stderr.take().expect("stderr")).unwrap_or_default();
    if found.is_empty() {
        let all = journal.entries(&["SYSLOG_IDENTIFIER=wasmtune"]);
        let lines: Vec<String> =
            all.iter().map(|e| format!("{} {} {}", e["EVENT"], e["MESSAGE_ID"], e["MESSAGE"])).collect();
        panic!(
            "no entry for POLICY=tcp-buffer MESSAGE_ID={change_id}; the daemon's entries:\n{}\nstderr:\n{stderr}",
            lines.join("\n")
        );
    }
    let entry = &found[0];
    println!("journalctl POLICY=tcp-buffer MESSAGE_ID={change_id}: {}", entry["MESSAGE"]);
    assert_eq!(entry["TUNABLE"], "net.ipv4.tcp_rmem", "{entry}");
    assert_eq!(entry["NETNS"].as_str(), Some(bed.tuned_netns().name()), "{entry}");
    assert_eq!(entry["PRIORITY"], "6", "{entry}");
    for field in ["OLD", "NEW", "SCENARIO", "REASON"] {
        assert!(entry[field].as_str().is_some_and(|v| !v.is_empty()), "{field} missing: {entry}");
    }
    assert!(exit.success(), "{exit:?}");
    // Every line went to the journal, none to stderr.
    assert!(stderr.trim().is_empty(), "stderr is not used when logging to the journal: {stderr}");
    let summary = journal.entries(&["SYSLOG_IDENTIFIER=wasmtune", "EVENT=summary"]);
    assert!(!summary.is_empty(), "the exit summary is in the journal too");
    harness::record("journald", serde_json::json!({"entries_for_tcp_buffer_changes": found.len()}))
        .expect("record the figures");
}

fn nix_kill_term(pid: u32) -> std::io::Result<()> {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    if status.success() { Ok(()) } else { Err(std::io::Error::other("kill failed")) }
}

fn message_id(kind: &str) -> String {
    wasmtune::journald::message_id(kind)
}
