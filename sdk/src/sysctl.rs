//! Reading and requesting sysctls through the host, with the shapes policies
//! actually use: integer fields in, a named scenario and a reason out.
//!
//! Every call is checked by the host against the policy's grant; a refusal
//! comes back as a [`Denial`], never as a trap. Requests are applied after
//! the current export call returns, so a value read right after a request
//! still shows the old one.

use crate::bindings::wasmtune::policy::sysctl as imports;
use crate::{Denial, NetnsId, SysctlValue};

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
    fn text_is_not_integers() {
        let value = SysctlValue::Text("cubic".into());
        let denial = integers_of("net.ipv4.tcp_congestion_control", value).unwrap_err();
        assert_eq!(denial.kind(), "invalid-value");
    }
}
