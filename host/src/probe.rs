//! One line of `wasmtune support`: a feature probed, whether it works and
//! why. Each event source probes its own features; support gathers them.

/// One probed feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeLine {
    /// What was probed, e.g. `tp_btf/tcp_rcvbuf_grow` or `kernel BTF`.
    pub feature: String,
    /// Whether it works here.
    pub ok: bool,
    /// What it is for when it works; why not when it does not.
    pub detail: String,
}
