//! A canary's health, from what the host already sees: connection
//! summaries (throughput, the highest delivery rate, retransmits, sRTT)
//! and backlog drops, kept for a while for every tuned namespace so that
//! a canary started now has a baseline from before it. [`judge`] compares
//! the canary's scope with that baseline, or with the rest (the control),
//! by the operator's metric and margin. Pure: time is passed in.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use crate::canary::scope::CanaryScope;
use crate::peer::PeerPrefix;
use crate::wit::{ConnectionSummary, Event};

/// Samples kept at most; beyond, the oldest go (a busy host closes many
/// connections: judging needs a window's worth, not all of them).
pub const MAX_SAMPLES: usize = 16_384;
/// How long samples are kept: the longest window a canary may ask for.
pub const KEPT_FOR: Duration = Duration::from_secs(600);

/// What a canary is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Bytes a connection moved over its lifetime, per second (median): what
    /// an application sees. Higher is better.
    Throughput,
    /// The highest delivery rate a connection reached (median). Higher is better.
    DeliveryRate,
    /// Retransmitted segments over segments sent, all connections together.
    /// Lower is better.
    Retransmits,
    /// Smoothed RTT at close (median). Lower is better.
    Srtt,
    /// Packets dropped for a full input backlog, per second. Lower is
    /// better; namespace scopes only (drops have no peer).
    Drops,
}

impl Metric {
    pub fn parse(text: &str) -> Option<Metric> {
        Some(match text {
            "throughput" => Metric::Throughput,
            "delivery-rate" => Metric::DeliveryRate,
            "retransmits" => Metric::Retransmits,
            "srtt" => Metric::Srtt,
            "drops" => Metric::Drops,
            _ => return None,
        })
    }

    pub const NAMES: &'static str = "throughput, delivery-rate, retransmits, srtt, drops";

    fn higher_is_better(self) -> bool {
        matches!(self, Metric::Throughput | Metric::DeliveryRate)
    }

    /// A difference below this is noise whatever the ratio (a reference of
    /// zero retransmits must not make one retransmit a regression).
    fn least_difference(self) -> f64 {
        match self {
            Metric::Throughput | Metric::DeliveryRate => 0.0,
            Metric::Retransmits => 0.002,
            Metric::Srtt => 50.0,
            Metric::Drops => 1.0,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::Throughput | Metric::DeliveryRate => "bytes/s",
            Metric::Retransmits => "of segments",
            Metric::Srtt => "us",
            Metric::Drops => "drops/s",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Throughput => "throughput",
            Metric::DeliveryRate => "delivery-rate",
            Metric::Retransmits => "retransmits",
            Metric::Srtt => "srtt",
            Metric::Drops => "drops",
        })
    }
}

/// What the canary is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Compare {
    /// Its own scope over the window before it started.
    Baseline,
    /// Everything outside its scope over the same time.
    Control,
}

impl Compare {
    pub fn parse(text: &str) -> Option<Compare> {
        match text {
            "baseline" => Some(Compare::Baseline),
            "control" => Some(Compare::Control),
            _ => None,
        }
    }
}

impl fmt::Display for Compare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Compare::Baseline => "baseline",
            Compare::Control => "control",
        })
    }
}

/// How a canary is judged; the defaults are documented in
/// `docs/policy-lifecycle.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthSettings {
    pub metric: Metric,
    /// How much worse than the reference, as a fraction, reverts it.
    pub margin: f64,
    /// Samples older than this are not judged.
    pub window: Duration,
    pub compare: Compare,
    /// Connections needed on each side before judging.
    pub min_connections: usize,
    /// Connections that moved less than this are not judged (too short to
    /// say anything of the path).
    pub min_bytes: u64,
}

impl Default for HealthSettings {
    fn default() -> HealthSettings {
        HealthSettings {
            metric: Metric::Throughput,
            margin: 0.2,
            window: Duration::from_secs(60),
            compare: Compare::Baseline,
            min_connections: 5,
            min_bytes: 256 << 10,
        }
    }
}

