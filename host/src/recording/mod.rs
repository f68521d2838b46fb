//! Recordings: what policies received and read, one JSON object a line
//! (format version [`FORMAT_VERSION`], described in `docs/recording.md`).
//! `wasmtune run --record FILE` writes them ([`writer`]); `wasmtune policy
//! test` and `wasmtune replay` read them ([`read_file`]), and hand-written
//! files in the same schema.
//!
//! ```text
//! {"recording": 1, "host": "web-3", "started": "2026-12-04T17:00:00Z"}
//! {"at": 0, "sysctl": {"netns": "init", "name": "net.ipv4.tcp_rmem", "value": [4096, 131072, 98304]}}
//! {"at": 1200, "events": [{"tcp-buffer-limit": {"netns": "init", "direction": "receive", ...}}]}
//! ```

pub mod event_json;
pub mod writer;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::sysctl::Value;
use crate::wit::Event;

/// The version this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;
/// The cookie `init` gets in a file's namespace table; others follow.
pub const INIT_COOKIE: u64 = 1;
/// The longest line read: a batch of events is at most a few hundred KiB.
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// One input, at a time in milliseconds since the recording started.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A batch of events, as one call of `on-events` received it.
    Events(Vec<Event>),
    /// The kernel's value of a sysctl in a namespace (`None`: it does not
    /// exist there), as a policy read it.
    Sysctl { netns: u64, name: String, value: Option<Value> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    /// The line of the file it came from.
    pub line: usize,
    pub at_ms: u64,
    pub input: Input,
}

/// A file read: its inputs in order, and its namespaces by name.
#[derive(Debug, Default)]
pub struct Recording {
    pub inputs: Vec<Timed>,
    pub namespaces: NamespaceTable,
}

/// Namespace names and the cookies a file's events are given for them.
#[derive(Debug, Clone)]
pub struct NamespaceTable {
    by_name: BTreeMap<String, u64>,
}

impl Default for NamespaceTable {
    fn default() -> Self {
        NamespaceTable { by_name: BTreeMap::from([("init".to_string(), INIT_COOKIE)]) }
    }
}

impl NamespaceTable {
    /// The cookie of `name`, given at first sight.
    pub fn cookie_of(&mut self, name: &str) -> u64 {
        let next = INIT_COOKIE + u64::try_from(self.by_name.len()).unwrap_or(u64::MAX - 1);
        *self.by_name.entry(name.to_string()).or_insert(next)
    }

    pub fn name_of(&self, cookie: u64) -> Option<&str> {
        self.by_name.iter().find(|(_, c)| **c == cookie).map(|(name, _)| name.as_str())
    }

    pub fn display_name(&self, cookie: u64) -> String {
        self.name_of(cookie).map_or_else(|| format!("netns:{cookie}"), str::to_string)
    }

    pub fn contains(&self, cookie: u64) -> bool {
        self.by_name.values().any(|c| *c == cookie)
    }

    pub fn names(&self) -> impl Iterator<Item = (&str, u64)> {
        self.by_name.iter().map(|(name, cookie)| (name.as_str(), *cookie))
    }
}

/// A file that cannot be used, placed by line.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: {message}")]
    Line { path: PathBuf, line: usize, message: String },
}

/// Reads a recording or a hand-written events file.
pub fn read_file(path: &Path, namespaces: NamespaceTable) -> Result<Recording, RecordingError> {
    let text = std::fs::read_to_string(path).map_err(|source| RecordingError::Io { path: path.into(), source })?;
    parse(&text, namespaces).map_err(|(line, message)| RecordingError::Line { path: path.into(), line, message })
}

/// The inputs of a file's text; an error is `(line, what is wrong)`.
pub fn parse(text: &str, mut namespaces: NamespaceTable) -> Result<Recording, (usize, String)> {
    let mut inputs = Vec::new();
    let mut last_at = 0u64;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.len() > MAX_LINE_BYTES {
            return Err((line, format!("longer than {MAX_LINE_BYTES} bytes")));
        }
        let json: Json = serde_json::from_str(trimmed).map_err(|e| (line, format!("not JSON: {e}")))?;
        let Some(object) = json.as_object() else { return Err((line, "a line is a JSON object".into())) };
        if let Some(version) = object.get("recording") {
            match version.as_u64() {
                Some(FORMAT_VERSION) => continue,
                _ => {
                    return Err((
                        line,
                        format!("recording format {version}; this wasmtune reads format {FORMAT_VERSION}"),
                    ));
                }
            }
        }
        let at_ms = match object.get("at") {
            None => last_at,
            Some(at) => at.as_u64().ok_or_else(|| (line, format!("\"at\": {at} is not milliseconds (0 or more)")))?,
        };
        if at_ms < last_at {
            return Err((line, format!("\"at\": {at_ms} is before the line above ({last_at}); times never go back")));
        }
        last_at = at_ms;
        let input = input_of(object, &mut namespaces).map_err(|message| (line, message))?;
        inputs.push(Timed { line, at_ms, input });
    }
    Ok(Recording { inputs, namespaces })
}

