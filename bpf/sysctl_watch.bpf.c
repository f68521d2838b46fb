// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Administrator writes to net.* sysctls.
 *
 * sysctl_watch_writes
 *   Purpose: sees every sysctl access by a task in the cgroup it is attached
 *   to (the host attaches it to the cgroup-v2 root: every task); for writes
 *   to net.* by any process but the host (`host_tgid`, set before load), it
 *   posts one `struct wasmtune_sysctl_write` naming the sysctl, the writer's
 *   pid and command, the network namespace of the sysctl table written and
 *   the value written. It never refuses an access (always returns 1).
 *
 *   The namespace is the table's, never the writer's: a /proc/sys file keeps
 *   the namespace it was opened in, so a descriptor opened in one namespace
 *   and passed to a process in another writes the first one's value. An
 *   unprivileged user in a namespace of their own must not be able to make
 *   a write look like one to the host's namespace. The table's namespace is
 *   the `struct net` whose `sysctls` set holds the table's header; a table
 *   outside any namespace's set (none under net/ today) is posted with
 *   cookie 0, which the host ignores.
 *   Attach point: cgroup/sysctl on the cgroup-v2 root, through a link (not
 *   pinned: it goes with the host's descriptor).
 *   Minimum kernel: 5.2 (cgroup/sysctl); the table's namespace is read with
 *   bpf_probe_read_kernel through the context's kernel layout
 *   (struct bpf_sysctl_kern, CO-RE) and needs the net_cookie (5.7).
 *
 * sysctl_watch_writes_pidns
 *   The same, loaded instead when the host runs in a pid namespace of its
 *   own (a container): the host's writes are told by its thread-group id in
 *   that namespace (bpf_get_ns_current_pid_tgid). Minimum kernel: 6.10
 *   (that helper in cgroup programs); before, the host falls back to the
 *   first program and says that its own writes there look like another
 *   process's.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "peer.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the host before load: its own thread-group id, whose writes are its own. */
const volatile __u32 host_tgid = 0;
/* Set by the host before load when it runs in a pid namespace of its own (a
 * container): that namespace's device and inode, in which host_tgid is its
 * thread-group id. */
const volatile __u64 host_pidns_dev = 0;
const volatile __u64 host_pidns_ino = 0;

const volatile struct wasmtune_sysctl_write sysctl_write_layout = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024);
} sysctl_writes SEC(".maps");

/* Reserve failures (ring full); index 0 only. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} sysctl_lost SEC(".maps");

/*
 * The cookie of the network namespace whose sysctl table this access goes
 * to, or 0. The context is a struct bpf_sysctl_kern in the kernel; only its
 * `write` and `file_pos` fields may be read directly, so the rest is read
 * with probe reads.
 */
static __always_inline __u64 table_netns_cookie(struct bpf_sysctl *ctx)
{
	struct bpf_sysctl_kern *kctx = (void *)ctx;
	struct ctl_table_header *head;
	struct ctl_table_set *set;
	struct net *net;

	head = BPF_CORE_READ(kctx, head);
	if (!head)
		return 0;
	set = BPF_CORE_READ(head, set);
	if (!set)
		return 0;
	net = (void *)set - bpf_core_field_offset(struct net, sysctls);
	return BPF_CORE_READ(net, net_cookie);
}

/* Posts one record for a write to net.* by `tgid` (as the initial pid
 * namespace numbers it). */
static __always_inline int post_write(struct bpf_sysctl *ctx, __u32 tgid)
{
	struct wasmtune_sysctl_write *rec;
	long len;

	rec = bpf_ringbuf_reserve(&sysctl_writes, sizeof(*rec), 0);
	if (!rec) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&sysctl_lost, &zero);

		if (lost)
			*lost += 1;
		return 1;
	}
	__builtin_memset(rec->name, 0, sizeof(rec->name));
	bpf_sysctl_get_name(ctx, rec->name, sizeof(rec->name), 0);
	if (rec->name[0] != 'n' || rec->name[1] != 'e' || rec->name[2] != 't' || rec->name[3] != '/') {
		bpf_ringbuf_discard(rec, BPF_RB_NO_WAKEUP);
		return 1;
	}
	rec->pid = tgid;
	bpf_get_current_comm(rec->comm, sizeof(rec->comm));
	rec->netns_cookie = table_netns_cookie(ctx);
	len = bpf_sysctl_get_new_value(ctx, rec->value, sizeof(rec->value));
	/* -E2BIG: truncated but copied; other errors: nothing usable. */
	if (len == -7)
		len = sizeof(rec->value);
	rec->value_len = len > 0 && len <= sizeof(rec->value) ? len : 0;
	bpf_ringbuf_submit(rec, 0);
	return 1;
}

SEC("cgroup/sysctl")
int sysctl_watch_writes(struct bpf_sysctl *ctx)
{
	__u32 tgid;

	if (!ctx->write)
		return 1;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == host_tgid)
		return 1;
	return post_write(ctx, tgid);
}

/* The same, for a host in a pid namespace of its own, whose thread-group id
 * the initial namespace numbers differently: its writes are recognised by
 * its id in its own namespace (cgroup programs may ask since Linux 6.10;
 * the host loads this one only where it needs it). */
SEC("cgroup/sysctl")
int sysctl_watch_writes_pidns(struct bpf_sysctl *ctx)
{
	struct bpf_pidns_info own = {};

	if (!ctx->write)
		return 1;
	if (!bpf_get_ns_current_pid_tgid(host_pidns_dev, host_pidns_ino, &own, sizeof(own)) && own.tgid == host_tgid)
		return 1;
	return post_write(ctx, bpf_get_current_pid_tgid() >> 32);
}
