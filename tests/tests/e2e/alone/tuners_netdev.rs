//! End to end, the net-buffer policy on global sysctls of the initial
//! namespace: drops at a full per-CPU input backlog raise
//! `netdev_max_backlog` (and set the CPU's flow-limit bit), NAPI runs out of
//! budget raise `netdev_budget` and `netdev_budget_usecs` (capped), and an
//! administrator's backlog is left alone while the budget keeps being tuned.
//!
//! The traffic is a [`GsoFlood`]: bursts of 128 datagrams handed to the
//! receiving CPU's backlog at once, so that a backlog below 128 overflows on
//! every burst and a budget of at most one NAPI poll (64) runs out on it.
//! A backlog drop is seen in the namespace of the receiving device, so the
//! daemon tunes that namespace and the initial one, where the sysctls live.
//! Every global sysctl is guarded before the daemon starts, so the guards
//! restore it after the daemon has stopped.

use crate::tuning;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tuning::{
    CHANGE_TIMEOUT, FloodRates, GsoFlood, change_of, init_value, start, start_with, start_without_bpf,
    udp_segmentation_off,
};
use wasmtune_tests::harness::{self, Daemon, GlobalSysctlGuard, LogLine, Netns, Requirement, VethPair};

const MAX_BACKLOG: &str = "net.core.netdev_max_backlog";
const FLOW_LIMIT_BITMAP: &str = "net.core.flow_limit_cpu_bitmap";
const BUDGET: &str = "net.core.netdev_budget";
const BUDGET_USECS: &str = "net.core.netdev_budget_usecs";
/// Datagrams per burst: the kernel's most per UDP GSO send.
const BURST: u16 = 128;
const WINDOW: Duration = Duration::from_secs(2);

/// Guards for every sysctl the policy may touch that this kernel has; `set`
/// ones are set now. The flow-limit bitmap is optional (`CONFIG_NET_FLOW_LIMIT`).
fn guard_all(set: &[(&str, &str)]) -> Vec<GlobalSysctlGuard> {
    [MAX_BACKLOG, FLOW_LIMIT_BITMAP, BUDGET, BUDGET_USECS]
        .iter()
        .filter(|name| harness::sysctl_exists(name))
        .map(|name| match set.iter().find(|(n, _)| n == name) {
            Some((_, value)) => GlobalSysctlGuard::set(name, value).expect("guard and set"),
            None => GlobalSysctlGuard::record(name).expect("guard"),
        })
        .collect()
}

/// A sender and a receiver namespace and the veth between them, ready for
/// a [`GsoFlood`] to a closed port of the receiver.
struct FloodBed {
    tx: Netns,
    rx: Netns,
    link: VethPair,
}

impl FloodBed {
    fn new(label: &str) -> FloodBed {
        let tx = Netns::new(&format!("{label}-tx")).expect("tx netns");
        let rx = Netns::new(&format!("{label}-rx")).expect("rx netns");
        let link = VethPair::new(&tx, &rx).expect("veth");
        udp_segmentation_off(&tx, link.dev_a());
        FloodBed { tx, rx, link }
    }

    fn flood(&self) -> GsoFlood {
        GsoFlood::start(&self.tx, SocketAddr::from((self.link.addr_b().octets(), 9)), BURST)
    }

    fn measure(&self, flood: &GsoFlood) -> FloodRates {
        FloodRates::measure(flood, BURST, &self.rx, WINDOW)
    }
}

fn field_u64(line: &LogLine, name: &str) -> u64 {
    line.field(name).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no integer `{name}`: {}", line.raw))
}

fn wait_change(daemon: &Daemon, tunable: &str) -> LogLine {
    daemon
        .wait_for(tunable, CHANGE_TIMEOUT, change_of("net-buffer", tunable))
        .unwrap_or_else(|err| panic!("no {tunable} change: {err}\n{}", daemon.dump()))
}

fn changes_of(daemon: &Daemon, tunable: &str) -> Vec<LogLine> {
    daemon.lines().into_iter().filter(|l| change_of("net-buffer", tunable)(l)).collect()
}