/// How a canary is judged, as the command line or the configuration says
/// it: each part absent takes its default.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HealthRequest {
    pub metric: Option<String>,
    pub margin: Option<f64>,
    pub window_seconds: Option<u64>,
    pub compare: Option<String>,
    pub min_connections: Option<usize>,
    pub min_bytes: Option<u64>,
}

impl HealthRequest {
    /// The settings, checked against `scope`; the error names the field.
    pub fn resolve(&self, scope: &CanaryScope) -> Result<HealthSettings, (&'static str, String)> {
        let defaults = HealthSettings::default();
        let metric = match &self.metric {
            Some(text) => {
                Metric::parse(text).ok_or_else(|| ("metric", format!("{text:?} is not one of {}", Metric::NAMES)))?
            }
            None => defaults.metric,
        };
        let compare = match &self.compare {
            Some(text) => {
                Compare::parse(text).ok_or_else(|| ("compare", format!("{text:?} is not baseline or control")))?
            }
            None => defaults.compare,
        };
        let settings = HealthSettings {
            metric,
            margin: self.margin.unwrap_or(defaults.margin),
            window: self.window_seconds.map_or(defaults.window, Duration::from_secs),
            compare,
            min_connections: self.min_connections.unwrap_or(defaults.min_connections),
            min_bytes: self.min_bytes.unwrap_or(defaults.min_bytes),
        };
        settings.check(scope).map_err(|problem| {
            let field = if problem.starts_with("margin") {
                "margin"
            } else if problem.starts_with("window") {
                "window-seconds"
            } else if problem.starts_with("min-connections") {
                "min-connections"
            } else {
                "metric"
            };
            (field, problem)
        })?;
        Ok(settings)
    }
}

impl HealthSettings {
    /// What cannot work together with `scope`, or out of range.
    pub fn check(&self, scope: &CanaryScope) -> Result<(), String> {
        if !(self.margin > 0.0 && self.margin < 10.0) {
            return Err(format!("margin {} must be above 0 and below 10 (a fraction: 0.2 is 20 %)", self.margin));
        }
        if self.window < Duration::from_secs(1) || self.window > KEPT_FOR {
            return Err(format!("window {} s must be 1..={} s", self.window.as_secs(), KEPT_FOR.as_secs()));
        }
        if self.min_connections == 0 {
            return Err("min-connections must be at least 1".into());
        }
        if self.metric == Metric::Drops && matches!(scope, CanaryScope::Peers(_)) {
            return Err("drops have no peer: the drops metric needs a namespace scope".into());
        }
        Ok(())
    }
}

/// One closed connection, as judged.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// When it opened: it counts for a canary only if that came after the
    /// canary started (its per-destination settings are taken at connect).
    began: Instant,
    netns: String,
    peer: PeerPrefix,
    bytes: u64,
    throughput: f64,
    delivery_rate: f64,
    retransmits: u32,
    segments_out: u32,
    srtt_us: u32,
}

#[derive(Debug, Clone)]
struct Drops {
    at: Instant,
    netns: String,
    drops: u64,
}

/// What the host saw lately, in every tuned namespace.
#[derive(Debug, Default)]
pub struct Observations {
    samples: VecDeque<Sample>,
    drops: VecDeque<Drops>,
}

fn peer_of(summary: &ConnectionSummary) -> Option<PeerPrefix> {
    let len = match summary.remote {
        crate::wit::IpAddr::V4(_) => 32,
        crate::wit::IpAddr::V6(_) => 128,
    };
    PeerPrefix::new(&summary.remote, len).ok()
}

impl Observations {
    /// Keeps what a canary may be judged by from `event` (seen at `now`,
    /// in the namespace `netns_name` names).
    pub fn observe(&mut self, event: &Event, netns_name: &dyn Fn(u64) -> String, now: Instant) {
        match event {
            Event::ConnectionSummary(summary) => {
                let Some(peer) = peer_of(summary) else { return };
                let bytes = summary.bytes_acked.saturating_add(summary.bytes_received);
                let seconds = (summary.duration_ms.max(1) as f64) / 1000.0;
                self.samples.push_back(Sample {
                    at: now,
                    began: now.checked_sub(Duration::from_millis(summary.duration_ms)).unwrap_or(now),
                    netns: netns_name(summary.netns),
                    peer,
                    bytes,
                    throughput: bytes as f64 / seconds,
                    delivery_rate: summary.max_delivery_rate as f64,
                    retransmits: summary.retransmits,
                    segments_out: summary.segments_out,
                    srtt_us: summary.srtt_us,
                });
            }
            Event::BacklogDrops(drops) => {
                self.drops.push_back(Drops { at: now, netns: netns_name(drops.netns), drops: drops.drops })
            }
            _ => return,
        }
        self.prune(now);
    }

