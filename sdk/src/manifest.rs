//! The manifest's `events`, read at compile time, so that a policy declares
//! what it subscribes to once, in `policy.toml`: [`declared_events!`]
//! (crate::declared_events) turns that list into `&'static [EventKind]`
//! for [`Info::events`](crate::Info::events).
//!
//! Only the top-level `events` array is read here (the host parses the whole
//! manifest). It is an array of strings, on one line or several, with
//! comments and a trailing comma allowed; a manifest without it declares no
//! events, as the host reads it. An event kind this SDK does not know, or an
//! `events` value that is not an array of strings, fails the build.

use crate::EventKind;

/// Every event kind a manifest may name, by its WIT name.
const KINDS: [(&[u8], EventKind); 13] = [
    (b"tcp-buffer-limit", EventKind::TcpBufferLimit),
    (b"memory-pressure", EventKind::MemoryPressure),
    (b"syn-overflow", EventKind::SynOverflow),
    (b"connection-summary", EventKind::ConnectionSummary),
    (b"retransmit-burst", EventKind::RetransmitBurst),
    (b"backlog-drops", EventKind::BacklogDrops),
    (b"softnet-squeeze", EventKind::SoftnetSqueeze),
    (b"neighbour-table", EventKind::NeighbourTable),
    (b"route-table", EventKind::RouteTable),
    (b"fragment-memory", EventKind::FragmentMemory),
    (b"udp-drop", EventKind::UdpDrop),
    (b"namespace-change", EventKind::NamespaceChange),
    (b"admin-override", EventKind::AdminOverride),
];

/// How many event kinds `manifest` declares.
pub const fn event_count(manifest: &[u8]) -> usize {
    let Some(mut at) = events_array(manifest) else { return 0 };
    let mut count = 0;
    while let Some((kind_end, _)) = next_name(manifest, at) {
        count += 1;
        at = kind_end;
    }
    count
}

/// The event kinds `manifest` declares, in its order; `N` is
/// [`event_count`] of the same manifest.
pub const fn events<const N: usize>(manifest: &[u8]) -> [EventKind; N] {
    let mut kinds = [EventKind::TcpBufferLimit; N];
    let Some(mut at) = events_array(manifest) else { return kinds };
    let mut i = 0;
    while let Some((name_end, kind)) = next_name(manifest, at) {
        kinds[i] = kind;
        i += 1;
        at = name_end;
    }
    kinds
}

/// `&'static [EventKind]`: the `events` of the calling crate's `policy.toml`
/// (beside its `Cargo.toml`), read at compile time.
///
/// ```ignore
/// fn init(config: &Config) -> Result<(Self, Info), String> {
///     Ok((MyPolicy::new(config), Info::events(wasmtune_sdk::declared_events!())))
/// }
/// ```
#[macro_export]
macro_rules! declared_events {
    () => {{
        const MANIFEST: &[u8] =
            ::core::include_bytes!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/policy.toml"));
        const EVENTS: [$crate::EventKind; $crate::manifest::event_count(MANIFEST)] = $crate::manifest::events(MANIFEST);
        &EVENTS as &'static [$crate::EventKind]
    }};
}

/// Where the top-level `events` array's contents start (just past its `[`).
const fn events_array(manifest: &[u8]) -> Option<usize> {
    let mut line = 0;
    while line < manifest.len() {
        let start = skip_blanks(manifest, line);
        if start < manifest.len() && manifest[start] == b'[' {
            // A table header: top-level keys end here.
            return None;
        }
        if let Some(value) = key_value(manifest, start, b"events") {
            let value = skip_blanks(manifest, value);
            if value >= manifest.len() || manifest[value] != b'[' {
                panic!("policy.toml: `events` must be an array of event kind names");
            }
            return Some(value + 1);
        }
        line = next_line(manifest, start);
    }
    None
}

