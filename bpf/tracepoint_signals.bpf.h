/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * The tracepoint signals beyond tcp-buffer-limit, compiled into the same
 * object as bpf/tracepoints.bpf.c (included at its end) so they share its
 * ring buffer, lost counter and settings. Each program is a hook of its own
 * for the host: loaded and attached alone, so a kernel without one of these
 * tracepoints loses only the signal it feeds.
 *
 * Nothing here posts per packet: every record is filtered and rate-limited
 * per (netns, signal, subject) by `signal_interval_ns`, or aggregated
 * (backlog drops per CPU, UDP drops per netns and cause) and posted with the
 * count since the previous record.
 *
 * tp_btf_sock_exceed_buf_limit   tp_btf/sock_exceed_buf_limit (4.16; BTF 5.5)
 *   memory-pressure: the protocol's allocated pages above sysctl_mem[1]
 *   (pressure) or at/above sysctl_mem[2] (exhausted). The host decides
 *   "relieved" from /proc/net/sockstat.
 * tp_btf_kfree_skb               tp_btf/kfree_skb (reason since 5.17)
 *   backlog-drops (SKB_DROP_REASON_CPU_BACKLOG, counted per CPU, posted at
 *   most every signal_interval_ns per CPU). syn-overflow is not taken from
 *   here: most listen drops (a SYN meeting a full accept or SYN queue) are
 *   consume_skb, not kfree_skb, so the host reads the namespace's MIB
 *   counters instead (host/src/signals).
 * tp_btf_inet_sock_set_state     tp_btf/inet_sock_set_state (4.16)
 *   connection-summary: start time kept at ESTABLISHED, record at CLOSE;
 *   at most connection_summaries_per_s records per netns and second, the
 *   rest counted in `suppressed`.
 * tp_btf_tcp_retransmit_skb      tp_btf/tcp_retransmit_skb (4.16)
 *   retransmit-burst: total_retrans * 64 > segs_out, per peer.
 * tp_btf_neigh_create            tp_btf/neigh_create (5.9)
 *   neighbour-table: entries >= gc_thresh3 - (gc_thresh3 >> near_limit_shift), and
 *   once back to <= gc_thresh3 / 4 after that.
 * tp_btf_udp_fail_queue_rcv_skb  tp_btf/udp_fail_queue_rcv_skb (sk arg 6.4)
 *   udp-drop: -ENOMEM (receive queue full) and -ENOBUFS (udp_mem).
 */
#ifndef WASMTUNE_TRACE_SIGNALS_H
#define WASMTUNE_TRACE_SIGNALS_H

#define WASMTUNE_IPPROTO_TCP 6
#define WASMTUNE_IPPROTO_UDP 17
#define WASMTUNE_ENOMEM 12
#define WASMTUNE_ENOBUFS 105

/* enum tcp_state values (macros in the kernel's headers, not in BTF). */
#define WASMTUNE_TCP_ESTABLISHED 1
#define WASMTUNE_TCP_CLOSE 7

/* Set by the host before load: the rate limit of the signals in this file. */
const volatile __u64 signal_interval_ns = 100000000;
/* Set by the host before load: connection summaries per netns and second
 * (0: no cap). A flood of short connections must not fill the ring. */
const volatile __u32 connection_summaries_per_s = 500;

#define WASMTUNE_NS_PER_S 1000000000ULL

/* Keep every record type in the object's BTF (see record_layout). */
const volatile struct wasmtune_memory_pressure_record memory_pressure_layout = {};
const volatile struct wasmtune_connection_summary_record connection_summary_layout = {};
const volatile struct wasmtune_retransmit_burst_record retransmit_burst_layout = {};
const volatile struct wasmtune_backlog_drops_record backlog_drops_layout = {};
const volatile struct wasmtune_neighbour_table_record neighbour_table_layout = {};
const volatile struct wasmtune_udp_drop_record udp_drop_layout = {};

/* Rate-limit state of the signals here: (netns, kind, subject) -> state. */
struct signal_key {
	__u64 netns_cookie;
	__u32 kind;
	__u32 subject;
};

