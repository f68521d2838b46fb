//! The exposition: the live [`Counters`], the daemon's `status` answer
//! (the documented schema of `docs/control.md`: what `wasmtune status`
//! shows, read here rather than gathered a second way) and the hooks' run
//! counters, encoded by `prometheus-client` in the format the scraper asked
//! for. Built afresh for every scrape: nothing of it is kept between two.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde_json::Value as Json;

use super::counters::{Counters, PolicyLabels};
use super::values;
use crate::bpf::HookRunStats;

/// The two text formats `prometheus-client` encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text, ended by `# EOF`; what Prometheus asks for first.
    OpenMetrics,
    /// The Prometheus text format 0.0.4, what `promtool check metrics` and
    /// older scrapers read.
    Text,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// The format for a request's `Accept` header: OpenMetrics when the
    /// scraper names it, the older text format otherwise.
    pub fn for_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(accept) if accept.to_ascii_lowercase().contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }
}

/// One label set of any names, for families whose series do not all carry
/// the same labels (a tunable's `field`).
type Labels = Vec<(&'static str, String)>;
type F64Gauge = Gauge<f64, AtomicU64>;
type F64Counter = Counter<f64, AtomicU64>;

/// The whole exposition from `status` (the `result` of a `status` answer),
/// the counters and the hooks' run counters (`None`: not counted).
pub fn render(format: Format, status: &Json, counters: &Counters, hooks: Option<&[HookRunStats]>) -> String {
    let mut registry = Registry::with_prefix("wasmtune");
    register_counters(&mut registry, counters);
    register_status(&mut registry, status);
    if let Some(hooks) = hooks {
        register_hooks(&mut registry, hooks);
    }
    let mut text = String::new();
    // Writing into a String cannot fail; the encoder fails only on that.
    let encoded = match format {
        Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, &registry),
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut text, &registry),
    };
    if let Err(error) = encoded {
        tracing::warn!(%error, "the metrics could not be encoded");
    }
    text
}

fn register_counters(registry: &mut Registry, counters: &Counters) {
    let events = Family::<Labels, Counter>::default();
    for (kind, count) in counters.events_by_kind() {
        events.get_or_create(&vec![("kind", kind.to_string())]).inc_by(count);
    }
    registry.register("events", "Events offered to the policies' router, by kind", events);
    registry.register(
        "decisions",
        "Changes policies asked for that passed every check and were queued for the actuator, by policy and tunable",
        counters.decisions.clone(),
    );
    registry.register(
        "changes",
        "Sysctl changes written to the kernel (journaled first), by policy and tunable",
        counters.changes.clone(),
    );
    registry.register(
        "denials",
        "Changes policies asked for that were refused, by policy, tunable and reason (the denial's name)",
        counters.denials.clone(),
    );
    registry.register(
        "policy_faults",
        "Policy calls that failed and were charged to the policy, by policy and kind",
        counters.faults.clone(),
    );
    registry.register(
        "policy_quarantines",
        "Times a policy was quarantined after repeated faults",
        counters.quarantines.clone(),
    );
    registry.register(
        "policy_fuel_used",
        "Fuel (roughly Wasm instructions) policies' calls used, by policy",
        counters.fuel.clone(),
    );
}

/// A number of the status answer; absent or not a count is 0.
fn count(value: &Json) -> u64 {
    value.as_u64().unwrap_or(0)
}

