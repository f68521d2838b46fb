//! Sysctl writes by anyone but the host, as `bpf/sysctl_watch.bpf.c` posts
//! them (`struct wasmtune_sysctl_write`), decoded into [`AdminWrite`].

use crate::admin_write::AdminWrite;

/// Size of `struct wasmtune_sysctl_write`.
pub const SYSCTL_WRITE_LEN: usize = 160;

/// Decodes one record; `None` if it is not one (wrong size, not `net.*`).
pub fn decode(record: &[u8]) -> Option<AdminWrite> {
    if record.len() != SYSCTL_WRITE_LEN {
        return None;
    }
    let netns = u64::from_ne_bytes(record[0..8].try_into().ok()?);
    let pid = u32::from_ne_bytes(record[8..12].try_into().ok()?);
    let value_len = u32::from_ne_bytes(record[12..16].try_into().ok()?) as usize;
    let comm = c_string(&record[16..32]);
    let name = c_string(&record[32..96]);
    if !name.starts_with("net/") {
        return None;
    }
    let value = match value_len {
        0 => None,
        n => {
            Some(String::from_utf8_lossy(&record[96..96 + n.min(64)]).split_whitespace().collect::<Vec<_>>().join(" "))
        }
    };
    Some(AdminWrite { netns, tunable: name.replace('/', "."), pid, comm, value })
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_write_record() {
        let mut r = [0u8; SYSCTL_WRITE_LEN];
        r[0..8].copy_from_slice(&42u64.to_ne_bytes());
        r[8..12].copy_from_slice(&1234u32.to_ne_bytes());
        r[12..16].copy_from_slice(&20u32.to_ne_bytes());
        r[16..22].copy_from_slice(b"sysctl");
        r[32..49].copy_from_slice(b"net/ipv4/tcp_rmem");
        r[96..116].copy_from_slice(b"4096\t131072\t98304\n  ");
        let w = decode(&r).expect("a net.* write");
        assert_eq!(w.netns, 42);
        assert_eq!(w.pid, 1234);
        assert_eq!(w.comm, "sysctl");
        assert_eq!(w.tunable, "net.ipv4.tcp_rmem");
        assert_eq!(w.value.as_deref(), Some("4096 131072 98304"));
        r[32..36].copy_from_slice(b"kern");
        assert_eq!(decode(&r), None);
        assert_eq!(decode(&r[..100]), None);
    }
}
