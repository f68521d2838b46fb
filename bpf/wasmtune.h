/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * Records the BPF programs post to user space through their ring buffer.
 *
 * The layout is fixed-size, naturally aligned and in the host's byte order;
 * host/src/events.rs decodes it field by field and must change together with
 * this file (the host checks the size against the skeleton's copy of the type
 * at compile time).
 */
#ifndef WASMTUNE_H
#define WASMTUNE_H

/* What a record reports; the first field of every record. */
enum wasmtune_record_kind {
	WASMTUNE_RECORD_TCP_BUFFER_LIMIT = 1,
	WASMTUNE_RECORD_MEMORY_PRESSURE = 2,
	/* 3 was syn-overflow, now read from MIB counters by the host. */
	WASMTUNE_RECORD_CONNECTION_SUMMARY = 4,
	WASMTUNE_RECORD_RETRANSMIT_BURST = 5,
	WASMTUNE_RECORD_BACKLOG_DROPS = 6,
	WASMTUNE_RECORD_NEIGHBOUR_TABLE = 7,
	WASMTUNE_RECORD_UDP_DROP = 8,
};

/* Protocol of a memory-pressure record. */
enum wasmtune_protocol {
	WASMTUNE_PROTOCOL_TCP = 0,
	WASMTUNE_PROTOCOL_UDP = 1,
};

/* Level of a memory-pressure record (relieved is decided by the host). */
enum wasmtune_memory_level {
	WASMTUNE_MEMORY_PRESSURE = 0,
	WASMTUNE_MEMORY_EXHAUSTED = 1,
};

/* Cause of a udp-drop record. */
enum wasmtune_udp_cause {
	WASMTUNE_UDP_RECEIVE_QUEUE_FULL = 0,
	WASMTUNE_UDP_MEMORY_LIMIT = 1,
};

/* Length of a congestion control name (TCP_CA_NAME_MAX). */
#define WASMTUNE_CA_NAME_LEN 16

/* Which socket buffer a tcp-buffer-limit record is about. */
enum wasmtune_direction {
	WASMTUNE_DIRECTION_RECEIVE = 0,
	WASMTUNE_DIRECTION_SEND = 1,
};

/* Address families as the kernel numbers them (AF_INET, AF_INET6). */
#define WASMTUNE_AF_INET 2
#define WASMTUNE_AF_INET6 10

/*
 * A TCP socket whose buffer is near its netns-wide limit. 48 bytes.
 *
 * offset size field
 *      0    2 kind          enum wasmtune_record_kind
 *      2    1 direction     enum wasmtune_direction
 *      3    1 family        WASMTUNE_AF_INET or WASMTUNE_AF_INET6
 *      4    2 remote_port   host byte order
 *      6    2 reserved      zero
 *      8    8 netns_cookie  the namespace's cookie (SO_NETNS_COOKIE)
 *     16    4 buffer_bytes  sk_rcvbuf or sk_sndbuf
 *     20    4 limit_bytes   tcp_rmem[2] or tcp_wmem[2] of the namespace
 *     24    4 queued_bytes  unread receive bytes, or sk_wmem_queued
 *     28    4 srtt_us       smoothed RTT, microseconds
 *     32   16 remote_addr   network byte order; IPv4 in the first 4 bytes
 */
struct wasmtune_tcp_buffer_record {
	__u16 kind;
	__u8 direction;
	__u8 family;
	__u16 remote_port;
	__u16 reserved;
	__u64 netns_cookie;
	__u32 buffer_bytes;
	__u32 limit_bytes;
	__u32 queued_bytes;
	__u32 srtt_us;
	__u8 remote_addr[16];
};

/*
 * sock_exceed_buf_limit above tcp_mem[1] / udp_mem[1]. 48 bytes.
 *
 *      0    2 kind, 2 1 protocol, 3 1 level, 4 4 reserved
 *      8    8 netns_cookie
 *     16    8 pages         allocated pages of the protocol
 *     24   24 limits        sysctl_mem[0..2], pages
 */
