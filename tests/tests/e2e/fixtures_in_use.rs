//! Every guest fixture is used by some test here: a fixture nothing loads
//! is a hostile case the suite only pretends to cover.

use std::path::Path;

use wasmtune_tests::guests::FIXTURES;

fn sources(dir: &Path, into: &mut String) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("fixtures_in_use.rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())));
        }
    }
}

#[test]
fn every_guest_fixture_is_loaded_by_a_test() {
    let mut text = String::new();
    sources(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e"), &mut text);
    let unused: Vec<&str> = FIXTURES.iter().copied().filter(|name| !text.contains(&format!("\"{name}\""))).collect();
    assert!(unused.is_empty(), "guest fixtures no test uses: {unused:?}");
}