/// The next name in the array from `at`: where it ends and its kind; `None`
/// at the closing `]`.
const fn next_name(manifest: &[u8], mut at: usize) -> Option<(usize, EventKind)> {
    // Separators, line breaks and comments between names.
    loop {
        if at >= manifest.len() {
            panic!("policy.toml: the `events` array is not closed with `]`");
        }
        match manifest[at] {
            b' ' | b'\t' | b'\r' | b'\n' | b',' => at += 1,
            b'#' => at = next_line(manifest, at),
            b']' => return None,
            b'"' | b'\'' => break,
            _ => panic!("policy.toml: `events` must hold quoted event kind names"),
        }
    }
    let quote = manifest[at];
    let start = at + 1;
    let mut end = start;
    while end < manifest.len() && manifest[end] != quote && manifest[end] != b'\n' {
        end += 1;
    }
    if end >= manifest.len() || manifest[end] != quote {
        panic!("policy.toml: an event kind name in `events` is not closed");
    }
    match kind_of(manifest, start, end) {
        Some(kind) => Some((end + 1, kind)),
        None => {
            panic!("policy.toml: `events` names an event kind this SDK does not know (see `event-kind` in the WIT)")
        }
    }
}

/// The kind named by `manifest[start..end]`.
const fn kind_of(manifest: &[u8], start: usize, end: usize) -> Option<EventKind> {
    let mut k = 0;
    while k < KINDS.len() {
        let (name, kind) = KINDS[k];
        if name.len() == end - start && bytes_at(manifest, start, name) {
            return Some(kind);
        }
        k += 1;
    }
    None
}

/// Where the value starts if the line at `at` assigns `key` (`key = ...`).
const fn key_value(manifest: &[u8], at: usize, key: &[u8]) -> Option<usize> {
    if !bytes_at(manifest, at, key) {
        return None;
    }
    let after = skip_blanks(manifest, at + key.len());
    if after < manifest.len() && manifest[after] == b'=' { Some(after + 1) } else { None }
}

/// Whether `manifest` holds `expected` at `at`.
const fn bytes_at(manifest: &[u8], at: usize, expected: &[u8]) -> bool {
    if at + expected.len() > manifest.len() {
        return false;
    }
    let mut i = 0;
    while i < expected.len() {
        if manifest[at + i] != expected[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// `at` moved past spaces and tabs.
const fn skip_blanks(manifest: &[u8], mut at: usize) -> usize {
    while at < manifest.len() && (manifest[at] == b' ' || manifest[at] == b'\t') {
        at += 1;
    }
    at
}

/// The start of the line after the one holding `at`.
const fn next_line(manifest: &[u8], mut at: usize) -> usize {
    while at < manifest.len() && manifest[at] != b'\n' {
        at += 1;
    }
    at + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds a manifest known only at run time declares (at most 13).
    fn declared(manifest: &str) -> Vec<EventKind> {
        let bytes = manifest.as_bytes();
        let room: [EventKind; 13] = events(bytes);
        room[..event_count(bytes)].to_vec()
    }

    #[test]
    fn a_one_line_array_is_read_in_order() {
        let manifest = "events = [\"route-table\", \"admin-override\"]\n\n[policy]\nname = \"route\"\n";
        assert_eq!(declared(manifest), [EventKind::RouteTable, EventKind::AdminOverride]);
    }

    #[test]
    fn comments_line_breaks_and_a_trailing_comma_are_allowed() {
        let manifest =
            "# what it sees\nevents = [ # kinds\n  'udp-drop',\n  \"namespace-change\", # init\n]\n[policy]\n";
        assert_eq!(declared(manifest), [EventKind::UdpDrop, EventKind::NamespaceChange]);
    }

    #[test]
    fn no_events_key_or_one_inside_a_table_declares_nothing() {
        assert_eq!(declared("[policy]\nname = \"x\"\n"), []);
        assert_eq!(declared("[policy]\nevents = [\"udp-drop\"]\n"), []);
        assert_eq!(declared("events = []\n"), []);
        assert_eq!(declared("events_seen = [\"udp-drop\"]\n"), []);
    }

    #[test]
    #[should_panic(expected = "does not know")]
    fn an_unknown_kind_is_refused() {
        declared("events = [\"tcp-buffer-limits\"]\n");
    }

    #[test]
    #[should_panic(expected = "array")]
    fn a_value_that_is_not_an_array_is_refused() {
        declared("events = \"udp-drop\"\n");
    }

    #[test]
    fn the_macro_reads_this_crates_policy_toml_at_compile_time() {
        const MANIFEST: &[u8] = b"events = [\"syn-overflow\", \"memory-pressure\"]\n";
        const EVENTS: [EventKind; event_count(MANIFEST)] = events(MANIFEST);
        assert_eq!(EVENTS, [EventKind::SynOverflow, EventKind::MemoryPressure]);
    }
}
