//! The one error type of the harness: what failed, with the command, path or
//! namespace involved, so that a test's panic message explains itself.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// Why a harness step failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A program could not be started at all (missing, not executable).
    #[error("cannot start `{command}`: {source}")]
    Spawn {
        /// The command line, as a shell would show it.
        command: String,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A program ran and reported failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, as a shell would show it.
        command: String,
        /// How it ended.
        status: ExitStatus,
        /// Its standard error (or output, when stderr was empty), trimmed.
        stderr: String,
    },
    /// A file or directory could not be read, written or created.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted ("read", "write", "create", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A test's configuration text is not valid TOML.
    #[error("the test's daemon configuration is not valid TOML: {0}")]
    Config(String),
    /// A thread could not switch into a network namespace.
    #[error("cannot enter network namespace {netns}: {source}")]
    EnterNetns {
        /// The namespace name under /run/netns.
        netns: String,
        /// What setns(2) or open(2) said.
        #[source]
        source: io::Error,
    },
    /// Something expected did not happen in time.
    #[error("timed out after {waited:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the harness waited.
        waited: Duration,
    },
    /// A watched process exited while the harness was waiting for it to say something.
    #[error("the process exited ({status}) while waiting for {what}")]
    ProcessExited {
        /// What was awaited.
        what: String,
        /// How it ended, as far as known.
        status: String,
    },
    /// iperf3 ran but its JSON report was unusable.
    #[error("iperf3 report unusable: {problem}; output: {output}")]
    IperfReport {
        /// What was wrong with it.
        problem: String,
        /// The raw output (truncated).
        output: String,
    },
    /// A sysctl held a value of an unexpected form.
    #[error("sysctl {name} = {value:?}: {problem}")]
    SysctlFormat {
        /// The sysctl, dotted.
        name: String,
        /// The value read.
        value: String,
        /// What was wrong with it.
        problem: &'static str,
    },
    /// A worker thread of the harness panicked.
    #[error("harness thread for {what} panicked")]
    ThreadPanicked {
        /// What the thread was doing.
        what: String,
    },
}
