//! What a policy may do: its manifest's grants, narrowed by the
//! administrator, bounded by the host's hard limits, and — across policies —
//! one owner per tunable per netns and a rate limit per tunable.
//!
//! Deny by default: a tunable that the manifest does not declare, that the
//! administrator denies, or that falls outside `net.*` is never reachable.
//! Every request is checked here at call time, not only at load.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{BoundsNarrowing, PolicySettings, SysctlNarrowing, TcpNarrowing};
use crate::manifest::{Access, Manifest, RangeGrant, TcpGrant};
use crate::peer::{PeerPrefix, PeerSettings, peer_prefix};
use crate::sysctl::Value;
use crate::wit::{Bounds, Denial, EventKind};

/// Minimum time between two accepted changes of one tunable in one netns.
pub const MIN_CHANGE_INTERVAL: Duration = Duration::from_millis(100);
/// Recent changes remembered for the rate limit before old ones are pruned.
const MAX_REMEMBERED_CHANGES: usize = 4096;

/// Limits no grant can exceed, derived from the machine.
#[derive(Debug, Clone, Copy)]
pub struct HostLimits {
    /// A quarter of RAM, in pages: the most TCP or UDP may ever be given.
    pub memory_quarter_pages: i64,
}

impl HostLimits {
    pub fn detect() -> HostLimits {
        let pages = match (crate::machine::phys_pages(), crate::machine::page_size()) {
            (Some(pages), Some(_)) => i64::try_from(pages).unwrap_or(1 << 20),
            _ => 1 << 20,
        };
        HostLimits { memory_quarter_pages: (pages / 4).max(1) }
    }

    /// The hard range for every field of a sysctl a policy may be granted
    /// to change; `None` for any other, which only the administrator can
    /// grant (with bounds of their own, in the config).
    pub fn bounds(&self, name: &str) -> Option<(i64, i64)> {
        let int = i64::from(i32::MAX);
        let bytes_quarter = self.memory_quarter_pages.saturating_mul(4096);
        Some(match name {
            // Kernel ints: bpftune once overflowed tcp_rmem to a negative value.
            "net.ipv4.tcp_rmem"
            | "net.ipv4.tcp_wmem"
            | "net.core.rmem_max"
            | "net.core.wmem_max"
            | "net.core.rmem_default"
            | "net.core.wmem_default" => (1, int),
            "net.ipv4.tcp_mem" | "net.ipv4.udp_mem" => (1, self.memory_quarter_pages),
            // Kernel memory ceilings: what each may hold is memory.
            "net.core.netdev_max_backlog" => (1, 1 << 20),
            "net.core.netdev_budget" => (1, 1 << 16),
            "net.core.netdev_budget_usecs" => (1, 1_000_000),
            "net.core.flow_limit_cpu_bitmap" => (0, i64::MAX),
            "net.ipv4.ipfrag_high_thresh" | "net.ipv6.ip6frag_high_thresh" => (1, bytes_quarter.min(int)),
            "net.ipv4.neigh.default.gc_thresh1"
            | "net.ipv4.neigh.default.gc_thresh2"
            | "net.ipv4.neigh.default.gc_thresh3"
            | "net.ipv6.neigh.default.gc_thresh1"
            | "net.ipv6.neigh.default.gc_thresh2"
            | "net.ipv6.neigh.default.gc_thresh3" => (0, 1 << 20),
            "net.ipv6.route.max_size" => (1, int),
            "net.ipv4.tcp_max_syn_backlog" => (1, 1 << 20),
            "net.ipv4.tcp_syncookies" => (0, 2),
            "net.ipv4.tcp_moderate_rcvbuf"
            | "net.ipv4.tcp_no_metrics_save"
            | "net.ipv4.tcp_no_ssthresh_metrics_save"
            | "net.core.high_order_alloc_disable" => (0, 1),
            // Text: only values the manifest lists (and the kernel offers).
            "net.ipv4.tcp_congestion_control" => (0, 0),
            _ => return None,
        })
    }
}

/// Per-destination settings no grant can exceed: a congestion window or
/// clamp past these is no tuning, and a SYN timeout past two minutes stalls
/// every connection.
pub const TCP_INITIAL_CWND_MAX: u32 = 1024;
pub const TCP_WINDOW_CLAMP_MAX: u32 = 1 << 30;
pub const TCP_SYN_RTO_MS_RANGE: (u32, u32) = (10, 120_000);

/// Why a policy's grant cannot be given at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "its manifest declares {tunable} writable, which is not a tunable wasmtune lets policies change; \
     the administrator may grant it: [policies.{policy}.sysctl.\"{tunable}\"] allow = true, min = .., max = .."
)]
pub struct NotAllowed {
    pub policy: String,
    pub tunable: String,
}

/// Sysctls whose fields must stay in ascending order (min ≤ default ≤ max,
/// or low ≤ pressure ≤ high), or the kernel misbehaves.
fn must_ascend(name: &str) -> bool {
    matches!(name, "net.ipv4.tcp_rmem" | "net.ipv4.tcp_wmem" | "net.ipv4.tcp_mem" | "net.ipv4.udp_mem")
}

