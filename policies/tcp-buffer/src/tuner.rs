//! The decision for one `tcp-buffer-limit` event, as a pure function of the
//! event, the current `tcp_*mem` value, the learning rate and what this
//! policy remembers about that namespace and direction (a [`Lane`]).
//!
//! Nothing here calls the host, so every rule is unit-tested natively.

use wasmtune_sdk::{BufferDirection, Correlation, InstantMs, TcpBufferLimit, rate};

/// The lowest maximum the manifest lets this policy set.
pub const GRANT_MIN: i64 = 4096;
/// The highest maximum the manifest lets this policy set (256 MiB). The
/// administrator may narrow it; the host then answers `out-of-bounds` and
/// the lane learns the narrower cap.
pub const GRANT_MAX: i64 = 268_435_456;

/// The RTT must also have grown by more than this over the lowest seen, so
/// that sub-millisecond paths (veth, loopback) never trip the guard on noise.
pub const LATENCY_GROWTH_US: u32 = 1000;
/// How long a request may stay unapplied before it is presumed lost (the
/// host refused the write after checking it, or someone changed the value).
pub const PENDING_TIMEOUT_MS: InstantMs = 5000;

/// Scenario of a raise, as the host logs it next to the change.
pub const SCENARIO_RAISE: &str = "need to increase TCP buffer size(s)";
/// Scenario of a latency-guard shrink.
pub const SCENARIO_SHRINK: &str = "need to decrease TCP buffer size(s) for latency";

/// The sysctl a direction is limited by.
pub fn tunable(direction: BufferDirection) -> &'static str {
    match direction {
        BufferDirection::Receive => "net.ipv4.tcp_rmem",
        BufferDirection::Send => "net.ipv4.tcp_wmem",
    }
}

/// The short name used in reasons: `tcp_rmem` or `tcp_wmem`.
pub fn short_name(direction: BufferDirection) -> &'static str {
    match direction {
        BufferDirection::Receive => "tcp_rmem",
        BufferDirection::Send => "tcp_wmem",
    }
}

/// The three fields of `tcp_rmem` / `tcp_wmem`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferLimits {
    pub min: i64,
    pub default: i64,
    pub max: i64,
}

impl BufferLimits {
    /// `None` unless the kernel gave exactly three fields.
    pub fn from_fields(fields: &[i64]) -> Option<BufferLimits> {
        match *fields {
            [min, default, max] => Some(BufferLimits { min, default, max }),
            _ => None,
        }
    }

    /// The fields with only the maximum changed.
    pub fn with_max(self, max: i64) -> [i64; 3] {
        [self.min, self.default, max]
    }
}

/// What to do about one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing; the reason is for tests and debugging only.
    Skip(Skip),
    /// Request this maximum.
    Raise { max: i64, reason: String },
    /// Request this lower maximum (latency guard).
    Shrink { max: i64, reason: String },
    /// The maximum is at the cap and sockets still reach it: say so, once.
    CapReached { cap: i64 },
}

/// Why an event leads to nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// The event's limit is no longer the current maximum: it was raised (or
    /// lowered) after the socket was seen.
    Stale,
    /// An earlier request has not reached the kernel yet.
    Pending,
    /// The socket's buffer is not within one step of the current maximum.
    NotNearlyFull,
    /// At the cap, and that was already reported.
    AtCap,
    /// The latency guard wants less, but the maximum is already at
    /// `tcp_*mem[1]` (or the grant's minimum).
    AtFloor,
}

/// A request made but not yet seen in the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    max: i64,
    since: InstantMs,
}

/// What the policy remembers about one (network namespace, direction).
#[derive(Debug, Clone)]
pub struct Lane {
    pending: Option<Pending>,
    /// Buffer limit against smoothed RTT, one sample per event.
    latency: Correlation,
    lowest_srtt_us: Option<u32>,
    /// The highest maximum this policy may set here, learned from denials.
    cap: i64,
    cap_reported: bool,
}

impl Default for Lane {
    fn default() -> Lane {
        Lane { pending: None, latency: Correlation::new(), lowest_srtt_us: None, cap: GRANT_MAX, cap_reported: false }
    }
}