struct signal_state {
	__u64 last_post_ns;
	/* Aggregated signals: events counted, and counted at the last post. */
	__u64 total;
	__u64 posted;
	/* neighbour-table: set once "near" was posted, for the "well below" one. */
	__u64 was_near;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct signal_key);
	__type(value, struct signal_state);
} signal_states SEC(".maps");

/* Backlog drops per CPU (index 0): counted, and when last posted. */
struct backlog_state {
	__u64 drops;
	__u64 last_post_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct backlog_state);
} backlog_states SEC(".maps");

/* Start of every established TCP connection, keyed by socket address. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} connection_starts SEC(".maps");

/* Connection summaries not posted because their netns was over its cap
 * (index 0, per CPU); the host adds them to what it reports as lost. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} suppressed SEC(".maps");

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *count = bpf_map_lookup_elem(&lost, &zero);

	if (count)
		*count += 1;
}

static __always_inline __u64 netns_of_sock(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, net_cookie);
}

/* The state of a key, created zeroed if new; NULL only if the map refuses. */
static __always_inline struct signal_state *signal_state_of(struct signal_key *key)
{
	struct signal_state *state = bpf_map_lookup_elem(&signal_states, key);
	struct signal_state fresh = {};

	if (state)
		return state;
	bpf_map_update_elem(&signal_states, key, &fresh, BPF_NOEXIST);
	return bpf_map_lookup_elem(&signal_states, key);
}

/* Whether a record may go out now; marks it posted if so. A fresh state
 * (last_post_ns == 0) always may. Races between CPUs cost an extra record. */
static __always_inline bool signal_due(struct signal_state *state, __u64 now)
{
	if (state->last_post_ns && now - state->last_post_ns < signal_interval_ns)
		return false;
	state->last_post_ns = now;
	return true;
}

static __always_inline void read_peer(const struct sock *sk, __u8 *family, __u8 addr[16], __u16 *port)
{
	__u16 f = BPF_CORE_READ(sk, __sk_common.skc_family);

	__builtin_memset(addr, 0, 16);
	*port = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (f == WASMTUNE_AF_INET6) {
		*family = WASMTUNE_AF_INET6;
		BPF_CORE_READ_INTO((__u8(*)[16])addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		*family = WASMTUNE_AF_INET;
		BPF_CORE_READ_INTO((__be32 *)addr, sk, __sk_common.skc_daddr);
	}
}

static __always_inline void read_congestion(const struct sock *sk, char name[WASMTUNE_CA_NAME_LEN])
{
	const struct inet_connection_sock *icsk = (const struct inet_connection_sock *)sk;
	const struct tcp_congestion_ops *ops = BPF_CORE_READ(icsk, icsk_ca_ops);

	__builtin_memset(name, 0, WASMTUNE_CA_NAME_LEN);
	if (ops)
		bpf_probe_read_kernel_str(name, WASMTUNE_CA_NAME_LEN, &ops->name);
}

/* ---- memory-pressure ---------------------------------------------------- */

SEC("tp_btf/sock_exceed_buf_limit")
int BPF_PROG(tp_btf_sock_exceed_buf_limit, struct sock *sk, struct proto *prot, long allocated, int kind)
{
	struct wasmtune_memory_pressure_record *rec;
	struct signal_state *state;
	struct signal_key key = {};
	long limits[3] = {};
	long *sysctl_mem = BPF_CORE_READ(prot, sysctl_mem);
	__u16 protocol = BPF_CORE_READ(sk, sk_protocol);
	__u8 level, proto;

	if (protocol == WASMTUNE_IPPROTO_TCP)
		proto = WASMTUNE_PROTOCOL_TCP;
	else if (protocol == WASMTUNE_IPPROTO_UDP)
		proto = WASMTUNE_PROTOCOL_UDP;
	else
		return 0;
	if (!sysctl_mem || bpf_probe_read_kernel(limits, sizeof(limits), sysctl_mem))
		return 0;
	/* Below [1] the refusal was the socket's own buffer limit, not memory. */
	if (allocated <= limits[1])
		return 0;
	level = allocated >= limits[2] ? WASMTUNE_MEMORY_EXHAUSTED : WASMTUNE_MEMORY_PRESSURE;

	key.netns_cookie = netns_of_sock(sk);
	key.kind = WASMTUNE_RECORD_MEMORY_PRESSURE;
	key.subject = proto << 8 | level;
	state = signal_state_of(&key);
	if (!state || !signal_due(state, bpf_ktime_get_ns()))
		return 0;

	rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count_lost();
		return 0;
	}
	rec->kind = WASMTUNE_RECORD_MEMORY_PRESSURE;
	rec->protocol = proto;
	rec->level = level;
	rec->reserved = 0;
	rec->netns_cookie = key.netns_cookie;
	rec->pages = allocated;
	rec->limits[0] = limits[0];
	rec->limits[1] = limits[1];
	rec->limits[2] = limits[2];
	bpf_ringbuf_submit(rec, post_flags());
	return 0;
}

