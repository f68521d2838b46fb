//! `LogCapture`: a child process whose stdout and stderr lines are collected
//! on reader threads, parsed as JSON where they are JSON, and waited on by
//! tests; the child is killed on drop and, when the test is failing, its
//! whole log is printed so that the test output explains the failure.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Map, Value};

use super::HarnessError;
use super::command::describe;

/// Set to `1` to echo every captured line to stderr as it arrives.
const ECHO_ENV: &str = "WASMTUNE_E2E_ECHO";
/// How long a reader may take to reach end-of-file after the child exited.
const READER_DRAIN: Duration = Duration::from_secs(5);

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of a captured log.
#[derive(Debug, Clone)]
pub struct LogLine {
    /// Where it came from.
    pub stream: Stream,
    /// The text, without the newline.
    pub raw: String,
    /// The line's object, when the line is a JSON object.
    pub json: Option<Map<String, Value>>,
    /// When it arrived, counted from the spawn.
    pub at: Duration,
}

impl LogLine {
    fn new(stream: Stream, raw: String, at: Duration) -> LogLine {
        let json = match serde_json::from_str::<Value>(&raw) {
            Ok(Value::Object(map)) => Some(map),
            _ => None,
        };
        LogLine { stream, raw, json, at }
    }

    /// The `event` field, for machine-readable lines.
    pub fn event(&self) -> Option<&str> {
        self.json.as_ref()?.get("event")?.as_str()
    }

    /// Whether this is a machine-readable line of event `name`.
    pub fn is_event(&self, name: &str) -> bool {
        self.event() == Some(name)
    }

    /// A top-level field as text: strings as they are, numbers and booleans
    /// printed; `None` when absent, null, or structured.
    pub fn field(&self, name: &str) -> Option<String> {
        match self.json.as_ref()?.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Whether the top-level field `name` is present and equals `value`.
    pub fn field_is(&self, name: &str, value: &str) -> bool {
        self.field(name).as_deref() == Some(value)
    }

    /// The `message` field.
    pub fn message(&self) -> Option<String> {
        self.field("message")
    }
}

#[derive(Default)]
struct Captured {
    lines: Vec<LogLine>,
    open_streams: usize,
}

#[derive(Default)]
struct Shared {
    captured: Mutex<Captured>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Captured> {
        // A reader that panicked cannot have left a half-pushed line.
        self.captured.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A running child process and everything it has printed so far.
pub struct LogCapture {
    label: String,
    command: String,
    child: Child,
    exit: Option<ExitStatus>,
    shared: Arc<Shared>,
    readers: Vec<JoinHandle<()>>,
}

impl LogCapture {
    /// Spawns `cmd` with stdout and stderr captured; `label` names it in
    /// error messages and in the log dump.
    pub fn spawn(label: &str, mut cmd: Command) -> Result<LogCapture, HarnessError> {
        let command = describe(&cmd);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HarnessError::Spawn { command: command.clone(), source })?;
        let stdout = child.stdout.take().map(|s| (Stream::Stdout, Box::new(s) as Box<dyn Read + Send>));
        let stderr = child.stderr.take().map(|s| (Stream::Stderr, Box::new(s) as Box<dyn Read + Send>));
        // Built before the readers so that, should one fail to start, the
        // guard's drop kills the child.
        let mut capture = LogCapture {
            label: label.to_string(),
            command,
            child,
            exit: None,
            shared: Arc::new(Shared::default()),
            readers: Vec::new(),
        };
        let started = Instant::now();
        let echo = std::env::var(ECHO_ENV).is_ok_and(|v| v == "1");
        for (stream, pipe) in [stdout, stderr].into_iter().flatten() {
            let shared = Arc::clone(&capture.shared);
            let echo_label = echo.then(|| label.to_string());
            shared.lock().open_streams += 1;
            let reader = thread::Builder::new()
                .name(format!("{label}-{stream:?}"))
                .spawn(move || read_lines(pipe, stream, &shared, started, echo_label))
                .map_err(|source| {
                    capture.shared.lock().open_streams -= 1;
                    HarnessError::Spawn { command: format!("reader thread for {}", capture.command), source }
                })?;
            capture.readers.push(reader);
        }
        Ok(capture)
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every line captured so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.shared.lock().lines.clone()
    }

    /// How many lines have been captured so far.
    pub fn line_count(&self) -> usize {
        self.shared.lock().lines.len()
    }

    /// The captured lines of event `name`, in order.
    pub fn events(&self, name: &str) -> Vec<LogLine> {
        self.shared.lock().lines.iter().filter(|l| l.is_event(name)).cloned().collect()
    }

    /// Waits until some line (already captured or arriving within `timeout`)
    /// satisfies `matches`, and returns the first such line. Fails early when
    /// the child closes its output (it exited).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&LogLine) -> bool,
    ) -> Result<LogLine, HarnessError> {
        let deadline = Instant::now() + timeout;
        let mut captured = self.shared.lock();
        let mut checked = 0;
        loop {
            if let Some(line) = captured.lines[checked..].iter().find(|l| matches(l)) {
                return Ok(line.clone());
            }
            checked = captured.lines.len();
            if captured.open_streams == 0 {
                return Err(HarnessError::ProcessExited {
                    what: format!("{what} from {}", self.label),
                    status: "its output closed".to_string(),
                });
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HarnessError::Timeout { what: format!("{what} from {}", self.label), waited: timeout });
            }
            captured = self
                .shared
                .changed
                .wait_timeout(captured, deadline - now)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }

