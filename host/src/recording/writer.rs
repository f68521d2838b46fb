//! `wasmtune run --record FILE`: every batch of events routed to the
//! policies and every sysctl value they read (when it differs from the one
//! recorded last), in the format [`crate::recording`] reads. The file is
//! capped: past `max_bytes` it is renamed `FILE.1` (replacing the one
//! before) and a new `FILE` starts with a header and the last value seen of
//! every sysctl, so each file replays alone. A write that fails stops the
//! recording, never the daemon.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde_json::json;

use crate::recording::{FORMAT_VERSION, event_json, value_to_json};
use crate::sysctl::Value;
use crate::wit::Event;

/// The default cap on one file (`--record-max-bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// The smallest cap accepted: a header and a few batches.
pub const MIN_MAX_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
#[error("recording to {path}: {source}")]
pub struct RecordError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

pub struct Recorder {
    path: PathBuf,
    max_bytes: u64,
    started: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    /// `None` once a write failed: the recording has stopped.
    file: Option<BufWriter<File>>,
    written: u64,
    /// The last value recorded of each sysctl, by namespace and name.
    values: BTreeMap<(String, String), Option<Value>>,
    lines: u64,
    rotations: u64,
    /// While a new part is being started: its opening lines never rotate it.
    rotating: bool,
}

impl Recorder {
    /// Creates (or empties) `path`, readable by its owner only: it names
    /// peers and namespaces. A symlink is not followed.
    pub fn create(path: &Path, max_bytes: u64) -> Result<Recorder, RecordError> {
        let file = open(path).map_err(|source| RecordError { path: path.into(), source })?;
        let recorder = Recorder {
            path: path.into(),
            max_bytes: max_bytes.max(MIN_MAX_BYTES),
            started: Instant::now(),
            inner: Mutex::new(Inner {
                file: Some(BufWriter::new(file)),
                written: 0,
                values: BTreeMap::new(),
                lines: 0,
                rotations: 0,
                rotating: false,
            }),
        };
        {
            let mut inner = recorder.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let header = recorder.header();
            recorder.write_line(&mut inner, &header);
        }
        Ok(recorder)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Lines written, and files rotated away.
    pub fn counts(&self) -> (u64, u64) {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (inner.lines, inner.rotations)
    }

    fn at_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn header(&self) -> serde_json::Value {
        json!({
            "recording": FORMAT_VERSION,
            "wasmtune": env!("CARGO_PKG_VERSION"),
            "host": nix::sys::utsname::uname().ok().and_then(|u| u.nodename().to_str().map(str::to_string)).unwrap_or_default(),
        })
    }

    /// A batch routed to the policies.
    pub fn events(&self, batch: &[&Event], name_of: &dyn Fn(u64) -> String) {
        if batch.is_empty() {
            return;
        }
        let events: Vec<serde_json::Value> = batch.iter().map(|e| event_json::to_json(e, name_of)).collect();
        let line = json!({ "at": self.at_ms(), "events": events });
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        self.write_line(&mut inner, &line);
    }

    /// A value a policy read (`None`: the tunable does not exist there);
    /// written only when it differs from the one recorded last.
    pub fn sysctl(&self, netns: &str, name: &str, value: Option<&Value>) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (netns.to_string(), name.to_string());
        if inner.values.get(&key).is_some_and(|last| last.as_ref() == value) {
            return;
        }
        inner.values.insert(key, value.cloned());
        let line = sysctl_line(self.at_ms(), netns, name, value);
        self.write_line(&mut inner, &line);
    }

    fn write_line(&self, inner: &mut Inner, line: &serde_json::Value) {
        let mut text = line.to_string();
        text.push('\n');
        let size = u64::try_from(text.len()).unwrap_or(u64::MAX);
        if !inner.rotating && inner.written > 0 && inner.written.saturating_add(size) > self.max_bytes {
            self.rotate(inner);
        }
        let Some(file) = inner.file.as_mut() else { return };
        // Flushed line by line: a crash loses nothing written before it.
        match file.write_all(text.as_bytes()).and_then(|()| file.flush()) {
            Ok(()) => {
                inner.written += size;
                inner.lines += 1;
            }
            Err(error) => self.stop(inner, &error),
        }
    }