/// Asserts the fields every change line of the policy carries.
fn assert_change(line: &LogLine, old: u64, new: u64, scenario: &str, reason_has: &str) {
    assert_eq!(line.field("netns").as_deref(), Some("init"), "{}", line.raw);
    assert_eq!(field_u64(line, "old"), old, "{}", line.raw);
    assert_eq!(field_u64(line, "new"), new, "{}", line.raw);
    assert_eq!(line.field("scenario").as_deref(), Some(scenario), "{}", line.raw);
    let reason = line.field("reason").unwrap_or_default();
    assert!(reason.contains(reason_has), "reason lacks {reason_has:?}: {}", line.raw);
}

#[test]
fn net_buffer_raises_netdev_max_backlog_on_backlog_drops() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    // Guards first: dropped last, after the daemon, they restore the values.
    let _guards = guard_all(&[(MAX_BACKLOG, "64"), (FLOW_LIMIT_BITMAP, "0")]);
    let bed = FloodBed::new("backlog");
    let flood = bed.flood();
    let untuned = bed.measure(&flood);
    println!("net-buffer: backlog 64, no daemon: {untuned}");
    assert!(untuned.backlog_drops_per_s > 0.0, "bursts of {BURST} must overflow a backlog of 64: {untuned}");

    let has_bitmap = harness::sysctl_exists(FLOW_LIMIT_BITMAP);
    let mut daemon = start(&[&bed.rx], true);
    let first = wait_change(&daemon, MAX_BACKLOG);
    assert_change(&first, 64, 80, "need to increase max backlog size", "input backlog was full");
    let bitmap_line = if has_bitmap {
        let line = wait_change(&daemon, FLOW_LIMIT_BITMAP);
        let reason = line.field("reason").unwrap_or_default();
        assert_eq!(field_u64(&line, "old"), 0, "{}", line.raw);
        assert!(reason.contains("enabling flow limits"), "{}", line.raw);
        Some(line)
    } else {
        harness::skip_part(
            "tuners::net_buffer_backlog",
            "flow-limit bitmap change",
            "this kernel has no net.core.flow_limit_cpu_bitmap (built without CONFIG_NET_FLOW_LIMIT)",
        );
        // Without it the backlog is still tuned, and the host says once what is lost.
        let missing = daemon
            .wait_for("tunable-missing", CHANGE_TIMEOUT, |l| {
                l.is_event("tunable-missing") && l.field_is("tunable", FLOW_LIMIT_BITMAP)
            })
            .unwrap_or_else(|err| panic!("no tunable-missing line for the bitmap: {err}\n{}", daemon.dump()));
        assert!(missing.field_is("policy", "net-buffer"), "{}", missing.raw);
        None
    };
    // The policy keeps raising while bursts still overflow (with flow limits
    // on, a single flow may fill only half the backlog); then drops stop.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tuned = loop {
        let rates = FloodRates::measure(&flood, BURST, &bed.rx, Duration::from_secs(1));
        if rates.backlog_drops_per_s == 0.0 || Instant::now() >= deadline {
            break bed.measure(&flood);
        }
    };
    drop(flood);
    let backlog_after = init_value(MAX_BACKLOG);
    let bitmap_after = has_bitmap.then(|| init_value(FLOW_LIMIT_BITMAP));
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");

    let raises = changes_of(&daemon, MAX_BACKLOG);
    let mut expected_old = 64u64;
    for line in &raises {
        // Every change is one 25 % step from the value before it.
        let new = expected_old + expected_old / 4;
        assert_change(line, expected_old, new, "need to increase max backlog size", "input backlog was full");
        expected_old = new;
    }
    assert_eq!(backlog_after, expected_old, "the kernel holds the last change");
    if let (Some(bitmap_after), Some(bitmap_line)) = (bitmap_after, &bitmap_line) {
        // The bitmap is written as the integer whose digits are its hex form.
        let mask = u64::from_str_radix(&bitmap_after.to_string(), 16).expect("hex mask");
        let cpu_bit = u64::from_str_radix(&field_u64(bitmap_line, "new").to_string(), 16).expect("hex mask");
        assert!(cpu_bit != 0 && mask & cpu_bit == cpu_bit, "mask {mask:x} has the dropping CPU's bit {cpu_bit:x}");
    } else {
        let tried = daemon.lines().into_iter().filter(|l| l.field_is("tunable", FLOW_LIMIT_BITMAP));
        let changes: Vec<String> = tried.filter(|l| !l.is_event("tunable-missing")).map(|l| l.raw).collect();
        assert!(changes.is_empty(), "nothing done with a bitmap this kernel lacks: {changes:?}");
    }
    println!(
        "net-buffer: netdev_max_backlog 64 -> {backlog_after} in {} changes, flow_limit_cpu_bitmap 0 -> {bitmap_after:?}; tuned: {tuned}",
        raises.len()
    );
    assert!(
        tuned.backlog_drops_per_s < untuned.backlog_drops_per_s,
        "drops fell after tuning: untuned {untuned}; tuned {tuned}"
    );
    harness::record(
        "tuners::net_buffer_backlog",
        json!({
            "backlog_before": 64,
            "backlog_after": backlog_after,
            "flow_limit_bitmap_after": bitmap_after,
            "kernel_has_flow_limit_bitmap": has_bitmap,
            "changes": raises.len(),
            "untuned": untuned.to_json(),
            "tuned": tuned.to_json(),
        }),
    )
    .expect("record figures");
}

