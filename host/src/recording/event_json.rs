//! Events as a recording writes them: the contract's own names (kebab-case,
//! as in `wit/policy.wit`), namespaces by name rather than by cookie (a
//! cookie means nothing on another machine or after a reboot), addresses as
//! text. Converted through the host bindings' serde form, so a field added
//! to the contract is recorded without a change here; only the fields whose
//! values are contract enums are listed.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value as Json};

use crate::wit::Event;

/// Fields whose values are enums of the contract (`buffer-direction`,
/// `protocol`, `memory-level`, `address-family`, `udp-drop-cause`).
const ENUM_FIELDS: [&str; 5] = ["direction", "protocol", "level", "family", "cause"];
/// Fields holding an `ip-addr`.
const ADDRESS_FIELDS: [&str; 1] = ["remote"];

/// Why an event in a file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EventJsonError {
    #[error("an event is an object with one key, its kind (e.g. {{\"tcp-buffer-limit\": {{...}}}})")]
    Shape,
    #[error("{kind}: the field \"netns\" must be a namespace name (\"init\", a /run/netns name)")]
    Netns { kind: String },
    #[error("{kind}: \"{field}\": {value} is not an IPv4 or IPv6 address")]
    Address { kind: String, field: String, value: String },
    #[error("{kind}: {message}")]
    Fields { kind: String, message: String },
    #[error("unknown event kind \"{0}\"")]
    UnknownKind(String),
}

/// An event as JSON, its namespace named by `name_of`.
pub fn to_json(event: &Event, name_of: &dyn Fn(u64) -> String) -> Json {
    let Ok(Json::Object(outer)) = serde_json::to_value(event) else { return Json::Null };
    let Some((tag, body)) = outer.into_iter().next() else { return Json::Null };
    let body = match body {
        Json::Object(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(key, value)| {
                    let value = match key.as_str() {
                        "netns" => value.as_u64().map_or(value, |cookie| Json::String(name_of(cookie))),
                        k if ENUM_FIELDS.contains(&k) => value.as_str().map_or(value.clone(), |s| kebab(s).into()),
                        k if ADDRESS_FIELDS.contains(&k) => address_to_text(&value).map_or(value, Json::String),
                        _ => value,
                    };
                    (key.replace('_', "-"), value)
                })
                .collect(),
        ),
        other => other,
    };
    let mut line = Map::new();
    line.insert(kebab(&tag), body);
    Json::Object(line)
}

/// An event from JSON; `cookie_of` gives (or makes up) the cookie of a
/// namespace name.
pub fn from_json(json: &Json, cookie_of: &mut dyn FnMut(&str) -> u64) -> Result<Event, EventJsonError> {
    let Some(outer) = json.as_object().filter(|o| o.len() == 1) else { return Err(EventJsonError::Shape) };
    let Some((kind, body)) = outer.iter().next() else { return Err(EventJsonError::Shape) };
    let body = match body {
        Json::Object(fields) => {
            let mut converted = Map::new();
            for (key, value) in fields {
                let field = key.replace('-', "_");
                let value = match key.as_str() {
                    "netns" => match value.as_str() {
                        Some(name) => Json::from(cookie_of(name)),
                        None => return Err(EventJsonError::Netns { kind: kind.clone() }),
                    },
                    k if ENUM_FIELDS.contains(&k) => value.as_str().map_or(value.clone(), |s| camel(s).into()),
                    k if ADDRESS_FIELDS.contains(&k) => address_from_text(value).ok_or_else(|| {
                        EventJsonError::Address { kind: kind.clone(), field: key.clone(), value: value.to_string() }
                    })?,
                    _ => value.clone(),
                };
                converted.insert(field, value);
            }
            Json::Object(converted)
        }
        other => other.clone(),
    };
    let mut tagged = Map::new();
    tagged.insert(camel(kind), body);
    serde_path_to_error::deserialize(Json::Object(tagged)).map_err(|e| {
        let message = e.inner().to_string();
        if message.starts_with("unknown variant") {
            return EventJsonError::UnknownKind(kind.clone());
        }
        // The path's first segment is the kind itself.
        let field: Vec<String> = e.path().iter().skip(1).map(|s| s.to_string().replace('_', "-")).collect();
        let message = contract_names(&message);
        let message = if field.is_empty() { message } else { format!("\"{}\": {message}", field.join(".")) };
        EventJsonError::Fields { kind: kind.clone(), message }
    })
}

