//! Learning, per peer, which congestion control algorithm works best there:
//! a multi-armed bandit over the algorithms this kernel offers, scored by
//! bpftune's cost function and chosen ε-greedily (ε = 1/20).
//!
//! The cost of a finished connection is how far its minimum RTT is above
//! the best seen for the peer, plus how far its highest delivery rate is
//! below the best seen for the peer, both relative:
//! `(min_rtt − peer_min_rtt) / peer_min_rtt + (peer_max_rate − max_rate) / peer_max_rate`.
//! An arm's value moves a quarter of the way toward each new cost.
//!
//! Beyond bpftune: connections too short to leave slow start, and the
//! receiving ends of transfers, are not scored (their rate says nothing
//! about the algorithm); every arm is tried
//! [`MIN_PULLS`] times before any is preferred, the least-tried first, so a
//! single unlucky connection does not decide; an arm's first cost sets its
//! value rather than being averaged with an arbitrary zero; exploration picks
//! the least-tried other arm instead of a uniformly random one.

use wasmtune_sdk::ConnectionSummary;

/// Scored connections per peer before the best arm is preferred.
pub const MIN_CONNECTIONS: u32 = 4;
/// Scored connections per arm before the best arm is preferred.
pub const MIN_PULLS: u32 = 2;
/// One choice in this many explores.
pub const EPSILON_DENOMINATOR: u64 = 20;
/// Connections that sent fewer segments are not scored.
pub const MIN_SEGMENTS: u32 = 100;
/// Connections that delivered less are not scored: they mostly received
/// (the receiving end of a transfer) or were too short to leave slow start.
pub const MIN_BYTES_ACKED: u64 = 256 << 10;

/// One algorithm's record at one peer.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub algorithm: String,
    /// Running cost estimate; `None` until scored once.
    pub value: Option<f64>,
    pub pulls: u32,
}

/// Why an arm was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Still measuring every arm.
    Measuring,
    /// The lowest cost so far.
    Best,
    /// The 1-in-20 exploration of another arm.
    Exploring,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub algorithm: String,
    pub reason: Reason,
}

/// Everything learned about one peer.
#[derive(Debug, Clone)]
pub struct Peer {
    pub arms: Vec<Arm>,
    pub min_rtt_us: Option<u32>,
    pub max_rate: u64,
    pub connections: u32,
    rng: u64,
}

impl Peer {
    /// A peer to learn among `algorithms`; `seed` varies the exploration.
    pub fn new(algorithms: &[String], seed: u64) -> Peer {
        let arms = algorithms.iter().map(|a| Arm { algorithm: a.clone(), value: None, pulls: 0 }).collect();
        Peer { arms, min_rtt_us: None, max_rate: 0, connections: 0, rng: seed | 1 }
    }

    /// Scores a finished connection against `algorithm` (the arm it ran
    /// under). Returns its cost, or `None` if it was not scored (too short,
    /// no measurements, or an algorithm outside the arms).
    pub fn learn(&mut self, summary: &ConnectionSummary, algorithm: &str) -> Option<f64> {
        if summary.segments_out < MIN_SEGMENTS
            || summary.bytes_acked < MIN_BYTES_ACKED
            || summary.min_rtt_us == 0
            || summary.max_delivery_rate == 0
        {
            return None;
        }
        let index = self.arms.iter().position(|arm| arm.algorithm == algorithm)?;
        let min_rtt = self.min_rtt_us.map_or(summary.min_rtt_us, |rtt| rtt.min(summary.min_rtt_us));
        self.min_rtt_us = Some(min_rtt);
        self.max_rate = self.max_rate.max(summary.max_delivery_rate);
        let cost = cost(summary.min_rtt_us, summary.max_delivery_rate, min_rtt, self.max_rate);
        let arm = &mut self.arms[index];
        arm.value = Some(match arm.value {
            None => cost,
            Some(value) => value + (cost - value) / 4.0,
        });
        arm.pulls += 1;
        self.connections += 1;
        Some(cost)
    }

