//! The kernel-writing side against the real kernel, as root: namespaces
//! discovered and entered, sysctl changes written and read back in one
//! throwaway namespace only, the journal written before the kernel, dry run,
//! administrator override, rollback in the daemon and after a crash, and a
//! value the kernel refuses.
//!
//! Every test makes its own namespaces (`harness::Netns`, deleted on drop,
//! also when the test panics) and its own state directory, and never writes
//! a sysctl of the test process's own namespace; it checks that one is left
//! unchanged.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use wasmtune::actuate::{Actuator, ActuatorConfig, SysctlChange};
use wasmtune::ledger::{self, Journal, LedgerError, Record, SkipReason};
use wasmtune::netns::{self, NetnsError, NetnsRegistry};
use wasmtune::sysctl::{self, Value};
use wasmtune_tests::harness::{self, Netns, Requirement};

const RMEM: &str = "net.ipv4.tcp_rmem";
const SCENARIO: &str = "need to increase TCP buffer size(s)";
const REASON: &str = "receive buffers reached tcp_rmem[2] in a test";

/// True (after saying why) when the tests cannot run here.
fn skip_unless_root() -> bool {
    harness::skip_without(&[Requirement::Root, Requirement::Tool("ip"), Requirement::Tool("sysctl")])
}

/// The value as `sysctl` inside the namespace sees it: a second path to the
/// kernel, independent of the code under test.
fn sysctl_of(ns: &Netns, tunable: &str) -> Value {
    Value::parse(&harness::sysctl_in(ns, tunable).expect("sysctl inside the test namespace"))
}

/// A write by "the administrator".
fn set_sysctl(ns: &Netns, tunable: &str, value: &Value) {
    harness::set_sysctl_in(ns, tunable, &value.to_string()).expect("sysctl -w inside the test namespace");
}

/// The test process's own value, which no test may change.
fn init_rmem() -> Value {
    sysctl::read(RMEM).expect("read tcp_rmem in the test's own namespace")
}

/// `value` with its last integer moved by `delta`.
fn with_max(value: &Value, delta: i64) -> Value {
    let Value::Integers(fields) = value else { panic!("tcp_rmem is integers: {value:?}") };
    let mut fields = fields.clone();
    let last = fields.len() - 1;
    fields[last] += delta;
    Value::Integers(fields)
}

fn change(netns: u64, value: Value) -> SysctlChange {
    SysctlChange {
        checked_against: None,
        policy: "test-buffer".into(),
        netns,
        tunable: RMEM.into(),
        value,
        scenario: SCENARIO.into(),
        reason: REASON.into(),
    }
}

/// One namespace, a registry that tunes only it, and a fresh state directory.
struct Bed {
    registry: Arc<NetnsRegistry>,
    cookie: u64,
    state_dir: PathBuf,
    _state: tempfile::TempDir,
    ns: Netns,
}

impl Bed {
    fn new() -> Bed {
        logs();
        let ns = Netns::new("act").expect("create the test namespace");
        let name = ns.name().to_string();
        let registry = Arc::new(NetnsRegistry::discover(std::slice::from_ref(&name)).expect("discover"));
        let cookie = registry.cookie_of(&name).expect("test namespace discovered");
        let state = tempfile::tempdir().expect("tempdir");
        let state_dir = state.path().join("state");
        Bed { registry, cookie, state_dir, _state: state, ns }
    }

    fn spawn(&self, dry_run: bool) -> (Actuator, JoinHandle<()>) {
        Actuator::spawn(ActuatorConfig {
            dry_run,
            state_dir: self.state_dir.clone(),
            registry: self.registry.clone(),
            journal_max_bytes: wasmtune::ledger::COMPACT_AT_BYTES,
        })
        .expect("spawn actuator")
    }

    fn journal(&self) -> Vec<Record> {
        let replay = Journal::replay(&Journal::path_in(&self.state_dir)).expect("replay journal");
        assert_eq!(replay.torn_tail, None);
        replay.records
    }

    fn intents(&self) -> Vec<ledger::Intent> {
        self.journal()
            .into_iter()
            .filter_map(|record| match record {
                Record::Intent(intent) => Some(intent),
                _ => None,
            })
            .collect()
    }
}

/// Log lines (JSON, fields flattened) of every test in this binary.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || LogSink(sink.clone()))
            .init();
        buffer
    })
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl Write for LogSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logged events of one kind about one namespace.
fn events(event: &str, netns: &str) -> Vec<serde_json::Value> {
    let buffer = logs().lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    String::from_utf8_lossy(&buffer)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["event"] == event && line["netns"] == netns)
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
}

