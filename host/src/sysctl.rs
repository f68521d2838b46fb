//! Network sysctls as values: their names, their kernel text format, and one
//! read or one write through `/proc/sys`, in the network namespace of the
//! calling thread.
//!
//! `/proc/sys/net` resolves against the namespace of the thread that opens the
//! file, so a thread that entered a namespace (see [`crate::netns`]) reads and
//! writes that namespace's values. Only [`crate::ledger::write_sysctl`]
//! calls [`write`], so that every write is journaled first and read back:
//! the daemon reaches it only through [`crate::actuate`], `wasmtune
//! rollback` through [`crate::ledger::rollback`].

use std::fmt;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::PathBuf;

use nix::errno::Errno;

use crate::wit::SysctlValue;

/// Where the kernel exposes sysctls as files.
const PROC_SYS: &str = "/proc/sys";
/// Longest value read back; the widest network sysctls are a few hundred bytes.
const MAX_VALUE_BYTES: u64 = 64 * 1024;

/// A sysctl value: integers (`net.ipv4.tcp_rmem` holds three) or text
/// (`net.ipv4.tcp_congestion_control`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Value {
    Integers(Vec<i64>),
    Text(String),
}

impl Value {
    /// Reads the kernel's text form: whitespace-separated integers (the kernel
    /// separates them with tabs) become [`Value::Integers`]; anything else,
    /// including an empty value, is trimmed [`Value::Text`].
    pub fn parse(raw: &str) -> Value {
        let trimmed = raw.trim();
        let integers: Result<Vec<i64>, _> = trimmed.split_whitespace().map(str::parse::<i64>).collect();
        match integers {
            Ok(values) if !values.is_empty() => Value::Integers(values),
            _ => Value::Text(trimmed.to_string()),
        }
    }
}

/// The kernel format: integers separated by single spaces ("4096 131072
/// 6291456"), text as it is ("bbr").
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Integers(values) => {
                for (index, value) in values.iter().enumerate() {
                    if index > 0 {
                        f.write_str(" ")?;
                    }
                    write!(f, "{value}")?;
                }
                Ok(())
            }
            Value::Text(text) => f.write_str(text),
        }
    }
}

impl From<Value> for SysctlValue {
    fn from(value: Value) -> SysctlValue {
        match value {
            Value::Integers(values) => SysctlValue::Integers(values),
            Value::Text(text) => SysctlValue::Text(text),
        }
    }
}

impl From<SysctlValue> for Value {
    fn from(value: SysctlValue) -> Value {
        match value {
            SysctlValue::Integers(values) => Value::Integers(values),
            SysctlValue::Text(text) => Value::Text(text),
        }
    }
}

/// Why a sysctl could not be named, read or written. Every variant names the
/// sysctl, and those that come from the kernel carry its errno.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The name is not a network sysctl name wasmtune accepts.
    #[error("invalid sysctl name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// The sysctl does not exist here: not on this kernel, or not per network
    /// namespace (global-only sysctls are absent in a child namespace).
    #[error("{name} does not exist in this netns ({errno})")]
    DoesNotExist { name: String, errno: Errno },
    /// The kernel refused access: read-only here, or the thread lacks the
    /// privilege.
    #[error("{name}: permission denied ({errno})")]
    PermissionDenied { name: String, errno: Errno },
    /// The kernel refused the value itself (out of its range, wrong form).
    #[error("{name}: kernel rejected the value '{value}' ({errno})")]
    Rejected { name: String, value: String, errno: Errno },
    /// The kernel took only part of the value in the one write.
    #[error("{name}: the kernel took {written} of {expected} bytes of '{value}'")]
    ShortWrite { name: String, value: String, written: usize, expected: usize },
    /// Any other failure to open, read or write the file.
    #[error("{name}: cannot {operation} {path}: {source}")]
    Io { name: String, operation: &'static str, path: PathBuf, source: std::io::Error },
}