    fn prune(&mut self, now: Instant) {
        let old = |at: Instant| now.saturating_duration_since(at) > KEPT_FOR;
        while self.samples.front().is_some_and(|s| old(s.at)) || self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
        while self.drops.front().is_some_and(|d| old(d.at)) || self.drops.len() > MAX_SAMPLES {
            self.drops.pop_front();
        }
    }
}

/// The two figures compared, and how many samples each rests on.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Figures {
    pub metric: Metric,
    pub canary: f64,
    pub reference: f64,
    pub compared_with: Compare,
    pub canary_samples: usize,
    pub reference_samples: usize,
    /// canary / reference − 1: −0.6 is 60 % less.
    pub change: f64,
    pub margin: f64,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = |v: f64| match self.metric {
            Metric::Retransmits => format!("{:.2} %", v * 100.0),
            Metric::Throughput | Metric::DeliveryRate => format!("{:.1} Mbit/s", v * 8.0 / 1e6),
            _ => format!("{v:.0} {}", self.metric.unit()),
        };
        write!(
            f,
            "{} {} in the canary's scope ({} samples) against {} in its {} ({} samples): {:+.0} %, margin {:.0} %",
            self.metric,
            value(self.canary),
            self.canary_samples,
            value(self.reference),
            self.compared_with,
            self.reference_samples,
            self.change * 100.0,
            self.margin * 100.0
        )
    }
}

/// What a canary's health says now.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// Too few samples on one side yet.
    Waiting { canary_samples: usize, reference_samples: usize, needed: usize },
    /// Within the margin.
    Healthy(Figures),
    /// Worse than the reference beyond the margin.
    Regressed(Figures),
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

fn aggregate(metric: Metric, samples: &[&Sample]) -> f64 {
    match metric {
        Metric::Throughput => median(samples.iter().map(|s| s.throughput).collect()),
        Metric::DeliveryRate => median(samples.iter().map(|s| s.delivery_rate).collect()),
        Metric::Srtt => median(samples.iter().map(|s| f64::from(s.srtt_us)).collect()),
        Metric::Retransmits => {
            let sent: u64 = samples.iter().map(|s| u64::from(s.segments_out)).sum();
            let lost: u64 = samples.iter().map(|s| u64::from(s.retransmits)).sum();
            lost as f64 / sent.max(1) as f64
        }
        Metric::Drops => 0.0,
    }
}

fn in_scope_sample(scope: &CanaryScope, sample: &Sample) -> bool {
    match scope {
        CanaryScope::Netns(_) => scope.owns_netns(&sample.netns),
        CanaryScope::Peers(_) => scope.covers_peer(&sample.peer),
    }
}

/// The verdict on a canary of `scope` started at `started`, at `now`.
pub fn judge(
    observations: &Observations,
    scope: &CanaryScope,
    started: Instant,
    now: Instant,
    settings: &HealthSettings,
) -> Verdict {
    let since = now.checked_sub(settings.window).map_or(started, |w| w.max(started));
    if settings.metric == Metric::Drops {
        return judge_drops(observations, scope, started, now, since, settings);
    }
    let judged = observations.samples.iter().filter(|s| s.bytes >= settings.min_bytes);
    let (canary, reference): (Vec<&Sample>, Vec<&Sample>) = match settings.compare {
        Compare::Baseline => {
            let before = started.checked_sub(settings.window).unwrap_or(started);
            let mut canary = Vec::new();
            let mut reference = Vec::new();
            for sample in judged.filter(|s| in_scope_sample(scope, s)) {
                if sample.began >= started && sample.at >= since {
                    canary.push(sample);
                } else if sample.at < started && sample.at >= before {
                    reference.push(sample);
                }
            }
            (canary, reference)
        }
        Compare::Control => {
            judged.filter(|s| s.began >= started && s.at >= since).partition(|s| in_scope_sample(scope, s))
        }
    };
    if canary.len() < settings.min_connections || reference.len() < settings.min_connections {
        return Verdict::Waiting {
            canary_samples: canary.len(),
            reference_samples: reference.len(),
            needed: settings.min_connections,
        };
    }
    verdict(
        settings,
        aggregate(settings.metric, &canary),
        aggregate(settings.metric, &reference),
        canary.len(),
        reference.len(),
    )
}