#[test]
fn writes_only_in_the_target_namespace_and_journals_the_intent_before_applying() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let init_before = init_rmem();
    let (actuator, thread) = bed.spawn(false);
    let original = actuator.read(bed.cookie, RMEM).expect("read");
    assert_eq!(original, sysctl_of(&bed.ns, RMEM));
    let grown = with_max(&original, 3 * 4096);

    actuator.submit(change(bed.cookie, grown.clone()));

    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read back"), grown);
    assert_eq!(sysctl_of(&bed.ns, RMEM), grown, "seen from inside the namespace");
    assert_eq!(init_rmem(), init_before, "the test's own namespace must be untouched");
    assert!(!actuator.is_overridden(bed.cookie, RMEM));

    let records = bed.journal();
    assert!(matches!(records[0], Record::SessionStart { .. }), "{records:?}");
    let intent_at = records.iter().position(|r| matches!(r, Record::Intent(_))).expect("intent");
    let Record::Intent(intent) = &records[intent_at] else { unreachable!() };
    assert_eq!((intent.netns, intent.netns_name.as_str()), (bed.cookie, bed.ns.name()));
    assert_eq!((&intent.old, &intent.new), (&original, &grown));
    assert_eq!(
        (intent.policy.as_str(), intent.scenario.as_str(), intent.reason.as_str()),
        ("test-buffer", SCENARIO, REASON)
    );
    let applied_at = records.iter().position(|r| matches!(r, Record::Applied { .. })).expect("applied");
    assert!(intent_at < applied_at, "intent must precede applied: {records:?}");
    assert_eq!(records[applied_at].seq(), Some(intent.seq));
    assert_eq!(mode(&bed.state_dir), 0o700);
    assert_eq!(mode(&Journal::path_in(&bed.state_dir)), 0o600);

    let logged = events("sysctl-change", bed.ns.name());
    assert_eq!(logged.len(), 1, "{logged:?}");
    let line = &logged[0];
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["policy"], "test-buffer");
    assert_eq!(line["tunable"], RMEM);
    assert_eq!(line["old"], original.to_string());
    assert_eq!(line["new"], grown.to_string());
    assert_eq!(line["scenario"], SCENARIO);
    assert_eq!(line["reason"], REASON);
    let expected_message = format!(
        "{SCENARIO}: {RMEM} in netns {} changed from ({original}) to ({grown}) by policy test-buffer: {REASON}",
        bed.ns.name()
    );
    assert_eq!(line["message"], expected_message);

    let summary = actuator.summary().lines();
    let replicate = format!("to replicate: ip netns exec {} sysctl -w '{RMEM}={grown}'", bed.ns.name());
    assert!(summary.contains(&replicate), "{summary:#?}");
    assert!(summary.contains(&format!("scenario '{SCENARIO}': 1 change(s)")), "{summary:#?}");

    assert!(actuator.rollback().complete);
    assert_eq!(sysctl_of(&bed.ns, RMEM), original);
    actuator.shutdown();
    thread.join().expect("actuator thread");
}

#[test]
fn dry_run_leaves_the_kernel_and_the_journal_alone() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(true);
    let original = actuator.read(bed.cookie, RMEM).expect("read");
    let grown = with_max(&original, 4096);

    actuator.submit(change(bed.cookie, grown.clone()));

    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), original);
    assert_eq!(sysctl_of(&bed.ns, RMEM), original);
    assert!(bed.intents().is_empty(), "{:?}", bed.journal());
    let logged = events("sysctl-would-change", bed.ns.name());
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0]["new"], grown.to_string());
    assert!(events("sysctl-change", bed.ns.name()).is_empty());

    let summary = actuator.summary().lines();
    assert!(summary[0].starts_with("dry run: nothing was written; 1 change(s)"), "{summary:#?}");
    assert!(summary.iter().any(|line| line.ends_with(&format!("sysctl -w '{RMEM}={grown}'"))), "{summary:#?}");
    let report = actuator.rollback();
    assert!(report.restored.is_empty(), "{report:?}");
    actuator.shutdown();
    thread.join().expect("actuator thread");
}