/// One sysctl as the policy may actually use it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TunableGrant {
    pub access: Access,
    /// Positions that may change; `None` = all.
    pub fields: Option<Vec<usize>>,
    /// Effective inclusive range for every changed field.
    pub min: i64,
    pub max: i64,
    /// For text sysctls, the values that may be set.
    pub values: Option<Vec<String>>,
    /// What the policy does with it (the manifest's `purpose`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// A policy's grants resolved against the administrator and the host.
#[derive(Debug, Clone, Serialize)]
pub struct EffectiveGrant {
    pub policy: String,
    #[serde(skip)]
    pub events: Vec<EventKind>,
    pub sysctls: BTreeMap<String, TunableGrant>,
    /// Sysctls the manifest declared but the administrator denied.
    pub denied_by_admin: Vec<String>,
    /// Per-destination TCP settings it may apply; `None` = none at all.
    pub tcp: Option<TcpPeerGrant>,
}

/// The `[tcp]` grant, resolved: prefixes parsed and normalised.
#[derive(Debug, Clone, Serialize)]
pub struct TcpPeerGrant {
    pub congestion: Vec<String>,
    #[serde(serialize_with = "prefixes_as_text")]
    pub prefixes: Vec<PeerPrefix>,
    pub initial_cwnd: Option<RangeGrant>,
    pub window_clamp: Option<RangeGrant>,
    pub syn_rto_ms: Option<RangeGrant>,
    pub no_delay: bool,
}

fn prefixes_as_text<S: serde::Serializer>(prefixes: &[PeerPrefix], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(prefixes.iter().map(ToString::to_string))
}

/// The prefixes inside both lists: of two nested prefixes the narrower one,
/// of two disjoint ones nothing (prefixes either nest or are disjoint).
fn intersect_prefixes(granted: &[PeerPrefix], allowed: &[PeerPrefix]) -> Vec<PeerPrefix> {
    let mut both: Vec<PeerPrefix> = granted
        .iter()
        .flat_map(|g| {
            allowed.iter().filter_map(move |a| {
                if g.contains(a) {
                    Some(*a)
                } else if a.contains(g) {
                    Some(*g)
                } else {
                    None
                }
            })
        })
        .collect();
    both.sort();
    both.dedup();
    both
}

/// A manifest range within the administrator's bounds; `None` when the
/// manifest grants none or nothing is left of it.
fn intersect_range(granted: Option<RangeGrant>, bounds: Option<BoundsNarrowing>) -> Option<RangeGrant> {
    let granted = granted?;
    let Some(bounds) = bounds else { return Some(granted) };
    let min = bounds.min.map_or(granted.min, |min| min.max(granted.min));
    let max = bounds.max.map_or(granted.max, |max| max.min(granted.max));
    (min <= max).then_some(RangeGrant { min, max })
}

impl TcpPeerGrant {
    /// The manifest's `[tcp]` table, narrowed by the administrator's
    /// `[policies.NAME.tcp]` when there is one (intersection only).
    fn resolve(grant: &TcpGrant, narrowing: Option<&TcpNarrowing>) -> TcpPeerGrant {
        let prefixes: Vec<PeerPrefix> = grant.prefixes.iter().filter_map(|text| peer_prefix(text)).collect();
        let host = |min: u32, max: u32| Some(BoundsNarrowing { min: Some(min), max: Some(max) });
        let mut resolved = TcpPeerGrant {
            congestion: grant.congestion.clone(),
            prefixes,
            initial_cwnd: intersect_range(grant.initial_cwnd, host(1, TCP_INITIAL_CWND_MAX)),
            window_clamp: intersect_range(grant.window_clamp, host(1, TCP_WINDOW_CLAMP_MAX)),
            syn_rto_ms: intersect_range(grant.syn_rto_ms, host(TCP_SYN_RTO_MS_RANGE.0, TCP_SYN_RTO_MS_RANGE.1)),
            no_delay: grant.no_delay,
        };
        let Some(narrowing) = narrowing else { return resolved };
        if let Some(allowed) = &narrowing.congestion {
            resolved.congestion.retain(|name| allowed.contains(name));
        }
        if let Some(allowed) = &narrowing.prefixes {
            let allowed: Vec<PeerPrefix> = allowed.iter().filter_map(|text| peer_prefix(text)).collect();
            resolved.prefixes = intersect_prefixes(&resolved.prefixes, &allowed);
        }
        resolved.initial_cwnd = intersect_range(resolved.initial_cwnd, narrowing.initial_cwnd);
        resolved.window_clamp = intersect_range(resolved.window_clamp, narrowing.window_clamp);
        resolved.syn_rto_ms = intersect_range(resolved.syn_rto_ms, narrowing.syn_rto_ms);
        resolved.no_delay = resolved.no_delay && narrowing.no_delay.unwrap_or(true);
        resolved
    }

    /// Whether `prefix` lies inside one of the granted prefixes.
    pub fn covers(&self, prefix: &PeerPrefix) -> bool {
        self.prefixes.iter().any(|granted| granted.contains(prefix))
    }