    fn rotate(&self, inner: &mut Inner) {
        let old = PathBuf::from(format!("{}.1", self.path.display()));
        let result = inner
            .file
            .take()
            .map_or(Ok(()), |mut f| f.flush())
            .and_then(|()| std::fs::rename(&self.path, &old))
            .and_then(|()| open(&self.path));
        match result {
            Ok(file) => {
                inner.file = Some(BufWriter::new(file));
                inner.written = 0;
                inner.rotations += 1;
                tracing::info!(event = "recording-rotated", file = %self.path.display(), previous = %old.display(), "recording file reached {} bytes; the previous part is kept as {}", self.max_bytes, old.display());
                let at = self.at_ms();
                let header = self.header();
                let values: Vec<serde_json::Value> = inner
                    .values
                    .iter()
                    .map(|((netns, name), value)| sysctl_line(at, netns, name, value.as_ref()))
                    .collect();
                inner.rotating = true;
                for line in std::iter::once(header).chain(values) {
                    self.write_line(inner, &line);
                }
                inner.rotating = false;
            }
            Err(error) => self.stop(inner, &error),
        }
    }

    fn stop(&self, inner: &mut Inner, error: &std::io::Error) {
        if inner.file.take().is_some() {
            tracing::error!(event = "recording-stopped", file = %self.path.display(), %error, "recording stopped: the file could not be written; the daemon goes on");
        }
    }
}

fn sysctl_line(at: u64, netns: &str, name: &str, value: Option<&Value>) -> serde_json::Value {
    json!({ "at": at, "sysctl": { "netns": netns, "name": name, "value": value_to_json(value) } })
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::{Input, NamespaceTable, read_file};
    use crate::wit::RouteTable;

    #[test]
    fn what_is_written_reads_back() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("rec.jsonl");
        let recorder = Recorder::create(&path, DEFAULT_MAX_BYTES).expect("created");
        let rmem = Value::Integers(vec![4096, 131072, 98304]);
        recorder.sysctl("init", "net.ipv4.tcp_rmem", Some(&rmem));
        recorder.sysctl("init", "net.ipv4.tcp_rmem", Some(&rmem));
        recorder.sysctl("blue", "net.core.rmem_max", None);
        let event = Event::RouteTable(RouteTable { netns: 77, entries: 1, max_size: 2 });
        recorder.events(&[&event], &|_| "blue".to_string());
        assert_eq!(recorder.counts(), (4, 0), "header, two values (one repeated, kept once), one batch");
        let read = read_file(&path, NamespaceTable::default()).expect("readable");
        assert_eq!(read.inputs.len(), 3);
        let blue = read.namespaces.name_of(2).map(str::to_string);
        assert_eq!(blue.as_deref(), Some("blue"));
        assert_eq!(
            read.inputs[2].input,
            Input::Events(vec![Event::RouteTable(RouteTable { netns: 2, entries: 1, max_size: 2 })])
        );
        let mode = std::fs::metadata(&path).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
        assert_eq!(mode.ok(), Some(0o600));
    }

    #[test]
    fn rotates_at_the_cap_and_each_part_stands_alone() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("rec.jsonl");
        let recorder = Recorder::create(&path, MIN_MAX_BYTES).expect("created");
        recorder.sysctl("init", "net.ipv4.tcp_rmem", Some(&Value::Integers(vec![1, 2, 3])));
        let event = Event::RouteTable(RouteTable { netns: 1, entries: 1, max_size: 2 });
        for _ in 0..2000 {
            recorder.events(&[&event], &|_| "init".to_string());
        }
        let (_, rotations) = recorder.counts();
        assert!(rotations >= 1, "rotated");
        for part in [path.clone(), PathBuf::from(format!("{}.1", path.display()))] {
            let size = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(u64::MAX);
            assert!(size <= MIN_MAX_BYTES, "{} is {size} bytes", part.display());
            let read = read_file(&part, NamespaceTable::default()).expect("each part reads alone");
            assert!(matches!(read.inputs[0].input, Input::Sysctl { .. }), "it starts with the values known");
        }
    }

    #[test]
    fn a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("a directory");
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").expect("written");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("linked");
        assert!(Recorder::create(&link, DEFAULT_MAX_BYTES).is_err());
        assert_eq!(std::fs::read_to_string(&target).ok().as_deref(), Some("keep"));
    }
}