/// Checks that `name` is a network sysctl name: it starts with `net.`, uses
/// only `[a-z0-9_.-]`, and has no empty component. Such a name maps to
/// exactly one file under `/proc/sys` and cannot walk out of it.
pub fn validate_name(name: &str) -> Result<(), SysctlError> {
    let invalid = |reason| Err(SysctlError::InvalidName { name: name.to_string(), reason });
    if !name.starts_with("net.") {
        return invalid("network sysctl names start with \"net.\"");
    }
    if !name.chars().all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-')) {
        return invalid("only a-z, 0-9, '_', '.' and '-' are allowed");
    }
    if name.split('.').any(str::is_empty) {
        return invalid("a component is empty");
    }
    Ok(())
}

/// The file behind a validated name: `net.ipv4.tcp_rmem` → `/proc/sys/net/ipv4/tcp_rmem`.
fn path_of(name: &str) -> PathBuf {
    let mut path = PathBuf::from(PROC_SYS);
    path.extend(name.split('.'));
    path
}

/// Maps an I/O error to the sysctl error an administrator can act on.
fn classify(
    name: &str,
    value: Option<&Value>,
    operation: &'static str,
    path: PathBuf,
    error: std::io::Error,
) -> SysctlError {
    let name = name.to_string();
    match error.raw_os_error().map(Errno::from_raw) {
        Some(errno @ Errno::ENOENT) => SysctlError::DoesNotExist { name, errno },
        Some(errno @ (Errno::EPERM | Errno::EACCES)) => SysctlError::PermissionDenied { name, errno },
        Some(errno @ (Errno::EINVAL | Errno::ERANGE | Errno::EOVERFLOW)) if value.is_some() => {
            SysctlError::Rejected { name, value: value.map(Value::to_string).unwrap_or_default(), errno }
        }
        _ => SysctlError::Io { name, operation, path, source: error },
    }
}

/// Reads `name` in the calling thread's current network namespace.
pub fn read(name: &str) -> Result<Value, SysctlError> {
    validate_name(name)?;
    let path = path_of(name);
    let file = OpenOptions::new().read(true).open(&path).map_err(|e| classify(name, None, "open", path.clone(), e))?;
    let mut raw = String::new();
    file.take(MAX_VALUE_BYTES).read_to_string(&mut raw).map_err(|e| classify(name, None, "read", path.clone(), e))?;
    Ok(Value::parse(&raw))
}

/// Opens `name` for reading in the calling thread's current network
/// namespace. The open file stays bound to that namespace's value from any
/// thread, so it can be read again later with [`read_open`] without
/// entering the namespace.
pub fn open(name: &str) -> Result<std::fs::File, SysctlError> {
    validate_name(name)?;
    let path = path_of(name);
    OpenOptions::new().read(true).open(&path).map_err(|e| classify(name, None, "open", path, e))
}

/// Reads a sysctl opened with [`open`], from the start, on any thread. A
/// long value is read on through the same file, never by its path again:
/// the path would resolve in the calling thread's namespace, not the
/// file's. Each read starts at offset 0 and takes the value whole: integer
/// sysctls answer nothing to a read past the start.
pub fn read_open(name: &str, file: &std::fs::File) -> Result<Value, SysctlError> {
    use std::os::unix::fs::FileExt;
    let read_whole = |buf: &mut [u8]| file.read_at(buf, 0).map_err(|e| classify(name, None, "read", path_of(name), e));
    let mut short = [0u8; 512];
    let n = read_whole(&mut short)?;
    if n < short.len() {
        return Ok(Value::parse(&String::from_utf8_lossy(&short[..n])));
    }
    let mut long = vec![0u8; MAX_VALUE_BYTES as usize];
    let n = read_whole(&mut long)?;
    Ok(Value::parse(&String::from_utf8_lossy(&long[..n])))
}

