//! What happens, counted where it happens. Events are counted on the
//! router's path with one relaxed atomic add per event and no lock; the
//! rest (a policy's decisions and denials, the actuator's changes, faults,
//! quarantines) are rarer, and keep a counter per label set in a
//! [`Family`], whose read lock is taken only to find the counter.
//!
//! Label values are bounded: policy names are manifest names, tunables
//! are names a grant declares (anything else a policy makes up is counted
//! as [`NOT_DECLARED`]), reasons and fault kinds are fixed lists.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::manifest::EVENT_KINDS;
use crate::wit::{Event, EventKind};

/// The tunable label of a request for a name the policy's grant does not
/// declare: the name is the guest's own string, of any length and number.
pub const NOT_DECLARED: &str = "(not declared)";

/// A policy's counters, by policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

/// Decisions and changes, by policy and tunable.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TunableLabels {
    pub policy: String,
    pub tunable: String,
}

/// Denials, by policy, tunable and the denial's name (`not-granted`,
/// `out-of-bounds`, `rate-limited`, ...: `grants::denial_kind`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DenialLabels {
    pub policy: String,
    pub tunable: String,
    pub reason: String,
}

/// Faults, by policy and kind (`trap`, `fuel`, `deadline`, `memory`,
/// `blocked`, `runtime`, `init`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub policy: String,
    pub kind: String,
}

/// Every counter the daemon's stages add to.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events offered to the router, indexed like [`EVENT_KINDS`].
    events: [AtomicU64; EVENT_KINDS.len()],
    pub(super) decisions: Family<TunableLabels, Counter>,
    pub(super) changes: Family<TunableLabels, Counter>,
    pub(super) denials: Family<DenialLabels, Counter>,
    pub(super) faults: Family<FaultLabels, Counter>,
    pub(super) quarantines: Family<PolicyLabels, Counter>,
    pub(super) fuel: Family<PolicyLabels, Counter>,
}

static GLOBAL: LazyLock<Counters> = LazyLock::new(Counters::default);

/// The daemon's counters: one set per process.
pub fn global() -> &'static Counters {
    &GLOBAL
}

impl Counters {
    /// Counts the events of one batch by kind (`lost` notices are not
    /// events; losses are counted where they happen).
    pub fn events(&self, batch: &[Event]) {
        for event in batch {
            if let Some(slot) = crate::events::event_kind(event).and_then(|kind| self.events.get(kind_index(kind))) {
                slot.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Events counted so far, with the name of their kind, in WIT order.
    pub fn events_by_kind(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        EVENT_KINDS.iter().zip(&self.events).map(|((_, name), count)| (*name, count.load(Ordering::Relaxed)))
    }

    /// A change a policy asked for passed every check and was queued.
    pub fn decided(&self, policy: &str, tunable: &str) {
        self.decisions.get_or_create(&tunable_labels(policy, tunable)).inc();
    }

    /// A change was written to the kernel (and journaled).
    pub fn changed(&self, policy: &str, tunable: &str) {
        self.changes.get_or_create(&tunable_labels(policy, tunable)).inc();
    }

    /// A change was refused; `reason` is the denial's name.
    pub fn denied(&self, policy: &str, tunable: &str, reason: &str) {
        let labels =
            DenialLabels { policy: policy.to_string(), tunable: tunable.to_string(), reason: reason.to_string() };
        self.denials.get_or_create(&labels).inc();
    }

    /// A call failed in a way charged to the policy.
    pub fn fault(&self, policy: &str, kind: &str) {
        self.faults.get_or_create(&FaultLabels { policy: policy.to_string(), kind: kind.to_string() }).inc();
    }

    /// A policy was quarantined.
    pub fn quarantined(&self, policy: &str) {
        self.quarantines.get_or_create(&PolicyLabels { policy: policy.to_string() }).inc();
    }

    /// Fuel a policy's call used (Wasm instructions, roughly).
    pub fn fuel_used(&self, policy: &str, fuel: u64) {
        if fuel > 0 {
            self.fuel.get_or_create(&PolicyLabels { policy: policy.to_string() }).inc_by(fuel);
        }
    }
}

fn tunable_labels(policy: &str, tunable: &str) -> TunableLabels {
    TunableLabels { policy: policy.to_string(), tunable: tunable.to_string() }
}

/// Where a kind's count is kept. The WIT enum is fieldless and
/// [`EVENT_KINDS`] lists it in WIT order (a test holds them together), so
/// the discriminant is the index.
fn kind_index(kind: EventKind) -> usize {
    kind as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::{AdminOverride, Event};

    #[test]
    fn event_kinds_are_indexed_in_wit_order() {
        for (i, (kind, _)) in EVENT_KINDS.iter().enumerate() {
            assert_eq!(kind_index(*kind), i, "{kind:?}");
        }
    }

    #[test]
    fn events_are_counted_by_kind() {
        let counters = Counters::default();
        let admin = Event::AdminOverride(AdminOverride {
            netns: 1,
            sysctl: "net.core.somaxconn".into(),
            pid: 1,
            comm: "sysctl".into(),
        });
        counters.events(&[admin.clone(), admin, Event::Lost(9)]);
        let counted: Vec<(&str, u64)> = counters.events_by_kind().filter(|(_, n)| *n > 0).collect();
        assert_eq!(counted, [("admin-override", 2)]);
    }
}
