//! Builds the guest fixtures in `tests/guests` (a wasm32-wasip2 workspace of
//! its own) with a nested cargo, and tells the test crate where the `.wasm`
//! files are through `WASMTUNE_TEST_GUESTS`.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings meant for the host build that must not leak into the guest build.
const HOST_ONLY_VARS: [&str; 5] =
    ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER"];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("tests/ sits in the workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    for dir in [manifest_dir.join("guests"), root.join("sdk"), root.join("wit")] {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    let target_dir = guest_target_dir(&out_dir);
    let wasm_dir = cargo_build_guests(&manifest_dir.join("guests").join("Cargo.toml"), &target_dir);
    println!("cargo:rustc-env=WASMTUNE_TEST_GUESTS={}", wasm_dir.display());
}

/// `target/guests-test`, beside the host's own profile directories and apart
/// from `target/guests` (the built-in policies), so the two nested builds
/// never wait on each other's lock.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    out_dir.ancestors().nth(4).expect("OUT_DIR is inside the target directory").join("guests-test")
}

/// Runs `cargo build --release --target wasm32-wasip2` on the fixture
/// workspace and returns the directory holding its `.wasm` files.
fn cargo_build_guests(manifest: &Path, target_dir: &Path) -> PathBuf {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    for var in HOST_ONLY_VARS {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the guest fixtures");
    assert!(
        status.success(),
        "building {} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)",
        manifest.display()
    );
    target_dir.join("wasm32-wasip2").join("release")
}