/// Writes `value` to `name` in the calling thread's current network namespace,
/// as one `write(2)` of the kernel format and a newline: the kernel parses a
/// sysctl write per call, so splitting it could apply half a value.
pub fn write(name: &str, value: &Value) -> Result<(), SysctlError> {
    validate_name(name)?;
    let path = path_of(name);
    let mut file =
        OpenOptions::new().write(true).open(&path).map_err(|e| classify(name, Some(value), "open", path.clone(), e))?;
    let text = format!("{value}\n");
    let written = file.write(text.as_bytes()).map_err(|e| classify(name, Some(value), "write", path.clone(), e))?;
    if written != text.len() {
        return Err(SysctlError::ShortWrite {
            name: name.to_string(),
            value: value.to_string(),
            written,
            expected: text.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_is_read_through_the_open_file_not_its_path() {
        use std::io::Write as _;
        let mut file = tempfile::tempfile().expect("temp file");
        let long = "x".repeat(2000);
        file.write_all(long.as_bytes()).expect("write");
        // No /proc/sys/net/test/long exists: reopening by path would fail.
        assert_eq!(read_open("net.test.long", &file).expect("read"), Value::Text(long));
    }

    #[test]
    fn parses_kernel_integer_vectors_with_tabs() {
        assert_eq!(Value::parse("4096\t131072\t6291456\n"), Value::Integers(vec![4096, 131072, 6291456]));
        assert_eq!(Value::parse("1\n"), Value::Integers(vec![1]));
        assert_eq!(Value::parse("-1"), Value::Integers(vec![-1]));
    }

    #[test]
    fn parses_anything_else_as_trimmed_text() {
        assert_eq!(Value::parse("bbr\n"), Value::Text("bbr".into()));
        assert_eq!(Value::parse("reno bbr\n"), Value::Text("reno bbr".into()));
        assert_eq!(Value::parse("12 abc"), Value::Text("12 abc".into()));
        assert_eq!(Value::parse("  \n"), Value::Text(String::new()));
        assert_eq!(Value::parse("99999999999999999999"), Value::Text("99999999999999999999".into()));
    }

    #[test]
    fn displays_in_kernel_format() {
        assert_eq!(Value::Integers(vec![4096, 131072, 6291456]).to_string(), "4096 131072 6291456");
        assert_eq!(Value::Text("bbr".into()).to_string(), "bbr");
        let value = Value::Integers(vec![4096, 87380, 6291456]);
        assert_eq!(Value::parse(&value.to_string()), value);
    }

    #[test]
    fn converts_to_and_from_the_contract_type() {
        let value = Value::Integers(vec![1, 2, 3]);
        assert_eq!(Value::from(SysctlValue::from(value.clone())), value);
        let value = Value::Text("cubic".into());
        assert_eq!(Value::from(SysctlValue::from(value.clone())), value);
    }

    #[test]
    fn accepts_network_sysctl_names() {
        for name in
            ["net.ipv4.tcp_rmem", "net.core.rmem_max", "net.ipv4.conf.veth-a.rp_filter", "net.ipv6.route.max_size"]
        {
            assert!(validate_name(name).is_ok(), "{name}");
        }
        assert_eq!(path_of("net.ipv4.tcp_rmem"), PathBuf::from("/proc/sys/net/ipv4/tcp_rmem"));
    }

    #[test]
    fn refuses_names_outside_net_or_that_could_escape() {
        for name in [
            "kernel.panic",
            "net",
            "net.",
            "net..ipv4",
            "net.ipv4.tcp_rmem.",
            "net/../kernel",
            "net.ipv4.TCP",
            "net.a b",
        ] {
            assert!(validate_name(name).is_err(), "{name}");
        }
    }

    #[test]
    fn names_the_sysctl_and_errno_in_errors() {
        let missing = SysctlError::DoesNotExist { name: "net.ipv4.tcp_mem".into(), errno: Errno::ENOENT };
        assert_eq!(
            missing.to_string(),
            "net.ipv4.tcp_mem does not exist in this netns (ENOENT: No such file or directory)"
        );
        let rejected =
            SysctlError::Rejected { name: "net.ipv4.tcp_rmem".into(), value: "0 0 0".into(), errno: Errno::EINVAL };
        assert!(rejected.to_string().contains("kernel rejected the value '0 0 0'"), "{rejected}");
        assert!(rejected.to_string().contains("EINVAL"), "{rejected}");
    }
}
