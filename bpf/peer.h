/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Shared by bpf/sockops.bpf.c, bpf/sysctl_watch.bpf.c and the host
 * (host/src/bpf/cgroup/): the per-destination settings map and the records
 * the cgroup programs post. Fixed-size, naturally aligned, host byte order
 * unless a field says otherwise; the host checks every size at compile time.
 */
#ifndef WASMTUNE_PEER_H
#define WASMTUNE_PEER_H

/* TCP_CA_NAME_MAX: the longest congestion control name, with its NUL. */
#define WASMTUNE_CA_NAME_MAX 16

/* Bits of wasmtune_peer_settings.set: which settings to apply. */
#define WASMTUNE_PEER_CONGESTION (1U << 0)
#define WASMTUNE_PEER_INITIAL_CWND (1U << 1)
#define WASMTUNE_PEER_WINDOW_CLAMP (1U << 2)
#define WASMTUNE_PEER_NO_DELAY (1U << 3)
#define WASMTUNE_PEER_SYN_RTO (1U << 4)
#define WASMTUNE_PEER_ON_LOSS_CONGESTION (1U << 5)

/*
 * LPM-trie key: the namespace cookie (all 64 bits always match) followed by
 * the peer as an IPv6 address (IPv4 as IPv4-mapped ::ffff:a.b.c.d), so
 * prefixlen = 64 + the address prefix length. 28 bytes.
 *
 * offset size field
 *      0    4 prefixlen  64..=192
 *      4    4 netns_hi   cookie >> 32, big-endian (the trie compares bytes)
 *      8    4 netns_lo   cookie & 0xffffffff, big-endian
 *     12   16 addr       network byte order
 */
struct wasmtune_peer_key {
	__u32 prefixlen;
	__u32 netns_hi;
	__u32 netns_lo;
	__u8 addr[16];
};

/*
 * What to set on a new connection to a matching peer. 52 bytes.
 *
 * offset size field
 *      0    4 set                 WASMTUNE_PEER_* bits
 *      4    4 initial_cwnd        segments (TCP_BPF_IW)
 *      8    4 window_clamp        bytes (TCP_WINDOW_CLAMP)
 *     12    4 syn_rto_ms          milliseconds (BPF_SOCK_OPS_TIMEOUT_INIT)
 *     16    4 no_delay            0 or 1 (TCP_NODELAY)
 *     20   16 congestion          NUL-terminated
 *     36   16 on_loss_congestion  NUL-terminated
 */
struct wasmtune_peer_settings {
	__u32 set;
	__u32 initial_cwnd;
	__u32 window_clamp;
	__u32 syn_rto_ms;
	__u32 no_delay;
	char congestion[WASMTUNE_CA_NAME_MAX];
	char on_loss_congestion[WASMTUNE_CA_NAME_MAX];
};

/* Counters of the sockops program (per-CPU array `peer_stats`). */
enum wasmtune_peer_stat {
	WASMTUNE_PEER_STAT_MATCHED = 0,     /* connections whose peer matched */
	WASMTUNE_PEER_STAT_CONGESTION,      /* congestion set */
	WASMTUNE_PEER_STAT_INITIAL_CWND,    /* TCP_BPF_IW set */
	WASMTUNE_PEER_STAT_WINDOW_CLAMP,    /* TCP_WINDOW_CLAMP set */
	WASMTUNE_PEER_STAT_NO_DELAY,        /* TCP_NODELAY set */
	WASMTUNE_PEER_STAT_SYN_RTO,         /* SYN RTO answered */
	WASMTUNE_PEER_STAT_LOSS_SWITCH,     /* switched to on_loss_congestion */
	WASMTUNE_PEER_STAT_FAILED,          /* a bpf_setsockopt refused */
	WASMTUNE_PEER_STAT_COUNT,
};

/* The longest sysctl name (slash-separated, "net/ipv4/tcp_rmem") reported. */
#define WASMTUNE_SYSCTL_NAME_MAX 64
/* The longest written value reported. */
#define WASMTUNE_SYSCTL_VALUE_MAX 64
/* TASK_COMM_LEN */
#define WASMTUNE_COMM_LEN 16

/*
 * A write to a net.* sysctl by a task other than the host. 160 bytes.
 *
 * offset size field
 *      0    8 netns_cookie  the namespace of the sysctl table written (0: unknown)
 *      8    4 pid           thread-group id of the writer
 *     12    4 value_len     bytes of `value` used (0 if it could not be read)
 *     16   16 comm          the writer's command name, NUL-terminated
 *     32   64 name          "net/ipv4/tcp_rmem", NUL-terminated
 *     96   64 value         what was written, as text (not NUL-terminated)
 */
struct wasmtune_sysctl_write {
	__u64 netns_cookie;
	__u32 pid;
	__u32 value_len;
	char comm[WASMTUNE_COMM_LEN];
	char name[WASMTUNE_SYSCTL_NAME_MAX];
	char value[WASMTUNE_SYSCTL_VALUE_MAX];
};

/*
 * One established TCP socket found by the start-up walk (iter/tcp). 56 bytes.
 *
 * offset size field
 *      0    8 netns_cookie
 *      8    4 rcvbuf        sk_rcvbuf
 *     12    4 sndbuf        sk_sndbuf
 *     16    4 rmem_max      tcp_rmem[2] of the socket's namespace
 *     20    4 wmem_max      tcp_wmem[2] of the socket's namespace
 *     24    4 rcv_queued    received, not yet read
 *     28    4 snd_queued    sk_wmem_queued
 *     32    4 srtt_us
 *     36    2 remote_port   host byte order
 *     38    1 family        AF_INET or AF_INET6
 *     39    1 userlocks     sk_userlocks (SO_RCVBUF / SO_SNDBUF locks)
 *     40   16 remote_addr   network byte order; IPv4 in the first 4 bytes
 */
struct wasmtune_existing_socket {
	__u64 netns_cookie;
	__u32 rcvbuf;
	__u32 sndbuf;
	__u32 rmem_max;
	__u32 wmem_max;
	__u32 rcv_queued;
	__u32 snd_queued;
	__u32 srtt_us;
	__u16 remote_port;
	__u8 family;
	__u8 userlocks;
	__u8 remote_addr[16];
};

#endif /* WASMTUNE_PEER_H */
