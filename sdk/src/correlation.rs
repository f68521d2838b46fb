//! Streaming Pearson correlation of two series, for guards such as "stop
//! growing the buffer when its size and the round-trip time rise together".
//!
//! The sums are kept as running means and co-moments (Welford's update)
//! rather than raw sums of squares: buffer sizes reach 2^28 and their squares
//! summed in `f64` would cancel catastrophically when the values barely move.

/// Samples needed before [`Correlation::value`] answers.
pub const MIN_SAMPLES: u64 = 10;

/// Above this coefficient two series count as rising together (bpftune's
/// threshold): enough to act on, such as shrinking a limit whose growth only
/// brought more latency or failures.
pub const STRONG: f64 = 0.75;

/// A running correlation coefficient over `(x, y)` samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Correlation {
    n: u64,
    mean_x: f64,
    mean_y: f64,
    /// Sum of squared deviations of x from its mean.
    m2_x: f64,
    /// Sum of squared deviations of y from its mean.
    m2_y: f64,
    /// Sum of products of the x and y deviations.
    co_moment: f64,
}

impl Correlation {
    /// No samples yet.
    pub fn new() -> Correlation {
        Correlation::default()
    }

    /// Adds one sample.
    pub fn push(&mut self, x: f64, y: f64) {
        self.n += 1;
        let n = self.n as f64;
        let dx = x - self.mean_x;
        self.mean_x += dx / n;
        let dy = y - self.mean_y;
        self.mean_y += dy / n;
        // The second factor uses the updated mean: the exact Welford form.
        self.m2_x += dx * (x - self.mean_x);
        self.m2_y += dy * (y - self.mean_y);
        self.co_moment += dx * (y - self.mean_y);
    }

    /// Samples pushed since the last reset.
    pub fn samples(&self) -> u64 {
        self.n
    }

    /// The coefficient in `-1.0..=1.0`, once [`MIN_SAMPLES`] samples are in
    /// and both series vary (a constant series correlates with nothing).
    pub fn value(&self) -> Option<f64> {
        if self.n < MIN_SAMPLES || self.m2_x <= 0.0 || self.m2_y <= 0.0 {
            return None;
        }
        let r = self.co_moment / (self.m2_x * self.m2_y).sqrt();
        Some(r.clamp(-1.0, 1.0))
    }

    /// The coefficient when it is above [`STRONG`]: the two series rise
    /// together.
    pub fn strong(&self) -> Option<f64> {
        self.value().filter(|r| *r > STRONG)
    }

    /// Forgets every sample.
    pub fn reset(&mut self) {
        *self = Correlation::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(samples: &[(f64, f64)]) -> Correlation {
        let mut c = Correlation::new();
        for &(x, y) in samples {
            c.push(x, y);
        }
        c
    }

    #[test]
    fn needs_ten_samples() {
        let nine: Vec<(f64, f64)> = (0..9).map(|i| (i as f64, i as f64)).collect();
        let mut c = filled(&nine);
        assert_eq!(c.value(), None);
        c.push(9.0, 9.0);
        assert_eq!(c.samples(), 10);
        assert!((c.value().unwrap() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn perfectly_opposite_series_give_minus_one() {
        let c = filled(&(0..20).map(|i| (i as f64, -2.0 * i as f64 + 7.0)).collect::<Vec<_>>());
        assert!((c.value().unwrap() + 1.0).abs() < 1e-12);
    }

    #[test]
    fn matches_the_textbook_formula() {
        let samples: Vec<(f64, f64)> = (0..50).map(|i| (i as f64, ((i * 37) % 11) as f64 + i as f64 * 0.3)).collect();
        let n = samples.len() as f64;
        let (sx, sy) = samples.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
        let (mx, my) = (sx / n, sy / n);
        let cov: f64 = samples.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let vx: f64 = samples.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        let vy: f64 = samples.iter().map(|(_, y)| (y - my).powi(2)).sum();
        let expected = cov / (vx * vy).sqrt();
        assert!((filled(&samples).value().unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn stays_exact_for_large_values_that_barely_move() {
        // Buffer sizes near 256 MiB moving by a few bytes, RTT following.
        let base = 268_435_456.0;
        let c = filled(&(0..100).map(|i| (base + i as f64, 1000.0 + 2.0 * i as f64)).collect::<Vec<_>>());
        assert!((c.value().unwrap() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn strong_means_above_three_quarters() {
        let rising = filled(&(0..20).map(|i| (i as f64, i as f64)).collect::<Vec<_>>());
        assert!(rising.strong().is_some());
        let opposite = filled(&(0..20).map(|i| (i as f64, -(i as f64))).collect::<Vec<_>>());
        assert_eq!(opposite.strong(), None);
        // Alternating noise around a rise: r is about 0.5.
        let loose =
            filled(&(0..40).map(|i| (i as f64, i as f64 + if i % 2 == 0 { 12.0 } else { -12.0 })).collect::<Vec<_>>());
        assert!(loose.value().is_some_and(|r| r < STRONG), "{:?}", loose.value());
        assert_eq!(loose.strong(), None);
    }

    #[test]
    fn a_constant_series_has_no_correlation() {
        let c = filled(&(0..20).map(|i| (5.0, i as f64)).collect::<Vec<_>>());
        assert_eq!(c.value(), None);
    }

    #[test]
    fn reset_forgets_everything() {
        let mut c = filled(&(0..20).map(|i| (i as f64, i as f64)).collect::<Vec<_>>());
        c.reset();
        assert_eq!(c, Correlation::new());
        assert_eq!(c.value(), None);
    }
}
