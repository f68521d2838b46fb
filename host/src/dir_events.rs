//! Which policy-directory events are final. A rename into the directory
//! (`IN_MOVED_TO`) brings a whole file; a close after writing
//! (`IN_CLOSE_WRITE`) ends one; a removal or a rename away is done. Those
//! are acted on at once. A file still being written (created or modified,
//! not yet closed) is waited for: its directory is reconciled only after it
//! closes, or after it has been quiet for a settle time. Hidden files are
//! never loaded, so writing one holds nothing up.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RemoveKind, RenameMode};

/// What one event means for the directory, least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Meaning {
    /// Nothing on offer changed (an open, a read: the reconcile's own).
    Nothing,
    /// A file is on its way: wait until it is complete.
    Unfinished,
    /// Something complete changed: act now, unless a file is still being written.
    Final,
}

/// Visible files written and not yet closed.
#[derive(Debug, Default)]
pub struct WriteTracker {
    writing: HashSet<PathBuf>,
}

fn hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}

impl WriteTracker {
    /// Notes one event and says what it means.
    pub fn note(&mut self, event: &notify::Event) -> Meaning {
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                self.done_with(&event.paths);
                Meaning::Final
            }
            EventKind::Access(_) => Meaning::Nothing,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both)) => {
                // `Both` carries (from, to): the old name is gone either way.
                self.done_with(&event.paths);
                Meaning::Final
            }
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(RemoveKind::File | RemoveKind::Any) => {
                self.done_with(&event.paths);
                Meaning::Final
            }
            // A mode or owner change decides whether a file may load at all,
            // and is complete when made.
            EventKind::Modify(ModifyKind::Metadata(_)) | EventKind::Remove(_) => Meaning::Final,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Any | EventKind::Other => {
                self.writing.extend(event.paths.iter().filter(|p| !hidden(p)).cloned());
                if event.paths.iter().all(|p| hidden(p)) && !event.paths.is_empty() {
                    return Meaning::Nothing;
                }
                Meaning::Unfinished
            }
        }
    }

    fn done_with(&mut self, paths: &[PathBuf]) {
        for path in paths {
            self.writing.remove(path);
        }
    }

    /// No visible file is being written.
    pub fn quiet(&self) -> bool {
        self.writing.is_empty()
    }

    /// After a settle time without events: whatever was being written is
    /// taken as it is (a writer that died leaves a file that never closes).
    pub fn settled(&mut self) {
        self.writing.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, paths: &[&str]) -> notify::Event {
        let mut event = notify::Event::new(kind);
        for path in paths {
            event = event.add_path(PathBuf::from(path));
        }
        event
    }

    use notify::event::CreateKind;

    #[test]
    fn a_rename_in_is_final_at_once() {
        let mut tracker = WriteTracker::default();
        // cp x .x.tmp && mv .x.tmp x
        assert_eq!(tracker.note(&event(EventKind::Create(CreateKind::File), &["/d/.x.tmp"])), Meaning::Nothing);
        assert_eq!(tracker.note(&event(EventKind::Modify(ModifyKind::Any), &["/d/.x.tmp"])), Meaning::Nothing);
        let moved = EventKind::Modify(ModifyKind::Name(RenameMode::Both));
        assert_eq!(tracker.note(&event(moved, &["/d/.x.tmp", "/d/x.wasm"])), Meaning::Final);
        assert!(tracker.quiet());
    }

    #[test]
    fn a_file_written_in_place_is_final_when_closed() {
        let mut tracker = WriteTracker::default();
        assert_eq!(tracker.note(&event(EventKind::Create(CreateKind::File), &["/d/x.wasm"])), Meaning::Unfinished);
        assert_eq!(tracker.note(&event(EventKind::Modify(ModifyKind::Any), &["/d/x.wasm"])), Meaning::Unfinished);
        assert!(!tracker.quiet());
        // Another file renamed in meanwhile: final, but x.wasm is half written.
        let moved = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        assert_eq!(tracker.note(&event(moved, &["/d/y.wasm"])), Meaning::Final);
        assert!(!tracker.quiet(), "x.wasm still being written holds the reconcile");
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(tracker.note(&event(closed, &["/d/x.wasm"])), Meaning::Final);
        assert!(tracker.quiet());
    }

    #[test]
    fn removals_are_final_and_reads_mean_nothing() {
        let mut tracker = WriteTracker::default();
        assert_eq!(tracker.note(&event(EventKind::Remove(RemoveKind::File), &["/d/x.wasm"])), Meaning::Final);
        let read = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert_eq!(tracker.note(&event(read, &["/d/x.wasm"])), Meaning::Nothing);
        assert_eq!(tracker.note(&event(EventKind::Access(AccessKind::Any), &["/d/x.wasm"])), Meaning::Nothing);
    }

    #[test]
    fn a_writer_that_never_closes_is_taken_as_is_after_settling() {
        let mut tracker = WriteTracker::default();
        tracker.note(&event(EventKind::Modify(ModifyKind::Any), &["/d/x.wasm"]));
        assert!(!tracker.quiet());
        tracker.settled();
        assert!(tracker.quiet());
    }
}