impl Lane {
    /// Decides what one event calls for. `current` is the value read from
    /// the kernel just now; `now` is the host clock.
    pub fn decide(&mut self, hit: &TcpBufferLimit, current: BufferLimits, rate: u8, now: InstantMs) -> Decision {
        self.sample(hit);
        if i64::from(hit.limit_bytes) != current.max {
            return Decision::Skip(Skip::Stale);
        }
        if let Some(pending) = self.pending {
            let caught_up = current.max == pending.max;
            let expired = now.saturating_sub(pending.since) >= PENDING_TIMEOUT_MS;
            if !caught_up && !expired {
                return Decision::Skip(Skip::Pending);
            }
            self.pending = None;
        }
        let max = current.max.max(0).unsigned_abs();
        if !rate::nearly_full(u64::from(hit.buffer_bytes), max, rate) {
            return Decision::Skip(Skip::NotNearlyFull);
        }
        let step = i64::try_from(rate::step(max, rate)).unwrap_or(i64::MAX);
        if let Some(correlation) = self.latency_grows(hit) {
            return self.shrink(hit, current, step, correlation, rate);
        }
        if current.max >= self.cap {
            if self.cap_reported {
                return Decision::Skip(Skip::AtCap);
            }
            self.cap_reported = true;
            return Decision::CapReached { cap: self.cap };
        }
        let raised = current.max.saturating_add(step);
        let (new_max, how) = if raised >= self.cap {
            (self.cap, format!("to its cap of {} bytes", self.cap))
        } else {
            (raised, format!("by {}", rate::step_percent(rate)))
        };
        let reason = format!(
            "sockets in this netns reach {}[2] (buffer {} of limit {} bytes, srtt {} us); raising the maximum {how} to maximize throughput",
            short_name(hit.direction),
            hit.buffer_bytes,
            hit.limit_bytes,
            hit.srtt_us
        );
        Decision::Raise { max: new_max, reason }
    }

    /// Remembers a request (raise or shrink) the host accepted, so that
    /// later events skip until the kernel shows it.
    ///
    /// The latency evidence is kept across a shrink on purpose: the guard
    /// keeps shrinking, one step per fresh event, while the RTT stays high
    /// and still follows the limit, and lets raises resume once the RTT
    /// falls back (or stops following). Starting the evidence afresh would
    /// let the next few events raise the limit straight back.
    pub fn requested(&mut self, max: i64, now: InstantMs) {
        self.pending = Some(Pending { max, since: now });
        self.cap_reported = false;
    }

    /// The host refused `current`'s raise as out of bounds, the highest
    /// allowed maximum being `allowed_max`. Returns the maximum to retry
    /// with, if that is still a raise; `None` means the cap is reached and
    /// should be reported, unless [`Lane::take_cap_report`] says it was.
    pub fn out_of_bounds(&mut self, current: BufferLimits, allowed_max: i64) -> Option<i64> {
        self.cap = self.cap.min(allowed_max);
        (allowed_max > current.max).then_some(allowed_max)
    }

    /// Whether the cap still needs reporting; reporting it now.
    pub fn take_cap_report(&mut self) -> bool {
        !std::mem::replace(&mut self.cap_reported, true)
    }

    /// The cap learned so far.
    pub fn cap(&self) -> i64 {
        self.cap
    }

    fn sample(&mut self, hit: &TcpBufferLimit) {
        self.latency.push(f64::from(hit.limit_bytes), f64::from(hit.srtt_us));
        self.lowest_srtt_us = Some(self.lowest_srtt_us.map_or(hit.srtt_us, |low| low.min(hit.srtt_us)));
    }

    /// The correlation, when the guard trips: buffer limit and RTT rise
    /// together, and this RTT is well above the lowest seen (more than twice
    /// it and more than [`LATENCY_GROWTH_US`] above it).
    fn latency_grows(&self, hit: &TcpBufferLimit) -> Option<f64> {
        // Buffer limit and RTT rising together: growing the buffer only adds
        // queueing delay.
        let correlation = self.latency.strong()?;
        let lowest = self.lowest_srtt_us?;
        let doubled = u64::from(hit.srtt_us) > 2 * u64::from(lowest);
        let grown = doubled && hit.srtt_us - lowest > LATENCY_GROWTH_US;
        grown.then_some(correlation)
    }