fn input_of(object: &serde_json::Map<String, Json>, namespaces: &mut NamespaceTable) -> Result<Input, String> {
    let mut cookie_of = |name: &str| namespaces.cookie_of(name);
    let event_of = |json: &Json, cookie_of: &mut dyn FnMut(&str) -> u64| {
        event_json::from_json(json, cookie_of).map_err(|e| e.to_string())
    };
    if let Some(events) = object.get("events") {
        let list = events.as_array().ok_or("\"events\" is a list of events")?;
        let events = list.iter().map(|e| event_of(e, &mut cookie_of)).collect::<Result<Vec<_>, _>>()?;
        return Ok(Input::Events(events));
    }
    if let Some(event) = object.get("event") {
        return Ok(Input::Events(vec![event_of(event, &mut cookie_of)?]));
    }
    if let Some(sysctl) = object.get("sysctl") {
        let field = |name: &str| sysctl.get(name).and_then(Json::as_str).map(str::to_string);
        let netns = field("netns").ok_or("\"sysctl\" needs \"netns\", a namespace name")?;
        let name = field("name").ok_or("\"sysctl\" needs \"name\", e.g. \"net.ipv4.tcp_rmem\"")?;
        crate::sysctl::validate_name(&name).map_err(|e| e.to_string())?;
        let value = match sysctl.get("value") {
            Some(value) => value_from_json(value).map_err(|e| format!("\"value\": {e}"))?,
            None => return Err("\"sysctl\" needs \"value\": a list of integers, a string, or null (missing)".into()),
        };
        return Ok(Input::Sysctl { netns: namespaces.cookie_of(&netns), name, value });
    }
    Err("a line has \"events\", \"event\" or \"sysctl\" (or is the \"recording\" header)".into())
}

/// A sysctl value as a file holds it: a list of integers (or one integer),
/// a string, or null for a tunable this kernel lacks.
pub fn value_from_json(json: &Json) -> Result<Option<Value>, String> {
    match json {
        Json::Null => Ok(None),
        Json::String(text) => Ok(Some(Value::Text(text.clone()))),
        Json::Number(n) => n.as_i64().map(|v| Some(Value::Integers(vec![v]))).ok_or(format!("{n} is not an integer")),
        Json::Array(items) => {
            let integers: Option<Vec<i64>> = items.iter().map(Json::as_i64).collect();
            match integers {
                Some(v) if !v.is_empty() => Ok(Some(Value::Integers(v))),
                _ => Err(format!("{json} is not a list of integers")),
            }
        }
        other => Err(format!("{other} is not a list of integers, a string or null")),
    }
}

pub fn value_to_json(value: Option<&Value>) -> Json {
    match value {
        None => Json::Null,
        Some(Value::Integers(v)) => Json::from(v.clone()),
        Some(Value::Text(text)) => Json::from(text.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_events_sysctls_and_times_in_order() {
        let text = r#"{"recording": 1, "host": "h"}
# a comment
{"at": 0, "sysctl": {"netns": "init", "name": "net.ipv4.tcp_rmem", "value": [4096, 131072, 98304]}}
{"at": 5, "sysctl": {"netns": "blue", "name": "net.core.rmem_max", "value": null}}
{"at": 10, "event": {"route-table": {"netns": "blue", "entries": 1, "max-size": 2}}}
{"events": [{"lost": 3}]}
"#;
        let recording = parse(text, NamespaceTable::default()).expect("valid");
        assert_eq!(recording.inputs.len(), 4);
        assert_eq!(recording.inputs[0].line, 3);
        let blue = recording.namespaces.name_of(2);
        assert_eq!(blue, Some("blue"));
        assert_eq!(recording.inputs[3].at_ms, 10, "a line without \"at\" is at the time of the one above");
        assert_eq!(
            recording.inputs[1].input,
            Input::Sysctl { netns: 2, name: "net.core.rmem_max".into(), value: None }
        );
    }

    #[test]
    fn mistakes_are_placed_by_line() {
        let cases = [
            ("{\"recording\": 2}", 1, "format 2"),
            ("{\"at\": 5, \"events\": []}\n{\"at\": 4, \"events\": []}", 2, "before the line above"),
            ("{\"at\": -1, \"events\": []}", 1, "not milliseconds"),
            (
                "\n\n{\"sysctl\": {\"netns\": \"init\", \"name\": \"net.x\", \"value\": [1.5]}}",
                3,
                "not a list of integers",
            ),
            ("{\"sysctl\": {\"netns\": \"init\", \"name\": \"kernel.panic\", \"value\": 1}}", 1, "invalid sysctl name"),
            ("{\"event\": {\"route-table\": {\"netns\": \"init\"}}}", 1, "entries"),
            ("[1]", 1, "JSON object"),
            ("{\"at\": 1}", 1, "has \"events\""),
            ("{", 1, "not JSON"),
        ];
        for (text, line, needle) in cases {
            let (at, message) = parse(text, NamespaceTable::default()).expect_err(text);
            assert_eq!(at, line, "{text}: {message}");
            assert!(message.contains(needle), "{text}: {message}");
        }
    }
}
