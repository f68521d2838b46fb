//! The wasmtune binary under test: finding (and, when needed, building) it,
//! and `Daemon`, a `wasmtune run --log-format json` whose log lines tests wait
//! on, stopped on drop.

use std::fs;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use tempfile::TempDir;

use super::paths::profile_dir;
use super::{HarnessError, LogCapture, Netns, scratch_dir, target_dir};

/// Set to the path of a wasmtune binary to test that one instead of the
/// workspace's own build.
pub const BIN_ENV: &str = "WASMTUNE_BIN";
/// How long a daemon may take from spawn to its `ready` line: it compiles
/// every policy and loads its BPF programs first.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a daemon may take to exit after SIGTERM (rollback included).
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The wasmtune binary: `$WASMTUNE_BIN`, else `<target>/<profile>/wasmtune`
/// from this workspace, brought up to date with `cargo build` once per test
/// process.
///
/// The test binaries do not depend on the daemon's binary target, so
/// `cargo test`/`cargo nextest run` alone would leave it missing on a fresh
/// checkout, or stale after an edit; asking cargo costs a fraction of a
/// second when it is current.
pub fn wasmtune_bin() -> Result<PathBuf, HarnessError> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(locate_or_build).clone().map_err(|problem| HarnessError::Spawn {
        command: "wasmtune".to_string(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, problem),
    })
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os(BIN_ENV) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() { Ok(bin) } else { Err(format!("{BIN_ENV}={} does not exist", bin.display())) };
    }
    let profile = profile_dir();
    let workspace =
        Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("the tests crate sits inside the workspace")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir())
        // Features resolved for the whole workspace, as the suite's own
        // build resolves them: for the one package they differ (nix,
        // semver, indexmap, ...), and half the dependency tree, wasmtime
        // among it, would be compiled a second time (minutes on 2 cores).
        .args(["--workspace", "--bin", "wasmtune"]);
    match profile.file_name().and_then(|n| n.to_str()) {
        Some("debug") => {}
        Some("release") | None => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
    }
    let bin = profile.join("wasmtune");
    match build.output() {
        Ok(out) if out.status.success() => Ok(bin),
        Ok(out) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(format!("building the wasmtune binary failed:\n{}", tail.join("\n")))
        }
        // No cargo here (tests copied to another machine): use what was built.
        Err(_) if bin.is_file() => Ok(bin),
        Err(err) => Err(format!("cannot run cargo to build {}: {err}", bin.display())),
    }
}

/// A `Command` for the wasmtune binary (for `rollback`, `policy info`, ...).
pub fn wasmtune_command() -> Result<Command, HarnessError> {
    Ok(Command::new(wasmtune_bin()?))
}

/// Runs the `wasmtune` command line to completion: (success, stdout, stderr).
///
/// # Panics
/// When the binary cannot be found or started.
pub fn cli(args: &[&str]) -> (bool, String, String) {
    let output = wasmtune_command()
        .and_then(|mut cmd| {
            cmd.args(args)
                .output()
                .map_err(|source| HarnessError::Spawn { command: format!("wasmtune {}", args.join(" ")), source })
        })
        .unwrap_or_else(|e| panic!("{e}"));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The JSON a `wasmtune ... --json` command printed.
///
/// # Panics
/// When it failed or printed something else.
pub fn cli_json(args: &[&str]) -> serde_json::Value {
    let (ok, stdout, stderr) = cli(args);
    assert!(ok, "wasmtune {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("wasmtune {args:?}: not JSON ({e}): {stdout}"))
}

/// Every record of the journal in `state_dir`, one JSON object a line
/// (a compacted journal starts with its snapshot record).
pub fn journal_records(state_dir: &Path) -> Vec<serde_json::Value> {
    let path = state_dir.join("journal.jsonl");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display())))
        .collect()
}

/// How to start a daemon: `wasmtune run --log-format json --state-dir DIR
/// --config FILE [--netns NAME].. [--policy-dir DIR].. [extra args]`.
///
/// The configuration file defaults to an empty one of the daemon's own, so
/// that an `/etc/wasmtune/config.toml` on the machine cannot change a test.
#[derive(Debug, Default)]
pub struct DaemonBuilder {
    netns: Vec<String>,
    policy_dirs: Vec<PathBuf>,
    state_dir: Option<PathBuf>,
    config: Option<String>,
    extra: Vec<String>,
    deny_bpf: bool,
    enable_policy_files: bool,
    replace_builtins: Vec<String>,
    env: Vec<(String, String)>,
}

impl DaemonBuilder {
    /// Tune `netns` (repeatable).
    pub fn netns(mut self, netns: &Netns) -> Self {
        self.netns.push(netns.name().to_string());
        self
    }

    /// Tune the namespace called `name` (e.g. `init`).
    pub fn netns_named(mut self, name: &str) -> Self {
        self.netns.push(name.to_string());
        self
    }

    /// Load and watch the policies in `dir` (repeatable).
    pub fn policy_dir(mut self, dir: &Path) -> Self {
        self.policy_dirs.push(dir.to_path_buf());
        self
    }

