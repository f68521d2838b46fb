//! Host-side bindings of the policy contract in `wit/policy.wit`, and short
//! names for the types the rest of the host passes around.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasmtune:policy/policy",
    imports: { default: trappable },
    additional_derives: [PartialEq, serde::Serialize, serde::Deserialize],
});

pub use exports::wasmtune::policy::handler::{Config as PolicyConfig, Info as PolicyInfo};
pub use wasmtune::policy::tcp::{IpPrefix, PeerChange, PeerSettings};
pub use wasmtune::policy::types::{
    AddressFamily, AdminOverride, AdminRelease, BacklogDrops, Bounds, BufferDirection, ConnectionSummary, Denial,
    Event, EventKind, FragmentMemory, IpAddr, MemoryLevel, MemoryPressure, NamespaceChange, NeighbourTable, Protocol,
    RetransmitBurst, RouteTable, SoftnetSqueeze, SynOverflow, SysctlValue, TcpBufferLimit, UdpDrop, UdpDropCause,
};