#[test]
fn net_buffer_raises_the_napi_budget_on_softnet_squeezes() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    // A budget below one NAPI poll's 64 packets runs out on every burst; a
    // time limit one step from the 50 ms cap shows the cap.
    let _guards = guard_all(&[(BUDGET, "32"), (BUDGET_USECS, "45000")]);
    let bed = FloodBed::new("squeeze");
    let flood = bed.flood();
    let untuned = bed.measure(&flood);
    println!("net-buffer: netdev_budget 32, no daemon: {untuned}");
    assert!(untuned.squeezes_per_s > 0.0, "a budget of 32 must run out: {untuned}");

    let mut daemon = start(&[], true);
    let budget = wait_change(&daemon, BUDGET);
    assert_change(&budget, 32, 40, "need to increase NAPI budget", "ran out of NAPI budget");
    let usecs = wait_change(&daemon, BUDGET_USECS);
    assert_change(&usecs, 45000, 50000, "need to increase NAPI budget", "raising netdev_budget_usecs");
    // Raises come at most every 5 s and stop once a poll fits the budget.
    let deadline = Instant::now() + Duration::from_secs(25);
    while init_value(BUDGET) <= 64 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let tuned = bed.measure(&flood);
    drop(flood);
    let (budget_after, usecs_after) = (init_value(BUDGET), init_value(BUDGET_USECS));
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");

    assert_eq!(usecs_after, 50000, "netdev_budget_usecs stays at its 50 ms cap");
    assert_eq!(changes_of(&daemon, BUDGET_USECS).len(), 1, "usecs reached its cap in one change");
    let raises = changes_of(&daemon, BUDGET);
    let mut expected_old = 32u64;
    for line in &raises {
        let new = expected_old + expected_old / 4;
        assert_change(line, expected_old, new, "need to increase NAPI budget", "ran out of NAPI budget");
        expected_old = new;
    }
    assert_eq!(budget_after, expected_old, "the kernel holds the last change");
    assert!(budget_after > 64, "netdev_budget 32 -> {budget_after}: raised past one poll\n{}", daemon.dump());
    println!(
        "net-buffer: netdev_budget 32 -> {budget_after} in {} changes, netdev_budget_usecs 45000 -> {usecs_after}; tuned: {tuned}",
        raises.len()
    );
    assert!(tuned.squeezes_per_s < untuned.squeezes_per_s, "squeezes fell: untuned {untuned}; tuned {tuned}");
    harness::record(
        "tuners::net_buffer_budget",
        json!({
            "budget_before": 32,
            "budget_after": budget_after,
            "usecs_before": 45000,
            "usecs_after": usecs_after,
            "changes": raises.len(),
            "untuned": untuned.to_json(),
            "tuned": tuned.to_json(),
        }),
    )
    .expect("record figures");
}