fn judge_drops(
    observations: &Observations,
    scope: &CanaryScope,
    started: Instant,
    now: Instant,
    since: Instant,
    settings: &HealthSettings,
) -> Verdict {
    let elapsed = now.saturating_duration_since(since);
    // Drops come as counts since the previous event: a rate needs time,
    // so a whole window passes before the first verdict.
    if now.saturating_duration_since(started) < settings.window {
        return Verdict::Waiting { canary_samples: 0, reference_samples: 0, needed: settings.min_connections };
    }
    let mut canary = (0u64, 0usize);
    let mut reference = (0u64, 0usize);
    let before = started.checked_sub(settings.window).unwrap_or(started);
    for d in &observations.drops {
        let inside = scope.owns_netns(&d.netns);
        let add = |side: &mut (u64, usize)| {
            side.0 += d.drops;
            side.1 += 1;
        };
        match settings.compare {
            Compare::Baseline if inside && d.at >= since => add(&mut canary),
            Compare::Baseline if inside && d.at < started && d.at >= before => add(&mut reference),
            Compare::Control if d.at >= since => add(if inside { &mut canary } else { &mut reference }),
            _ => {}
        }
    }
    let seconds = elapsed.as_secs_f64().max(1.0);
    let reference_seconds = match settings.compare {
        Compare::Baseline => started.saturating_duration_since(before).as_secs_f64().max(1.0),
        Compare::Control => seconds,
    };
    verdict(settings, canary.0 as f64 / seconds, reference.0 as f64 / reference_seconds, canary.1, reference.1)
}

