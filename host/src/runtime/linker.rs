//! What a guest can call, in one auditable list: a policy can call exactly
//! what is added here — the host capabilities ([`crate::caps`]) — plus WASI
//! with an empty context (no files, sockets, environment or arguments),
//! which Rust's standard library links whether or not it is used, less
//! every WASI function that could wait ([`crate::caps::no_blocking`]).

use wasmtime::component::{HasSelf, Linker};

use crate::caps::{clock, log, no_blocking, state, sysctl, system, tcp};
use crate::runtime::state::PolicyState;
use crate::wit::wasmtune::policy;

pub fn add_to_linker(linker: &mut Linker<PolicyState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    no_blocking::refuse_waiting(linker)?;
    policy::types::add_to_linker::<PolicyState, HasSelf<PolicyState>>(linker, |s| s)?;
    policy::log::add_to_linker::<PolicyState, HasSelf<log::LogCap>>(linker, |s| &mut s.log)?;
    policy::sysctl::add_to_linker::<PolicyState, HasSelf<sysctl::SysctlCap>>(linker, |s| &mut s.sysctl)?;
    policy::tcp::add_to_linker::<PolicyState, HasSelf<tcp::TcpCap>>(linker, |s| &mut s.tcp)?;
    policy::clock::add_to_linker::<PolicyState, HasSelf<clock::ClockCap>>(linker, |s| &mut s.clock)?;
    policy::system::add_to_linker::<PolicyState, HasSelf<system::SystemCap>>(linker, |s| &mut s.system)?;
    policy::state::add_to_linker::<PolicyState, HasSelf<state::StateCap>>(linker, |s| &mut s.state)?;
    Ok(())
}

impl policy::types::Host for PolicyState {}
