//! Host-side bindings of the policy contract in `wit/policy.wit`, and short
//! names for the types the rest of the host passes around.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasmtune:policy/policy",
    imports: { default: trappable },
    additional_derives: [PartialEq],
});

pub use exports::wasmtune::policy::handler::{Config as PolicyConfig, Info as PolicyInfo};
pub use wasmtune::policy::types::{
    Bounds, BufferDirection, Denial, Event, EventKind, IpAddr, SysctlValue, TcpBufferLimit,
};