fn verdict(settings: &HealthSettings, canary: f64, reference: f64, canary_n: usize, reference_n: usize) -> Verdict {
    let metric = settings.metric;
    let change = if reference > 0.0 {
        canary / reference - 1.0
    } else if canary > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    let figures = Figures {
        metric,
        canary,
        reference,
        compared_with: settings.compare,
        canary_samples: canary_n,
        reference_samples: reference_n,
        change,
        margin: settings.margin,
    };
    let worse = if metric.higher_is_better() {
        canary < reference * (1.0 - settings.margin)
    } else {
        canary > reference * (1.0 + settings.margin) && canary - reference > metric.least_difference()
    };
    if worse { Verdict::Regressed(figures) } else { Verdict::Healthy(figures) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::IpAddr;

    const EDGE: u64 = 1;
    const CORE: u64 = 2;

    fn name(cookie: u64) -> String {
        if cookie == EDGE { "edge".into() } else { "core".into() }
    }

    fn summary(netns: u64, last_octet: u8, mbytes_per_s: u64) -> Event {
        Event::ConnectionSummary(ConnectionSummary {
            netns,
            remote: IpAddr::V4((10, 0, 0, last_octet)),
            remote_port: 5201,
            local_port: 40000,
            congestion: "bbr".into(),
            min_rtt_us: 40,
            srtt_us: 60,
            max_delivery_rate: mbytes_per_s << 20,
            segments_out: 1000,
            retransmits: 20,
            bytes_acked: mbytes_per_s << 20,
            bytes_received: 0,
            duration_ms: 1000,
        })
    }

    fn edge_scope() -> CanaryScope {
        CanaryScope::Netns(["edge".to_string()].into())
    }

    fn settings(compare: Compare) -> HealthSettings {
        HealthSettings { compare, min_connections: 3, window: Duration::from_secs(30), ..HealthSettings::default() }
    }

    /// Five connections of `rate` MiB/s closing one a second from `from`.
    fn fill(obs: &mut Observations, netns: u64, rate: u64, from: Instant) -> Instant {
        let mut at = from;
        for _ in 0..5 {
            at += Duration::from_secs(1);
            obs.observe(&summary(netns, 2, rate), &name, at);
        }
        at
    }

    #[test]
    fn a_canary_far_below_its_baseline_is_a_regression_with_its_figures() {
        let t0 = Instant::now();
        let mut obs = Observations::default();
        let started = fill(&mut obs, EDGE, 300, t0) + Duration::from_secs(1);
        let now = fill(&mut obs, EDGE, 30, started + Duration::from_secs(1));
        match judge(&obs, &edge_scope(), started, now, &settings(Compare::Baseline)) {
            Verdict::Regressed(figures) => {
                assert_eq!((figures.canary_samples, figures.reference_samples), (5, 5));
                assert!((figures.change + 0.9).abs() < 1e-9, "{figures:?}");
                assert!(figures.to_string().contains("-90 %"), "{figures}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn within_the_margin_is_healthy_and_too_few_samples_wait() {
        let t0 = Instant::now();
        let mut obs = Observations::default();
        let started = fill(&mut obs, EDGE, 300, t0) + Duration::from_secs(1);
        let early = started + Duration::from_secs(2);
        let mut opened_before = summary(EDGE, 2, 280);
        if let Event::ConnectionSummary(s) = &mut opened_before {
            s.duration_ms = 5000;
        }
        obs.observe(&opened_before, &name, early);
        assert!(
            matches!(
                judge(&obs, &edge_scope(), started, early, &settings(Compare::Baseline)),
                Verdict::Waiting { canary_samples: 0, .. }
            ),
            "a connection that opened before the canary is not the canary's"
        );
        let now = fill(&mut obs, EDGE, 270, early);
        assert!(matches!(judge(&obs, &edge_scope(), started, now, &settings(Compare::Baseline)), Verdict::Healthy(_)));
    }

    #[test]
    fn the_control_is_everything_outside_the_scope_over_the_same_time() {
        let t0 = Instant::now();
        let mut obs = Observations::default();
        let started = t0;
        fill(&mut obs, CORE, 300, started + Duration::from_secs(1));
        let now = fill(&mut obs, EDGE, 100, started + Duration::from_secs(1));
        assert!(matches!(judge(&obs, &edge_scope(), started, now, &settings(Compare::Control)), Verdict::Regressed(_)));
        // Peer scopes split by address, whatever the namespace.
        let peers = CanaryScope::Peers(vec![crate::peer::peer_prefix("10.0.0.2/32").expect("prefix")]);
        assert!(matches!(
            judge(&obs, &peers, started, now, &settings(Compare::Control)),
            Verdict::Waiting { reference_samples: 0, .. }
        ));
    }

    #[test]
    fn short_connections_are_not_judged() {
        let t0 = Instant::now();
        let mut obs = Observations::default();
        let started = fill(&mut obs, EDGE, 300, t0);
        let tiny = HealthSettings { min_bytes: 1 << 40, ..settings(Compare::Baseline) };
        let now = fill(&mut obs, EDGE, 30, started + Duration::from_secs(1));
        assert!(matches!(judge(&obs, &edge_scope(), started, now, &tiny), Verdict::Waiting { .. }));
    }

    #[test]
    fn lower_is_better_metrics_need_a_real_difference() {
        let s = HealthSettings { metric: Metric::Retransmits, ..settings(Compare::Baseline) };
        assert!(matches!(verdict(&s, 0.001, 0.0, 5, 5), Verdict::Healthy(_)), "noise above a zero reference");
        assert!(matches!(verdict(&s, 0.05, 0.01, 5, 5), Verdict::Regressed(_)));
        assert!(s.check(&CanaryScope::Peers(vec![])).is_ok());
        let drops = HealthSettings { metric: Metric::Drops, ..s };
        assert!(drops.check(&CanaryScope::Peers(vec![])).is_err());
        assert!(HealthSettings { margin: 0.0, ..HealthSettings::default() }.check(&edge_scope()).is_err());
    }
}