    fn shrink(&self, hit: &TcpBufferLimit, current: BufferLimits, step: i64, correlation: f64, rate: u8) -> Decision {
        let floor = current.default.max(GRANT_MIN);
        if current.max <= floor {
            return Decision::Skip(Skip::AtFloor);
        }
        let new_max = current.max.saturating_sub(step).max(floor);
        let how = if new_max == floor {
            format!("to {}[1] ({floor} bytes)", short_name(hit.direction))
        } else {
            format!("by {}", rate::step_percent(rate))
        };
        let reason = format!(
            "buffer limit and round-trip time rise together in this netns (correlation {correlation:.2} over {} samples; srtt {} us against a lowest {} us); lowering the {}[2] maximum {how} to cut queueing delay",
            self.latency.samples(),
            hit.srtt_us,
            self.lowest_srtt_us.unwrap_or(hit.srtt_us),
            short_name(hit.direction),
        );
        Decision::Shrink { max: new_max, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtune_sdk::IpAddr;

    const RMEM: BufferLimits = BufferLimits { min: 4096, default: 131072, max: 98304 * 4 };

    fn hit(buffer: u32, limit: u32, srtt_us: u32) -> TcpBufferLimit {
        TcpBufferLimit {
            netns: 4026531840,
            direction: BufferDirection::Receive,
            buffer_bytes: buffer,
            limit_bytes: limit,
            queued_bytes: 0,
            srtt_us,
            remote: IpAddr::V4((127, 0, 0, 1)),
            remote_port: 5201,
        }
    }

    fn limits(max: i64) -> BufferLimits {
        BufferLimits { max, ..RMEM }
    }

    #[test]
    fn raises_by_one_step_when_the_buffer_is_nearly_full() {
        let mut lane = Lane::default();
        let decision = lane.decide(&hit(98304, 98304, 52), limits(98304), 4, 0);
        let Decision::Raise { max, reason } = decision else { panic!("expected a raise, got {decision:?}") };
        assert_eq!(max, 98304 + 98304 / 4);
        assert_eq!(
            reason,
            "sockets in this netns reach tcp_rmem[2] (buffer 98304 of limit 98304 bytes, srtt 52 us); raising the maximum by 25% to maximize throughput"
        );
    }

    #[test]
    fn the_step_follows_the_learning_rate() {
        for (rate, expected) in [(4, 131072 + 32768), (2, 131072 + 8192), (0, 131072 + 2048)] {
            let mut lane = Lane::default();
            match lane.decide(&hit(131072, 131072, 50), limits(131072), rate, 0) {
                Decision::Raise { max, .. } => assert_eq!(max, expected, "rate {rate}"),
                other => panic!("rate {rate}: {other:?}"),
            }
        }
    }

    #[test]
    fn nearly_full_is_measured_against_the_current_maximum() {
        let mut lane = Lane::default();
        // Rate 4: within 25 % of 131072 means 98304 and above.
        assert_eq!(lane.decide(&hit(98303, 131072, 50), limits(131072), 4, 0), Decision::Skip(Skip::NotNearlyFull));
        assert!(matches!(lane.decide(&hit(98304, 131072, 50), limits(131072), 4, 0), Decision::Raise { .. }));
        // Rate 0: within 1.6 %.
        let mut lane = Lane::default();
        assert_eq!(lane.decide(&hit(98304, 131072, 50), limits(131072), 0, 0), Decision::Skip(Skip::NotNearlyFull));
    }

    #[test]
    fn events_about_an_older_limit_are_stale() {
        let mut lane = Lane::default();
        assert_eq!(lane.decide(&hit(98304, 98304, 50), limits(122880), 4, 0), Decision::Skip(Skip::Stale));
        // Lowered since (by a shrink or the administrator): also stale.
        assert_eq!(lane.decide(&hit(98304, 98304, 50), limits(65536), 4, 0), Decision::Skip(Skip::Stale));
    }

    #[test]
    fn a_raise_is_not_requested_twice_before_the_kernel_shows_it() {
        let mut lane = Lane::default();
        let Decision::Raise { max, .. } = lane.decide(&hit(98304, 98304, 50), limits(98304), 4, 0) else { panic!() };
        lane.requested(max, 0);
        // Same batch, and the next one before the host applied it.
        assert_eq!(lane.decide(&hit(98304, 98304, 50), limits(98304), 4, 1), Decision::Skip(Skip::Pending));
        assert_eq!(lane.decide(&hit(98000, 98304, 50), limits(98304), 4, 40), Decision::Skip(Skip::Pending));
        // Applied: events about the old limit are stale, new ones count again.
        assert_eq!(lane.decide(&hit(98304, 98304, 50), limits(max), 4, 60), Decision::Skip(Skip::Stale));
        let next = lane.decide(&hit(max as u32, max as u32, 50), limits(max), 4, 70);
        assert_eq!(next, Decision::Raise { max: max + max / 4, reason: reason_for(max as u32, 50) });
    }

    fn reason_for(limit: u32, srtt: u32) -> String {
        format!(
            "sockets in this netns reach tcp_rmem[2] (buffer {limit} of limit {limit} bytes, srtt {srtt} us); raising the maximum by 25% to maximize throughput"
        )
    }

    #[test]
    fn a_request_that_never_lands_is_forgotten_after_a_while() {
        let mut lane = Lane::default();
        lane.requested(122880, 1000);
        assert_eq!(
            lane.decide(&hit(98304, 98304, 50), limits(98304), 4, 1000 + PENDING_TIMEOUT_MS - 1),
            Decision::Skip(Skip::Pending)
        );
        assert!(matches!(
            lane.decide(&hit(98304, 98304, 50), limits(98304), 4, 1000 + PENDING_TIMEOUT_MS),
            Decision::Raise { max: 122880, .. }
        ));
    }

    #[test]
    fn raises_stop_at_the_grant_and_say_so_once() {
        let mut lane = Lane::default();
        let near = (GRANT_MAX - 1000) as u32;
        match lane.decide(&hit(near, near, 50), limits(GRANT_MAX - 1000), 4, 0) {
            Decision::Raise { max, reason } => {
                assert_eq!(max, GRANT_MAX);
                assert!(reason.contains("raising the maximum to its cap of 268435456 bytes"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        let full = GRANT_MAX as u32;
        assert_eq!(lane.decide(&hit(full, full, 50), limits(GRANT_MAX), 4, 0), Decision::CapReached { cap: GRANT_MAX });
        assert_eq!(lane.decide(&hit(full, full, 50), limits(GRANT_MAX), 4, 1), Decision::Skip(Skip::AtCap));
    }

    #[test]
    fn a_narrower_cap_learned_from_the_host_is_kept() {
        let mut lane = Lane::default();
        let current = limits(6_000_000);
        assert_eq!(lane.out_of_bounds(current, 8_388_608), Some(8_388_608));
        assert_eq!(lane.cap(), 8_388_608);
        assert_eq!(lane.out_of_bounds(limits(8_388_608), 8_388_608), None);
        assert!(lane.take_cap_report());
        assert!(!lane.take_cap_report());
        // The next nearly-full event aims straight at the learned cap.
        let mut fresh = Lane::default();
        fresh.out_of_bounds(current, 7_000_000);
        match fresh.decide(&hit(6_000_000, 6_000_000, 50), current, 4, 0) {
            Decision::Raise { max, .. } => assert_eq!(max, 7_000_000),
            other => panic!("{other:?}"),
        }
    }

    /// Ten events whose limit and RTT rise together, ending above `limit`.
    fn correlated_history(lane: &mut Lane, start_srtt: u32) -> BufferLimits {
        let mut limit = 98304u32;
        for i in 0..10u32 {
            let current = limits(i64::from(limit));
            let _ = lane.decide(&hit(limit, limit, start_srtt + i * 800), current, 4, u64::from(i) * 1000);
            limit += limit / 4;
            lane.pending = None;
        }
        limits(i64::from(limit))
    }

    #[test]
    fn shrinks_when_buffer_and_rtt_rise_together_on_a_slow_path() {
        let mut lane = Lane::default();
        let current = correlated_history(&mut lane, 2000);
        let limit = current.max as u32;
        match lane.decide(&hit(limit, limit, 12_000), current, 4, 20_000) {
            Decision::Shrink { max, reason } => {
                assert_eq!(max, current.max - current.max / 4);
                assert!(reason.starts_with("buffer limit and round-trip time rise together"), "{reason}");
                assert!(reason.contains("srtt 12000 us against a lowest 2000 us"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sub_millisecond_paths_never_trip_the_latency_guard() {
        // Perfect correlation, RTT tripling, but all below a millisecond.
        let mut lane = Lane::default();
        let mut limit = 98304u32;
        for i in 0..30u32 {
            let current = limits(i64::from(limit));
            let decision = lane.decide(&hit(limit, limit, 30 + i * 20), current, 4, u64::from(i) * 1000);
            assert!(matches!(decision, Decision::Raise { .. }), "event {i}: {decision:?}");
            limit += limit / 4;
            lane.pending = None;
        }
    }

    #[test]
    fn rtt_must_double_as_well_as_correlate() {
        let mut lane = Lane::default();
        let current = correlated_history(&mut lane, 20_000);
        let limit = current.max as u32;
        // 20 ms lowest, 30 ms now: correlated but not doubled.
        assert!(matches!(lane.decide(&hit(limit, limit, 30_000), current, 4, 20_000), Decision::Raise { .. }));
    }

    #[test]
    fn shrinking_stops_at_the_default() {
        let mut lane = Lane::default();
        let end = correlated_history(&mut lane, 2000);
        let current = BufferLimits { default: end.max - end.max / 8, ..end };
        let limit = end.max as u32;
        match lane.decide(&hit(limit, limit, 20_000), current, 4, 20_000) {
            Decision::Shrink { max, reason } => {
                assert_eq!(max, current.default);
                assert!(reason.contains(&format!("to tcp_rmem[1] ({} bytes)", current.default)), "{reason}");
            }
            other => panic!("{other:?}"),
        }

        let mut lane = Lane::default();
        let end = correlated_history(&mut lane, 2000);
        let at_default = BufferLimits { default: end.max, ..end };
        let limit = end.max as u32;
        assert_eq!(lane.decide(&hit(limit, limit, 20_000), at_default, 4, 20_000), Decision::Skip(Skip::AtFloor));
    }

    #[test]
    fn keeps_shrinking_while_rtt_stays_high_and_raises_once_it_falls() {
        let mut lane = Lane::default();
        let current = correlated_history(&mut lane, 2000);
        let limit = current.max as u32;
        let Decision::Shrink { max, .. } = lane.decide(&hit(limit, limit, 12_000), current, 4, 20_000) else {
            panic!()
        };
        lane.requested(max, 20_000);
        let lowered = limits(max);
        let again = lane.decide(&hit(max as u32, max as u32, 11_000), lowered, 4, 21_000);
        let Decision::Shrink { max: lower, .. } = again else { panic!("{again:?}") };
        assert_eq!(lower, max - max / 4);
        lane.requested(lower, 21_000);
        // The queue drained: RTT back near its lowest, so growth resumes.
        let decision = lane.decide(&hit(lower as u32, lower as u32, 2500), limits(lower), 4, 22_000);
        assert!(matches!(decision, Decision::Raise { .. }), "{decision:?}");
    }

    #[test]
    fn limits_need_exactly_three_fields() {
        assert_eq!(BufferLimits::from_fields(&[1, 2, 3]), Some(BufferLimits { min: 1, default: 2, max: 3 }));
        assert_eq!(BufferLimits::from_fields(&[1, 2]), None);
        assert_eq!(BufferLimits::from_fields(&[1, 2, 3, 4]), None);
        assert_eq!(RMEM.with_max(7), [4096, 131072, 7]);
    }
}