/* ---- backlog-drops (kfree_skb) ------------------------------------------ */

static __always_inline int backlog_drop(struct sk_buff *skb)
{
	struct wasmtune_backlog_drops_record *rec;
	struct backlog_state *state;
	__u32 zero = 0;
	__u64 now;

	state = bpf_map_lookup_elem(&backlog_states, &zero);
	if (!state)
		return 0;
	state->drops += 1;
	now = bpf_ktime_get_ns();
	if (state->last_post_ns && now - state->last_post_ns < signal_interval_ns)
		return 0;

	rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count_lost();
		return 0;
	}
	state->last_post_ns = now;
	rec->kind = WASMTUNE_RECORD_BACKLOG_DROPS;
	rec->reserved = 0;
	rec->cpu = bpf_get_smp_processor_id();
	rec->netns_cookie = BPF_CORE_READ(skb, dev, nd_net.net, net_cookie);
	rec->drops = state->drops;
	state->drops = 0;
	bpf_ringbuf_submit(rec, post_flags());
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(tp_btf_kfree_skb, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	if (reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_CPU_BACKLOG))
		return backlog_drop(skb);
	return 0;
}

/* ---- connection-summary ------------------------------------------------- */

/* Whether this netns may post one more summary in the current one-second
 * window; counts the summary in `suppressed` if not. Races between CPUs
 * only let a few more through. */
static __always_inline bool summary_allowed(__u64 netns_cookie, __u64 now)
{
	struct signal_key key = {
		.netns_cookie = netns_cookie,
		.kind = WASMTUNE_RECORD_CONNECTION_SUMMARY,
	};
	struct signal_state *state;
	__u32 zero = 0;
	__u64 *count;

	if (!connection_summaries_per_s)
		return true;
	state = signal_state_of(&key);
	if (!state)
		return true;
	if (now - state->last_post_ns >= WASMTUNE_NS_PER_S) {
		state->last_post_ns = now;
		state->total = 0;
	}
	if (state->total < connection_summaries_per_s) {
		state->total += 1;
		return true;
	}
	count = bpf_map_lookup_elem(&suppressed, &zero);
	if (count)
		*count += 1;
	return false;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_btf_inet_sock_set_state, const struct sock *sk, const int oldstate, const int newstate)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	struct wasmtune_connection_summary_record *rec;
	__u64 key = (__u64)sk;
	__u64 now, *started, duration_ns, rate, interval_us, average;

	if (BPF_CORE_READ(sk, sk_protocol) != WASMTUNE_IPPROTO_TCP)
		return 0;
	now = bpf_ktime_get_ns();
	if (newstate == WASMTUNE_TCP_ESTABLISHED) {
		bpf_map_update_elem(&connection_starts, &key, &now, BPF_ANY);
		return 0;
	}
	if (newstate != WASMTUNE_TCP_CLOSE)
		return 0;
	started = bpf_map_lookup_elem(&connection_starts, &key);
	if (!started)
		return 0; /* never established (or seen before the host started) */
	duration_ns = now - *started;
	bpf_map_delete_elem(&connection_starts, &key);
	if (!summary_allowed(netns_of_sock(sk), now))
		return 0;

	rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count_lost();
		return 0;
	}
	rec->kind = WASMTUNE_RECORD_CONNECTION_SUMMARY;
	rec->reserved = 0;
	read_peer(sk, &rec->family, rec->remote_addr, &rec->remote_port);
	/* skc_num is already cleared (the port released) when the state
	 * becomes CLOSE; the source port stays. */
	rec->local_port = bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	rec->netns_cookie = netns_of_sock(sk);
	read_congestion(sk, rec->congestion);
	rec->min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
	rec->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	rec->segs_out = BPF_CORE_READ(tp, segs_out);
	rec->retransmits = BPF_CORE_READ(tp, total_retrans);
	rec->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	rec->bytes_received = BPF_CORE_READ(tp, bytes_received);
	rec->duration_ms = duration_ns / 1000000;
	/* The highest delivery rate is not kept by the kernel: report the larger
	 * of the last rate sample (what tcpi_delivery_rate shows) and the
	 * average over the connection's life, a floor on the true maximum. */
	interval_us = BPF_CORE_READ(tp, rate_interval_us);
	rate = 0;
	if (interval_us)
		rate = (__u64)BPF_CORE_READ(tp, rate_delivered) * BPF_CORE_READ(tp, mss_cache) * 1000000 / interval_us;
	average = duration_ns ? rec->bytes_acked * 1000000000 / duration_ns : 0;
	rec->max_delivery_rate = rate > average ? rate : average;
	rec->reserved2 = 0;
	bpf_ringbuf_submit(rec, post_flags());
	return 0;
}

