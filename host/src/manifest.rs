//! The policy manifest: what a policy declares it may see and change.
//!
//! The manifest is TOML embedded by the SDK in the component's
//! `wasmtune-manifest` custom section, so the host can read a policy's grants
//! without running it (`wasmtune policy info FILE`). Parsing here only checks
//! that the manifest is well formed; what the administrator and the host's
//! hard limits allow is resolved later by [`crate::grants`].

use std::fmt;

use serde::{Deserialize, Serialize};
use wasmparser::{Encoding, Parser, Payload};

use crate::wit::EventKind;

/// Name of the custom section that carries the manifest.
pub const SECTION: &str = "wasmtune-manifest";

/// A parsed, well-formed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub policy: PolicyMeta,
    /// Event kinds the policy may subscribe to, by their WIT names.
    #[serde(default)]
    pub events: Vec<String>,
    /// Sysctls the policy may read or change.
    #[serde(default, rename = "sysctl")]
    pub sysctls: Vec<SysctlGrant>,
    /// Per-destination TCP settings the policy may apply (`wasmtune:policy/tcp`).
    #[serde(default)]
    pub tcp: Option<TcpGrant>,
}

/// An inclusive range a per-destination setting may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RangeGrant {
    pub min: u32,
    pub max: u32,
}

/// The `[tcp]` table: which per-destination settings a policy may apply, to
/// which peers. Everything absent is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TcpGrant {
    /// Congestion control algorithms it may choose (also for `on-loss-congestion`).
    #[serde(default)]
    pub congestion: Vec<String>,
    /// Peer prefixes it may configure, e.g. "10.0.0.0/8", "fd00::/8"; a
    /// request must fall inside one of them.
    #[serde(default)]
    pub prefixes: Vec<String>,
    pub initial_cwnd: Option<RangeGrant>,
    pub window_clamp: Option<RangeGrant>,
    pub syn_rto_ms: Option<RangeGrant>,
    /// Whether it may set TCP_NODELAY.
    #[serde(default)]
    pub no_delay: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyMeta {
    pub name: String,
    pub version: String,
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Read,
    #[default]
    Write,
}

/// One sysctl a policy declares, with the range it may move it in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlGrant {
    pub name: String,
    #[serde(default)]
    pub access: Access,
    /// 0-based positions the policy may change; `None` means all of them.
    pub fields: Option<Vec<usize>>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// For text sysctls: the values the policy may set.
    pub values: Option<Vec<String>>,
    /// What the policy does with it, read after "without it": shown when
    /// this kernel lacks the tunable, and by `wasmtune support`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// Why a file's manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not WebAssembly at all.
    #[error("not a WebAssembly file: {reason}")]
    NotWasm { reason: String },
    /// A core module where a component was expected.
    #[error(
        "a core WebAssembly module, not a component: build the policy for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    /// The component carries no manifest section.
    #[error("no `{SECTION}` section: build the policy with wasmtune_sdk::export_policy! and a policy.toml")]
    Missing,
    /// More than one manifest section: ambiguous, so refused.
    #[error("{count} `{SECTION}` sections; exactly one is allowed")]
    Duplicate { count: usize },
    /// The section is not UTF-8.
    #[error("the manifest is not UTF-8 text")]
    NotUtf8,
    /// TOML syntax or an unknown, missing or ill-typed field.
    #[error("manifest (policy.toml) line {line}, column {column} (`{text}`): {message}")]
    Toml { line: usize, column: usize, text: String, message: String },
    /// Well-formed TOML that breaks a rule of the manifest format.
    #[error("manifest field `{field}`: {problem}")]
    Invalid { field: String, problem: String },
}

