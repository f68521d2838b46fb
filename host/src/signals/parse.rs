//! Parsers of the /proc/net files the poller reads. Each takes the whole
//! file as text and returns only what the signals need.

/// One line of `/proc/net/softnet_stat`: a CPU's counters since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftnetCpu {
    /// The CPU (the 13th column where the kernel prints it, else the line number).
    pub cpu: u32,
    /// Packets processed.
    pub processed: u64,
    /// Packets dropped because the backlog was full.
    pub dropped: u64,
    /// Times NAPI polling ran out of budget or time with work left.
    pub time_squeeze: u64,
}

/// `/proc/net/softnet_stat`: hexadecimal columns, one line per online CPU.
pub fn softnet_stat(text: &str) -> Vec<SoftnetCpu> {
    text.lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let columns: Vec<u64> =
                line.split_whitespace().map(|c| u64::from_str_radix(c, 16)).collect::<Result<_, _>>().ok()?;
            let cpu = columns.get(12).map_or(index as u64, |&c| c);
            Some(SoftnetCpu {
                cpu: u32::try_from(cpu).ok()?,
                processed: *columns.first()?,
                dropped: *columns.get(1)?,
                time_squeeze: *columns.get(2)?,
            })
        })
        .collect()
}

/// `FRAG: inuse N memory M` of `/proc/net/sockstat` (`FRAG6:` in sockstat6):
/// the reassembly memory, bytes.
pub fn frag_memory(text: &str, label: &str) -> Option<u64> {
    crate::procfs::labelled_field(text, label, "memory")
}

/// Reassembly requests and failures: from the `Ip:` header/value line pair
/// of `/proc/net/snmp` (`ReasmReqds`, `ReasmFails`).
pub fn snmp_reassembly(text: &str) -> Option<(u64, u64)> {
    let mut ip_lines = text.lines().filter(|l| l.starts_with("Ip: "));
    let header: Vec<&str> = ip_lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = ip_lines.next()?.split_whitespace().collect();
    let field = |name: &str| -> Option<u64> {
        let index = header.iter().position(|h| *h == name)?;
        values.get(index)?.parse().ok()
    };
    Some((field("ReasmReqds")?, field("ReasmFails")?))
}

/// The same from `/proc/net/snmp6` (`Ip6ReasmReqds`, `Ip6ReasmFails`, one
/// `name value` pair per line).
pub fn snmp6_reassembly(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == name).then(|| it.next()?.parse().ok())?
        })
    };
    Some((field("Ip6ReasmReqds")?, field("Ip6ReasmFails")?))
}

/// `/proc/net/rt6_stats`: seven hexadecimal counters. Returns the larger of
/// the routes in the FIB (`fib_rt_entries`, 4th) and the allocated route
/// entries (`dst` entries, 6th) — the count `net.ipv6.route.max_size` bounds.
pub fn rt6_entries(text: &str) -> Option<u64> {
    let columns: Vec<u64> =
        text.split_whitespace().map(|c| u64::from_str_radix(c, 16)).collect::<Result<_, _>>().ok()?;
    let fib = *columns.get(3)?;
    let dst = *columns.get(5)?;
    Some(fib.max(dst))
}

/// The listen-queue counters of a namespace, from the `TcpExt:` header and
/// value lines of `/proc/net/netstat`. All count since the namespace began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenCounters {
    /// `ListenDrops`: SYNs and handshakes a listener dropped, for any
    /// reason (a full accept queue, a full SYN queue, no memory, ...).
    pub listen_drops: u64,
    /// `ListenOverflows`: of those, the ones dropped for a full accept queue.
    pub listen_overflows: u64,
    /// `TCPReqQFullDrop`: SYNs dropped for a full SYN queue, cookies off.
    pub syn_queue_drops: u64,
    /// `TCPReqQFullDoCookies`: SYNs answered with a cookie because the SYN
    /// queue was full.
    pub syn_queue_cookies: u64,
    /// `SyncookiesSent`: every SYN cookie sent.
    pub cookies_sent: u64,
}

/// `/proc/net/netstat`: the [`ListenCounters`] of its `TcpExt:` lines.
pub fn tcp_ext_listen(text: &str) -> Option<ListenCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("TcpExt: "));
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let field = |name: &str| -> Option<u64> {
        let index = header.iter().position(|h| *h == name)?;
        values.get(index)?.parse().ok()
    };
    Some(ListenCounters {
        listen_drops: field("ListenDrops")?,
        listen_overflows: field("ListenOverflows")?,
        syn_queue_drops: field("TCPReqQFullDrop")?,
        syn_queue_cookies: field("TCPReqQFullDoCookies")?,
        cookies_sent: field("SyncookiesSent")?,
    })
}

/// A sysctl file's first integer.
pub fn first_integer(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softnet_stat_columns_and_cpu_ids() {
        let text = "0000a000 00000002 00000003 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000004 00000000 00000000\n\
                    00000010 00000000 00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000003 00000005 00000000 00000000\n";
        let cpus = softnet_stat(text);
        assert_eq!(cpus[0], SoftnetCpu { cpu: 0, processed: 0xa000, dropped: 2, time_squeeze: 3 });
        assert_eq!(cpus[1], SoftnetCpu { cpu: 3, processed: 0x10, dropped: 0, time_squeeze: 1 });
        // Old kernels print fewer columns: the line number is the CPU.
        assert_eq!(softnet_stat("00000001 00000000 00000002\n")[0].cpu, 0);
    }

    #[test]
    fn frag_and_reassembly_counters() {
        let sockstat = "sockets: used 5\nTCP: inuse 1 orphan 0 tw 0 alloc 1 mem 0\nFRAG: inuse 2 memory 8192\n";
        assert_eq!(frag_memory(sockstat, "FRAG:"), Some(8192));
        assert_eq!(frag_memory("FRAG6: inuse 0 memory 0\n", "FRAG6:"), Some(0));
        let snmp = "Ip: Forwarding DefaultTTL InReceives ReasmTimeout ReasmReqds ReasmOKs ReasmFails\n\
                    Ip: 2 64 100 0 40 10 7\nIcmp: InMsgs\nIcmp: 0\n";
        assert_eq!(snmp_reassembly(snmp), Some((40, 7)));
        let snmp6 = "Ip6InReceives 5\nIp6ReasmReqds 12\nIp6ReasmOKs 3\nIp6ReasmFails 2\n";
        assert_eq!(snmp6_reassembly(snmp6), Some((12, 2)));
    }

    #[test]
    fn listen_counters_of_tcp_ext() {
        let netstat = "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPReqQFullDoCookies TCPReqQFullDrop\n\
                       TcpExt: 7 1 3 9 5 2\nIpExt: InNoRoutes\nIpExt: 0\n";
        let counters = tcp_ext_listen(netstat).unwrap();
        assert_eq!(
            counters,
            ListenCounters {
                listen_drops: 9,
                listen_overflows: 3,
                syn_queue_drops: 2,
                syn_queue_cookies: 5,
                cookies_sent: 7
            }
        );
        assert_eq!(tcp_ext_listen("TcpExt: SyncookiesSent\nTcpExt: 1\n"), None);
    }

    #[test]
    fn rt6_stats_takes_the_larger_count() {
        assert_eq!(rt6_entries("0010 0008 0020 0300 0000 0005 0000\n"), Some(0x300));
        assert_eq!(rt6_entries("0010 0008 0020 0003 0000 0500 0000\n"), Some(0x500));
        assert_eq!(rt6_entries("garbage"), None);
        assert_eq!(first_integer("262144\n"), Some(262144));
    }
}