/* ---- retransmit-burst --------------------------------------------------- */

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tp_btf_tcp_retransmit_skb, const struct sock *sk, const struct sk_buff *skb, int err)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	struct wasmtune_retransmit_burst_record *rec;
	struct signal_state *state;
	struct signal_key key = {};
	__u32 segs_out = BPF_CORE_READ(tp, segs_out);
	__u32 retrans = BPF_CORE_READ(tp, total_retrans);
	__u32 peer[4] = {};

	if (!segs_out || (__u64)retrans * 64 <= segs_out)
		return 0;
	BPF_CORE_READ_INTO(&peer, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr32);
	key.netns_cookie = netns_of_sock(sk);
	key.kind = WASMTUNE_RECORD_RETRANSMIT_BURST;
	/* One state per peer address (folded; a collision only shares a limit). */
	key.subject = BPF_CORE_READ(sk, __sk_common.skc_daddr) ^ peer[0] ^ peer[1] ^ peer[2] ^ peer[3];
	state = signal_state_of(&key);
	if (!state || !signal_due(state, bpf_ktime_get_ns()))
		return 0;

	rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count_lost();
		return 0;
	}
	rec->kind = WASMTUNE_RECORD_RETRANSMIT_BURST;
	rec->reserved = 0;
	rec->reserved2 = 0;
	read_peer(sk, &rec->family, rec->remote_addr, &rec->remote_port);
	rec->netns_cookie = key.netns_cookie;
	read_congestion(sk, rec->congestion);
	rec->segs_out = segs_out;
	rec->retransmits = retrans;
	bpf_ringbuf_submit(rec, post_flags());
	return 0;
}

/* ---- neighbour-table ---------------------------------------------------- */

/* Addresses in the device's first prefix of the table's family, 0 if none. */
static __always_inline __u64 address_space(const struct net_device *dev, __u16 family)
{
	__u32 host_bits;

	if (family == WASMTUNE_AF_INET) {
		struct in_ifaddr *ifa = BPF_CORE_READ(dev, ip_ptr, ifa_list);

		if (!ifa)
			return 0;
		host_bits = 32 - BPF_CORE_READ(ifa, ifa_prefixlen);
	} else {
		struct inet6_dev *idev = BPF_CORE_READ(dev, ip6_ptr);
		struct list_head *first, *head;
		struct inet6_ifaddr *ifa;

		if (!idev)
			return 0;
		head = &idev->addr_list;
		first = BPF_CORE_READ(idev, addr_list.next);
		if (!first || first == head)
			return 0;
		ifa = container_of(first, struct inet6_ifaddr, if_list);
		host_bits = 128 - BPF_CORE_READ(ifa, prefix_len);
	}
	if (host_bits >= 64)
		return ~0ULL;
	return 1ULL << host_bits;
}

