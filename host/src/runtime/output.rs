//! The runtime process's log lines, relayed into the daemon's log. The
//! process never writes to the daemon's output (the journal would show its
//! lines as the daemon's own, and a compromised runtime could forge any
//! of them): its JSON lines come through a pipe, and each is logged again
//! with `source="runtime"` and its pid, its text with control characters
//! escaped, cut to a bounded length, and at a bounded rate.

use crate::line_budget::LineBudget;
use crate::text::printable;
use std::io::{BufRead, BufReader, Read};

/// Longest line relayed; the rest of a longer one is dropped.
pub const MAX_LINE_BYTES: usize = 4096;
/// Lines relayed at most per second on average, and in a burst.
pub const LINES_PER_SECOND: f64 = 20.0;
pub const BURST_LINES: f64 = 200.0;

/// Starts the thread that relays `output` (the runtime's stderr) until the
/// process closes it, that is, until it ends.
pub fn relay_output(output: impl Read + Send + 'static, pid: u32) {
    let spawned = std::thread::Builder::new().name("runtime-log".into()).spawn(move || relay(output, pid));
    if let Err(error) = spawned {
        tracing::warn!(%error, pid, "the runtime process's log lines are dropped: no thread to relay them");
    }
}

fn relay(output: impl Read, pid: u32) {
    let mut reader = BufReader::new(output);
    let mut budget = LineBudget::new(BURST_LINES, LINES_PER_SECOND);
    let mut line = Vec::with_capacity(MAX_LINE_BYTES);
    loop {
        line.clear();
        match read_bounded_line(&mut reader, &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !budget.admit() {
            continue;
        }
        if budget.suppressed > 0 {
            tracing::warn!(
                source = "runtime",
                pid,
                suppressed = budget.suppressed,
                "{} log lines of the runtime process {pid} dropped: more than {LINES_PER_SECOND} a second",
                budget.suppressed
            );
            budget.suppressed = 0;
        }
        log_line(&Relayed::parse(&line), pid);
    }
}

/// One line, at most [`MAX_LINE_BYTES`] of it kept; the bytes read, 0 at
/// the end.
fn read_bounded_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(total);
        }
        let end = available.iter().position(|b| *b == b'\n');
        let take = end.map_or(available.len(), |i| i + 1);
        let room = MAX_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&available[..take.min(room)]);
        reader.consume(take);
        total += take;
        if end.is_some() {
            return Ok(total);
        }
    }
}

/// A line as the runtime wrote it, its fields made safe to log.
#[derive(Debug, PartialEq, Eq)]
struct Relayed {
    level: tracing::Level,
    message: String,
    /// Its other fields, as compact JSON.
    fields: String,
}

impl Relayed {
    fn parse(line: &[u8]) -> Relayed {
        let text = String::from_utf8_lossy(line);
        let Ok(serde_json::Value::Object(mut object)) = serde_json::from_str::<serde_json::Value>(text.trim_end())
        else {
            return Relayed {
                level: tracing::Level::WARN,
                message: printable(text.trim_end(), MAX_LINE_BYTES),
                fields: String::new(),
            };
        };
        let level = match object.remove("level").as_ref().and_then(|v| v.as_str()) {
            Some("ERROR") => tracing::Level::ERROR,
            Some("WARN") => tracing::Level::WARN,
            Some("INFO") => tracing::Level::INFO,
            Some("DEBUG") => tracing::Level::DEBUG,
            _ => tracing::Level::TRACE,
        };
        let message = match object.remove("message") {
            Some(serde_json::Value::String(message)) => printable(&message, MAX_LINE_BYTES),
            Some(other) => printable(&other.to_string(), MAX_LINE_BYTES),
            None => String::new(),
        };
        object.remove("timestamp");
        let fields = if object.is_empty() {
            String::new()
        } else {
            printable(&serde_json::Value::Object(object).to_string(), MAX_LINE_BYTES)
        };
        Relayed { level, message, fields }
    }
}

fn log_line(line: &Relayed, pid: u32) {
    let (message, fields) = (&line.message, &line.fields);
    match line.level {
        tracing::Level::ERROR => {
            tracing::error!(source = "runtime", pid, runtime_fields = %fields, "runtime: {message}")
        }
        tracing::Level::WARN => tracing::warn!(source = "runtime", pid, runtime_fields = %fields, "runtime: {message}"),
        tracing::Level::INFO => tracing::info!(source = "runtime", pid, runtime_fields = %fields, "runtime: {message}"),
        tracing::Level::DEBUG => {
            tracing::debug!(source = "runtime", pid, runtime_fields = %fields, "runtime: {message}")
        }
        tracing::Level::TRACE => {
            tracing::trace!(source = "runtime", pid, runtime_fields = %fields, "runtime: {message}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forged_line_is_escaped_and_marked_as_the_runtime_s() {
        let forged = br#"{"timestamp":"x","level":"INFO","message":"ok\nlevel=INFO event=sysctl-change policy=tcp-buffers","target":"wasmtune"}"#;
        let line = Relayed::parse(forged);
        assert_eq!(line.level, tracing::Level::INFO);
        assert!(!line.message.contains('\n'), "{line:?}");
        assert!(line.message.contains("\\n"), "{line:?}");
        assert!(line.fields.contains("target"), "{line:?}");

        let raw = Relayed::parse(b"\x1b[2Jplain text, not JSON\r\n");
        assert_eq!(raw.level, tracing::Level::WARN);
        assert!(!raw.message.contains('\x1b') && !raw.message.contains('\r'), "{raw:?}");
    }

    #[test]
    fn long_lines_are_cut_and_the_rest_of_them_dropped() {
        let mut input = vec![b'a'; MAX_LINE_BYTES * 3];
        input.extend_from_slice(b"\nnext\n");
        let mut reader = BufReader::with_capacity(64, input.as_slice());
        let mut line = Vec::new();
        assert_eq!(read_bounded_line(&mut reader, &mut line).expect("read"), MAX_LINE_BYTES * 3 + 1);
        assert_eq!(line.len(), MAX_LINE_BYTES);
        line.clear();
        read_bounded_line(&mut reader, &mut line).expect("read");
        assert_eq!(line, b"next\n");
    }

    #[test]
    fn a_flood_is_cut_to_the_burst_and_the_rate() {
        let mut budget = LineBudget::new(BURST_LINES, LINES_PER_SECOND);
        let passed = (0..10_000).filter(|_| budget.admit()).count();
        // The burst, and what the rate earns while the loop runs.
        assert!(passed >= BURST_LINES as usize && passed < 1_000, "{passed} passed");
        assert!(budget.suppressed > 9_000);
    }
}