    /// Waits for a line whose `event` is `name`.
    pub fn wait_for_event(&self, name: &str, timeout: Duration) -> Result<LogLine, HarnessError> {
        self.wait_for(&format!("event `{name}`"), timeout, |l| l.is_event(name))
    }

    /// Waits until no new line satisfying `matches` has arrived for `quiet`
    /// (e.g. the tuning has settled after the traffic stopped); fails when
    /// that does not happen within `limit`.
    pub fn wait_quiet(
        &self,
        what: &str,
        quiet: Duration,
        limit: Duration,
        matches: impl Fn(&LogLine) -> bool,
    ) -> Result<(), HarnessError> {
        let started = Instant::now();
        let count = || self.shared.lock().lines.iter().filter(|l| matches(l)).count();
        let mut last_count = count();
        let mut last_change = Instant::now();
        loop {
            thread::sleep(Duration::from_millis(50));
            let now_count = count();
            if now_count != last_count {
                last_count = now_count;
                last_change = Instant::now();
            } else if last_change.elapsed() >= quiet {
                return Ok(());
            }
            if started.elapsed() >= limit {
                return Err(HarnessError::Timeout {
                    what: format!("{what} from {} to stop", self.label),
                    waited: limit,
                });
            }
        }
    }

    /// Whether the child is still running.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none()
    }

    /// Sends `signal` to the child.
    pub fn signal(&self, signal: Signal) -> Result<(), HarnessError> {
        let pid = i32::try_from(self.child.id()).map_err(|_| HarnessError::ProcessExited {
            what: format!("signalling {}", self.label),
            status: "pid out of range".to_string(),
        })?;
        kill(Pid::from_raw(pid), signal).map_err(|errno| HarnessError::Spawn {
            command: format!("kill -{signal} {pid} ({})", self.label),
            source: errno.into(),
        })
    }

    /// SIGTERM, then waits up to `timeout` for the exit (SIGKILL after that,
    /// which is an error), and collects the rest of the output.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        if let Some(status) = self.poll_exit() {
            self.drain_readers();
            return Ok(status);
        }
        self.signal(Signal::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.poll_exit() {
                self.drain_readers();
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.kill();
        Err(HarnessError::Timeout { what: format!("{} to exit after SIGTERM", self.label), waited: timeout })
    }

    /// SIGKILL, waits for the exit, and collects the rest of the output.
    pub fn kill(&mut self) -> Result<ExitStatus, HarnessError> {
        if self.poll_exit().is_none() {
            let _ = self.child.kill();
        }
        let status = match self.exit {
            Some(status) => status,
            None => self
                .child
                .wait()
                .map_err(|source| HarnessError::Spawn { command: format!("wait for {}", self.command), source })?,
        };
        self.exit = Some(status);
        self.drain_readers();
        Ok(status)
    }

    /// The whole log, one line per captured line, for failure reports.
    pub fn dump(&self) -> String {
        let captured = self.shared.lock();
        let mut text = format!("---- {} ({}): {} lines ----\n", self.label, self.command, captured.lines.len());
        for line in &captured.lines {
            text.push_str(&line.raw);
            text.push('\n');
        }
        text.push_str(&format!("---- end of {} ----", self.label));
        text
    }

    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Joins the readers once the child has exited; a reader still blocked
    /// after `READER_DRAIN` (a grandchild holding the pipe) is left behind.
    fn drain_readers(&mut self) {
        let deadline = Instant::now() + READER_DRAIN;
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        for reader in std::mem::take(&mut self.readers) {
            if reader.is_finished() {
                let _ = reader.join();
            }
        }
    }
}

impl Drop for LogCapture {
    fn drop(&mut self) {
        let _ = self.kill();
        if thread::panicking() {
            eprintln!("{}", self.dump());
        }
    }
}

fn read_lines(pipe: Box<dyn Read + Send>, stream: Stream, shared: &Shared, started: Instant, echo: Option<String>) {
    for line in BufReader::new(pipe).split(b'\n') {
        let Ok(bytes) = line else { break };
        let raw = String::from_utf8_lossy(&bytes).trim_end_matches('\r').to_string();
        if let Some(label) = &echo {
            eprintln!("[{label}] {raw}");
        }
        shared.lock().lines.push(LogLine::new(stream, raw, started.elapsed()));
        shared.changed.notify_all();
    }
    shared.lock().open_streams -= 1;
    shared.changed.notify_all();
}

#[cfg(test)]
mod tests {
    use super::{LogLine, Stream};
    use std::time::Duration;

    #[test]
    fn json_lines_expose_flattened_fields_and_text_lines_do_not() {
        let line = LogLine::new(
            Stream::Stderr,
            r#"{"event":"policy-fault","policy":"p","faults":3,"message":"m"}"#.to_string(),
            Duration::ZERO,
        );
        assert!(line.is_event("policy-fault"));
        assert_eq!(line.field("faults").as_deref(), Some("3"));
        assert!(line.field_is("policy", "p"));
        let text = LogLine::new(Stream::Stdout, "ready".to_string(), Duration::ZERO);
        assert_eq!(text.event(), None);
    }
}
