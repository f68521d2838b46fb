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
};

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

#endif /* WASMTUNE_H */