    /// Keep the journal in `dir` (which the test owns, e.g. to run
    /// `wasmtune rollback` on it after the daemon is gone; make it with
    /// [`private_dir`](super::private_dir)). Without it, a root-only directory
    /// of the daemon guard's own is used.
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    /// The text of the configuration file to pass with `--config`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_string());
        self
    }

    /// The administrator lets the policy files run without enabling each
    /// by name (`enable-policy-files = true`), as a test that installs
    /// files to exercise something else needs.
    pub fn enable_policy_files(mut self) -> Self {
        self.enable_policy_files = true;
        self
    }

    /// A policy file named `name` may replace the built-in of that name
    /// (`[policies.NAME] replace-builtin = true`).
    pub fn replace_builtin(mut self, name: &str) -> Self {
        self.replace_builtins.push(name.to_string());
        self
    }

    /// Every `bpf(2)` call of the daemon fails with EPERM (a seccomp filter
    /// installed before it starts): no BPF program can load.
    pub fn without_bpf(mut self) -> Self {
        self.deny_bpf = true;
        self
    }

    /// One more argument, e.g. `--rollback`, `--dry-run`.
    pub fn arg(mut self, arg: &str) -> Self {
        self.extra.push(arg.to_string());
        self
    }

    /// An environment variable for the daemon (e.g. `NOTIFY_SOCKET`, to
    /// stand in for the service manager).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Answer control requests on `socket` (a path of the test's own; the
    /// default one may belong to another daemon).
    pub fn control_socket(self, socket: &Path) -> Self {
        self.arg("--control-socket").arg(&socket.to_string_lossy())
    }

    /// Spawns the daemon and waits for its `ready` event (policies loaded,
    /// hooks attached).
    pub fn start_ready(self) -> Result<Daemon, HarnessError> {
        let daemon = self.start()?;
        daemon.wait_for_event("ready", super::READY_TIMEOUT)?;
        Ok(daemon)
    }

    /// Spawns the daemon; it is not ready yet: wait for the `ready` event.
    pub fn start(self) -> Result<Daemon, HarnessError> {
        let scratch = scratch_dir("daemon")?;
        let state_dir = match self.state_dir {
            Some(dir) => dir,
            None => {
                let dir = scratch.path().join("state");
                fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|source| HarnessError::Io {
                    action: "create",
                    path: dir.clone(),
                    source,
                })?;
                dir
            }
        };
        let config = scratch.path().join("config.toml");
        let config_text = administrator_config(
            self.config.as_deref().unwrap_or_default(),
            self.enable_policy_files,
            &self.replace_builtins,
        )?;
        fs::write(&config, config_text).map_err(|source| HarnessError::Io {
            action: "write",
            path: config.clone(),
            source,
        })?;
        let mut cmd = wasmtune_command()?;
        cmd.args(["run", "--log-format", "json", "--state-dir"]).arg(&state_dir).arg("--config").arg(&config);
        for netns in &self.netns {
            cmd.args(["--netns", netns]);
        }
        for dir in &self.policy_dirs {
            cmd.arg("--policy-dir").arg(dir);
        }
        cmd.args(&self.extra);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if self.deny_bpf {
            // SAFETY: the closure only calls prctl, async-signal-safe.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, super::seccomp::deny_bpf_syscall);
            }
        }
        let capture = LogCapture::spawn("wasmtune", cmd)?;
        Ok(Daemon { capture, state_dir, config, _scratch: scratch })
    }
}

/// The test's configuration with the file-related decisions of
/// [`DaemonBuilder::enable_policy_files`] and
/// [`DaemonBuilder::replace_builtin`] merged in (a test's own
/// `[policies.NAME]` table may already be there).
fn administrator_config(text: &str, enable_files: bool, replace: &[String]) -> Result<String, HarnessError> {
    if !enable_files && replace.is_empty() {
        return Ok(text.to_string());
    }
    let mut config: toml::Table = text.parse().map_err(|e: toml::de::Error| HarnessError::Config(e.to_string()))?;
    if enable_files {
        config.insert("enable-policy-files".into(), toml::Value::Boolean(true));
    }
    for name in replace {
        let policies = config.entry("policies").or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let policy = policies
            .as_table_mut()
            .ok_or_else(|| HarnessError::Config("`policies` is not a table".into()))?
            .entry(name.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        policy
            .as_table_mut()
            .ok_or_else(|| HarnessError::Config(format!("`policies.{name}` is not a table")))?
            .insert("replace-builtin".into(), toml::Value::Boolean(true));
    }
    Ok(config.to_string())
}

/// A running `wasmtune run`; its log is a [`LogCapture`] (this derefs to
/// it: `daemon.wait_for_event("ready", READY_TIMEOUT)`, `daemon.lines()`).
/// Killed on drop; its log is printed when the test fails.
pub struct Daemon {
    capture: LogCapture,
    state_dir: PathBuf,
    config: PathBuf,
    _scratch: TempDir,
}

impl Daemon {
    /// A builder with no namespaces, policy directories or extra arguments.
    pub fn builder() -> DaemonBuilder {
        DaemonBuilder::default()
    }

    /// The journal directory passed with `--state-dir`.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The file passed with `--config`, which a test may rewrite before a
    /// reload (SIGHUP).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// SIGTERM and wait for a clean exit (its rollback and summary included).
    pub fn terminate(&mut self) -> Result<ExitStatus, HarnessError> {
        self.capture.terminate(EXIT_TIMEOUT)
    }
}

impl Deref for Daemon {
    type Target = LogCapture;

    fn deref(&self) -> &LogCapture {
        &self.capture
    }
}

impl DerefMut for Daemon {
    fn deref_mut(&mut self) -> &mut LogCapture {
        &mut self.capture
    }
}
