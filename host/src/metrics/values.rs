//! A sysctl's value as gauge samples: one per integer field. A value of
//! several integers (`net.ipv4.tcp_rmem` is `min default max`) is one
//! sample per field, labelled with the field's name where the kernel's
//! documentation names it and with its index otherwise; a value of one
//! integer is one sample with no `field` label. Text values
//! (`tcp_congestion_control`) are not numbers and give no sample.

/// The names of the fields of multi-value tunables, by the name's last
/// component (the same in every namespace and address family).
const FIELD_NAMES: &[(&str, &[&str])] = &[
    ("tcp_rmem", &["min", "default", "max"]),
    ("tcp_wmem", &["min", "default", "max"]),
    ("tcp_mem", &["min", "pressure", "max"]),
    ("udp_mem", &["min", "pressure", "max"]),
    ("ip_local_port_range", &["low", "high"]),
];

/// One sample of a tunable's value.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldValue {
    /// `None` for a single-value tunable.
    pub field: Option<String>,
    pub value: f64,
}

/// The samples of `value` (as read from `/proc/sys`, fields separated by
/// white space) of the tunable `name`; empty when any field is not an
/// integer.
pub fn fields(name: &str, value: &str) -> Vec<FieldValue> {
    let numbers: Option<Vec<i64>> = value.split_whitespace().map(|f| f.parse().ok()).collect();
    let Some(numbers) = numbers.filter(|n| !n.is_empty()) else { return Vec::new() };
    if let [only] = numbers[..] {
        return vec![FieldValue { field: None, value: only as f64 }];
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let names = FIELD_NAMES.iter().find(|(n, _)| *n == last).map(|(_, fields)| *fields).unwrap_or(&[]);
    let named = names.len() == numbers.len();
    numbers
        .iter()
        .enumerate()
        .map(|(i, n)| FieldValue {
            field: Some(if named { names[i].to_string() } else { i.to_string() }),
            value: *n as f64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(field: Option<&str>, value: f64) -> FieldValue {
        FieldValue { field: field.map(str::to_string), value }
    }

    #[test]
    fn a_triple_is_one_sample_per_named_field() {
        assert_eq!(
            fields("net.ipv4.tcp_rmem", "4096\t131072\t6291456"),
            [sample(Some("min"), 4096.0), sample(Some("default"), 131072.0), sample(Some("max"), 6291456.0)]
        );
        assert_eq!(
            fields("net.ipv4.tcp_mem", "1 2 3"),
            [sample(Some("min"), 1.0), sample(Some("pressure"), 2.0), sample(Some("max"), 3.0)]
        );
    }

    #[test]
    fn a_single_value_has_no_field() {
        assert_eq!(fields("net.core.somaxconn", "4096\n"), [sample(None, 4096.0)]);
        assert_eq!(fields("net.ipv4.tcp_notsent_lowat", "-1"), [sample(None, -1.0)]);
    }

    #[test]
    fn unknown_or_mismatched_fields_are_numbered() {
        assert_eq!(fields("net.ipv4.vendor_pair", "7 8"), [sample(Some("0"), 7.0), sample(Some("1"), 8.0)]);
        // Two fields where the kernel documents three: the names would lie.
        assert_eq!(fields("net.ipv4.tcp_rmem", "7 8"), [sample(Some("0"), 7.0), sample(Some("1"), 8.0)]);
    }

    #[test]
    fn text_and_empty_values_give_no_sample() {
        assert!(fields("net.ipv4.tcp_congestion_control", "cubic").is_empty());
        assert!(fields("net.ipv4.tcp_rmem", "4096 x 6291456").is_empty());
        assert!(fields("net.core.somaxconn", "").is_empty());
    }
}