fn register_status(registry: &mut Registry, status: &Json) {
    let lost = Counter::<u64>::default();
    lost.inc_by(count(&status["events-lost-upstream"]));
    registry.register(
        "events_lost",
        "Events lost before routing: BPF ring buffer and event channel overflows, capped connection summaries, \
         /proc poller drops",
        lost,
    );
    let restarts = Counter::<u64>::default();
    restarts.inc_by(count(&status["runtime"]["restarts"]));
    registry.register("runtime_restarts", "Times the runtime process that runs the policies was restarted", restarts);

    let routed = Family::<PolicyLabels, Counter>::default();
    let handled = Family::<PolicyLabels, Counter>::default();
    let policy_lost = Family::<PolicyLabels, Counter>::default();
    let failed = Family::<PolicyLabels, Counter>::default();
    let quarantined = Family::<PolicyLabels, Gauge>::default();
    for policy in status["policies"].as_array().into_iter().flatten() {
        let Some(name) = policy["name"].as_str() else { continue };
        let labels = PolicyLabels { policy: name.to_string() };
        let totals = &policy["totals"];
        if totals.is_object() {
            routed.get_or_create(&labels).inc_by(count(&totals["routed"]));
            handled.get_or_create(&labels).inc_by(count(&totals["handled"]));
            policy_lost.get_or_create(&labels).inc_by(count(&totals["lost"]));
            failed.get_or_create(&labels).inc_by(count(&totals["failed"]));
        }
        quarantined.get_or_create(&labels).set(i64::from(policy["state"].as_str() == Some("quarantined")));
    }
    registry.register("policy_events_routed", "Events the router offered to a policy, all its versions", routed);
    registry.register("policy_events_handled", "Events a policy handled in calls that returned normally", handled);
    registry.register(
        "policy_events_lost",
        "Events that never reached a policy's call (its queue full, backing off, quarantined)",
        policy_lost,
    );
    registry.register("policy_events_failed", "Events in a policy's calls that faulted", failed);
    registry.register("policy_quarantined", "1 while a policy is quarantined, 0 otherwise", quarantined);

    let tunables = Family::<Labels, F64Gauge>::default();
    for tunable in status["tunables"].as_array().into_iter().flatten() {
        let (Some(name), Some(netns), Some(current)) =
            (tunable["tunable"].as_str(), tunable["netns"].as_str(), tunable["current"].as_str())
        else {
            continue;
        };
        for sample in values::fields(name, current) {
            let mut labels: Labels = vec![("tunable", name.to_string()), ("netns", netns.to_string())];
            labels.extend(sample.field.map(|field| ("field", field)));
            tunables.get_or_create(&labels).set(sample.value);
        }
    }
    registry.register(
        "tunable_value",
        "The kernel's value now of every tunable a policy changed, by namespace; a multi-value sysctl has one \
         series per field (field=min|default|max, min|pressure|max, or the index)",
        tunables,
    );

    let overrides = Family::<OverrideLabels, Gauge>::default();
    for o in status["overrides"].as_array().into_iter().flatten() {
        let (Some(tunable), Some(netns)) = (o["tunable"].as_str(), o["netns"].as_str()) else { continue };
        overrides.get_or_create(&OverrideLabels { tunable: tunable.to_string(), netns: netns.to_string() }).set(1);
    }
    registry.register(
        "tunable_overridden",
        "1 for each tunable the administrator holds (written by another process, or set in a boot-time sysctl \
         file); no policy changes it until `wasmtune override clear`",
        overrides,
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverrideLabels {
    tunable: String,
    netns: String,
}

fn register_hooks(registry: &mut Registry, hooks: &[HookRunStats]) {
    let runs = Family::<Labels, Counter>::default();
    let time = Family::<Labels, F64Counter>::default();
    for hook in hooks {
        let labels = vec![("hook", hook.hook.to_string())];
        runs.get_or_create(&labels).inc_by(hook.run_count);
        time.get_or_create(&labels).inc_by(hook.run_time_ns as f64 / 1e9);
    }
    registry.register(
        "hook_runs",
        "Runs of each attached BPF hook; present only once the kernel counts BPF run time \
         (kernel.bpf_stats_enabled = 1, or a BPF_ENABLE_STATS descriptor held), since it counts nothing otherwise",
        runs,
    );
    registry.register_with_unit(
        "hook_run_time",
        "Time each attached BPF hook ran; present only once the kernel counts BPF run time \
         (kernel.bpf_stats_enabled = 1, or a BPF_ENABLE_STATS descriptor held)",
        Unit::Seconds,
        time,
    );
}
