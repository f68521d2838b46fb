// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * TCP sockets whose buffers have grown to (nearly) the netns-wide limit.
 *
 * Feeds the `tcp-buffer-limit` event. Every program below reads the socket,
 * filters in the kernel and posts at most one `struct
 * wasmtune_tcp_buffer_record` per (netns, direction) and `min_interval_ns`
 * into the `events` ring buffer, without waking user space (the host drains
 * the ring on a short timer, which costs far less than a wakeup per record).
 *
 * Filters, cheapest first:
 *   1. hot hooks only: 1 call in 16 per CPU is looked at (sampling);
 *   2. sockets whose application fixed the size (SO_RCVBUF / SO_SNDBUF, the
 *      SOCK_*BUF_LOCK bits of sk_userlocks) are skipped: the kernel would not
 *      grow them, so a larger limit cannot help them;
 *   3. buffer >= limit - (limit >> near_limit_shift);
 *   4. one record per (netns cookie, direction) per min_interval_ns.
 *
 * A reserve that fails (ring full) is counted in `lost`, which the host
 * reads and reports.
 *
 * Programs (each is loaded and attached on its own by the host, so one that
 * this kernel lacks does not take the others down):
 *
 * tp_btf_rcvbuf_grow
 *   Purpose: receive side; fires when TCP wants to grow sk_rcvbuf (a few
 *   times per second per busy socket), so it is not sampled.
 *   Attach point: tp_btf/tcp_rcvbuf_grow
 *   Minimum kernel: 6.16 (the tracepoint is new there); BTF-enabled
 *   tracepoints need 5.5.
 *   Fallback: raw_tp_rcvbuf_grow (raw_tp/tcp_rcvbuf_grow) where BTF-typed
 *   tracepoints are unavailable; on kernels without the tracepoint at all,
 *   tp_btf_rcv_space_adjust alone carries the receive side.
 *
 * tp_btf_rcv_space_adjust
 *   Purpose: receive side for sockets already at the limit (they stop
 *   asking to grow); fires on nearly every recvmsg, so it is sampled.
 *   Attach point: tp_btf/tcp_rcv_space_adjust
 *   Minimum kernel: 5.5 (tracepoint since 4.16).
 *   Fallback: raw_tp_rcv_space_adjust (raw_tp/tcp_rcv_space_adjust).
 *
 * tp_btf_sendmsg_locked
 *   Purpose: send side: sk_sndbuf against tcp_wmem[2], sk_wmem_queued as the
 *   queued bytes; fires on every sendmsg, so it is sampled.
 *   Attach point: tp_btf/tcp_sendmsg_locked
 *   Minimum kernel: 6.13 (the tracepoint is new there).
 *   Fallback: raw_tp_sendmsg_locked (raw_tp/tcp_sendmsg_locked).
 *
 * The object also carries every other tracepoint signal (memory pressure,
 * connection summaries, retransmit bursts, backlog drops, neighbour tables,
 * UDP drops): see tracepoint_signals.bpf.h, included at the end.
 *
 * Every kernel read goes through BPF_CORE_READ (CO-RE), so one body serves
 * both the BTF-typed and the raw tracepoint; kernel BTF is required either
 * way (the netns cookie is read as the plain u64 `struct net` has since 5.12).
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "wasmtune.h"

char LICENSE[] SEC("license") = "GPL";

/* include/net/sock.h: bits of sk_userlocks (macros, so not in BTF). */
#define SOCK_SNDBUF_LOCK 1
#define SOCK_RCVBUF_LOCK 2

/* Hot hooks look at one call in (SAMPLE_MASK + 1) per CPU. */
#define SAMPLE_MASK 15

/* Set by the host before load: "near" means within limit >> near_limit_shift. */
const volatile __u32 near_limit_shift = 2;
/* Set by the host before load: the rate limit per (netns, direction). */
const volatile __u64 min_interval_ns = 25000000;

/* Keeps the record type in the object's BTF, so the generated skeleton
 * carries a copy whose size the host checks against its decoder. */
const volatile struct wasmtune_tcp_buffer_record record_layout = {};

#define EVENTS_RING_BYTES (256 * 1024)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, EVENTS_RING_BYTES);
} events SEC(".maps");

/* Records are posted with the kernel's adaptive notification: only the
 * first record after user space has drained the ring wakes it, which then
 * lets records gather for a drain interval (one wake-up per drain at most;
 * each can preempt the traffic watched, and an idle ring wakes nobody). A
 * ring over a quarter full wakes it at once, so a burst cannot overflow the
 * ring before the next drain. */
static __always_inline __u64 post_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > EVENTS_RING_BYTES / 4 ? BPF_RB_FORCE_WAKEUP : 0;
}

/* Reserve failures (ring full), one counter per CPU; index 0 only. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

/* Per-CPU call counters of the sampled hooks, indexed by direction. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} sample_calls SEC(".maps");

struct post_key {
	__u64 netns_cookie;
	__u32 direction;
	__u32 reserved;
};

/* Time of the last record per (netns, direction). LRU, so namespaces that
 * come and go never fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct post_key);
	__type(value, __u64);
} last_post SEC(".maps");

static __always_inline bool sampled(__u32 direction)
{
	__u32 *calls = bpf_map_lookup_elem(&sample_calls, &direction);

	if (!calls)
		return false;
	*calls += 1;
	return (*calls & SAMPLE_MASK) == 0;
}

/*
 * Two CPUs racing on the same key may both post within one interval; that
 * costs one extra record and needs no atomics the default BPF CPU lacks.
 */
