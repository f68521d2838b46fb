//! Reading and requesting sysctls through the host, with the shapes policies
//! actually use: integer fields in, a named scenario and a reason out.
//!
//! Every call is checked by the host against the policy's grant; a refusal
//! comes back as a [`Denial`], never as a trap. Requests are applied after
//! the current export call returns, so a value read right after a request
//! still shows the old one.
//!
//! Kernels differ: an optional sysctl (`net.core.flow_limit_cpu_bitmap`
//! needs `CONFIG_NET_FLOW_LIMIT`) may not exist at all. [`integer`],
//! [`integers`] and [`text`] return a [`Tunable`], in which a missing value
//! is an outcome to plan for: skip the decisions that need it and keep the
//! rest working. The host says once per namespace which tunable is missing
//! and what the policy loses (`event="tunable-missing"`).

use crate::bindings::wasmtune::policy::sysctl as imports;
use crate::{Denial, NetnsId, SysctlValue};

/// What reading a tunable gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tunable<T> {
    /// Its current value, of the expected shape.
    Present(T),
    /// Not on this kernel or in this namespace, or not of the shape this
    /// policy expects (the sentence says which). The decisions that need it
    /// are skipped; the host has already said so in its log.
    Missing(String),
    /// The host refused the read (not granted, namespace not tuned, ...).
    Refused(Denial),
}

impl<T> Tunable<T> {
    /// The value, if there is one.
    pub fn present(self) -> Option<T> {
        match self {
            Tunable::Present(value) => Some(value),
            Tunable::Missing(_) | Tunable::Refused(_) => None,
        }
    }

    /// Whether the tunable does not exist on this kernel.
    pub fn is_missing(&self) -> bool {
        matches!(self, Tunable::Missing(_))
    }

    /// The value changed by `f`, a missing or refused one as it is.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Tunable<U> {
        match self {
            Tunable::Present(value) => Tunable::Present(f(value)),
            Tunable::Missing(why) => Tunable::Missing(why),
            Tunable::Refused(denial) => Tunable::Refused(denial),
        }
    }
}

/// `name` in `netns` as exactly `fields` integers (`net.ipv4.tcp_rmem` has
/// three); another count is [`Tunable::Missing`].
pub fn integers(netns: NetnsId, name: &str, fields: usize) -> Tunable<Vec<i64>> {
    integers_outcome(name, fields, read(netns, name))
}

/// `name` in `netns` as one integer (`net.core.netdev_max_backlog`).
pub fn integer(netns: NetnsId, name: &str) -> Tunable<i64> {
    integers(netns, name, 1).map(|fields| fields[0])
}

/// `name` in `netns` as text (`net.ipv4.tcp_congestion_control`).
pub fn text(netns: NetnsId, name: &str) -> Tunable<String> {
    match read(netns, name) {
        Ok(SysctlValue::Text(text)) => Tunable::Present(text),
        Ok(SysctlValue::Integers(_)) => Tunable::Missing(format!("{name} holds integers, not text")),
        Err(denial) => missing_or_refused(denial),
    }
}

/// How a read's result becomes a [`Tunable`]: the pure half of [`integers`],
/// for native tests of decision code.
pub fn integers_outcome(name: &str, fields: usize, read: Result<SysctlValue, Denial>) -> Tunable<Vec<i64>> {
    match read {
        Ok(SysctlValue::Integers(values)) if values.len() == fields => Tunable::Present(values),
        Ok(SysctlValue::Integers(values)) => {
            Tunable::Missing(format!("{name} holds {} integer(s) here, not {fields}", values.len()))
        }
        Ok(SysctlValue::Text(_)) => Tunable::Missing(format!("{name} holds text here, not integers")),
        Err(denial) => missing_or_refused(denial),
    }
}

fn missing_or_refused<T>(denial: Denial) -> Tunable<T> {
    match denial {
        Denial::Unsupported(why) => Tunable::Missing(why),
        other => Tunable::Refused(other),
    }
}

/// The current value of `name` in `netns`, as the kernel formats it.
pub fn read(netns: NetnsId, name: &str) -> Result<SysctlValue, Denial> {
    imports::read(netns, name)
}

/// The integer fields of `name` in `netns` (`net.ipv4.tcp_rmem` has three).
/// A text sysctl is reported as [`Denial::InvalidValue`].
pub fn read_integers(netns: NetnsId, name: &str) -> Result<Vec<i64>, Denial> {
    integers_of(name, read(netns, name)?)
}

/// The text value of `name` in `netns` (`net.ipv4.tcp_congestion_control`).
/// An integer sysctl is reported as [`Denial::InvalidValue`].
pub fn read_text(netns: NetnsId, name: &str) -> Result<String, Denial> {
    match read(netns, name)? {
        SysctlValue::Text(text) => Ok(text),
        SysctlValue::Integers(_) => Err(Denial::InvalidValue(format!("{name} holds integers, not text"))),
    }
}

/// Asks the host to set `name` in `netns` to `value`. `scenario` is the short
/// name of the situation ("need to increase TCP buffer size(s)"), `reason`
/// the sentence the administrator reads next to the change.
pub fn request(netns: NetnsId, name: &str, value: SysctlValue, scenario: &str, reason: &str) -> Result<(), Denial> {
    imports::request_change(&imports::Change {
        netns,
        name: name.to_string(),
        value,
        scenario: scenario.to_string(),
        reason: reason.to_string(),
    })
}

/// [`request`] for integer sysctls.
pub fn request_integers(
    netns: NetnsId,
    name: &str,
    fields: &[i64],
    scenario: &str,
    reason: &str,
) -> Result<(), Denial> {
    request(netns, name, SysctlValue::Integers(fields.to_vec()), scenario, reason)
}

fn integers_of(name: &str, value: SysctlValue) -> Result<Vec<i64>, Denial> {
    match value {
        SysctlValue::Integers(fields) => Ok(fields),
        SysctlValue::Text(_) => Err(Denial::InvalidValue(format!("{name} holds text, not integers"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_pass_through() {
        let value = SysctlValue::Integers(vec![4096, 131072, 6291456]);
        assert_eq!(integers_of("net.ipv4.tcp_rmem", value), Ok(vec![4096, 131072, 6291456]));
    }

    #[test]
    fn a_missing_tunable_is_an_outcome_not_an_error() {
        let gone = Err(Denial::Unsupported("net.core.flow_limit_cpu_bitmap does not exist".into()));
        assert!(integers_outcome("net.core.flow_limit_cpu_bitmap", 1, gone).is_missing());
        let refused = Denial::NotGranted("net.core.somaxconn".into());
        assert_eq!(integers_outcome("net.core.somaxconn", 1, Err(refused.clone())), Tunable::Refused(refused));
        let two = Ok(SysctlValue::Integers(vec![1, 2]));
        assert!(integers_outcome("net.ipv4.tcp_rmem", 3, two).is_missing());
        let three = Ok(SysctlValue::Integers(vec![1, 2, 3]));
        assert_eq!(integers_outcome("net.ipv4.tcp_rmem", 3, three).present(), Some(vec![1, 2, 3]));
    }

    #[test]
    fn text_is_not_integers() {
        let value = SysctlValue::Text("cubic".into());
        let denial = integers_of("net.ipv4.tcp_congestion_control", value).unwrap_err();
        assert_eq!(denial.kind(), "invalid-value");
    }
}
