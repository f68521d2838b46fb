//! The one way the host writes a sysctl. A write the journal does not know
//! about could neither be summarised nor rolled back, and a write not read
//! back could be taken in part by the kernel without anyone noticing; so the
//! intent is journaled and synced first, then the value written and read
//! back in the calling thread's namespace, then the outcome journaled.
//!
//! A policy's change and the administrator's value put back after a racing
//! write (both on the actuator thread, see [`crate::actuate`]) and every
//! restoring write of a rollback (in the daemon or offline) go through
//! [`write_sysctl`]; nothing else calls [`crate::sysctl::write`].

use super::record::{Intent, Record, RollbackIntent, now_ms};
use super::{Ledger, LedgerError};
use crate::sysctl::{self, Value};

/// What a write is for; it decides the records journaled around it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SysctlIntent {
    /// A change (`intent`, then `applied` or `failed`).
    Change(Intent),
    /// A restoring write of a rollback (`rollback-intent`, then `rolled-back` or `failed`).
    Rollback(RollbackIntent),
}

impl SysctlIntent {
    fn tunable(&self) -> &str {
        match self {
            SysctlIntent::Change(intent) => &intent.tunable,
            SysctlIntent::Rollback(intent) => &intent.tunable,
        }
    }

    fn value(&self) -> &Value {
        match self {
            SysctlIntent::Change(intent) => &intent.new,
            SysctlIntent::Rollback(intent) => &intent.to,
        }
    }

    fn set_seq(&mut self, seq: u64) {
        match self {
            SysctlIntent::Change(intent) => intent.seq = seq,
            SysctlIntent::Rollback(intent) => intent.seq = seq,
        }
    }

    fn into_record(self) -> Record {
        match self {
            SysctlIntent::Change(intent) => Record::Intent(intent),
            SysctlIntent::Rollback(intent) => Record::RollbackIntent(intent),
        }
    }
}

/// Why the kernel does not hold the value.
#[derive(Debug, thiserror::Error)]
pub enum SysctlWriteError {
    /// The intent could not be journaled, so nothing was written.
    #[error("not written, because the journal failed: {source}")]
    NotJournaled { source: LedgerError },
    /// The write failed, or what was read back is not what was written.
    #[error("{detail}")]
    Kernel { detail: String },
}

/// What [`write_sysctl`] did.
#[derive(Debug)]
#[must_use]
pub struct SysctlWrite {
    /// Whether the kernel holds the value now.
    pub result: Result<(), SysctlWriteError>,
    /// The outcome could not be journaled (the intent was); each caller says
    /// so in its own words, and the next start settles the intent from what
    /// the kernel holds.
    pub unjournaled_outcome: Option<LedgerError>,
}

/// Journals `intent` (its sequence number is the journal's next), writes
/// its value to its tunable in the calling thread's namespace, reads it
/// back and journals the outcome.
pub fn write_sysctl(ledger: &mut Ledger, mut intent: SysctlIntent) -> SysctlWrite {
    let seq = ledger.next_seq();
    intent.set_seq(seq);
    let (tunable, value) = (intent.tunable().to_string(), intent.value().clone());
    let restoring = matches!(intent, SysctlIntent::Rollback(_));
    if let Err(source) = ledger.record(intent.into_record()) {
        return SysctlWrite { result: Err(SysctlWriteError::NotJournaled { source }), unjournaled_outcome: None };
    }
    let written = sysctl::write(&tunable, &value);
    let read_back = sysctl::read(&tunable);
    let error = match (&written, &read_back) {
        (Ok(()), Ok(now)) if *now == value => None,
        (Err(error), _) => Some(error.to_string()),
        (Ok(()), Ok(now)) => Some(format!("wrote ({value}) but read back ({now})")),
        (Ok(()), Err(error)) => Some(format!("wrote ({value}) but cannot read it back: {error}")),
    };
    let outcome = match &error {
        None if restoring => Record::RolledBack { seq, time: now_ms() },
        None => Record::Applied { seq, time: now_ms() },
        Some(error) => Record::Failed { seq, time: now_ms(), error: error.clone(), found: read_back.ok() },
    };
    SysctlWrite {
        result: error.map_or(Ok(()), |detail| Err(SysctlWriteError::Kernel { detail })),
        unjournaled_outcome: ledger.record(outcome).err(),
    }
}
