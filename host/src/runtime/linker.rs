//! What a guest can call, in one auditable list: a policy can call exactly
//! what is added here — the host capabilities ([`crate::caps`], reached
//! through [`HostLink`]) — plus WASI
//! with an empty context (no files, sockets, environment or arguments),
//! which Rust's standard library links whether or not it is used, less
//! every WASI function that could wait ([`crate::caps::no_blocking`]).

use wasmtime::component::{HasSelf, Linker};

use crate::caps::{clock, no_blocking, system};
use crate::runtime::calls::HostLink;
use crate::runtime::state::PolicyState;
use crate::wit::wasmtune::policy;

pub fn add_to_linker(linker: &mut Linker<PolicyState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    no_blocking::refuse_waiting(linker)?;
    policy::types::add_to_linker::<PolicyState, HasSelf<PolicyState>>(linker, |s| s)?;
    policy::log::add_to_linker::<PolicyState, HasSelf<HostLink>>(linker, |s| &mut s.link)?;
    policy::sysctl::add_to_linker::<PolicyState, HasSelf<HostLink>>(linker, |s| &mut s.link)?;
    policy::tcp::add_to_linker::<PolicyState, HasSelf<HostLink>>(linker, |s| &mut s.link)?;
    policy::clock::add_to_linker::<PolicyState, HasSelf<clock::ClockCap>>(linker, |s| &mut s.clock)?;
    policy::system::add_to_linker::<PolicyState, HasSelf<system::SystemCap>>(linker, |s| &mut s.system)?;
    policy::state::add_to_linker::<PolicyState, HasSelf<HostLink>>(linker, |s| &mut s.link)?;
    Ok(())
}

impl policy::types::Host for PolicyState {}
