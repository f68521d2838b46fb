//! The kernel hooks wasmtune attaches to, in one table: what each one feeds,
//! and which programs of the BPF object can serve it, preferred first.
//!
//! The loader, the drain thread's status report and `wasmtune support` all
//! read this table, so a hook is named the same way everywhere.

/// A kernel hook and the programs that can serve it.
#[derive(Debug)]
pub(crate) struct Hook {
    /// Short name, as in logs and `HookStatus::name`.
    pub name: &'static str,
    /// The event (and side) this hook produces.
    pub feeds: &'static str,
    /// Programs that can serve the hook, preferred first. Only one of them
    /// is loaded: the first that this kernel accepts.
    pub candidates: &'static [Candidate],
}

/// One program of `bpf/tracepoints.bpf.c` and where it attaches.
#[derive(Debug)]
pub(crate) struct Candidate {
    /// The C function name of the program.
    pub program: &'static str,
    /// `SEC()` of the program: attach type and tracepoint.
    pub attach_point: &'static str,
}

impl Hook {
    /// The attach point reported when no candidate works.
    pub fn preferred(&self) -> &'static Candidate {
        &self.candidates[0]
    }
}

/// Every hook, in the order they are loaded and reported.
pub(crate) const HOOKS: &[Hook] = &[
    Hook {
        name: "tcp_rcvbuf_grow",
        feeds: "tcp-buffer-limit (receive)",
        candidates: &[
            Candidate { program: "tp_btf_rcvbuf_grow", attach_point: "tp_btf/tcp_rcvbuf_grow" },
            Candidate { program: "raw_tp_rcvbuf_grow", attach_point: "raw_tp/tcp_rcvbuf_grow" },
        ],
    },
    Hook {
        name: "tcp_rcv_space_adjust",
        feeds: "tcp-buffer-limit (receive)",
        candidates: &[
            Candidate { program: "tp_btf_rcv_space_adjust", attach_point: "tp_btf/tcp_rcv_space_adjust" },
            Candidate { program: "raw_tp_rcv_space_adjust", attach_point: "raw_tp/tcp_rcv_space_adjust" },
        ],
    },
    Hook {
        name: "tcp_sendmsg_locked",
        feeds: "tcp-buffer-limit (send)",
        candidates: &[
            Candidate { program: "tp_btf_sendmsg_locked", attach_point: "tp_btf/tcp_sendmsg_locked" },
            Candidate { program: "raw_tp_sendmsg_locked", attach_point: "raw_tp/tcp_sendmsg_locked" },
        ],
    },
    Hook {
        name: "sock_exceed_buf_limit",
        feeds: "memory-pressure",
        candidates: &[Candidate {
            program: "tp_btf_sock_exceed_buf_limit",
            attach_point: "tp_btf/sock_exceed_buf_limit",
        }],
    },
    Hook {
        name: "kfree_skb",
        feeds: "backlog-drops",
        candidates: &[Candidate { program: "tp_btf_kfree_skb", attach_point: "tp_btf/kfree_skb" }],
    },
    Hook {
        name: "inet_sock_set_state",
        feeds: "connection-summary",
        candidates: &[Candidate { program: "tp_btf_inet_sock_set_state", attach_point: "tp_btf/inet_sock_set_state" }],
    },
    Hook {
        name: "tcp_retransmit_skb",
        feeds: "retransmit-burst",
        candidates: &[Candidate { program: "tp_btf_tcp_retransmit_skb", attach_point: "tp_btf/tcp_retransmit_skb" }],
    },
    Hook {
        name: "neigh_create",
        feeds: "neighbour-table",
        candidates: &[Candidate { program: "tp_btf_neigh_create", attach_point: "tp_btf/neigh_create" }],
    },
    Hook {
        name: "udp_fail_queue_rcv_skb",
        feeds: "udp-drop",
        candidates: &[Candidate {
            program: "tp_btf_udp_fail_queue_rcv_skb",
            attach_point: "tp_btf/udp_fail_queue_rcv_skb",
        }],
    },
];

/// Whether `feature` names the attach point of some hook's program.
pub(crate) fn is_attach_point(feature: &str) -> bool {
    HOOKS.iter().flat_map(|h| h.candidates).any(|c| c.attach_point == feature)
}
