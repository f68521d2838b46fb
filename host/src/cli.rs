//! The command line. Raw arguments only: resolving them against the system
//! happens in the commands themselves.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::LearningRate;
use crate::paths;

#[derive(Debug, Parser)]
#[command(
    name = "wasmtune",
    version,
    about = "Always-on Linux network auto-tuner; tuning policies run as sandboxed WebAssembly components",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Without a subcommand, `wasmtune` runs the daemon (as bpftune does).
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the tuning daemon in the foreground until SIGINT or SIGTERM.
    Run(RunArgs),
    /// Probe what this kernel supports, hook by hook (exit 0 fully, 1 partly, 2 not at all).
    Support,
    /// Check a configuration file as the daemon would read it, without
    /// starting anything (exit 0 when it would be taken, 1 with the file,
    /// line, column and field when not). The service runs it before start
    /// and reload.
    CheckConfig {
        /// The file [default: /etc/wasmtune/config.toml, which may be absent].
        file: Option<PathBuf>,
    },
    /// Inspect, sign and verify policy files; the running daemon's policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Start a policy: writes a crate (manifest, a worked example, native
    /// tests, README) that builds outside this repository.
    New(NewArgs),
    /// Replay a recording (`wasmtune run --record`) through one or two
    /// policies against a simulated kernel, and compare their decisions.
    Replay(ReplayArgs),
    /// Restore every value changed: through the running daemon when one
    /// answers, else from the journal (after a crash, or to undo tuning).
    Rollback {
        #[arg(long, default_value = paths::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// The running daemon's policies, tunables and overrides.
    Status(QueryArgs),
    /// The running daemon's Prometheus metrics, as `GET /metrics` serves
    /// them (text format 0.0.4; docs/metrics.md).
    Metrics(QueryArgs),
    /// The changes in effect, as the exit summary prints them.
    Summary(QueryArgs),
    /// The administrator's tunables: those another process wrote, or a
    /// sysctl.d file sets, which no policy changes until handed back.
    #[command(subcommand)]
    Override(OverrideCommand),
    /// The runtime process, which the daemon starts itself (confined, as
    /// its own user) to compile and run policies; or, with `--self-test`,
    /// the same confinement tried and reported as JSON.
    #[command(hide = true)]
    Runtime(RuntimeArgs),
    /// For packages: write the man page wasmtune(8) or the shell
    /// completions, generated from this command line.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
        /// The directory to write into (it must exist).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    Man,
    Completions,
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The policy's name (a-z, 0-9, '-'), also the crate's and the directory's.
    pub name: String,
    /// Where to create the crate's directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// A local copy of the wasmtune-sdk crate to build against (offline).
    /// Default: the one the development package installs, if present,
    /// else `wasmtune-sdk = "0.1"` from the registry.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// A recording, or a hand-written events file (docs/recording.md).
    pub file: PathBuf,
    /// A policy file or `builtin:NAME`; give two to compare them (A, then B).
    #[arg(long = "policy", value_name = "FILE", required = true, num_args = 1)]
    pub policies: Vec<String>,
    #[command(flatten)]
    pub simulation: SimulationArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `policy test` and `replay` share: the simulated kernel's values and
/// the administrator's settings.
#[derive(Debug, Clone, Args)]
pub struct SimulationArgs {
    /// A sysctl value the simulated kernel starts with (repeatable), e.g.
    /// `init:net.ipv4.tcp_rmem=4096 131072 6291456`. Tunables given neither
    /// here nor in the file do not exist.
    #[arg(long = "sysctl", value_name = "NETNS:NAME=VALUE")]
    pub sysctls: Vec<String>,
    /// The administrator's configuration: the policy's settings and narrowed grants.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// 0 (cautious) to 4 (fast) [default: the configuration's, else 4].
    #[arg(short = 'r', long, value_parser = parse_learning_rate)]
    pub learning_rate: Option<LearningRate>,
}

#[derive(Debug, Args)]
pub struct RuntimeArgs {
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Confine this process as the runtime is, try what it must not be able
    /// to do, and print what happened.
    #[arg(long)]
    pub self_test: bool,
    /// With --self-test: a network namespace descriptor to try `setns` on.
    #[arg(long)]
    pub netns_fd: Option<i32>,
}

#[derive(Debug, Subcommand)]
pub enum OverrideCommand {
    /// Hand TUNABLE back to the policies (in every namespace, or only in NAME).
    Clear {
        tunable: String,
        /// Only in this namespace (`init`, a /run/netns name).
        #[arg(long, value_name = "NAME")]
        netns: Option<String>,
        #[command(flatten)]
        query: QueryArgs,
    },
}

/// What every query of a running daemon takes.
#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    /// Print the daemon's JSON answer (schema: docs/control.md).
    #[arg(long)]
    pub json: bool,
    /// The daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = crate::control::DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Print a policy's manifest (its grants) without running it; `builtin:NAME` for a built-in.
    Info {
        file: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Sign a policy file: writes FILE.sig beside it (minisign format), for
    /// daemons that require signatures.
    Sign {
        file: PathBuf,
        /// The secret key (`wasmtune policy keygen`, or `minisign -G`).
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        /// Read the secret key's password from the first line of this file
        /// instead of asking for it.
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
    },
    /// Check a policy file as the daemon would: its signature (FILE.sig) by
    /// a trusted key, and the digest the configuration pins for it (exit 0
    /// trusted, 1 not).
    Verify {
        file: PathBuf,
        /// A trusted public key (repeatable), instead of the key directory.
        #[arg(long = "key", value_name = "PATH")]
        keys: Vec<PathBuf>,
        /// The trusted public keys [default: the configuration's keys-dir, else /etc/wasmtune/keys].
        #[arg(long, value_name = "DIR", conflicts_with = "keys")]
        keys_dir: Option<PathBuf>,
        /// The administrator's configuration, for a pinned digest [default: /etc/wasmtune/config.toml, if present].
        #[arg(long, value_name = "PATH")]
        config: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Make a key pair for signing policy files (minisign format); the
    /// public key goes into the daemon's key directory.
    Keygen {
        /// Where the secret key is written (mode 0600; must not exist yet).
        #[arg(long, value_name = "PATH")]
        secret_key: PathBuf,
        /// Where the public key is written (must not exist yet).
        #[arg(long, value_name = "PATH")]
        public_key: PathBuf,
        /// Leave the secret key without a password.
        #[arg(long, conflicts_with = "password_file")]
        no_password: bool,
        /// Protect the secret key with the first line of this file instead
        /// of asking for a password.
        #[arg(long, value_name = "PATH")]
        password_file: Option<PathBuf>,
    },
    /// Run a policy file against a simulated kernel: the real component,
    /// runtime and grant checks, events from a file, no root or BPF. Exits
    /// 1 on a fault or a denied change, 2 on bad input.
    Test {
        /// The policy file, or `builtin:NAME`.
        file: String,
        /// The events (JSONL: a recording, or written by hand; docs/recording.md).
        #[arg(long, value_name = "FILE")]
        events: PathBuf,
        #[command(flatten)]
        simulation: SimulationArgs,
        /// A denied change does not fail the test.
        #[arg(long)]
        allow_denials: bool,
        /// A fault does not fail the test.
        #[arg(long)]
        allow_faults: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run FILE as a shadow of the live policy of its name (or alone):
    /// the same events and checks, its changes logged, never made.
    Shadow {
        /// The policy file.
        #[arg(required_unless_present = "stop", conflicts_with = "stop")]
        file: Option<PathBuf>,
        /// Stop the shadow of this policy instead.
        #[arg(long, value_name = "NAME")]
        stop: Option<String>,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Run FILE as the canary of the policy of its name: it acts only in
    /// the namespaces or for the peers given, the current version keeps
    /// everything else, and it is reverted on its own if its health there
    /// regresses (docs/policy-lifecycle.md).
    Canary {
        /// The policy file.
        file: PathBuf,
        /// A namespace the canary takes over (repeat for more).
        #[arg(long = "netns", value_name = "NAME", required_unless_present = "prefixes", conflicts_with = "prefixes")]
        netns: Vec<String>,
        /// A peer prefix whose per-destination settings the canary takes over (repeat for more).
        #[arg(long = "prefix", value_name = "CIDR")]
        prefixes: Vec<String>,
        /// What it is judged by: throughput, delivery-rate, retransmits, srtt or drops [default: throughput].
        #[arg(long)]
        metric: Option<String>,
        /// How much worse, as a fraction, reverts it [default: 0.2].
        #[arg(long)]
        margin: Option<f64>,
        /// Seconds of samples judged [default: 60].
        #[arg(long = "window", value_name = "SECONDS")]
        window_seconds: Option<u64>,
        /// Compared with its own scope before it started (baseline) or with
        /// everything outside its scope (control) [default: baseline].
        #[arg(long)]
        compare: Option<String>,
        /// Connections needed on each side before judging [default: 5].
        #[arg(long)]
        min_connections: Option<usize>,
        /// Connections that moved fewer bytes are not judged [default: 262144].
        #[arg(long)]
        min_bytes: Option<u64>,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Make the canary of NAME the version of NAME everywhere (a hot swap).
    Promote {
        name: String,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// End the canary of NAME, rolling back what it changed.
    Abort {
        name: String,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// The running daemon's policies.
    List(QueryArgs),
    /// Start a policy that is on offer (until the daemon stops).
    Enable {
        name: String,
        #[command(flatten)]
        query: QueryArgs,
    },
    /// Stop a policy (until the daemon stops or it is enabled again).
    Disable {
        name: String,
        #[command(flatten)]
        query: QueryArgs,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnCrashArg {
    Adopt,
    Rollback,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines of text with key=value fields.
    Text,
    /// One JSON object per line.
    Json,
    /// Native journal entries, every field a journal field (the default
    /// when standard error is the journal, as under systemd).
    Journal,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Watched policy directory (repeatable; a later one wins by policy name).
    /// Default: /usr/lib/wasmtune/policies then /etc/wasmtune/policies.
    #[arg(long = "policy-dir", value_name = "DIR")]
    pub policy_dirs: Vec<PathBuf>,
    /// Where the journal and compiled-policy cache live.
    #[arg(long, default_value = paths::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Administrator's configuration [default: /etc/wasmtune/config.toml, if present].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Decide and log, but change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// On SIGINT/SIGTERM, restore every value changed, in every namespace.
    #[arg(short = 'R', long)]
    pub rollback: bool,
    /// 0 (cautious: 1.6 % steps) to 4 (fast: 25 % steps) [default: 4].
    #[arg(short = 'r', long, value_parser = parse_learning_rate)]
    pub learning_rate: Option<LearningRate>,
    /// How log lines are written [default: journal when standard error is
    /// the journal (as under systemd), text otherwise].
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Tune only this network namespace (repeatable): a name under /run/netns, or `init`.
    #[arg(long = "netns", value_name = "NAME")]
    pub netns: Vec<String>,
    /// Where the control socket listens.
    #[arg(long, value_name = "PATH", default_value = crate::control::DEFAULT_SOCKET)]
    pub control_socket: PathBuf,
    /// Changes an earlier run left in effect (it crashed, or stopped without
    /// --rollback): keep them (adopt) or restore the originals first.
    #[arg(long, value_enum, default_value_t = OnCrashArg::Adopt)]
    pub on_crash: OnCrashArg,
    /// Write every event routed to the policies and every sysctl value they
    /// read to FILE (JSONL, docs/recording.md), for `wasmtune policy test`
    /// and `wasmtune replay`.
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Past this size the recording is renamed FILE.1 and a new one starts.
    #[arg(long, value_name = "BYTES", default_value_t = crate::recording::writer::DEFAULT_MAX_BYTES, requires = "record")]
    pub record_max_bytes: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9560
    /// [default: the configuration's metrics.listen, else none].
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Log to stderr (accepted for bpftune compatibility; always so).
    #[arg(short = 's', hide = true)]
    pub stderr: bool,
}

fn parse_learning_rate(s: &str) -> Result<LearningRate, String> {
    let rate: u8 = s.parse().map_err(|_| format!("{s:?} is not a number in 0..=4"))?;
    LearningRate::new(rate)
}

impl RunArgs {
    pub fn into_options(self) -> crate::daemon::RunOptions {
        let policy_dirs = if self.policy_dirs.is_empty() {
            vec![PathBuf::from(paths::SYSTEM_POLICY_DIR), PathBuf::from(paths::ADMIN_POLICY_DIR)]
        } else {
            self.policy_dirs
        };
        crate::daemon::RunOptions {
            policy_dirs,
            state_dir: self.state_dir,
            config: self.config,
            dry_run: self.dry_run,
            rollback: self.rollback,
            learning_rate: self.learning_rate,
            netns: self.netns,
            control_socket: self.control_socket,
            on_crash: match self.on_crash {
                OnCrashArg::Adopt => crate::daemon::OnCrash::Adopt,
                OnCrashArg::Rollback => crate::daemon::OnCrash::Rollback,
            },
            record: self.record,
            record_max_bytes: self.record_max_bytes,
            metrics: self.metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpftune_flags_are_accepted() {
        let cli = Cli::try_parse_from(["wasmtune", "-s", "-r", "2", "-R"]).expect("bpftune-style flags");
        assert!(cli.command.is_none());
        assert_eq!(cli.run.learning_rate, Some(LearningRate::new(2).expect("valid")));
        assert!(cli.run.rollback);
    }

    #[test]
    fn learning_rate_is_bounded() {
        assert!(Cli::try_parse_from(["wasmtune", "run", "--learning-rate", "5"]).is_err());
    }

    #[test]
    fn netns_and_policy_dirs_repeat() {
        let cli = Cli::try_parse_from(["wasmtune", "run", "--netns", "a", "--netns", "b", "--policy-dir", "/x"])
            .expect("valid");
        let Some(Command::Run(run)) = cli.command else { panic!("run expected") };
        assert_eq!(run.netns, vec!["a", "b"]);
        assert_eq!(run.into_options().policy_dirs, vec![PathBuf::from("/x")]);
    }

    #[test]
    fn queries_take_json_and_socket() {
        let cli = Cli::try_parse_from(["wasmtune", "policy", "disable", "tcp-buffer", "--json", "--socket", "/s"])
            .expect("valid");
        let Some(Command::Policy(PolicyCommand::Disable { name, query })) = cli.command else {
            panic!("policy disable expected")
        };
        assert_eq!(name, "tcp-buffer");
        assert!(query.json);
        assert_eq!(query.socket, PathBuf::from("/s"));
        let cli = Cli::try_parse_from(["wasmtune", "run", "--on-crash", "rollback"]).expect("valid");
        let Some(Command::Run(run)) = cli.command else { panic!("run expected") };
        assert_eq!(run.into_options().on_crash, crate::daemon::OnCrash::Rollback);
    }

    #[test]
    fn sign_verify_and_keygen_take_their_files() {
        let cli = Cli::try_parse_from(["wasmtune", "policy", "sign", "p.wasm", "--key", "s.key"]).expect("valid");
        let Some(Command::Policy(PolicyCommand::Sign { file, key, password_file })) = cli.command else {
            panic!("policy sign expected")
        };
        assert_eq!((file, key, password_file), (PathBuf::from("p.wasm"), PathBuf::from("s.key"), None));
        let cli = Cli::try_parse_from(["wasmtune", "policy", "verify", "p.wasm", "--key", "a.pub", "--key", "b.pub"])
            .expect("valid");
        let Some(Command::Policy(PolicyCommand::Verify { keys, keys_dir, .. })) = cli.command else {
            panic!("policy verify expected")
        };
        assert_eq!(keys.len(), 2);
        assert!(keys_dir.is_none());
        assert!(
            Cli::try_parse_from(["wasmtune", "policy", "verify", "p.wasm", "--key", "a.pub", "--keys-dir", "/k"])
                .is_err(),
            "named keys and a key directory are one choice"
        );
        assert!(
            Cli::try_parse_from([
                "wasmtune",
                "policy",
                "keygen",
                "--secret-key",
                "s",
                "--public-key",
                "p",
                "--no-password",
                "--password-file",
                "f"
            ])
            .is_err()
        );
    }
}