/// `TcpBufferLimit` → `tcp-buffer-limit`.
fn kebab(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `tcp-buffer-limit` → `TcpBufferLimit`.
fn camel(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| first.to_ascii_uppercase().to_string() + chars.as_str())
        })
        .collect()
}

/// serde's messages name fields as Rust does (`srtt_us`); the file uses
/// the contract's names (`srtt-us`).
fn contract_names(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut quoted = false;
    for c in message.chars() {
        match c {
            '`' => quoted = !quoted,
            '_' if quoted => {
                out.push('-');
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out.replace("variant `", "value `")
}

fn address_to_text(value: &Json) -> Option<String> {
    let (tag, body) = value.as_object()?.iter().next()?;
    let parts: Vec<u64> = body.as_array()?.iter().map(Json::as_u64).collect::<Option<_>>()?;
    match (tag.as_str(), parts.as_slice()) {
        ("V4", [a, b, c, d]) => {
            let octets = [*a, *b, *c, *d].map(|o| u8::try_from(o).unwrap_or(0));
            Some(Ipv4Addr::from(octets).to_string())
        }
        ("V6", [high, low]) => Some(Ipv6Addr::from((u128::from(*high) << 64) | u128::from(*low)).to_string()),
        _ => None,
    }
}

fn address_from_text(value: &Json) -> Option<Json> {
    let text = value.as_str()?;
    if let Ok(v4) = text.parse::<Ipv4Addr>() {
        return Some(serde_json::json!({ "V4": v4.octets() }));
    }
    let v6 = u128::from(text.parse::<Ipv6Addr>().ok()?);
    let high = u64::try_from(v6 >> 64).ok()?;
    let low = u64::try_from(v6 & u128::from(u64::MAX)).ok()?;
    Some(serde_json::json!({ "V6": [high, low] }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wit::*;

    /// One event of every kind (the match makes a new kind fail to compile here).
    fn samples() -> Vec<Event> {
        let kinds = [
            EventKind::TcpBufferLimit,
            EventKind::MemoryPressure,
            EventKind::SynOverflow,
            EventKind::ConnectionSummary,
            EventKind::RetransmitBurst,
            EventKind::BacklogDrops,
            EventKind::SoftnetSqueeze,
            EventKind::NeighbourTable,
            EventKind::RouteTable,
            EventKind::FragmentMemory,
            EventKind::UdpDrop,
            EventKind::NamespaceChange,
            EventKind::AdminOverride,
        ];
        let v6 = IpAddr::V6((0x2001_0db8_0000_0000, 1));
        let mut events: Vec<Event> = kinds
            .iter()
            .map(|kind| match kind {
                EventKind::TcpBufferLimit => Event::TcpBufferLimit(TcpBufferLimit {
                    netns: 7,
                    direction: BufferDirection::Receive,
                    buffer_bytes: 1,
                    limit_bytes: 2,
                    queued_bytes: 3,
                    srtt_us: 4,
                    remote: IpAddr::V4((10, 0, 0, 1)),
                    remote_port: 5,
                }),
                EventKind::MemoryPressure => Event::MemoryPressure(MemoryPressure {
                    netns: 7,
                    protocol: Protocol::Udp,
                    level: MemoryLevel::Exhausted,
                    pages: 9,
                    limits: (1, 2, 3),
                }),
                EventKind::SynOverflow => Event::SynOverflow(SynOverflow {
                    netns: 7,
                    local_port: 80,
                    queued: 1,
                    max_queued: 2,
                    cookie_sent: true,
                    established: 3,
                }),
                EventKind::ConnectionSummary => Event::ConnectionSummary(ConnectionSummary {
                    netns: 7,
                    remote: v6,
                    remote_port: 1,
                    local_port: 2,
                    congestion: "cubic".into(),
                    min_rtt_us: 3,
                    srtt_us: 4,
                    max_delivery_rate: 5,
                    segments_out: 6,
                    retransmits: 7,
                    bytes_acked: 8,
                    bytes_received: 9,
                    duration_ms: 10,
                }),
                EventKind::RetransmitBurst => Event::RetransmitBurst(RetransmitBurst {
                    netns: 7,
                    remote: v6,
                    remote_port: 1,
                    congestion: "bbr".into(),
                    segments_out: 2,
                    retransmits: 3,
                }),
                EventKind::BacklogDrops => {
                    Event::BacklogDrops(BacklogDrops { netns: 7, cpu: 1, drops: 2, max_backlog: 3 })
                }
                EventKind::SoftnetSqueeze => {
                    Event::SoftnetSqueeze(SoftnetSqueeze { netns: 7, cpu: 1, squeezes: 2, processed: 3 })
                }
                EventKind::NeighbourTable => Event::NeighbourTable(NeighbourTable {
                    netns: 7,
                    family: AddressFamily::Ipv6,
                    ifindex: 1,
                    entries: 2,
                    limit: 3,
                    address_space: 4,
                }),
                EventKind::RouteTable => Event::RouteTable(RouteTable { netns: 7, entries: 1, max_size: 2 }),
                EventKind::FragmentMemory => Event::FragmentMemory(FragmentMemory {
                    netns: 7,
                    family: AddressFamily::Ipv4,
                    bytes: 1,
                    high_thresh: 2,
                    reassembly_failures: 3,
                    reassembly_requests: 4,
                }),
                EventKind::UdpDrop => Event::UdpDrop(UdpDrop {
                    netns: 7,
                    cause: UdpDropCause::ReceiveQueueFull,
                    local_port: 1,
                    buffer_bytes: 2,
                    locked: false,
                    drops: 3,
                }),
                EventKind::NamespaceChange => {
                    Event::NamespaceChange(NamespaceChange { netns: 7, name: "blue".into(), created: true })
                }
                EventKind::AdminOverride => Event::AdminOverride(AdminOverride {
                    netns: 7,
                    sysctl: "net.core.rmem_max".into(),
                    pid: 1,
                    comm: "Sysctl".into(),
                }),
            })
            .collect();
        events.push(Event::AdminRelease(AdminRelease { netns: 7, sysctl: "net.core.rmem_max".into() }));
        events.push(Event::Lost(3));
        events
    }

    #[test]
    fn every_event_kind_round_trips_with_names() {
        for event in samples() {
            let json = to_json(&event, &|cookie| format!("ns{cookie}"));
            let back = from_json(&json, &mut |name| name.trim_start_matches("ns").parse().unwrap_or(0))
                .unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(back, event, "{json}");
        }
    }

    #[test]
    fn written_with_the_contract_names() {
        let json = to_json(&samples()[0], &|_| "init".into());
        assert_eq!(
            json,
            serde_json::json!({"tcp-buffer-limit": {"netns": "init", "direction": "receive", "buffer-bytes": 1,
                "limit-bytes": 2, "queued-bytes": 3, "srtt-us": 4, "remote": "10.0.0.1", "remote-port": 5}})
        );
        let udp = to_json(&samples()[10], &|_| "init".into());
        assert_eq!(udp["udp-drop"]["cause"], "receive-queue-full");
        let summary = to_json(&samples()[3], &|_| "init".into());
        assert_eq!(summary["connection-summary"]["remote"], "2001:db8::1");
    }

    #[test]
    fn mistakes_are_named_in_the_contract_terms() {
        let mut cookie = |_: &str| 1;
        let missing = serde_json::json!({"route-table": {"netns": "init", "entries": 1}});
        let error = from_json(&missing, &mut cookie).expect_err("max-size is missing").to_string();
        assert!(error.contains("route-table") && error.contains("max-size"), "{error}");
        let unknown = serde_json::json!({"tcp-buffer-limits": {}});
        assert!(
            matches!(from_json(&unknown, &mut cookie), Err(EventJsonError::UnknownKind(k)) if k == "tcp-buffer-limits")
        );
        let cookie_given = serde_json::json!({"route-table": {"netns": 5, "entries": 1, "max-size": 2}});
        assert!(matches!(from_json(&cookie_given, &mut cookie), Err(EventJsonError::Netns { .. })));
        let address = serde_json::json!({"retransmit-burst": {"netns": "init", "remote": "10.0.0.300"}});
        assert!(matches!(from_json(&address, &mut cookie), Err(EventJsonError::Address { .. })));
    }
}