#[test]
fn a_value_changed_by_someone_else_is_left_alone_from_then_on() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(false);
    let original = actuator.read(bed.cookie, RMEM).expect("read");
    let ours = with_max(&original, 4096);
    let admins = with_max(&original, 2 * 4096);

    actuator.submit(change(bed.cookie, ours.clone()));
    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), ours);
    set_sysctl(&bed.ns, RMEM, &admins);
    actuator.submit(change(bed.cookie, with_max(&original, 3 * 4096)));

    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), admins, "the administrator's value stays");
    assert!(actuator.is_overridden(bed.cookie, RMEM));
    assert_eq!(bed.intents().len(), 1, "only the first change was journaled");
    let logged = events("admin-override", bed.ns.name());
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        (logged[0]["expected"].as_str(), logged[0]["found"].as_str()),
        (Some(&*ours.to_string()), Some(&*admins.to_string()))
    );

    actuator.submit(change(bed.cookie, with_max(&original, 4 * 4096)));
    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), admins, "still left alone");

    let report = actuator.rollback();
    assert!(report.restored.is_empty(), "{report:?}");
    assert!(matches!(report.skipped.as_slice(), [(_, SkipReason::ChangedSince { .. })]), "{report:?}");
    assert!(report.lines()[0].contains("changed by someone else since"), "{:?}", report.lines());
    assert!(report.complete);
    assert_eq!(sysctl_of(&bed.ns, RMEM), admins);
    actuator.shutdown();
    thread.join().expect("actuator thread");
}

#[test]
fn rollback_in_the_daemon_restores_the_original() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(false);
    let original = actuator.read(bed.cookie, RMEM).expect("read");
    let last = with_max(&original, 2 * 4096);
    actuator.submit(change(bed.cookie, with_max(&original, 4096)));
    actuator.submit(change(bed.cookie, last.clone()));
    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), last);

    let report = actuator.rollback();

    assert!(report.complete, "{report:?}");
    assert_eq!(report.restored.len(), 1, "{report:?}");
    assert_eq!((&report.restored[0].from, &report.restored[0].to), (&last, &original));
    assert_eq!(sysctl_of(&bed.ns, RMEM), original);
    let logged = events("rollback", bed.ns.name());
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        (logged[0]["from"].as_str(), logged[0]["to"].as_str()),
        (Some(&*last.to_string()), Some(&*original.to_string()))
    );
    let records = bed.journal();
    let tail: Vec<&str> = records[records.len() - 3..]
        .iter()
        .map(|record| match record {
            Record::RollbackIntent(_) => "rollback-intent",
            Record::RolledBack { .. } => "rolled-back",
            Record::RollbackComplete { .. } => "rollback-complete",
            _ => "other",
        })
        .collect();
    assert_eq!(tail, ["rollback-intent", "rolled-back", "rollback-complete"]);
    assert_eq!(actuator.summary().lines(), ["no sysctl changes by wasmtune are in effect"]);
    assert_eq!(actuator.rollback().lines(), ["nothing to roll back"]);
    actuator.shutdown();
    thread.join().expect("actuator thread");
}

#[test]
fn offline_rollback_after_a_crash_restores_the_original() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(false);
    let original = actuator.read(bed.cookie, RMEM).expect("read");
    let grown = with_max(&original, 4096);
    actuator.submit(change(bed.cookie, grown.clone()));
    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), grown);
    let busy = ledger::rollback_offline(&bed.state_dir).expect_err("the daemon holds the journal");
    assert!(matches!(busy, LedgerError::InUse { .. }), "{busy}");

    // A crash: the daemon goes away without rolling back.
    drop(actuator);
    thread.join().expect("actuator thread");
    assert_eq!(sysctl_of(&bed.ns, RMEM), grown);

    let report = ledger::rollback_offline(&bed.state_dir).expect("offline rollback");

    assert!(report.complete, "{report:?}");
    assert_eq!(report.restored.len(), 1, "{report:?}");
    assert_eq!(sysctl_of(&bed.ns, RMEM), original);
    assert_eq!(ledger::rollback_offline(&bed.state_dir).expect("again").lines(), ["nothing to roll back"]);
}

#[test]
fn a_restarted_daemon_rolls_back_what_the_crashed_one_changed() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(false);
    let original = actuator.read(bed.cookie, RMEM).expect("read");
    let grown = with_max(&original, 4096);
    actuator.submit(change(bed.cookie, grown.clone()));
    drop(actuator);
    thread.join().expect("actuator thread");

    let (restarted, thread) = bed.spawn(false);
    let summary = restarted.summary().lines();
    assert!(summary.iter().any(|line| line.contains(&format!("({original}) -> ({grown})"))), "{summary:#?}");
    let report = restarted.rollback();
    assert_eq!(report.restored.len(), 1, "{report:?}");
    assert_eq!(sysctl_of(&bed.ns, RMEM), original);
    restarted.shutdown();
    thread.join().expect("actuator thread");
}