#[test]
fn an_administrators_netdev_max_backlog_is_kept_while_the_budget_is_still_tuned() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let _guards = guard_all(&[(MAX_BACKLOG, "64"), (BUDGET, "32"), (BUDGET_USECS, "8000")]);
    let bed = FloodBed::new("nb-admin");
    let flood = bed.flood();
    let mut daemon = start(&[&bed.rx], true);
    wait_change(&daemon, MAX_BACKLOG);
    // Below a burst: drops go on, and the policy would raise it again.
    let admin_value = 72u64;
    let written = std::process::Command::new("sysctl")
        .args(["-w", &format!("{MAX_BACKLOG}={admin_value}")])
        .output()
        .expect("run sysctl");
    assert!(written.status.success(), "sysctl -w: {}", String::from_utf8_lossy(&written.stderr));
    let overridden = daemon
        .wait_for("admin-override", CHANGE_TIMEOUT, |l| {
            l.is_event("admin-override") && l.field_is("tunable", MAX_BACKLOG)
        })
        .unwrap_or_else(|err| panic!("no admin-override line: {err}\n{}", daemon.dump()));
    assert!(overridden.field_is("policy", "net-buffer"), "{}", overridden.raw);
    assert_eq!(field_u64(&overridden, "found"), admin_value, "{}", overridden.raw);
    // The budget keeps being tuned after the override.
    let budget_after_override = daemon
        .wait_for("budget change after the override", Duration::from_secs(25), |l| {
            change_of("net-buffer", BUDGET)(l) && l.at > overridden.at
        })
        .unwrap_or_else(|err| panic!("netdev_budget not tuned after the override: {err}\n{}", daemon.dump()));
    // Drops have gone on all along: give the policy time to (wrongly) act.
    let during = bed.measure(&flood);
    drop(flood);
    let backlog_now = init_value(MAX_BACKLOG);
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");

    assert!(during.backlog_drops_per_s > 0.0, "drops went on at the administrator's backlog: {during}");
    assert_eq!(backlog_now, admin_value, "the administrator's value stays");
    let late = changes_of(&daemon, MAX_BACKLOG).into_iter().filter(|l| l.at > overridden.at).count();
    assert_eq!(late, 0, "no backlog change after the override\n{}", daemon.dump());
    println!(
        "net-buffer: administrator's netdev_max_backlog {admin_value} kept under {during}; netdev_budget still tuned: {}",
        budget_after_override.raw
    );
}

/// The guard: a budget doubled without halving the squeezes is given back.
/// Below one NAPI poll (64 packets) every burst squeezes whatever the
/// budget, so 16 -> 20 -> 25 -> 31 -> 38 doubles it with no effect.
#[test]
fn a_doubled_budget_that_does_not_cut_squeezes_is_given_back() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let _guards = guard_all(&[(BUDGET, "16"), (BUDGET_USECS, "8000")]);
    let bed = FloodBed::new("nb-giveup");
    let flood = bed.flood();
    // The flood at its steady rate before the policy sees it: a warming
    // flow's rising squeezes are not what this guard is about.
    std::thread::sleep(Duration::from_secs(2));
    let mut daemon = start(&[], true);
    let gave_up = daemon
        .wait_for("budget given back", Duration::from_secs(35), |l| {
            change_of("net-buffer", BUDGET)(l) && l.field_is("scenario", "NAPI budget increase did not help")
        })
        .unwrap_or_else(|err| panic!("the budget was not given back: {err}\n{}", daemon.dump()));
    assert_change(&gave_up, 38, 16, "NAPI budget increase did not help", "did not halve");
    // Squeezes go on; the policy holds instead of raising again.
    let during = bed.measure(&flood);
    std::thread::sleep(Duration::from_secs(4));
    drop(flood);
    let (budget_now, usecs_now) = (init_value(BUDGET), init_value(BUDGET_USECS));
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");

    assert!(during.squeezes_per_s > 0.0, "squeezes went on: {during}");
    assert_eq!((budget_now, usecs_now), (16, 8000), "back to the values the policy found\n{}", daemon.dump());
    let raises: Vec<u64> = changes_of(&daemon, BUDGET).iter().map(|l| field_u64(l, "new")).collect();
    assert_eq!(raises, vec![20, 25, 31, 38, 16], "raised by steps, given back once, then held");
    let usecs_changes = changes_of(&daemon, BUDGET_USECS);
    assert_eq!(usecs_changes.last().map(|l| field_u64(l, "new")), Some(8000), "usecs given back too");
    println!("net-buffer: netdev_budget {raises:?}; held under {during}");
    harness::record(
        "tuners::net_buffer_budget_given_back",
        json!({ "budget_changes": raises, "held_under": during.to_json() }),
    )
    .expect("record figures");
}