static __always_inline bool rate_limit_allows(__u64 netns_cookie, __u32 direction)
{
	struct post_key key = { .netns_cookie = netns_cookie, .direction = direction };
	__u64 now = bpf_ktime_get_ns();
	__u64 *last = bpf_map_lookup_elem(&last_post, &key);

	if (last) {
		if (now - *last < min_interval_ns)
			return false;
		*last = now;
		return true;
	}
	bpf_map_update_elem(&last_post, &key, &now, BPF_ANY);
	return true;
}

static __always_inline int observe(struct sock *sk, __u32 direction)
{
	struct wasmtune_tcp_buffer_record *rec;
	struct tcp_sock *tp = (struct tcp_sock *)sk;
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	__u8 userlocks = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);
	__u64 netns_cookie;
	__u16 family;
	int buffer, limit;

	if (direction == WASMTUNE_DIRECTION_RECEIVE) {
		if (userlocks & SOCK_RCVBUF_LOCK)
			return 0;
		buffer = BPF_CORE_READ(sk, sk_rcvbuf);
		limit = BPF_CORE_READ(net, ipv4.sysctl_tcp_rmem[2]);
	} else {
		if (userlocks & SOCK_SNDBUF_LOCK)
			return 0;
		buffer = BPF_CORE_READ(sk, sk_sndbuf);
		limit = BPF_CORE_READ(net, ipv4.sysctl_tcp_wmem[2]);
	}
	if (limit <= 0 || buffer < limit - (limit >> near_limit_shift))
		return 0;

	netns_cookie = BPF_CORE_READ(net, net_cookie);
	if (!rate_limit_allows(netns_cookie, direction))
		return 0;

	rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		__u32 zero = 0;
		__u64 *count = bpf_map_lookup_elem(&lost, &zero);

		if (count)
			*count += 1;
		return 0;
	}

	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	rec->kind = WASMTUNE_RECORD_TCP_BUFFER_LIMIT;
	rec->direction = direction;
	rec->family = family == WASMTUNE_AF_INET6 ? WASMTUNE_AF_INET6 : WASMTUNE_AF_INET;
	rec->remote_port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	rec->reserved = 0;
	rec->netns_cookie = netns_cookie;
	rec->buffer_bytes = buffer;
	rec->limit_bytes = limit;
	if (direction == WASMTUNE_DIRECTION_RECEIVE)
		/* What tcp_inq() reports: received but not yet read. */
		rec->queued_bytes = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq);
	else
		rec->queued_bytes = BPF_CORE_READ(sk, sk_wmem_queued);
	rec->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	__builtin_memset(rec->remote_addr, 0, sizeof(rec->remote_addr));
	if (family == WASMTUNE_AF_INET6)
		BPF_CORE_READ_INTO(&rec->remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((__be32 *)rec->remote_addr, sk, __sk_common.skc_daddr);

	bpf_ringbuf_submit(rec, post_flags());
	return 0;
}

SEC("tp_btf/tcp_rcvbuf_grow")
int BPF_PROG(tp_btf_rcvbuf_grow, struct sock *sk, int time)
{
	return observe(sk, WASMTUNE_DIRECTION_RECEIVE);
}

SEC("tp_btf/tcp_rcv_space_adjust")
int BPF_PROG(tp_btf_rcv_space_adjust, struct sock *sk)
{
	if (!sampled(WASMTUNE_DIRECTION_RECEIVE))
		return 0;
	return observe(sk, WASMTUNE_DIRECTION_RECEIVE);
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(tp_btf_sendmsg_locked, struct sock *sk)
{
	if (!sampled(WASMTUNE_DIRECTION_SEND))
		return 0;
	return observe(sk, WASMTUNE_DIRECTION_SEND);
}

/* Fallbacks: the same bodies on raw tracepoints, loaded only when the
 * BTF-typed program of the same hook does not load. */

SEC("raw_tp/tcp_rcvbuf_grow")
int BPF_PROG(raw_tp_rcvbuf_grow, struct sock *sk, int time)
{
	return observe(sk, WASMTUNE_DIRECTION_RECEIVE);
}

SEC("raw_tp/tcp_rcv_space_adjust")
int BPF_PROG(raw_tp_rcv_space_adjust, struct sock *sk)
{
	if (!sampled(WASMTUNE_DIRECTION_RECEIVE))
		return 0;
	return observe(sk, WASMTUNE_DIRECTION_RECEIVE);
}

SEC("raw_tp/tcp_sendmsg_locked")
int BPF_PROG(raw_tp_sendmsg_locked, struct sock *sk)
{
	if (!sampled(WASMTUNE_DIRECTION_SEND))
		return 0;
	return observe(sk, WASMTUNE_DIRECTION_SEND);
}

#include "tracepoint_signals.bpf.h"