    /// Checks a prefix and its settings against the grant and the algorithms
    /// the kernel offers. Pure.
    pub fn check(
        &self,
        policy: &str,
        prefix: &PeerPrefix,
        settings: &PeerSettings,
        available: &[String],
    ) -> Result<(), Denial> {
        if !self.covers(prefix) {
            return Err(Denial::NotGranted(format!(
                "{policy} may not configure peers in {prefix}: not inside its [tcp] prefixes (granted: [{}])",
                self.prefixes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        for name in [&settings.congestion, &settings.on_loss_congestion].into_iter().flatten() {
            if !self.congestion.iter().any(|allowed| allowed == name) {
                return Err(Denial::NotGranted(format!(
                    "{policy} may not choose congestion control {name:?} (granted: [{}])",
                    self.congestion.join(", ")
                )));
            }
            if !available.iter().any(|offered| offered == name) {
                return Err(Denial::Unsupported(format!(
                    "congestion control {name:?} is not offered by this kernel (available: {})",
                    available.join(" ")
                )));
            }
        }
        let ranges = [
            ("initial-cwnd", settings.initial_cwnd, self.initial_cwnd),
            ("window-clamp", settings.window_clamp, self.window_clamp),
            ("syn-rto-ms", settings.syn_rto_ms, self.syn_rto_ms),
        ];
        for (name, requested, granted) in ranges {
            match (requested, granted) {
                (None, _) => {}
                (Some(_), None) => {
                    return Err(Denial::NotGranted(format!(
                        "{policy} may not set {name}: its [tcp] grant does not declare it"
                    )));
                }
                (Some(value), Some(range)) if value < range.min || value > range.max => {
                    return Err(Denial::OutOfBounds(Bounds { min: i64::from(range.min), max: i64::from(range.max) }));
                }
                (Some(_), Some(_)) => {}
            }
        }
        if settings.no_delay.is_some() && !self.no_delay {
            return Err(Denial::NotGranted(format!(
                "{policy} may not set no-delay: its [tcp] grant does not allow it"
            )));
        }
        Ok(())
    }
}

impl EffectiveGrant {
    /// The grant: the manifest's, narrowed by the administrator, within the
    /// host's table of tunables. A writable tunable outside the table needs
    /// the administrator's `allow = true` with both bounds, or the policy
    /// gets no grant at all.
    pub fn resolve(
        manifest: &Manifest,
        admin: &PolicySettings,
        limits: &HostLimits,
    ) -> Result<EffectiveGrant, NotAllowed> {
        let mut sysctls = BTreeMap::new();
        let mut denied_by_admin = Vec::new();
        for grant in &manifest.sysctls {
            let narrowing = admin.sysctl.get(&grant.name).cloned().unwrap_or_default();
            if narrowing.deny {
                denied_by_admin.push(grant.name.clone());
                continue;
            }
            let table = limits.bounds(&grant.name);
            let (hard_min, hard_max) = match (table, grant.access, &narrowing) {
                (Some(bounds), _, _) => bounds,
                // Read-only: no value is ever written, so no bounds apply.
                (None, Access::Read, _) => (i64::MIN, i64::MAX),
                (None, Access::Write, SysctlNarrowing { allow: true, min: Some(min), max: Some(max), .. }) => {
                    (*min, *max)
                }
                (None, Access::Write, _) => {
                    return Err(NotAllowed { policy: manifest.policy.name.clone(), tunable: grant.name.clone() });
                }
            };
            let min = [grant.min, narrowing.min, Some(hard_min)].into_iter().flatten().max().unwrap_or(hard_min);
            let max = [grant.max, narrowing.max, Some(hard_max)].into_iter().flatten().min().unwrap_or(hard_max);
            let values = match (&grant.values, &narrowing.values) {
                (Some(declared), Some(allowed)) => {
                    Some(declared.iter().filter(|v| allowed.contains(v)).cloned().collect())
                }
                (declared, _) => declared.clone(),
            };
            sysctls.insert(
                grant.name.clone(),
                TunableGrant {
                    access: grant.access,
                    fields: grant.fields.clone(),
                    min,
                    max,
                    values,
                    purpose: grant.purpose.clone(),
                },
            );
        }
        Ok(EffectiveGrant {
            policy: manifest.policy.name.clone(),
            events: manifest.event_kinds(),
            sysctls,
            denied_by_admin,
            tcp: match admin.tcp.as_ref() {
                Some(narrowing) if narrowing.deny => None,
                narrowing => manifest.tcp.as_ref().map(|grant| TcpPeerGrant::resolve(grant, narrowing)),
            },
        })
    }

    pub fn may_subscribe(&self, kind: EventKind) -> bool {
        self.events.contains(&kind)
    }

    /// Reading needs any grant on the sysctl.
    pub fn check_read(&self, name: &str) -> Result<(), Denial> {
        if self.sysctls.contains_key(name) { Ok(()) } else { Err(self.not_granted(name, "read")) }
    }

    /// Checks a requested value against the current one: which fields change,
    /// whether they may, and whether each stays in bounds. Pure.
    /// Whether the sysctl may be changed at all, before its value is read.
    pub fn check_writable(&self, name: &str) -> Result<&TunableGrant, Denial> {
        match self.sysctls.get(name) {
            Some(g) if g.access == Access::Write => Ok(g),
            Some(_) => Err(Denial::NotGranted(format!("{name} is granted read-only to {}", self.policy))),
            None => Err(self.not_granted(name, "change")),
        }
    }

    pub fn check_change(&self, name: &str, current: &Value, requested: &Value) -> Result<(), Denial> {
        let grant = self.check_writable(name)?;
        match (current, requested) {
            (Value::Text(_), Value::Text(new)) => match &grant.values {
                Some(values) if values.iter().any(|v| v == new) => Ok(()),
                Some(values) => Err(Denial::InvalidValue(format!(
                    "{name} may only be set to one of [{}], not {new:?}",
                    values.join(", ")
                ))),
                None => Err(Denial::InvalidValue(format!("{name} is granted as a number, not text"))),
            },
            (Value::Integers(old), Value::Integers(new)) => {
                if grant.values.is_some() {
                    return Err(Denial::InvalidValue(format!("{name} is granted as text, not a number")));
                }
                if old.len() != new.len() {
                    return Err(Denial::InvalidValue(format!(
                        "{name} has {} field(s), the request has {}",
                        old.len(),
                        new.len()
                    )));
                }
                for (i, (o, n)) in old.iter().zip(new).enumerate() {
                    if o == n {
                        continue;
                    }
                    if let Some(fields) = &grant.fields
                        && !fields.contains(&i)
                    {
                        return Err(Denial::InvalidValue(format!(
                            "field {i} of {name} may not change (granted fields: {fields:?})"
                        )));
                    }
                    if *n < grant.min || *n > grant.max {
                        return Err(Denial::OutOfBounds(Bounds { min: grant.min, max: grant.max }));
                    }
                }
                // Only disorder the request introduces is refused: a kernel value
                // that is already out of order (max below default) may be mended.
                let inverted = |v: &[i64], i: usize| v[i] > v[i + 1];
                if must_ascend(name) && (0..new.len().saturating_sub(1)).any(|i| inverted(new, i) && !inverted(old, i))
                {
                    return Err(Denial::InvalidValue(format!(
                        "{name} fields must ascend (min <= default <= max): {requested}"
                    )));
                }
                Ok(())
            }
            (Value::Integers(_), Value::Text(_)) => {
                Err(Denial::InvalidValue(format!("{name} holds numbers; the request is text")))
            }
            (Value::Text(_), Value::Integers(_)) => {
                Err(Denial::InvalidValue(format!("{name} holds text; the request is numbers")))
            }
        }
    }

    fn not_granted(&self, name: &str, what: &str) -> Denial {
        if self.denied_by_admin.iter().any(|d| d == name) {
            Denial::NotGranted(format!("the administrator denied {} access to {name}", self.policy))
        } else {
            Denial::NotGranted(format!("{} may not {what} {name}: its manifest does not declare it", self.policy))
        }
    }
}

/// Cross-policy rules: one owner per (netns, tunable), and a minimum interval
/// between accepted changes. Shared by every policy instance.
#[derive(Debug, Default)]
pub struct Arbiter {
    state: Mutex<ArbiterState>,
}

#[derive(Debug, Default)]
struct ArbiterState {
    owners: HashMap<(u64, String), String>,
    last_change: HashMap<(u64, String), Instant>,
    /// Per policy: (tokens, when last refilled).
    budgets: HashMap<String, (f64, Instant)>,
}

/// Changes one policy may have accepted, in a burst and per second after
/// it, whatever it changes: each costs two synced journal lines and a
/// kernel write, and the per-tunable interval alone does not bound a policy
/// that spreads its requests over many tunables or destinations.
pub const POLICY_CHANGE_BURST: f64 = 200.0;
pub const POLICY_CHANGES_PER_SECOND: f64 = 20.0;

impl Arbiter {
    /// Admits a change that passed the grant check: claims ownership on the
    /// first change and enforces the rate limit.
    pub fn admit(&self, policy: &str, netns: u64, tunable: &str, now: Instant) -> Result<(), Denial> {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (netns, tunable.to_string());
        if let Some(owner) = state.owners.get(&key)
            && owner != policy
        {
            return Err(Denial::NotOwner(owner.clone()));
        }
        if let Some(last) = state.last_change.get(&key) {
            let since = now.saturating_duration_since(*last);
            if since < MIN_CHANGE_INTERVAL {
                let wait = (MIN_CHANGE_INTERVAL - since).as_millis();
                return Err(Denial::RateLimited(u32::try_from(wait).unwrap_or(u32::MAX).max(1)));
            }
        }
        let (tokens, refilled) = state.budgets.entry(policy.to_string()).or_insert((POLICY_CHANGE_BURST, now));
        *tokens = (*tokens + now.saturating_duration_since(*refilled).as_secs_f64() * POLICY_CHANGES_PER_SECOND)
            .min(POLICY_CHANGE_BURST);
        *refilled = now;
        if *tokens < 1.0 {
            let wait_ms = ((1.0 - *tokens) / POLICY_CHANGES_PER_SECOND * 1000.0).ceil();
            return Err(Denial::RateLimited(wait_ms as u32));
        }
        *tokens -= 1.0;
        // Owned from the first change actually admitted, not from a refusal.
        state.owners.entry(key.clone()).or_insert_with(|| policy.to_string());
        state.last_change.insert(key, now);
        // Entries past the interval say nothing any more: keep the map to
        // what can still refuse a change.
        if state.last_change.len() > MAX_REMEMBERED_CHANGES {
            state.last_change.retain(|_, at| now.saturating_duration_since(*at) < MIN_CHANGE_INTERVAL);
        }
        Ok(())
    }

    /// Forgets a policy's ownerships (it was unloaded or replaced by another
    /// name); a replacement with the same name keeps them.
    pub fn release(&self, policy: &str) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.owners.retain(|_, owner| owner != policy);
        state.budgets.remove(policy);
    }

    /// Forgets one tunable's owner (a destination handed back).
    pub fn forget(&self, netns: u64, tunable: &str) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.owners.remove(&(netns, tunable.to_string()));
    }

    /// The policy that owns a tunable (or `tcp-peer:<prefix>`) in a namespace.
    pub fn owner_of(&self, netns: u64, tunable: &str) -> Option<String> {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.owners.get(&(netns, tunable.to_string())).cloned()
    }

    pub fn owners(&self) -> Vec<(u64, String, String)> {
        let state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        state.owners.iter().map(|((netns, tunable), owner)| (*netns, tunable.clone(), owner.clone())).collect()
    }
}

/// The kebab-case name of a denial, as logged and as in the WIT.
pub fn denial_kind(d: &Denial) -> &'static str {
    match d {
        Denial::NotGranted(_) => "not-granted",
        Denial::OutOfBounds(_) => "out-of-bounds",
        Denial::NotOwner(_) => "not-owner",
        Denial::AdminOverride(_) => "admin-override",
        Denial::RateLimited(_) => "rate-limited",
        Denial::UnknownNetns(_) => "unknown-netns",
        Denial::InvalidValue(_) => "invalid-value",
        Denial::Unsupported(_) => "unsupported",
        Denial::QuotaExceeded(_) => "quota-exceeded",
    }
}

/// A one-line explanation of a denial for the log.
pub fn denial_detail(d: &Denial) -> String {
    match d {
        Denial::NotGranted(s) | Denial::InvalidValue(s) | Denial::Unsupported(s) | Denial::AdminOverride(s) => {
            s.clone()
        }
        Denial::OutOfBounds(b) => format!("outside the allowed range {}..={}", b.min, b.max),
        Denial::NotOwner(owner) => format!("owned by policy {owner}"),
        Denial::RateLimited(ms) => format!("changed too recently; retry in {ms} ms"),
        Denial::UnknownNetns(cookie) => format!("netns {cookie} is not tuned by this host"),
        Denial::QuotaExceeded(bytes) => format!("the policy's state store is full ({bytes} bytes)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SysctlNarrowing;
    use crate::wit::IpAddr;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
events = ["tcp-buffer-limit"]
[policy]
name = "tcp-buffer"
version = "0.1.0"
description = "x"
[[sysctl]]
name = "net.ipv4.tcp_rmem"
fields = [2]
min = 4096
max = 268435456
[[sysctl]]
name = "net.core.somaxconn"
access = "read"
[[sysctl]]
name = "net.ipv4.tcp_congestion_control"
values = ["bbr", "cubic"]
"#,
        )
        .expect("valid manifest")
    }

    const LIMITS: HostLimits = HostLimits { memory_quarter_pages: 1 << 20 };

    fn grant() -> EffectiveGrant {
        EffectiveGrant::resolve(&manifest(), &PolicySettings::default(), &LIMITS).expect("a grant")
    }

    fn ints(v: &[i64]) -> Value {
        Value::Integers(v.to_vec())
    }

    #[test]
    fn allows_a_raise_of_the_granted_field_within_bounds() {
        assert_eq!(
            grant().check_change("net.ipv4.tcp_rmem", &ints(&[4096, 131072, 98304]), &ints(&[4096, 131072, 122880])),
            Ok(())
        );
    }

    #[test]
    fn refuses_undeclared_and_read_only_sysctls() {
        let g = grant();
        assert!(matches!(
            g.check_change("net.core.netdev_max_backlog", &ints(&[1]), &ints(&[2])),
            Err(Denial::NotGranted(_))
        ));
        assert!(matches!(g.check_change("net.core.somaxconn", &ints(&[1]), &ints(&[2])), Err(Denial::NotGranted(_))));
        assert!(g.check_read("net.core.somaxconn").is_ok());
        assert!(g.check_read("net.ipv4.tcp_wmem").is_err());
    }

    #[test]
    fn refuses_values_beyond_bounds_and_reports_them() {
        let r =
            grant().check_change("net.ipv4.tcp_rmem", &ints(&[4096, 131072, 98304]), &ints(&[4096, 131072, 1 << 30]));
        assert_eq!(r, Err(Denial::OutOfBounds(Bounds { min: 4096, max: 268435456 })));
    }

    #[test]
    fn refuses_changes_to_fields_not_granted() {
        let r = grant().check_change("net.ipv4.tcp_rmem", &ints(&[4096, 131072, 98304]), &ints(&[8192, 131072, 98304]));
        assert!(matches!(r, Err(Denial::InvalidValue(_))), "{r:?}");
    }

    #[test]
    fn refuses_wrong_arity_and_type() {
        let g = grant();
        assert!(matches!(
            g.check_change("net.ipv4.tcp_rmem", &ints(&[1, 2, 3]), &ints(&[1, 2])),
            Err(Denial::InvalidValue(_))
        ));
        assert!(matches!(
            g.check_change("net.ipv4.tcp_rmem", &ints(&[1, 2, 3]), &Value::Text("x".into())),
            Err(Denial::InvalidValue(_))
        ));
    }

    #[test]
    fn max_below_default_is_refused_as_disorder() {
        let r =
            grant().check_change("net.ipv4.tcp_rmem", &ints(&[4096, 131072, 262144]), &ints(&[4096, 131072, 65536]));
        assert!(matches!(r, Err(Denial::InvalidValue(ref s)) if s.contains("ascend")), "{r:?}");
    }

    #[test]
    fn an_already_disordered_value_may_be_mended() {
        // max below default, as an administrator may well have set it
        let r =
            grant().check_change("net.ipv4.tcp_rmem", &ints(&[4096, 131072, 98304]), &ints(&[4096, 131072, 122880]));
        assert_eq!(r, Ok(()));
    }

    #[test]
    fn text_values_come_from_the_allowed_list() {
        let g = grant();
        let cur = Value::Text("reno".into());
        assert_eq!(g.check_change("net.ipv4.tcp_congestion_control", &cur, &Value::Text("bbr".into())), Ok(()));
        assert!(g.check_change("net.ipv4.tcp_congestion_control", &cur, &Value::Text("vegas".into())).is_err());
    }

    #[test]
    fn the_administrator_narrows_and_denies() {
        let mut admin = PolicySettings::default();
        admin.sysctl.insert("net.ipv4.tcp_rmem".into(), SysctlNarrowing { max: Some(16 << 20), ..Default::default() });
        admin.sysctl.insert("net.core.somaxconn".into(), SysctlNarrowing { deny: true, ..Default::default() });
        let g = EffectiveGrant::resolve(&manifest(), &admin, &LIMITS).expect("a grant");
        assert_eq!(g.sysctls["net.ipv4.tcp_rmem"].max, 16 << 20);
        let r = g.check_read("net.core.somaxconn");
        assert!(matches!(r, Err(Denial::NotGranted(ref s)) if s.contains("administrator")), "{r:?}");
    }

    #[test]
    fn host_limits_cap_every_grant() {
        let m = Manifest::parse(
            r#"
[policy]
name = "greedy"
version = "1.0.0"
description = "x"
[[sysctl]]
name = "net.ipv4.tcp_wmem"
max = 9223372036854775807
[[sysctl]]
name = "net.ipv4.tcp_mem"
max = 9223372036854775807
"#,
        )
        .expect("valid");
        let g = EffectiveGrant::resolve(&m, &PolicySettings::default(), &LIMITS).expect("a grant");
        assert_eq!(g.sysctls["net.ipv4.tcp_wmem"].max, i32::MAX as i64);
        assert_eq!(g.sysctls["net.ipv4.tcp_mem"].max, 1 << 20);
    }

    #[test]
    fn the_tcp_grant_checks_prefixes_algorithms_and_bounds() {
        let m = Manifest::parse(
            r#"
[policy]
name = "tcp-cong"
version = "0.1.0"
description = "x"
[tcp]
congestion = ["reno", "bbr", "vegas"]
prefixes = ["10.0.0.0/8"]
initial-cwnd = { min = 4, max = 64 }
"#,
        )
        .expect("valid");
        let g = EffectiveGrant::resolve(&m, &PolicySettings::default(), &LIMITS).expect("a grant");
        let tcp = g.tcp.expect("a [tcp] grant");
        let available = vec!["reno".to_string(), "bbr".to_string()];
        let inside = PeerPrefix::new(&IpAddr::V4((10, 1, 2, 3)), 32).expect("prefix");
        let outside = PeerPrefix::new(&IpAddr::V4((192, 168, 0, 1)), 32).expect("prefix");
        let wider = PeerPrefix::new(&IpAddr::V4((0, 0, 0, 0)), 0).expect("prefix");
        let reno = PeerSettings { congestion: Some("reno".into()), initial_cwnd: Some(10), ..Default::default() };
        assert_eq!(tcp.check("p", &inside, &reno, &available), Ok(()));
        assert!(matches!(tcp.check("p", &outside, &reno, &available), Err(Denial::NotGranted(_))));
        assert!(matches!(tcp.check("p", &wider, &reno, &available), Err(Denial::NotGranted(_))));
        let cubic = PeerSettings { congestion: Some("cubic".into()), ..Default::default() };
        assert!(matches!(tcp.check("p", &inside, &cubic, &available), Err(Denial::NotGranted(_))));
        let vegas = PeerSettings { on_loss_congestion: Some("vegas".into()), ..Default::default() };
        assert!(matches!(tcp.check("p", &inside, &vegas, &available), Err(Denial::Unsupported(_))));
        let big = PeerSettings { initial_cwnd: Some(100), ..Default::default() };
        assert_eq!(tcp.check("p", &inside, &big, &available), Err(Denial::OutOfBounds(Bounds { min: 4, max: 64 })));
        let clamp = PeerSettings { window_clamp: Some(1 << 20), ..Default::default() };
        assert!(matches!(tcp.check("p", &inside, &clamp, &available), Err(Denial::NotGranted(_))));
        let nagle = PeerSettings { no_delay: Some(true), ..Default::default() };
        assert!(matches!(tcp.check("p", &inside, &nagle, &available), Err(Denial::NotGranted(_))));
        assert!(grant().tcp.is_none(), "no [tcp] table, no grant");
    }

    #[test]
    fn the_administrator_narrows_the_tcp_grant_and_never_widens_it() {
        let m = Manifest::parse(
            r#"
[policy]
name = "tcp-cong"
version = "0.1.0"
description = "x"
[tcp]
congestion = ["reno", "bbr", "cubic"]
prefixes = ["10.0.0.0/8", "192.168.1.0/24"]
initial-cwnd = { min = 4, max = 64 }
no-delay = true
"#,
        )
        .expect("valid");
        let config = crate::config::AdminConfig::parse(
            r#"
[policies.tcp-cong.tcp]
congestion = ["cubic", "bbr", "vegas"]
prefixes = ["10.1.0.0/16", "192.168.0.0/16", "172.16.0.0/12"]
initial-cwnd = { min = 2, max = 40 }
window-clamp = { max = 65535 }
no-delay = true
"#,
            std::path::Path::new("config.toml"),
        )
        .expect("valid config");
        let g = EffectiveGrant::resolve(&m, &config.policy("tcp-cong"), &LIMITS).expect("a grant");
        let tcp = g.tcp.expect("still a [tcp] grant");
        assert_eq!(tcp.congestion, ["bbr", "cubic"], "vegas is not in the manifest: config cannot add it");
        let prefixes: Vec<String> = tcp.prefixes.iter().map(ToString::to_string).collect();
        assert_eq!(prefixes, ["10.1.0.0/16", "192.168.1.0/24"], "a peer must fall in both lists");
        assert_eq!(tcp.initial_cwnd, Some(RangeGrant { min: 4, max: 40 }));
        assert_eq!(tcp.window_clamp, None, "bounds on an ungranted setting grant nothing");
        assert!(tcp.no_delay);

        let available: Vec<String> = ["reno", "bbr", "cubic"].map(String::from).to_vec();
        let at = |a, b, c, d| PeerPrefix::new(&IpAddr::V4((a, b, c, d)), 32).expect("prefix");
        let reno = PeerSettings { congestion: Some("reno".into()), ..Default::default() };
        let bbr = PeerSettings { congestion: Some("bbr".into()), initial_cwnd: Some(40), ..Default::default() };
        assert_eq!(tcp.check("p", &at(10, 1, 2, 3), &bbr, &available), Ok(()));
        let denied = tcp.check("p", &at(10, 1, 2, 3), &reno, &available);
        assert!(matches!(&denied, Err(Denial::NotGranted(why)) if why.contains("\"reno\"")), "{denied:?}");
        let denied = tcp.check("p", &at(10, 2, 0, 1), &bbr, &available);
        assert!(matches!(&denied, Err(Denial::NotGranted(why)) if why.contains("10.2.0.1/32")), "{denied:?}");
        assert!(matches!(tcp.check("p", &at(172, 16, 0, 1), &bbr, &available), Err(Denial::NotGranted(_))));
        let big = PeerSettings { initial_cwnd: Some(64), ..Default::default() };
        assert_eq!(
            tcp.check("p", &at(10, 1, 0, 1), &big, &available),
            Err(Denial::OutOfBounds(Bounds { min: 4, max: 40 }))
        );

        let off = crate::config::AdminConfig::parse(
            "[policies.tcp-cong.tcp]\nno-delay = false\ninitial-cwnd = { min = 100 }\n",
            std::path::Path::new("config.toml"),
        )
        .expect("valid config");
        let tcp = EffectiveGrant::resolve(&m, &off.policy("tcp-cong"), &LIMITS).expect("a grant").tcp.expect("grant");
        assert!(!tcp.no_delay);
        assert_eq!(tcp.initial_cwnd, None, "nothing left of 4..=64 above 100");
        assert_eq!(tcp.congestion, ["reno", "bbr", "cubic"], "an absent field leaves the manifest's");
        let denied =
            crate::config::AdminConfig::parse("[policies.tcp-cong.tcp]\ndeny = true\n", std::path::Path::new("c"))
                .expect("valid config");
        assert!(EffectiveGrant::resolve(&m, &denied.policy("tcp-cong"), &LIMITS).expect("a grant").tcp.is_none());
    }

    #[test]
    fn one_owner_per_tunable_per_netns_and_a_rate_limit() {
        let a = Arbiter::default();
        let t0 = Instant::now();
        assert_eq!(a.admit("tcp-buffer", 1, "net.ipv4.tcp_rmem", t0), Ok(()));
        assert_eq!(a.admit("other", 1, "net.ipv4.tcp_rmem", t0), Err(Denial::NotOwner("tcp-buffer".into())));
        assert_eq!(a.admit("other", 2, "net.ipv4.tcp_rmem", t0), Ok(()), "another netns has its own owner");
        assert!(matches!(a.admit("tcp-buffer", 1, "net.ipv4.tcp_rmem", t0), Err(Denial::RateLimited(_))));
        assert_eq!(a.admit("tcp-buffer", 1, "net.ipv4.tcp_rmem", t0 + MIN_CHANGE_INTERVAL), Ok(()));
        a.release("tcp-buffer");
        assert_eq!(a.admit("other", 1, "net.ipv4.tcp_rmem", t0 + MIN_CHANGE_INTERVAL * 2), Ok(()));
    }

    #[test]
    fn a_tunable_outside_the_hosts_table_needs_the_administrators_grant() {
        let text = "events = []\n[policy]\nname = \"ports\"\nversion = \"0.1.0\"\ndescription = \"d\"\n\n\
                    [[sysctl]]\nname = \"net.ipv4.ip_unprivileged_port_start\"\nmin = 0\nmax = 65535\n";
        let m = Manifest::parse(text).expect("a valid manifest");
        let refused = EffectiveGrant::resolve(&m, &PolicySettings::default(), &LIMITS).expect_err("refused");
        assert_eq!(refused.tunable, "net.ipv4.ip_unprivileged_port_start");
        assert!(refused.to_string().contains("allow = true"), "{refused}");

        let config = crate::config::AdminConfig::parse(
            "[policies.ports.sysctl.\"net.ipv4.ip_unprivileged_port_start\"]\nallow = true\nmin = 1024\nmax = 2048\n",
            std::path::Path::new("c"),
        )
        .expect("config");
        let g = EffectiveGrant::resolve(&m, &config.policy("ports"), &LIMITS).expect("granted by the administrator");
        let t = &g.sysctls["net.ipv4.ip_unprivileged_port_start"];
        assert_eq!((t.min, t.max), (1024, 2048), "the administrator's bounds, within the manifest's");

        // Reading is harmless: no grant needed beyond the manifest's.
        let read_only = text.replace("min = 0\nmax = 65535\n", "access = \"read\"\n");
        let m = Manifest::parse(&read_only).expect("a valid manifest");
        assert!(EffectiveGrant::resolve(&m, &PolicySettings::default(), &LIMITS).is_ok());
    }

    #[test]
    fn kernel_memory_ceilings_and_tcp_ranges_have_host_caps() {
        let text = "events = []\n[policy]\nname = \"big\"\nversion = \"0.1.0\"\ndescription = \"d\"\n\n\
                    [[sysctl]]\nname = \"net.core.netdev_max_backlog\"\nmax = 9000000000\n\n\
                    [tcp]\nprefixes = [\"10.0.0.0/8\"]\ninitial-cwnd = { min = 1, max = 2147483647 }\n";
        let m = Manifest::parse(text).expect("a valid manifest");
        let g = EffectiveGrant::resolve(&m, &PolicySettings::default(), &LIMITS).expect("a grant");
        assert_eq!(g.sysctls["net.core.netdev_max_backlog"].max, 1 << 20);
        let cwnd = g.tcp.as_ref().and_then(|t| t.initial_cwnd).expect("a cwnd range");
        assert_eq!(cwnd.max, TCP_INITIAL_CWND_MAX);
    }

    #[test]
    fn a_policy_spreading_changes_over_many_tunables_is_still_bounded() {
        let arbiter = Arbiter::default();
        let start = Instant::now();
        let accepted = (0..100_000)
            .filter(|i| {
                arbiter.admit("flood", 1, &format!("tcp-peer:10.0.{}.{}/32", i / 256 % 256, i % 256), start).is_ok()
            })
            .count();
        assert_eq!(accepted as f64, POLICY_CHANGE_BURST, "a burst, then refusals");
        let later = start + Duration::from_secs(1);
        assert!(arbiter.admit("flood", 1, "tcp-peer:192.168.0.1/32", later).is_ok(), "refilled over time");
        assert!(arbiter.admit("other", 1, "net.ipv4.tcp_rmem", start).is_ok(), "other policies keep their budget");
        assert_eq!(arbiter.owners().len(), accepted + 2, "a refused request owns nothing");
    }
}
