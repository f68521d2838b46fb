//! An administrator's write to a sysctl, as the kernel reported it: what the
//! cgroup/sysctl program sees, the actuator settles and the overrides keep.

/// A write to a `net.*` sysctl by a process other than the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminWrite {
    /// The network namespace of the sysctl table written (its cookie), which
    /// need not be the writer's: a /proc/sys descriptor keeps the namespace
    /// it was opened in.
    pub netns: u64,
    /// Dotted name, e.g. `net.ipv4.tcp_rmem`.
    pub tunable: String,
    pub pid: u32,
    pub comm: String,
    /// What was written, as text (trimmed); `None` if it could not be read.
    pub value: Option<String>,
}
