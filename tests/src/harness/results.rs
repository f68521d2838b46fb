//! The figures tests measure (throughput before and after, sysctl values):
//! printed, and appended as one JSON object per line to
//! `<target>/e2e-results.jsonl` so that a run's numbers can be collected.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use super::{HarnessError, target_dir};

/// `<target>/e2e-results.jsonl`.
pub fn results_file() -> PathBuf {
    target_dir().join("e2e-results.jsonl")
}

/// Prints `figures` and appends `{"test": test, "unix_time": .., ..figures}`
/// to the results file. `figures` should be a JSON object; anything else is
/// stored under `"value"`.
pub fn record(test: &str, figures: Value) -> Result<(), HarnessError> {
    let mut line = Map::new();
    line.insert("test".to_string(), Value::from(test));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    line.insert("unix_time".to_string(), Value::from(now));
    match figures {
        Value::Object(fields) => line.extend(fields),
        other => {
            line.insert("value".to_string(), other);
        }
    }
    let text = Value::Object(line).to_string();
    println!("RESULT {text}");
    let path = results_file();
    // One write of one line with O_APPEND: concurrent tests do not interleave.
    let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(|source| HarnessError::Io {
        action: "open",
        path: path.clone(),
        source,
    })?;
    file.write_all(format!("{text}\n").as_bytes()).map_err(|source| HarnessError::Io {
        action: "append to",
        path,
        source,
    })
}

/// Says that one part of `test` did not run on this machine, and why: printed
/// and recorded in the results file as `{"test", "skipped", "reason"}`. The
/// rest of the test goes on asserting.
pub fn skip_part(test: &str, part: &str, reason: &str) {
    println!("SKIPPED PART of {test}: {part}: {reason}");
    let figures = serde_json::json!({ "skipped": part, "reason": reason });
    if let Err(error) = record(test, figures) {
        eprintln!("harness: cannot record the skipped part {part} of {test}: {error}");
    }
}
