// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Per-destination TCP settings, and a walk of the sockets that already exist.
 *
 * sockops_peer_settings
 *   Purpose: applies the settings the host wrote into `peers` (an LPM trie
 *   keyed by netns cookie and peer prefix) to every new TCP connection whose
 *   peer matches, in the namespace the entry names. Each setting is applied
 *   where the kernel takes it:
 *     TIMEOUT_INIT            SYN (and SYN-ACK) retransmission timeout
 *     TCP_CONNECT_CB          congestion, window clamp, TCP_NODELAY (active)
 *     ACTIVE_ESTABLISHED_CB   initial cwnd (TCP_BPF_IW), loss watch (active)
 *     PASSIVE_ESTABLISHED_CB  all of the above but the SYN RTO (passive)
 *     RETRANS_CB              switch to on_loss_congestion once
 *                             total_retrans > segs_out / 64, then stop watching
 *   Attach point: sockops on the cgroup-v2 root (the host attaches it with
 *   a link; nothing is pinned, so it goes when the host's descriptor does).
 *   Minimum kernel: 5.15 (bpf_get_netns_cookie for sockops).
 *   Cost: one LPM lookup per callback; no record is posted.
 *
 * iter_tcp_existing
 *   Purpose: run once at start-up; writes one `struct
 *   wasmtune_existing_socket` per established TCP socket of every namespace
 *   into the iterator's seq_file, so the host sees long-lived connections
 *   (buffers already at their limit) that no tracepoint will report soon.
 *   Attach point: iter/tcp. Minimum kernel: 5.9.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "peer.h"

char LICENSE[] SEC("license") = "GPL";

/* Macros of the kernel's uapi headers, which vmlinux.h does not carry. */
#define AF_INET 2
#define AF_INET6 10
#define SOL_TCP 6
#define TCP_NODELAY 1
#define TCP_WINDOW_CLAMP 10
#define TCP_CONGESTION 13
#define TCP_ESTABLISHED 1

/* The kernel's tick rate, for the SYN RTO (a jiffies value); 0 if unknown. */
extern unsigned int CONFIG_HZ __kconfig __weak;

/* Keep the shared layouts in the object's BTF, so the skeleton carries
 * copies whose sizes the host checks against its encoders. */
const volatile struct wasmtune_peer_key peer_key_layout = {};
const volatile struct wasmtune_peer_settings peer_settings_layout = {};
const volatile struct wasmtune_existing_socket existing_socket_layout = {};

/* Written only by the host. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct wasmtune_peer_key);
	__type(value, struct wasmtune_peer_settings);
} peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, WASMTUNE_PEER_STAT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} peer_stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *value = bpf_map_lookup_elem(&peer_stats, &stat);

	if (value)
		*value += 1;
}

static __always_inline struct wasmtune_peer_settings *lookup_peer(struct bpf_sock_ops *skops)
{
	struct wasmtune_peer_key key = {};
	__u64 cookie = bpf_get_netns_cookie(skops);
	__u32 *addr = (__u32 *)key.addr;
	/* Every context field is read once, unconditionally: a load whose
	 * address the compiler picks by branch (ctx + 24 or ctx + 32) is a
	 * modified context pointer, which the verifier refuses. */
	__u32 family = skops->family;
	__u32 ip4 = skops->remote_ip4;
	__u32 ip6_0 = skops->remote_ip6[0];
	__u32 ip6_1 = skops->remote_ip6[1];
	__u32 ip6_2 = skops->remote_ip6[2];
	__u32 ip6_3 = skops->remote_ip6[3];

	key.prefixlen = 192;
	key.netns_hi = bpf_htonl((__u32)(cookie >> 32));
	key.netns_lo = bpf_htonl((__u32)cookie);
	if (family == AF_INET) {
		addr[2] = bpf_htonl(0x0000ffff);
		addr[3] = ip4;
	} else if (family == AF_INET6) {
		addr[0] = ip6_0;
		addr[1] = ip6_1;
		addr[2] = ip6_2;
		addr[3] = ip6_3;
	} else {
		return NULL;
	}
	return bpf_map_lookup_elem(&peers, &key);
}

static __always_inline void set_int(struct bpf_sock_ops *skops, int level, int option, int value, __u32 stat)
{
	if (bpf_setsockopt(skops, level, option, &value, sizeof(value)) == 0)
		count(stat);
	else
		count(WASMTUNE_PEER_STAT_FAILED);
}

static __always_inline void set_congestion(struct bpf_sock_ops *skops, const char *name, __u32 stat)
{
	char ca[WASMTUNE_CA_NAME_MAX];

	__builtin_memcpy(ca, name, sizeof(ca));
	ca[WASMTUNE_CA_NAME_MAX - 1] = 0;
	if (bpf_setsockopt(skops, SOL_TCP, TCP_CONGESTION, ca, sizeof(ca)) == 0)
		count(stat);
	else
		count(WASMTUNE_PEER_STAT_FAILED);
}

