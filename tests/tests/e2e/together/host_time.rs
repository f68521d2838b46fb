//! A call's deadline is the guest's own time: a host that is slow to
//! answer (a busy actuator, a starved thread) never faults a policy.

use std::time::{Duration, Instant};

use wasmtune::caps::clock::ClockCap;
use wasmtune::runtime::calls::HostCalls;
use wasmtune::runtime::engine::PolicyEngine;
use wasmtune::runtime::image::CompiledPolicy;
use wasmtune::runtime::instance::PolicyInstance;
use wasmtune::runtime::protocol::{HostCall, Reply};
use wasmtune::runtime::state::PolicyState;
use wasmtune::wit::{PolicyConfig, SysctlValue};

/// A host that takes 400 ms (more than a call's whole deadline) over
/// every answer, as a starved or busy host would.
struct SlowHost {
    answered: usize,
}

impl HostCalls for SlowHost {
    fn call(&mut self, call: HostCall) -> wasmtime::Result<Option<Reply>> {
        if !call.wants_reply() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(400));
        self.answered += 1;
        Ok(Some(match call {
            HostCall::Read { .. } => Reply::Read(Ok(SysctlValue::Integers(vec![4096, 131072, 6291456]))),
            HostCall::StateGet(_) => Reply::StateValue(None),
            HostCall::AvailableCongestion => Reply::Congestion(vec!["cubic".into(), "bbr".into()]),
            _ => Reply::Outcome(Ok(())),
        }))
    }
}

#[test]
fn time_spent_waiting_for_the_host_is_not_the_guest_s() {
    let engine = PolicyEngine::new(None).expect("engine");
    let bytes = wasmtune::builtin::bytes_of("tcp-cong").expect("tcp-cong is built in");
    let compiled = CompiledPolicy::compile(&engine, bytes).expect("compile");
    let state = PolicyState::new(Box::new(SlowHost { answered: 0 }), ClockCap::since(Instant::now()), 16 << 20);
    let mut instance = PolicyInstance::instantiate(&engine.engine, &compiled.pre, state).expect("instantiate");
    let started = Instant::now();
    let info = instance.init(&PolicyConfig { learning_rate: 4, settings: Vec::new() });
    let took = started.elapsed();
    // tcp-cong asks the host for the algorithms on offer in its init:
    // one 400 ms answer, longer than the 250 ms deadline.
    assert!(took >= Duration::from_millis(400), "the host was not asked ({took:?})");
    let info = info.unwrap_or_else(|fault| panic!("the host's time ended the guest's call: {fault}"));
    assert!(info.is_ok(), "{info:?}");
}