    /// The algorithm new connections should use now. `None` without arms.
    pub fn choose(&mut self) -> Option<Choice> {
        let least_tried = self.arms.iter().min_by_key(|arm| arm.pulls)?;
        if self.connections < MIN_CONNECTIONS || least_tried.pulls < MIN_PULLS {
            return Some(Choice { algorithm: least_tried.algorithm.clone(), reason: Reason::Measuring });
        }
        let best = self.best()?.algorithm.clone();
        if self.arms.len() > 1 && self.next_random().is_multiple_of(EPSILON_DENOMINATOR) {
            let other = self.arms.iter().filter(|arm| arm.algorithm != best).min_by_key(|arm| arm.pulls)?;
            return Some(Choice { algorithm: other.algorithm.clone(), reason: Reason::Exploring });
        }
        Some(Choice { algorithm: best, reason: Reason::Best })
    }

    /// The scored arm with the lowest cost.
    pub fn best(&self) -> Option<&Arm> {
        self.arms
            .iter()
            .filter(|arm| arm.value.is_some())
            .min_by(|a, b| a.value.unwrap_or(f64::MAX).total_cmp(&b.value.unwrap_or(f64::MAX)))
    }

    /// The arms as one line for logs: `bbr 0.12 (5), cubic 0.80 (3)`.
    pub fn describe(&self) -> String {
        let arms: Vec<String> = self
            .arms
            .iter()
            .map(|arm| match arm.value {
                Some(value) => format!("{} {value:.2} ({})", arm.algorithm, arm.pulls),
                None => format!("{} untried", arm.algorithm),
            })
            .collect();
        arms.join(", ")
    }

