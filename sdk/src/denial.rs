//! Denials as an administrator reads them: a kebab-case kind for keys and
//! log fields, and one short sentence per kind.
//!
//! wit-bindgen already gives [`Denial`] a `Display` (its `Debug` form,
//! because the WIT returns it as an error), so the sentence is reached
//! through [`Denial::explain`].

use std::fmt;

use crate::Denial;

impl Denial {
    /// The WIT case name: `not-granted`, `out-of-bounds`, `not-owner`,
    /// `admin-override`, `rate-limited`, `unknown-netns`, `invalid-value`,
    /// `unsupported` or `quota-exceeded`. Handy for "log once per kind" sets.
    pub fn kind(&self) -> &'static str {
        match self {
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

    /// One short sentence saying why the host refused, for policy logs:
    /// `format!("not raised: {}", denial.explain())`.
    pub fn explain(&self) -> Explanation<'_> {
        Explanation(self)
    }
}

/// The sentence form of a [`Denial`]; see [`Denial::explain`].
#[derive(Debug, Clone, Copy)]
pub struct Explanation<'a>(&'a Denial);

impl fmt::Display for Explanation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Denial::NotGranted(detail) => write!(f, "not granted: {detail}"),
            Denial::OutOfBounds(bounds) => {
                write!(f, "outside the allowed range {}..={}", bounds.min, bounds.max)
            }
            Denial::NotOwner(owner) => write!(f, "policy {owner} already tunes it in this network namespace"),
            Denial::AdminOverride(detail) => {
                write!(f, "the administrator changed it ({detail}), so it is left alone")
            }
            Denial::RateLimited(ms) => write!(f, "changed too recently; retry in {ms} ms"),
            Denial::UnknownNetns(netns) => write!(f, "network namespace {netns} is not tuned by this host"),
            Denial::InvalidValue(detail) => write!(f, "invalid value: {detail}"),
            Denial::Unsupported(detail) => write!(f, "not supported on this kernel: {detail}"),
            Denial::QuotaExceeded(bytes) => write!(f, "the state store is full ({bytes} bytes)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Bounds;

    #[test]
    fn kinds_are_the_wit_case_names() {
        assert_eq!(Denial::NotGranted(String::new()).kind(), "not-granted");
        assert_eq!(Denial::OutOfBounds(Bounds { min: 0, max: 1 }).kind(), "out-of-bounds");
        assert_eq!(Denial::NotOwner(String::new()).kind(), "not-owner");
        assert_eq!(Denial::AdminOverride(String::new()).kind(), "admin-override");
        assert_eq!(Denial::RateLimited(1).kind(), "rate-limited");
        assert_eq!(Denial::UnknownNetns(1).kind(), "unknown-netns");
        assert_eq!(Denial::InvalidValue(String::new()).kind(), "invalid-value");
        assert_eq!(Denial::Unsupported(String::new()).kind(), "unsupported");
        assert_eq!(Denial::QuotaExceeded(1).kind(), "quota-exceeded");
    }

    #[test]
    fn explanations_are_short_sentences_with_the_details() {
        let cases = [
            (Denial::NotGranted("manifest lacks it".into()), "not granted: manifest lacks it"),
            (Denial::OutOfBounds(Bounds { min: 4096, max: 8388608 }), "outside the allowed range 4096..=8388608"),
            (Denial::NotOwner("other".into()), "policy other already tunes it in this network namespace"),
            (
                Denial::AdminOverride("root at 12:00".into()),
                "the administrator changed it (root at 12:00), so it is left alone",
            ),
            (Denial::RateLimited(40), "changed too recently; retry in 40 ms"),
            (Denial::UnknownNetns(7), "network namespace 7 is not tuned by this host"),
            (Denial::InvalidValue("3 fields expected".into()), "invalid value: 3 fields expected"),
            (Denial::Unsupported("net.x".into()), "not supported on this kernel: net.x"),
        ];
        for (denial, sentence) in cases {
            assert_eq!(denial.explain().to_string(), sentence);
        }
    }
}