#[test]
fn a_namespace_gone_before_rollback_is_reported_not_an_error() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(false);
    let original = actuator.read(bed.cookie, RMEM).expect("read");
    actuator.submit(change(bed.cookie, with_max(&original, 4096)));
    drop(actuator);
    thread.join().expect("actuator thread");
    let Bed { registry, ns, state_dir, _state, .. } = bed;
    let name = ns.name().to_string();
    drop(registry);
    drop(ns);

    let report = ledger::rollback_offline(&state_dir).expect("offline rollback");

    assert!(report.complete, "{report:?}");
    assert!(
        matches!(report.skipped.as_slice(), [(key, SkipReason::NamespaceGone { .. })] if key.netns == name),
        "{report:?}"
    );
    assert!(matches!(
        Journal::replay(&Journal::path_in(&state_dir)).expect("replay").records.last(),
        Some(Record::RollbackComplete { .. })
    ));
}

#[test]
fn a_value_the_kernel_refuses_fails_cleanly_and_is_journaled_as_failed() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(false);
    let original = actuator.read(bed.cookie, RMEM).expect("read");

    // tcp_rmem fields have a minimum of 1.
    actuator.submit(change(bed.cookie, Value::Integers(vec![0, 0, 0])));
    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), original);
    let records = bed.journal();
    let failed = records.iter().find_map(|record| match record {
        Record::Failed { error, found, .. } => Some((error.clone(), found.clone())),
        _ => None,
    });
    let (error, found) = failed.expect("a failed record");
    assert!(error.contains("kernel rejected the value '0 0 0'") && error.contains("EINVAL"), "{error}");
    assert_eq!(found, Some(original.clone()));
    let logged = events("sysctl-change-failed", bed.ns.name());
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0]["error"].as_str().is_some_and(|e| e.contains("EINVAL")), "{logged:?}");

    // The kernel would take "1 2" as a partial write and report success.
    actuator.submit(change(bed.cookie, Value::Integers(vec![1, 2])));
    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), original);
    assert_eq!(bed.intents().len(), 1, "a refused shape is not attempted");
    let logged = events("sysctl-change-failed", bed.ns.name());
    assert!(
        logged.iter().any(|line| line["error"].as_str().is_some_and(|e| e.contains("partial write"))),
        "{logged:?}"
    );

    assert_eq!(actuator.summary().lines(), ["no sysctl changes by wasmtune are in effect"]);
    actuator.shutdown();
    thread.join().expect("actuator thread");
}

#[test]
fn a_namespace_outside_the_tuned_set_is_never_written() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let other = Netns::new("act").expect("create a test namespace");
    bed.registry.refresh().expect("refresh");
    let other_cookie = bed.registry.cookie_of(other.name()).expect("other namespace known");
    assert!(!bed.registry.is_tuned(other_cookie));
    let (actuator, thread) = bed.spawn(false);
    let before = sysctl_of(&other, RMEM);

    actuator.submit(change(other_cookie, with_max(&before, 4096)));

    assert_eq!(actuator.read(other_cookie, RMEM).expect("read"), before);
    assert_eq!(sysctl_of(&other, RMEM), before);
    assert_eq!(events("sysctl-change-failed", other.name()).len(), 1);
    actuator.shutdown();
    thread.join().expect("actuator thread");
}

