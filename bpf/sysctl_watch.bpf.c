// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * Administrator writes to net.* sysctls.
 *
 * sysctl_watch_writes
 *   Purpose: sees every sysctl access by a task in the cgroup it is attached
 *   to (the host attaches it to the cgroup-v2 root: every task); for writes
 *   to net.* by any process but the host (`host_tgid`, set before load), it
 *   posts one `struct wasmtune_sysctl_write` naming the sysctl, the writer's
 *   pid and command, its network namespace and the value written. It never
 *   refuses an access (always returns 1).
 *   Attach point: cgroup/sysctl on the cgroup-v2 root, through a link (not
 *   pinned: it goes with the host's descriptor).
 *   Minimum kernel: 5.2 (cgroup/sysctl); the writer's namespace is read
 *   through the current task's BTF (bpf_get_current_task_btf, 5.11).
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>

#include "peer.h"

char LICENSE[] SEC("license") = "GPL";

/* Set by the host before load: its own thread-group id, whose writes are its own. */
const volatile __u32 host_tgid = 0;

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

SEC("cgroup/sysctl")
int sysctl_watch_writes(struct bpf_sysctl *ctx)
{
	struct wasmtune_sysctl_write *rec;
	struct task_struct *task;
	__u32 tgid;
	long len;

	if (!ctx->write)
		return 1;
	tgid = bpf_get_current_pid_tgid() >> 32;
	if (tgid == host_tgid)
		return 1;

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
	task = bpf_get_current_task_btf();
	rec->netns_cookie = BPF_CORE_READ(task, nsproxy, net_ns, net_cookie);
	len = bpf_sysctl_get_new_value(ctx, rec->value, sizeof(rec->value));
	/* -E2BIG: truncated but copied; other errors: nothing usable. */
	if (len == -7)
		len = sizeof(rec->value);
	rec->value_len = len > 0 && len <= sizeof(rec->value) ? len : 0;
	bpf_ringbuf_submit(rec, 0);
	return 1;
}