struct wasmtune_memory_pressure_record {
	__u16 kind;
	__u8 protocol;
	__u8 level;
	__u32 reserved;
	__u64 netns_cookie;
	__u64 pages;
	__u64 limits[3];
};

/*
 * One TCP connection at close. 104 bytes.
 *
 *      0    2 kind, 2 1 family, 3 1 reserved, 4 2 remote_port, 6 2 local_port
 *      8    8 netns_cookie
 *     16   16 remote_addr        network order; IPv4 in the first 4 bytes
 *     32   16 congestion         NUL-padded name
 *     48    4 min_rtt_us, 52 4 srtt_us
 *     56    8 max_delivery_rate  bytes per second
 *     64    4 segs_out, 68 4 retransmits
 *     72    8 bytes_acked, 80 8 bytes_received, 88 8 duration_ms
 *     96    8 reserved2
 */
struct wasmtune_connection_summary_record {
	__u16 kind;
	__u8 family;
	__u8 reserved;
	__u16 remote_port;
	__u16 local_port;
	__u64 netns_cookie;
	__u8 remote_addr[16];
	char congestion[WASMTUNE_CA_NAME_LEN];
	__u32 min_rtt_us;
	__u32 srtt_us;
	__u64 max_delivery_rate;
	__u32 segs_out;
	__u32 retransmits;
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 duration_ms;
	__u64 reserved2;
};

/*
 * A connection retransmitting more than 1/64 of its segments. 56 bytes.
 *
 *      0    2 kind, 2 1 family, 3 1 reserved, 4 2 remote_port, 6 2 reserved2
 *      8    8 netns_cookie
 *     16   16 remote_addr, 32 16 congestion
 *     48    4 segs_out, 52 4 retransmits
 */
struct wasmtune_retransmit_burst_record {
	__u16 kind;
	__u8 family;
	__u8 reserved;
	__u16 remote_port;
	__u16 reserved2;
	__u64 netns_cookie;
	__u8 remote_addr[16];
	char congestion[WASMTUNE_CA_NAME_LEN];
	__u32 segs_out;
	__u32 retransmits;
};

/*
 * Input backlog drops on one CPU since its previous record. 24 bytes.
 *
 *      0    2 kind, 2 2 reserved, 4 4 cpu
 *      8    8 netns_cookie   of the device of the drop that posted it
 *     16    8 drops
 */
struct wasmtune_backlog_drops_record {
	__u16 kind;
	__u16 reserved;
	__u32 cpu;
	__u64 netns_cookie;
	__u64 drops;
};

/*
 * A neighbour table near gc_thresh3, or back well below it. 32 bytes.
 *
 *      0    2 kind, 2 1 family, 3 1 reserved, 4 4 ifindex
 *      8    8 netns_cookie
 *     16    4 entries, 20 4 limit (gc_thresh3)
 *     24    8 address_space  addresses in the device's first prefix
 */
struct wasmtune_neighbour_table_record {
	__u16 kind;
	__u8 family;
	__u8 reserved;
	__u32 ifindex;
	__u64 netns_cookie;
	__u32 entries;
	__u32 limit;
	__u64 address_space;
};

/*
 * UDP receive drops in one netns since its previous record. 32 bytes.
 *
 *      0    2 kind, 2 1 cause, 3 1 locked, 4 2 local_port, 6 2 reserved
 *      8    8 netns_cookie
 *     16    4 buffer_bytes (sk_rcvbuf), 20 4 reserved2
 *     24    8 drops
 */
struct wasmtune_udp_drop_record {
	__u16 kind;
	__u8 cause;
	__u8 locked;
	__u16 local_port;
	__u16 reserved;
	__u64 netns_cookie;
	__u32 buffer_bytes;
	__u32 reserved2;
	__u64 drops;
};

#endif /* WASMTUNE_H */