#[test]
fn the_registry_names_tunes_and_enters_namespaces_behind_a_guard() {
    if skip_unless_root() {
        return;
    }
    logs();
    let rx = Netns::new("act").expect("create a test namespace");
    let registry = NetnsRegistry::discover(&[rx.name().to_string()]).expect("discover");
    let home = netns::current_cookie().expect("own cookie");
    let rx_cookie = registry.cookie_of(rx.name()).expect("rx known");
    assert_eq!(registry.cookie_of("init"), Some(home));
    assert_ne!(rx_cookie, home);
    assert_eq!(registry.name_of(rx_cookie).as_deref(), Some(rx.name()));
    assert!(registry.is_tuned(rx_cookie));
    assert!(!registry.is_tuned(home), "init is not in --netns");
    assert_eq!(registry.list().iter().map(|ns| ns.name.as_str()).collect::<Vec<_>>(), [rx.name()]);

    {
        let _inside = registry.enter(rx_cookie).expect("enter");
        assert_eq!(netns::current_cookie().expect("cookie"), rx_cookie);
    }
    assert_eq!(netns::current_cookie().expect("cookie"), home, "the guard returned");
    {
        let _inside = NetnsRegistry::enter_by_name(rx.name()).expect("enter by name");
        assert_eq!(netns::current_cookie().expect("cookie"), rx_cookie);
    }
    assert_eq!(netns::current_cookie().expect("cookie"), home);

    let late = Netns::new("act").expect("create a test namespace");
    registry.refresh().expect("refresh");
    let late_cookie = registry.cookie_of(late.name()).expect("late namespace found");
    assert!(!registry.is_tuned(late_cookie), "not in --netns");
    let late_name = late.name().to_string();
    drop(late);
    registry.refresh().expect("refresh");
    assert_eq!(registry.cookie_of(&late_name), None, "a deleted namespace is dropped");
    assert_eq!(registry.cookie_of(rx.name()), Some(rx_cookie), "cookies stay stable across scans");

    let missing = format!("{}-missing", rx.name());
    let error = NetnsRegistry::discover(std::slice::from_ref(&missing)).err().expect("unknown name refused");
    assert!(matches!(&error, NetnsError::UnknownName { name } if *name == missing), "{error}");
    assert!(error.to_string().contains(&missing));

    let everything = NetnsRegistry::discover(&[]).expect("discover all");
    assert!(everything.is_tuned(home) && everything.is_tuned(rx_cookie));
    assert_eq!(everything.list()[0].name, "init");
}

/// A policy reading every network sysctl of a namespace must not use up the
/// daemon's descriptors: fast-path files stay bounded, and the reads that do
/// not fit still answer.
#[test]
fn reading_every_network_sysctl_keeps_open_files_bounded() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(false);
    let names: Vec<String> = walk("/proc/sys/net")
        .into_iter()
        .filter_map(|path| path.strip_prefix("/proc/sys/").ok().map(|p| p.to_string_lossy().replace('/', ".")))
        .filter(|name| sysctl::validate_name(name).is_ok())
        .collect();
    let fds_before = std::fs::read_dir("/proc/self/fd").expect("fds").count();
    let answered = names.iter().filter(|name| actuator.read(bed.cookie, name).is_ok()).count();
    let fds_after = std::fs::read_dir("/proc/self/fd").expect("fds").count();
    println!(
        "read {answered} of {} network sysctls: descriptors {fds_before} -> {fds_after}, {} kept open",
        names.len(),
        actuator.open_sysctls()
    );
    assert!(answered > wasmtune::actuate::MAX_OPEN_SYSCTLS, "the reads beyond the bound still answer");
    assert!(actuator.open_sysctls() <= wasmtune::actuate::MAX_OPEN_SYSCTLS);
    assert!(fds_after <= fds_before + wasmtune::actuate::MAX_OPEN_SYSCTLS + 8, "{fds_before} -> {fds_after}");
    actuator.forget_netns(bed.cookie);
    assert_eq!(actuator.open_sysctls(), 0, "closed with the namespace");
    actuator.shutdown();
    thread.join().expect("actuator thread");
}

/// Every readable file under `dir`, recursively.
fn walk(dir: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::from(dir)];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(path),
                Ok(kind) if kind.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

/// A change checked against one value is not applied over another: with a
/// field-restricted grant, the fields the policy may not change would be
/// put back to what they were when it asked.
#[test]
fn a_change_checked_against_a_value_since_replaced_is_not_made() {
    if skip_unless_root() {
        return;
    }
    let bed = Bed::new();
    let (actuator, thread) = bed.spawn(false);
    let original = actuator.read(bed.cookie, RMEM).expect("read");
    let stale = with_max(&original, -4096);
    let mut request = change(bed.cookie, with_max(&original, 8192));
    request.checked_against = Some(stale);

    actuator.submit(request);

    assert_eq!(actuator.read(bed.cookie, RMEM).expect("read"), original, "not applied");
    assert!(bed.intents().is_empty(), "nothing journaled: {:?}", bed.journal());
    let failed = events("sysctl-change-failed", bed.ns.name());
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["error"].as_str().is_some_and(|e| e.contains("since the request was checked")), "{failed:?}");
    actuator.shutdown();
    thread.join().expect("actuator thread");
}