impl Manifest {
    /// Reads and validates the manifest embedded in a component's bytes.
    pub fn from_component(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let text = embedded_section(bytes)?;
        Manifest::parse(&text)
    }

    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let manifest: Manifest = toml::from_str(text).map_err(|e| {
            let (line, column) = crate::text::line_column(text, &e);
            let text = text.lines().nth(line - 1).unwrap_or("").trim().to_string();
            ManifestError::Toml { line, column, text, message: e.message().to_string() }
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The declared event kinds, resolved to WIT kinds (validated at parse).
    pub fn event_kinds(&self) -> Vec<EventKind> {
        self.events.iter().filter_map(|e| event_kind_from_name(e)).collect()
    }

    pub fn sysctl(&self, name: &str) -> Option<&SysctlGrant> {
        self.sysctls.iter().find(|g| g.name == name)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |field: &str, problem: String| ManifestError::Invalid { field: field.to_string(), problem };
        let name = &self.policy.name;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(invalid("policy.name", format!("{name:?} must be 1-64 characters of a-z, 0-9 and '-'")));
        }
        if !is_semver(&self.policy.version) {
            return Err(invalid("policy.version", format!("{:?} is not a version like 1.2.3", self.policy.version)));
        }
        // Shown by `policy info` and in logs: no control characters.
        let texts = [("policy.description", &self.policy.description)]
            .into_iter()
            .chain(self.sysctls.iter().filter_map(|s| s.purpose.as_ref().map(|p| ("sysctl.purpose", p))));
        for (field, text) in texts {
            if text.chars().any(char::is_control) || text.len() > 400 {
                return Err(invalid(field, "must be at most 400 characters, none of them control characters".into()));
            }
        }
        for event in &self.events {
            if event_kind_from_name(event).is_none() {
                let known: Vec<&str> = EVENT_KINDS.iter().map(|(_, n)| *n).collect();
                return Err(invalid("events", format!("unknown event kind {event:?} (known: {})", known.join(", "))));
            }
        }
        if let Some(tcp) = &self.tcp {
            for prefix in &tcp.prefixes {
                if crate::peer::parse_prefix(prefix).is_none() {
                    return Err(invalid(
                        "tcp.prefixes",
                        format!("{prefix:?} is not an address or prefix like 10.0.0.0/8"),
                    ));
                }
            }
            for (field, range) in [
                ("tcp.initial-cwnd", tcp.initial_cwnd),
                ("tcp.window-clamp", tcp.window_clamp),
                ("tcp.syn-rto-ms", tcp.syn_rto_ms),
            ] {
                if let Some(range) = range
                    && range.min > range.max
                {
                    return Err(invalid(field, format!("min {} is above max {}", range.min, range.max)));
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for grant in &self.sysctls {
            let field = format!("sysctl.{}", grant.name);
            if !seen.insert(grant.name.as_str()) {
                return Err(invalid(&field, "declared twice".into()));
            }
            if let Err(e) = crate::sysctl::validate_name(&grant.name) {
                return Err(invalid(&field, e.to_string()));
            }
            if let (Some(min), Some(max)) = (grant.min, grant.max)
                && min > max
            {
                return Err(invalid(&field, format!("min {min} is above max {max}")));
            }
            let numeric = grant.min.is_some() || grant.max.is_some() || grant.fields.is_some();
            if numeric && grant.values.is_some() {
                return Err(invalid(&field, "`values` (text) cannot be combined with min/max/fields (numbers)".into()));
            }
            if grant.access == Access::Write && grant.values.is_none() && grant.max.is_none() {
                return Err(invalid(
                    &field,
                    "a writable numeric sysctl needs `max` (or `values` for a text sysctl)".into(),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Manifest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "policy  {} {}", self.policy.name, self.policy.version)?;
        writeln!(f, "about   {}", self.policy.description)?;
        writeln!(f, "events  {}", if self.events.is_empty() { "(none)".to_string() } else { self.events.join(", ") })?;
        for g in &self.sysctls {
            let access = match g.access {
                Access::Read => "read ",
                Access::Write => "write",
            };
            let range = match (&g.values, g.min, g.max) {
                (Some(values), _, _) => format!("one of {}", values.join(", ")),
                (None, min, max) => format!(
                    "{}..={}",
                    min.map_or("*".to_string(), |v| v.to_string()),
                    max.map_or("*".to_string(), |v| v.to_string())
                ),
            };
            let fields = g.fields.as_ref().map_or(String::new(), |f| format!(" fields {f:?}"));
            writeln!(f, "sysctl  {access} {}{fields} {range}", g.name)?;
        }
        Ok(())
    }
}

/// Finds the manifest section anywhere in the component (the SDK's section
/// lives in the component's embedded core module).
fn embedded_section(bytes: &[u8]) -> Result<String, ManifestError> {
    let mut found = Vec::new();
    let mut first = true;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| ManifestError::NotWasm { reason: e.message().to_string() })?;
        match payload {
            Payload::Version { encoding, .. } if first => {
                first = false;
                if encoding == Encoding::Module {
                    return Err(ManifestError::CoreModule);
                }
            }
            Payload::CustomSection(reader) if reader.name() == SECTION => found.push(reader.data().to_vec()),
            _ => {}
        }
    }
    match found.len() {
        0 => Err(ManifestError::Missing),
        1 => String::from_utf8(found.remove(0)).map_err(|_| ManifestError::NotUtf8),
        count => Err(ManifestError::Duplicate { count }),
    }
}

/// Every subscribable event kind with its WIT name, in WIT order.
pub const EVENT_KINDS: &[(EventKind, &str)] = &[
    (EventKind::TcpBufferLimit, "tcp-buffer-limit"),
    (EventKind::MemoryPressure, "memory-pressure"),
    (EventKind::SynOverflow, "syn-overflow"),
    (EventKind::ConnectionSummary, "connection-summary"),
    (EventKind::RetransmitBurst, "retransmit-burst"),
    (EventKind::BacklogDrops, "backlog-drops"),
    (EventKind::SoftnetSqueeze, "softnet-squeeze"),
    (EventKind::NeighbourTable, "neighbour-table"),
    (EventKind::RouteTable, "route-table"),
    (EventKind::FragmentMemory, "fragment-memory"),
    (EventKind::UdpDrop, "udp-drop"),
    (EventKind::NamespaceChange, "namespace-change"),
    (EventKind::AdminOverride, "admin-override"),
];

pub fn event_kind_from_name(name: &str) -> Option<EventKind> {
    EVENT_KINDS.iter().find(|(_, n)| *n == name).map(|(k, _)| *k)
}

pub fn event_kind_name(kind: EventKind) -> &'static str {
    EVENT_KINDS.iter().find(|(k, _)| *k == kind).map_or("unknown", |(_, n)| n)
}

/// `MAJOR.MINOR.PATCH`, with an optional pre-release and build part of
/// semver's characters only: a version reaches terminals and logs, so it
/// cannot carry control characters or escape sequences.
fn is_semver(v: &str) -> bool {
    if v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+')) {
        return false;
    }
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
events = ["tcp-buffer-limit"]

[policy]
name = "tcp-buffer"
version = "0.1.0"
description = "grows buffers"

[[sysctl]]
name = "net.ipv4.tcp_rmem"
fields = [2]
min = 4096
max = 268435456

[[sysctl]]
name = "net.core.somaxconn"
access = "read"
"#;

    #[test]
    fn parses_a_complete_manifest() {
        let m = Manifest::parse(GOOD).expect("valid");
        assert_eq!(m.policy.name, "tcp-buffer");
        assert_eq!(m.event_kinds(), vec![EventKind::TcpBufferLimit]);
        let rmem = m.sysctl("net.ipv4.tcp_rmem").expect("declared");
        assert_eq!(rmem.access, Access::Write);
        assert_eq!(rmem.fields, Some(vec![2]));
        assert_eq!(m.sysctl("net.core.somaxconn").map(|g| g.access), Some(Access::Read));
    }

    #[test]
    fn rejects_unknown_field_with_line_and_name() {
        let text = GOOD.replace("description = \"grows buffers\"", "description = \"x\"\ncolour = \"red\"");
        let err = Manifest::parse(&text).expect_err("unknown field").to_string();
        assert!(err.contains("colour"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn rejects_ill_typed_field() {
        let err = Manifest::parse(&GOOD.replace("max = 268435456", "max = \"big\"")).expect_err("bad type").to_string();
        assert!(err.contains("max") || err.contains("integer"), "{err}");
    }

    #[test]
    fn rejects_sysctls_outside_net() {
        let err = Manifest::parse(&GOOD.replace("net.core.somaxconn", "kernel.core_pattern")).expect_err("not net");
        assert!(
            matches!(err, ManifestError::Invalid { ref field, .. } if field.contains("kernel.core_pattern")),
            "{err}"
        );
    }

    #[test]
    fn rejects_unknown_event_kind() {
        let err = Manifest::parse(&GOOD.replace("\"tcp-buffer-limit\"", "\"packets\"")).expect_err("unknown");
        assert!(err.to_string().contains("packets"));
    }

    #[test]
    fn writable_numeric_grant_needs_a_max() {
        let err = Manifest::parse(&GOOD.replace("max = 268435456\n", "")).expect_err("no max");
        assert!(err.to_string().contains("max"));
    }

    #[test]
    fn rejects_bad_name_and_version() {
        assert!(Manifest::parse(&GOOD.replace("\"tcp-buffer\"", "\"Tcp Buffer\"")).is_err());
        assert!(Manifest::parse(&GOOD.replace("\"0.1.0\"", "\"one\"")).is_err());
        assert!(Manifest::parse(&GOOD.replace("\"0.1.0\"", "\"0.1.0-rc.1+build.7\"")).is_ok());
        let escape = GOOD.replace("\"0.1.0\"", "\"0.1.0-\\u001b[2J\"");
        assert!(Manifest::parse(&escape).is_err(), "an escape sequence in the pre-release part is refused");
    }

    #[test]
    fn parses_and_checks_the_tcp_table() {
        let text = format!(
            "{GOOD}\n[tcp]\ncongestion = [\"bbr\"]\nprefixes = [\"10.0.0.0/8\", \"fd00::/8\", \"10.1.2.3\"]\nno-delay = true\n"
        );
        let m = Manifest::parse(&text).expect("valid");
        let tcp = m.tcp.expect("a [tcp] table");
        assert_eq!(tcp.prefixes.len(), 3);
        assert!(tcp.no_delay);
        assert!(Manifest::parse(&text.replace("10.0.0.0/8", "10.0.0.0/33")).is_err());
        assert!(Manifest::parse(&text.replace("no-delay", "nodelay")).is_err());
        let inverted = format!("{GOOD}\n[tcp]\ninitial-cwnd = {{ min = 10, max = 4 }}\n");
        assert!(Manifest::parse(&inverted).is_err());
    }

    #[test]
    fn core_module_is_named_as_such() {
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(Manifest::from_component(core), Err(ManifestError::CoreModule)));
        assert!(matches!(Manifest::from_component(b"hello"), Err(ManifestError::NotWasm { .. })));
    }
}