    /// xorshift64: enough for a 1-in-20 coin without asking the host.
    fn next_random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// bpftune's cost: relative RTT excess plus relative rate shortfall.
pub fn cost(min_rtt_us: u32, max_rate: u64, peer_min_rtt_us: u32, peer_max_rate: u64) -> f64 {
    let rtt = f64::from(min_rtt_us.saturating_sub(peer_min_rtt_us)) / f64::from(peer_min_rtt_us.max(1));
    let rate = peer_max_rate.saturating_sub(max_rate) as f64 / peer_max_rate.max(1) as f64;
    rtt + rate
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtune_sdk::IpAddr;

    fn summary(congestion: &str, min_rtt_us: u32, rate: u64, segments: u32) -> ConnectionSummary {
        ConnectionSummary {
            netns: 1,
            remote: IpAddr::V4((10, 0, 0, 2)),
            remote_port: 5201,
            local_port: 40000,
            congestion: congestion.into(),
            min_rtt_us,
            srtt_us: min_rtt_us * 2,
            max_delivery_rate: rate,
            segments_out: segments,
            retransmits: 0,
            bytes_acked: u64::from(segments) * 1448,
            bytes_received: 0,
            duration_ms: 1000,
        }
    }

    fn algorithms() -> Vec<String> {
        ["bbr", "cubic", "reno"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cost_is_relative_rtt_excess_plus_rate_shortfall() {
        assert_eq!(cost(100, 1000, 100, 1000), 0.0);
        assert!((cost(150, 1000, 100, 1000) - 0.5).abs() < 1e-12);
        assert!((cost(100, 750, 100, 1000) - 0.25).abs() < 1e-12);
        assert!((cost(200, 500, 100, 1000) - 1.5).abs() < 1e-12);
    }

    #[test]
    fn short_or_foreign_connections_are_not_scored() {
        let mut peer = Peer::new(&algorithms(), 7);
        assert_eq!(peer.learn(&summary("cubic", 100, 1000, 10), "cubic"), None);
        assert_eq!(peer.learn(&summary("dctcp", 100, 1000, 1000), "dctcp"), None);
        assert_eq!(peer.learn(&summary("cubic", 0, 1000, 1000), "cubic"), None);
        let receiving =
            ConnectionSummary { bytes_acked: 100, bytes_received: 1 << 30, ..summary("cubic", 100, 1000, 1000) };
        assert_eq!(peer.learn(&receiving, "cubic"), None, "the receiving end says nothing about its algorithm");
        assert_eq!(peer.connections, 0);
    }

    #[test]
    fn values_move_a_quarter_of_the_way() {
        let mut peer = Peer::new(&algorithms(), 7);
        peer.learn(&summary("bbr", 100, 1000, 1000), "bbr");
        assert_eq!(peer.arms[0].value, Some(0.0), "the first cost sets the value");
        peer.learn(&summary("bbr", 200, 1000, 1000), "bbr");
        assert_eq!(peer.arms[0].value, Some(0.25), "cost 1.0, a quarter of the way from 0");
    }

    #[test]
    fn every_arm_is_measured_before_any_is_preferred() {
        let mut peer = Peer::new(&algorithms(), 7);
        let mut order = vec![];
        for _ in 0..6 {
            let choice = peer.choose().expect("arms");
            assert_eq!(choice.reason, Reason::Measuring);
            order.push(choice.algorithm.clone());
            peer.learn(&summary(&choice.algorithm, 100, 1000, 1000), &choice.algorithm);
        }
        assert_eq!(order, ["bbr", "cubic", "reno", "bbr", "cubic", "reno"]);
        assert_ne!(peer.choose().expect("arms").reason, Reason::Measuring);
    }

    /// A simulated peer where each algorithm has a typical rate and RTT.
    fn converge(rates: &[(&str, u64, u32)], connections: usize, seed: u64) -> (Peer, Vec<String>) {
        let mut peer = Peer::new(&algorithms(), seed);
        let mut chosen = vec![];
        for i in 0..connections {
            let choice = peer.choose().expect("arms");
            let (_, rate, rtt) = rates.iter().find(|(a, ..)| *a == choice.algorithm).copied().expect("known");
            // ±5 % noise, deterministic.
            let noise = 95 + (i as u64 * 7919) % 11;
            peer.learn(&summary(&choice.algorithm, rtt, rate * noise / 100, 1000), &choice.algorithm);
            chosen.push(choice.algorithm);
        }
        (peer, chosen)
    }

    #[test]
    fn a_lossy_path_converges_to_the_algorithm_that_delivers() {
        // 10 % loss: bbr keeps its rate, loss-based algorithms collapse.
        let rates = [("bbr", 490_000_000 / 8, 1000), ("cubic", 58_000_000 / 8, 1000), ("reno", 40_000_000 / 8, 1000)];
        let (peer, chosen) = converge(&rates, 100, 11);
        assert_eq!(peer.best().expect("scored").algorithm, "bbr");
        let late_bbr = chosen[50..].iter().filter(|a| *a == "bbr").count();
        assert!(late_bbr >= 45, "bbr chosen {late_bbr} of the last 50: {}", peer.describe());
    }

    #[test]
    fn a_clean_path_prefers_the_lower_rtt_at_equal_rate() {
        // Same rate; bbr probing keeps the queue short, cubic fills it.
        let rates = [("bbr", 100_000_000, 1500), ("cubic", 100_000_000, 1000), ("reno", 100_000_000, 1100)];
        let (peer, _) = converge(&rates, 60, 3);
        assert_eq!(peer.best().expect("scored").algorithm, "cubic", "{}", peer.describe());
    }

    #[test]
    fn exploration_happens_about_one_time_in_twenty() {
        let rates = [("bbr", 100_000_000, 1000), ("cubic", 50_000_000, 1000), ("reno", 40_000_000, 1000)];
        let (mut peer, _) = converge(&rates, 20, 5);
        let explored = (0..2000).filter(|_| peer.choose().expect("arms").reason == Reason::Exploring).count();
        assert!((60..=140).contains(&explored), "explored {explored} of 2000");
    }

    #[test]
    fn a_single_arm_never_explores() {
        let mut peer = Peer::new(&["cubic".to_string()], 9);
        for _ in 0..10 {
            peer.learn(&summary("cubic", 100, 1000, 1000), "cubic");
        }
        assert!((0..200).all(|_| peer.choose().expect("arm").reason == Reason::Best));
    }
}