/* Settings taken before the handshake (active) or right after it (passive). */
static __always_inline void apply_connection_settings(struct bpf_sock_ops *skops, struct wasmtune_peer_settings *s)
{
	if (s->set & WASMTUNE_PEER_CONGESTION)
		set_congestion(skops, s->congestion, WASMTUNE_PEER_STAT_CONGESTION);
	if (s->set & WASMTUNE_PEER_WINDOW_CLAMP)
		set_int(skops, SOL_TCP, TCP_WINDOW_CLAMP, s->window_clamp, WASMTUNE_PEER_STAT_WINDOW_CLAMP);
	if (s->set & WASMTUNE_PEER_NO_DELAY)
		set_int(skops, SOL_TCP, TCP_NODELAY, s->no_delay ? 1 : 0, WASMTUNE_PEER_STAT_NO_DELAY);
}

/* Settings that need an established connection that has sent no data yet. */
static __always_inline void apply_established_settings(struct bpf_sock_ops *skops, struct wasmtune_peer_settings *s)
{
	if (s->set & WASMTUNE_PEER_INITIAL_CWND)
		set_int(skops, SOL_TCP, TCP_BPF_IW, s->initial_cwnd, WASMTUNE_PEER_STAT_INITIAL_CWND);
	if (s->set & WASMTUNE_PEER_ON_LOSS_CONGESTION)
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_RETRANS_CB_FLAG);
}

SEC("sockops")
int sockops_peer_settings(struct bpf_sock_ops *skops)
{
	struct wasmtune_peer_settings *s;
	__u32 op = skops->op;

	switch (op) {
	case BPF_SOCK_OPS_TIMEOUT_INIT:
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_RETRANS_CB:
		break;
	default:
		return 1;
	}
	s = lookup_peer(skops);
	if (!s)
		return 1;

	switch (op) {
	case BPF_SOCK_OPS_TIMEOUT_INIT:
		if ((s->set & WASMTUNE_PEER_SYN_RTO) && CONFIG_HZ) {
			__u64 jiffies = (__u64)s->syn_rto_ms * CONFIG_HZ / 1000;

			skops->reply = jiffies ? (__u32)jiffies : 1;
			count(WASMTUNE_PEER_STAT_SYN_RTO);
		}
		break;
	case BPF_SOCK_OPS_TCP_CONNECT_CB:
		count(WASMTUNE_PEER_STAT_MATCHED);
		apply_connection_settings(skops, s);
		break;
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		apply_established_settings(skops, s);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		count(WASMTUNE_PEER_STAT_MATCHED);
		apply_connection_settings(skops, s);
		apply_established_settings(skops, s);
		break;
	case BPF_SOCK_OPS_RETRANS_CB:
		if (!(s->set & WASMTUNE_PEER_ON_LOSS_CONGESTION))
			break;
		if ((__u64)skops->total_retrans * 64 <= skops->segs_out)
			break;
		set_congestion(skops, s->on_loss_congestion, WASMTUNE_PEER_STAT_LOSS_SWITCH);
		/* One switch per connection: stop watching its retransmits. */
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags & ~BPF_SOCK_OPS_RETRANS_CB_FLAG);
		break;
	}
	return 1;
}

/* include/net/sock.h */
#define SOCK_SNDBUF_LOCK 1
#define SOCK_RCVBUF_LOCK 2

SEC("iter/tcp")
int iter_tcp_existing(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct wasmtune_existing_socket rec = {};
	struct tcp_sock *tp;
	struct sock *sk;
	struct net *net;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	if (sk->__sk_common.skc_state != TCP_ESTABLISHED)
		return 0;
	net = sk->__sk_common.skc_net.net;
	rec.netns_cookie = BPF_CORE_READ(net, net_cookie);
	rec.rcvbuf = sk->sk_rcvbuf;
	rec.sndbuf = sk->sk_sndbuf;
	rec.rmem_max = BPF_CORE_READ(net, ipv4.sysctl_tcp_rmem[2]);
	rec.wmem_max = BPF_CORE_READ(net, ipv4.sysctl_tcp_wmem[2]);
	rec.rcv_queued = tp->rcv_nxt - tp->copied_seq;
	rec.snd_queued = sk->sk_wmem_queued;
	rec.srtt_us = tp->srtt_us >> 3;
	rec.remote_port = bpf_ntohs(sk->__sk_common.skc_dport);
	rec.family = sk->__sk_common.skc_family;
	rec.userlocks = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);
	if (rec.family == AF_INET6)
		BPF_CORE_READ_INTO(&rec.remote_addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	else
		BPF_CORE_READ_INTO((__be32 *)rec.remote_addr, sk, __sk_common.skc_daddr);
	bpf_seq_write(ctx->meta->seq, &rec, sizeof(rec));
	return 0;
}