/// Boot-time settings are the administrator's: a `netdev_max_backlog` that a
/// sysctl.d file sets is left alone from the start, although backlog drops
/// go on, while the NAPI budget (not in the file) is still tuned.
#[test]
fn a_netdev_max_backlog_set_in_sysctl_d_is_the_administrators_from_start() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    let _guards = guard_all(&[(MAX_BACKLOG, "64"), (BUDGET, "32"), (BUDGET_USECS, "8000")]);
    let boot = harness::scratch_dir("sysctl-d").expect("sysctl.d directory");
    let file = boot.path().join("60-backlog.conf");
    std::fs::write(&file, format!("# the administrator's backlog\n{MAX_BACKLOG} = 64\n")).expect("write sysctl.d file");
    let config = format!("sysctl-d-dirs = [{:?}]\n", boot.path().to_string_lossy());
    let bed = FloodBed::new("nb-boot");
    let flood = bed.flood();
    let mut daemon = start_with(&[&bed.rx], true, &config);
    let said = daemon
        .wait_for("the sysctl-d line", CHANGE_TIMEOUT, |l| l.is_event("sysctl-d") && l.raw.contains(MAX_BACKLOG))
        .unwrap_or_else(|err| panic!("the boot-time setting is not said at start: {err}\n{}", daemon.dump()));
    assert!(said.raw.contains("60-backlog.conf:2"), "names the file and line: {}", said.raw);
    // The budget is tuned: the daemon is at work on the same traffic.
    wait_change(&daemon, BUDGET);
    let during = bed.measure(&flood);
    drop(flood);
    let backlog_now = init_value(MAX_BACKLOG);
    let status = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(status.success(), "daemon exit status {status}");

    assert!(during.backlog_drops_per_s > 0.0, "drops went on at the boot-time backlog: {during}");
    assert_eq!(backlog_now, 64, "the boot-time value stays\n{}", daemon.dump());
    assert!(changes_of(&daemon, MAX_BACKLOG).is_empty(), "no backlog change\n{}", daemon.dump());
    println!("net-buffer: sysctl.d netdev_max_backlog 64 kept under {during}; {}", said.raw);
    harness::record(
        "tuners::net_buffer_sysctl_d",
        json!({ "backlog_kept": backlog_now, "under": during.to_json(), "said": said.message() }),
    )
    .expect("record figures");
}

/// With every BPF program refused (bpf(2) fails with EPERM), the daemon
/// still runs: it says which hooks are off, tunes from the /proc signals
/// (softnet squeezes raise the NAPI budget), answers its control socket and
/// prints its summary on exit.
#[test]
fn with_every_bpf_hook_failing_the_daemon_still_tunes_from_proc_signals() {
    if harness::skip_without(&Requirement::DAEMON_E2E) {
        return;
    }
    let _serial = harness::measurement_lock();
    if !std::path::Path::new("/proc/sys/kernel/seccomp/actions_avail").exists() {
        let reason = "this kernel has no seccomp filters (CONFIG_SECCOMP_FILTER), which make bpf(2) fail here";
        harness::skip_part("tuners::no_bpf_hooks", "daemon with every BPF program refused", reason);
        return;
    }
    let _guards = guard_all(&[(BUDGET, "32"), (BUDGET_USECS, "8000")]);
    let bed = FloodBed::new("nb-nobpf");
    let flood = bed.flood();
    let mut daemon = start_without_bpf(&[], true);
    let off = daemon
        .wait_for("hooks-unavailable", CHANGE_TIMEOUT, |l| l.is_event("hooks-unavailable"))
        .unwrap_or_else(|err| panic!("no hooks-unavailable line: {err}\n{}", daemon.dump()));
    assert!(off.raw.contains("\"level\":\"WARN\""), "{}", off.raw);
    let ready = daemon.events("ready").into_iter().next().expect("ready line");
    assert_eq!(ready.field("hooks").as_deref(), Some("0"), "{}", ready.raw);
    let budget = wait_change(&daemon, BUDGET);
    assert_change(&budget, 32, 40, "need to increase NAPI budget", "ran out of NAPI budget");
    drop(flood);
    let answer = harness::cli_json(&["status", "--json"]);
    let policies = answer["result"]["policies"].as_array().map_or(0, Vec::len);
    assert!(policies >= 7, "every built-in runs: {answer}");
    let exit = daemon.terminate().expect("daemon exits on SIGTERM");
    assert!(exit.success(), "daemon exit status {exit}");
    assert!(!daemon.events("summary").is_empty(), "summary on exit\n{}", daemon.dump());
    println!("no BPF: {}\n{}", off.raw, budget.raw);
    harness::record(
        "tuners::no_bpf_hooks",
        json!({ "hooks_attached": 0, "budget_change": budget.message(), "policies_running": policies }),
    )
    .expect("record figures");
}
