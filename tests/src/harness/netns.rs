//! `Netns`: a named network namespace made with `ip netns add`, deleted on
//! drop together with every process still running inside it; and running
//! code inside one from a thread of the test process.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::command::{run, run_args};
use super::{HarnessError, next_serial};

/// Where `ip netns` keeps its named namespaces.
const NETNS_RUN_DIR: &str = "/run/netns";
/// Every namespace the harness makes starts with this.
const NAME_PREFIX: &str = "wt-";

/// A network namespace that exists as long as this guard does.
///
/// Named `wt-<label>-<pid>-<n>`: the pid lets a later run remove namespaces
/// left behind by a test process that was killed before its guards ran.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `wt-<label>-<pid>-<n>` with its loopback up.
    pub fn new(label: &str) -> Result<Netns, HarnessError> {
        remove_stale_namespaces();
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
            .take(24)
            .collect();
        let name = format!("{NAME_PREFIX}{label}-{}-{}", std::process::id(), next_serial());
        run_args("ip", &["netns", "add", &name])?;
        let netns = Netns { name };
        run_args("ip", &["-n", &netns.name, "link", "set", "lo", "up"])?;
        Ok(netns)
    }

    /// The name under /run/netns, as `--netns` and the daemon's logs use it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace file, `/run/netns/<name>`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(&self.name)
    }

    /// A `Command` that runs `program` inside this namespace
    /// (`ip netns exec <name> <program>`, which execs in place, so the child's
    /// pid is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// Runs `program args..` inside this namespace to completion; returns stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, HarnessError> {
        run(self.command(program).args(args))
    }

    /// Runs `work` on a fresh thread that has entered this namespace, and
    /// returns its result. Network state that the kernel resolves per thread
    /// (/proc/sys/net, /proc/thread-self/net, sockets) is then this namespace's.
    pub fn run_in<T, F>(&self, what: &str, work: F) -> Result<T, HarnessError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, HarnessError> + Send + 'static,
    {
        let path = self.path();
        let name = self.name.clone();
        let worker = thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                enter(&path, &name)?;
                work()
            })
            .map_err(|source| HarnessError::Spawn { command: format!("thread for {what}"), source })?;
        worker.join().map_err(|_| HarnessError::ThreadPanicked { what: what.to_string() })?
    }

    /// Like [`Netns::run_in`], without waiting: for work that must run
    /// beside other work in the namespace (a server and its client).
    pub fn spawn_in<T, F>(
        &self,
        what: &str,
        work: F,
    ) -> Result<thread::JoinHandle<Result<T, HarnessError>>, HarnessError>
    where
        T: Send + 'static,
        F: FnOnce() -> Result<T, HarnessError> + Send + 'static,
    {
        let path = self.path();
        let name = self.name.clone();
        thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                enter(&path, &name)?;
                work()
            })
            .map_err(|source| HarnessError::Spawn { command: format!("thread for {what}"), source })
    }

    /// The namespace's cookie (`SO_NETNS_COOKIE`), as the daemon and the
    /// BPF programs name it.
    pub fn cookie(&self) -> Result<u64, HarnessError> {
        let name = self.name.clone();
        self.run_in("netns cookie", move || {
            wasmtune::netns::current_cookie()
                .map_err(|errno| HarnessError::EnterNetns { netns: name, source: std::io::Error::from(errno) })
        })
    }

    /// The pids of processes whose network namespace is this one.
    pub fn pids(&self) -> Vec<i32> {
        run_args("ip", &["netns", "pids", &self.name])
            .map(|out| out.split_whitespace().filter_map(|p| p.parse().ok()).collect())
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // A process left inside would keep the namespace alive after its
        // name is gone, and keep its sockets and traffic going.
        for pid in self.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Err(err) = run_args("ip", &["netns", "del", &self.name]) {
            eprintln!("harness: deleting network namespace {}: {err}", self.name);
        }
    }
}

/// Moves the calling thread into the namespace at `path`.
fn enter(path: &Path, name: &str) -> Result<(), HarnessError> {
    let file = File::open(path).map_err(|source| HarnessError::EnterNetns { netns: name.to_string(), source })?;
    setns(&file, CloneFlags::CLONE_NEWNET)
        .map_err(|errno| HarnessError::EnterNetns { netns: name.to_string(), source: errno.into() })
}

/// Deletes `wt-*-<pid>-<n>` namespaces whose creating process is gone: a
/// test killed by a timeout never ran its guards.
fn remove_stale_namespaces() {
    let Ok(entries) = fs::read_dir(NETNS_RUN_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = owner_pid(&name) else {
            continue;
        };
        if !Path::new("/proc").join(owner.to_string()).exists() {
            let _ = run_args("ip", &["netns", "del", &name]);
        }
    }
}

/// The pid embedded in a harness namespace name, `wt-<label>-<pid>-<n>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(NAME_PREFIX)?;
    let mut parts = rest.rsplit('-');
    parts.next()?.parse::<u32>().ok()?;
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn owner_pid_is_read_from_harness_names_only() {
        assert_eq!(owner_pid("wt-rmem-rx-1234-0"), Some(1234));
        assert_eq!(owner_pid("wt-a-99-12"), Some(99));
        assert_eq!(owner_pid("blue"), None);
        assert_eq!(owner_pid("wt-rx"), None);
    }
}
