//! Builds what the host embeds: the BPF skeletons from `bpf/*.bpf.c` and the
//! built-in policies from `policies/` (a wasm32-wasip2 workspace of its own,
//! built by a nested cargo so that one `cargo build` at the root does both).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("host/ sits in the workspace root").to_path_buf();
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));

    build_bpf_skeletons(&root.join("bpf"), &out_dir);
    build_builtin_policies(&root, &out_dir);
}

/// One skeleton per `bpf/NAME.bpf.c`, written to `$OUT_DIR/NAME.skel.rs`.
fn build_bpf_skeletons(bpf_dir: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed={}", bpf_dir.display());
    let mut sources: Vec<PathBuf> = fs::read_dir(bpf_dir)
        .expect("bpf/ is readable")
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".bpf.c"))
        .collect();
    sources.sort();
    for src in sources {
        println!("cargo:rerun-if-changed={}", src.display());
        let file = src.file_name().expect("a file").to_string_lossy().into_owned();
        let stem = file.trim_end_matches(".bpf.c");
        libbpf_cargo::SkeletonBuilder::new()
            .source(&src)
            .clang_args([
                "-I".to_string(),
                bpf_dir.display().to_string(),
                "-Wall".to_string(),
                "-Wno-unused-function".to_string(),
            ])
            .build_and_generate(out_dir.join(format!("{stem}.skel.rs")))
            .unwrap_or_else(|e| panic!("building BPF object {}: {e:#}", src.display()));
    }
    for header in fs::read_dir(bpf_dir).expect("bpf/ is readable").flatten() {
        println!("cargo:rerun-if-changed={}", header.path().display());
    }
}

/// Builds every crate of the `policies/` workspace for wasm32-wasip2 and
/// writes `$OUT_DIR/builtin_policies.rs`, a table of their bytes.
fn build_builtin_policies(root: &Path, out_dir: &Path) {
    let policies = root.join("policies");
    for dir in ["policies", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed={PREBUILT_POLICIES}");
    let wasm_files = match env::var_os(PREBUILT_POLICIES) {
        Some(dir) => prebuilt_guests(Path::new(&dir)),
        None => cargo_build_guests(&policies.join("Cargo.toml"), &guest_target_dir(out_dir)),
    };

    let mut table = String::from(
        "/// Built-in policies: (file name, component bytes).\npub const BUILTIN_POLICIES: &[(&str, &[u8])] = &[\n",
    );
    for wasm in wasm_files {
        let name = wasm.file_name().expect("a file").to_string_lossy().replace('_', "-");
        writeln!(table, "    ({name:?}, include_bytes!({:?})),", wasm.display().to_string()).expect("write to String");
    }
    table.push_str("];\n");
    fs::write(out_dir.join("builtin_policies.rs"), table).expect("write builtin_policies.rs");
}

/// A directory of policy components (`*.wasm`) already built for
/// wasm32-wasip2, embedded as they are instead of building `policies/`: for
/// a toolchain that has no wasm32-wasip2 standard library, as the pinned
/// nightly the fuzz targets build with (`packaging/fuzz.sh` builds the
/// policies with the stable toolchain first and names their directory here).
const PREBUILT_POLICIES: &str = "WASMTUNE_PREBUILT_POLICIES";

/// The `.wasm` files of a directory named by [`PREBUILT_POLICIES`], sorted.
fn prebuilt_guests(dir: &Path) -> Vec<PathBuf> {
    println!("cargo:rerun-if-changed={}", dir.display());
    // include_bytes! takes a relative path from the generated file, not from here.
    let dir = fs::canonicalize(dir).unwrap_or_else(|e| panic!("{PREBUILT_POLICIES}={}: {e}", dir.display()));
    let mut wasm: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{PREBUILT_POLICIES}={}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    wasm.sort();
    assert!(!wasm.is_empty(), "{PREBUILT_POLICIES}={} holds no .wasm file", dir.display());
    wasm
}

/// `target/guests`, beside the host's own profile directories.
fn guest_target_dir(out_dir: &Path) -> PathBuf {
    // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
    out_dir.ancestors().nth(4).expect("OUT_DIR is inside the target directory").join("guests")
}

/// Runs `cargo build --release --target wasm32-wasip2` on a guest workspace and
/// returns the `.wasm` files it produced, sorted.
fn cargo_build_guests(manifest: &Path, target_dir: &Path) -> Vec<PathBuf> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(manifest)
        .arg("--target-dir")
        .arg(target_dir);
    // Settings meant for the host build must not leak into the guest build.
    for var in
        ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER"]
    {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo for the guest policies");
    assert!(
        status.success(),
        "building {} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)",
        manifest.display()
    );
    let release = target_dir.join("wasm32-wasip2").join("release");
    let mut wasm: Vec<PathBuf> = fs::read_dir(&release)
        .expect("guest release directory exists after a successful build")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "wasm"))
        .collect();
    wasm.sort();
    wasm
}