SEC("tp_btf/neigh_create")
int BPF_PROG(tp_btf_neigh_create, struct neigh_table *tbl, struct net_device *dev, const void *pkey,
	     const struct neighbour *n, bool exempt_from_gc)
{
	struct wasmtune_neighbour_table_record *rec;
	struct signal_state *state;
	struct signal_key key = {};
	__u16 family = BPF_CORE_READ(tbl, family);
	int entries = BPF_CORE_READ(tbl, entries.counter);
	int limit = BPF_CORE_READ(tbl, gc_thresh3);
	bool near, low;

	if (limit <= 0 || (family != WASMTUNE_AF_INET && family != WASMTUNE_AF_INET6))
		return 0;
	near = entries >= limit - (limit >> near_limit_shift);
	low = entries <= limit / 4;
	if (!near && !low)
		return 0;
	key.netns_cookie = BPF_CORE_READ(dev, nd_net.net, net_cookie);
	key.kind = WASMTUNE_RECORD_NEIGHBOUR_TABLE;
	key.subject = family;
	if (low) {
		/* Only the way down is news; a small table is the normal case. */
		state = bpf_map_lookup_elem(&signal_states, &key);
		if (!state || !state->was_near)
			return 0;
	} else {
		state = signal_state_of(&key);
		if (!state)
			return 0;
	}
	if (!signal_due(state, bpf_ktime_get_ns()))
		return 0;
	state->was_near = near;

	rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count_lost();
		return 0;
	}
	rec->kind = WASMTUNE_RECORD_NEIGHBOUR_TABLE;
	rec->family = family;
	rec->reserved = 0;
	rec->ifindex = BPF_CORE_READ(dev, ifindex);
	rec->netns_cookie = key.netns_cookie;
	rec->entries = entries;
	rec->limit = limit;
	rec->address_space = address_space(dev, family);
	bpf_ringbuf_submit(rec, post_flags());
	return 0;
}

/* ---- udp-drop ----------------------------------------------------------- */

SEC("tp_btf/udp_fail_queue_rcv_skb")
int BPF_PROG(tp_btf_udp_fail_queue_rcv_skb, int rc, struct sock *sk, struct sk_buff *skb)
{
	struct wasmtune_udp_drop_record *rec;
	struct signal_state *state;
	struct signal_key key = {};
	__u8 cause;

	if (rc == -WASMTUNE_ENOMEM)
		cause = WASMTUNE_UDP_RECEIVE_QUEUE_FULL;
	else if (rc == -WASMTUNE_ENOBUFS)
		cause = WASMTUNE_UDP_MEMORY_LIMIT;
	else
		return 0;
	if (!sk)
		return 0;
	key.netns_cookie = netns_of_sock(sk);
	key.kind = WASMTUNE_RECORD_UDP_DROP;
	key.subject = cause;
	state = signal_state_of(&key);
	if (!state)
		return 0;
	__sync_fetch_and_add(&state->total, 1);
	if (!signal_due(state, bpf_ktime_get_ns()))
		return 0;

	rec = bpf_ringbuf_reserve(&events, sizeof(*rec), 0);
	if (!rec) {
		count_lost();
		return 0;
	}
	rec->kind = WASMTUNE_RECORD_UDP_DROP;
	rec->cause = cause;
	rec->locked = (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks) & SOCK_RCVBUF_LOCK) != 0;
	rec->local_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	rec->reserved = 0;
	rec->netns_cookie = key.netns_cookie;
	rec->buffer_bytes = BPF_CORE_READ(sk, sk_rcvbuf);
	rec->reserved2 = 0;
	rec->drops = state->total - state->posted;
	state->posted = state->total;
	bpf_ringbuf_submit(rec, post_flags());
	return 0;
}

#endif /* WASMTUNE_TRACE_SIGNALS_H */
