//! Journal bytes, as a start or `wasmtune rollback` reads them
//! (`ledger::parse_journal`), folded (`DerivedState`), summarised, and
//! planned for rollback. However the journal was damaged or forged, the
//! rollback plan writes only network sysctls, each only to a value some
//! journal line recorded as an original; and a compacted journal (one
//! snapshot line) adds up to the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmtune::ledger::{ADMINISTRATOR, DerivedState, Record, Summary, parse_journal, rollback};
use wasmtune::sysctl::Value;

/// Every value a journal line recorded as an original.
fn recorded_originals(records: &[Record], into: &mut Vec<Value>) {
    for record in records {
        match record {
            Record::Intent(intent) => into.push(intent.old.clone()),
            Record::Snapshot(snapshot) => {
                into.extend(snapshot.tunables.iter().map(|(_, history)| history.original.clone()));
                recorded_originals(&snapshot.pending, into);
            }
            _ => {}
        }
    }
}

fuzz_target!(|bytes: &[u8]| {
    let Ok(replay) = parse_journal(bytes) else { return };
    let state = DerivedState::from_records(&replay.records);
    let mut originals = Vec::new();
    recorded_originals(&replay.records, &mut originals);
    for restore in rollback::plan(&state, None).restores {
        let name = &restore.key.tunable;
        assert!(name.starts_with("net.") && wasmtune::sysctl::validate_name(name).is_ok(), "would write {name:?}");
        assert!(originals.contains(restore.to()), "would write ({}) to {name}: not a recorded original", restore.to());
        assert_ne!(restore.history.last_policy, ADMINISTRATOR);
    }
    let _ = Summary::from_state(&state, false).lines();

    let snapshot = Record::Snapshot(Box::new(state.snapshot(0)));
    let line = serde_json::to_vec(&snapshot).expect("a snapshot encodes");
    let again = parse_journal(&line).expect("a snapshot line reads back");
    assert_eq!(DerivedState::from_records(&again.records), state, "compaction changed what the journal adds up to");
});
