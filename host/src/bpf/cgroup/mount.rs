//! Finding the cgroup-v2 hierarchy: its mount point varies (`/sys/fs/cgroup`
//! on unified systems, `/sys/fs/cgroup/unified` on hybrid ones), so it is
//! read from the mount table, never assumed.

use std::path::PathBuf;

/// The mount table of the calling process.
const MOUNTS: &str = "/proc/self/mounts";

/// Why the cgroup-v2 root could not be found.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The mount table could not be read.
    #[error("cannot read {MOUNTS}: {source}")]
    Read { source: std::io::Error },
    /// No cgroup2 file system is mounted.
    #[error("no cgroup2 file system is mounted (mount one with `mount -t cgroup2 none /sys/fs/cgroup`)")]
    NotMounted,
}

/// The mount point of the first cgroup2 file system in the mount table.
pub fn cgroup2_root() -> Result<PathBuf, MountError> {
    let table = std::fs::read_to_string(MOUNTS).map_err(|source| MountError::Read { source })?;
    find_cgroup2(&table).ok_or(MountError::NotMounted)
}

fn find_cgroup2(table: &str) -> Option<PathBuf> {
    table.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        // Spaces in mount points are written as \040.
        (fstype == "cgroup2").then(|| PathBuf::from(target.replace("\\040", " ")))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_hierarchy() {
        let table = "sysfs /sys sysfs rw 0 0\n\
                     tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                     cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n\
                     cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(find_cgroup2(table), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(find_cgroup2("proc /proc proc rw 0 0\n"), None);
    }
}
