//! Learning-rate arithmetic: how big one tuning step is and how close to a
//! limit counts as "nearly full".
//!
//! The administrator picks a learning rate from 0 to 4 (the host passes it in
//! [`Config::learning_rate`](crate::Config)). One step is `value >> (6 - rate)`,
//! and a value within one step of its limit is nearly full:
//!
//! | rate | step (and nearly-full margin) |
//! |------|-------------------------------|
//! | 4    | 25 %                          |
//! | 3    | 12.5 %                        |
//! | 2    | 6.25 %                        |
//! | 1    | 3.1 %                         |
//! | 0    | 1.6 %                         |
//!
//! Rates above 4 are treated as 4: a typo in a config must not make steps
//! larger than a quarter.

/// The largest (and default) learning rate.
pub const MAX_LEARNING_RATE: u8 = 4;

/// The right shift that makes one step at learning rate `rate`:
/// `6 - rate`, rates above [`MAX_LEARNING_RATE`] read as it. Whatever else
/// measures "within one step" (the kernel-side near-limit filters) must use
/// the same shift, or events and decisions disagree about "nearly full".
pub const fn step_shift(rate: u8) -> u32 {
    let rate = if rate > MAX_LEARNING_RATE { MAX_LEARNING_RATE } else { rate };
    6 - rate as u32
}

/// One step of `value` at learning rate `rate`: `value >> step_shift(rate)`,
/// at least 1 for any positive `value` so that small values still move.
pub fn step(value: u64, rate: u8) -> u64 {
    if value == 0 {
        return 0;
    }
    (value >> step_shift(rate)).max(1)
}

/// Whether `used` is within one step of `limit` (or past it).
pub fn nearly_full(used: u64, limit: u64, rate: u8) -> bool {
    used >= limit.saturating_sub(step(limit, rate))
}

/// `value` raised by one step, no higher than `cap`; `None` when it is
/// already at or above the cap (nothing to do, and worth saying once).
pub fn raise(value: u64, rate: u8, cap: u64) -> Option<u64> {
    (value < cap).then(|| value.saturating_add(step(value, rate).max(1)).min(cap))
}

/// `value` lowered by one step, no lower than `floor`; `None` when it is
/// already at or below the floor.
pub fn lower(value: u64, rate: u8, floor: u64) -> Option<u64> {
    (value > floor).then(|| value.saturating_sub(step(value, rate).max(1)).max(floor))
}

/// The step size of `rate` as an administrator reads it, e.g. `"25%"`.
pub fn step_percent(rate: u8) -> &'static str {
    match rate.min(MAX_LEARNING_RATE) {
        4 => "25%",
        3 => "12.5%",
        2 => "6.25%",
        1 => "3.1%",
        _ => "1.6%",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_follow_the_documented_table() {
        let value = 1 << 20;
        assert_eq!(step(value, 4), value / 4);
        assert_eq!(step(value, 3), value / 8);
        assert_eq!(step(value, 2), value / 16);
        assert_eq!(step(value, 1), value / 32);
        assert_eq!(step(value, 0), value / 64);
    }

    #[test]
    fn the_shift_is_six_minus_the_rate() {
        assert_eq!([0, 1, 2, 3, 4].map(step_shift), [6, 5, 4, 3, 2]);
        assert_eq!(step_shift(200), 2);
    }

    #[test]
    fn rates_above_four_are_clamped() {
        assert_eq!(step(1000, 9), step(1000, 4));
        assert_eq!(step_percent(200), "25%");
    }

    #[test]
    fn positive_values_always_step_by_at_least_one() {
        assert_eq!(step(1, 0), 1);
        assert_eq!(step(63, 0), 1);
        assert_eq!(step(0, 4), 0);
    }

    #[test]
    fn nearly_full_means_within_one_step() {
        // Rate 4: within 25 % of 4096 is 3072 and above.
        assert!(nearly_full(3072, 4096, 4));
        assert!(!nearly_full(3071, 4096, 4));
        // Rate 0: within 1.6 % (64 of 4096).
        assert!(nearly_full(4032, 4096, 0));
        assert!(!nearly_full(4031, 4096, 0));
        assert!(nearly_full(5000, 4096, 0), "past the limit is full");
        assert!(nearly_full(0, 0, 4));
    }

    #[test]
    fn raises_and_lowers_stop_at_their_limits() {
        assert_eq!(raise(1000, 4, 10_000), Some(1250));
        assert_eq!(raise(9000, 4, 10_000), Some(10_000));
        assert_eq!(raise(10_000, 4, 10_000), None);
        assert_eq!(raise(0, 4, 10), Some(1), "zero still moves");
        assert_eq!(lower(1000, 4, 128), Some(750));
        assert_eq!(lower(150, 4, 128), Some(128));
        assert_eq!(lower(128, 4, 128), None);
    }

    #[test]
    fn percent_labels_match_steps() {
        assert_eq!(step_percent(4), "25%");
        assert_eq!(step_percent(3), "12.5%");
        assert_eq!(step_percent(2), "6.25%");
        assert_eq!(step_percent(1), "3.1%");
        assert_eq!(step_percent(0), "1.6%");
    }
}
