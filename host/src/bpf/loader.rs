//! Loading and attaching every hook, each on its own: a program this kernel
//! rejects (a missing tracepoint, no BTF-typed tracepoints, a verifier
//! refusal) costs only its own hook.
//!
//! One object load with every hook's preferred program is tried first; it
//! is what succeeds on a kernel that has everything. Only if it fails is
//! each candidate loaded alone to find, per hook, the first one this kernel
//! accepts, and the object loaded again with just those.

use std::mem::MaybeUninit;

use libbpf_rs::OpenObject;

use super::hooks::{Candidate, HOOKS, Hook};
use super::skeleton::{self, AttachedProgram, TracepointsSkel, Tuning};
use super::{BpfError, HookState, HookStatus};

/// The object with every hook that works attached.
pub(super) struct Loaded<'obj> {
    /// Owns the maps the drain thread reads.
    pub skel: TracepointsSkel<'obj>,
    /// One per attached hook, with the hook's name.
    pub programs: Vec<(&'static str, AttachedProgram)>,
    /// One per hook in [`HOOKS`] order.
    pub hooks: Vec<HookStatus>,
}

/// What a hook will run, decided before the final load.
enum Choice {
    Program(&'static Candidate),
    Unavailable { reason: String },
}

/// Loads and attaches; `first` holds the all-preferred attempt, `second`
/// the retry with the programs that load alone.
pub(super) fn load_and_attach<'obj>(
    first: &'obj mut MaybeUninit<OpenObject>,
    second: &'obj mut MaybeUninit<OpenObject>,
    tuning: Tuning,
) -> Result<Loaded<'obj>, BpfError> {
    let preferred: Vec<&str> = HOOKS.iter().map(|h| h.preferred().program).collect();
    let (skel, choices) = match skeleton::load(first, tuning, &preferred) {
        Ok(skel) => (skel, HOOKS.iter().map(|h| Choice::Program(h.preferred())).collect()),
        Err(reason) => {
            tracing::debug!(%reason, "loading every preferred BPF program at once failed; trying each alone");
            let choices: Vec<Choice> = HOOKS.iter().map(|h| choose(h, tuning)).collect();
            let chosen = chosen_programs(&choices);
            if chosen.is_empty() {
                return Err(BpfError::NoHookLoads { hooks: statuses_without_attach(&choices) });
            }
            let skel = skeleton::load(second, tuning, &chosen)
                .map_err(|reason| BpfError::Load { programs: chosen.join(", "), reason })?;
            (skel, choices)
        }
    };

    let mut programs = Vec::new();
    let mut hooks = Vec::new();
    for (hook, choice) in HOOKS.iter().zip(&choices) {
        let status = match choice {
            Choice::Program(candidate) => match skeleton::attach(&skel, candidate.program) {
                Ok(attached) => {
                    programs.push((hook.name, attached));
                    status(hook, candidate, HookState::Attached)
                }
                Err(reason) => status(hook, candidate, HookState::Failed { reason }),
            },
            Choice::Unavailable { reason } => {
                status(hook, hook.preferred(), HookState::Failed { reason: reason.clone() })
            }
        };
        log_attach_result(&status);
        hooks.push(status);
    }
    if programs.is_empty() {
        return Err(BpfError::NoHookAttached { hooks });
    }
    Ok(Loaded { skel, programs, hooks })
}

/// The first candidate of `hook` that loads alone, or why none does.
fn choose(hook: &'static Hook, tuning: Tuning) -> Choice {
    let mut reasons = Vec::new();
    for candidate in hook.candidates {
        let mut storage = MaybeUninit::uninit();
        match skeleton::load(&mut storage, tuning, &[candidate.program]) {
            Ok(_skel) => return Choice::Program(candidate),
            Err(reason) => reasons.push(format!("{}: {reason}", candidate.attach_point)),
        }
    }
    Choice::Unavailable { reason: reasons.join("; ") }
}

/// Loads `candidate` alone and attaches it, then detaches and unloads it:
/// the check `wasmtune support` makes for each hook.
pub(crate) fn try_alone(candidate: &Candidate, tuning: Tuning) -> Result<(), String> {
    let mut storage = MaybeUninit::uninit();
    let skel = skeleton::load(&mut storage, tuning, &[candidate.program])?;
    let attached = skeleton::attach(&skel, candidate.program)?;
    drop(attached);
    drop(skel);
    Ok(())
}

fn chosen_programs(choices: &[Choice]) -> Vec<&'static str> {
    choices
        .iter()
        .filter_map(|c| match c {
            Choice::Program(candidate) => Some(candidate.program),
            Choice::Unavailable { .. } => None,
        })
        .collect()
}

fn statuses_without_attach(choices: &[Choice]) -> Vec<HookStatus> {
    HOOKS
        .iter()
        .zip(choices)
        .map(|(hook, choice)| match choice {
            Choice::Program(candidate) => status(
                hook,
                candidate,
                HookState::Failed { reason: "not attached: no hook could be loaded".to_string() },
            ),
            Choice::Unavailable { reason } => {
                status(hook, hook.preferred(), HookState::Failed { reason: reason.clone() })
            }
        })
        .collect()
}

fn status(hook: &Hook, candidate: &Candidate, state: HookState) -> HookStatus {
    HookStatus { name: hook.name, attach_point: candidate.attach_point, feeds: hook.feeds, state }
}

fn log_attach_result(status: &HookStatus) {
    match &status.state {
        HookState::Attached => tracing::info!(
            hook = status.name,
            state = "attached",
            attach_point = status.attach_point,
            feeds = status.feeds,
            "BPF hook attached"
        ),
        HookState::Failed { reason } => tracing::warn!(
            hook = status.name,
            state = "failed",
            attach_point = status.attach_point,
            feeds = status.feeds,
            %reason,
            "BPF hook not attached"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::BpfConfig;
    use libbpf_rs::btf::{Btf, types::Typedef};

    /// Every program, the raw_tp fallbacks included, loads and attaches on
    /// its own wherever the kernel has its tracepoint.
    #[test]
    fn every_candidate_loads_and_attaches_alone_where_its_tracepoint_exists() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let btf = Btf::from_vmlinux().expect("kernel BTF");
        let tuning = BpfConfig::default().tuning();
        let mut tried = 0;
        for hook in HOOKS {
            if btf.type_by_name::<Typedef<'_>>(&format!("btf_trace_{}", hook.name)).is_none() {
                eprintln!("skipped {}: this kernel has no such tracepoint", hook.name);
                continue;
            }
            for candidate in hook.candidates {
                try_alone(candidate, tuning).unwrap_or_else(|reason| panic!("{}: {reason}", candidate.attach_point));
                tried += 1;
            }
        }
        // tcp_rcv_space_adjust exists on every kernel with BTF-typed tracepoints.
        assert!(tried >= 2, "no tracepoint found in kernel BTF");
    }

    fn load_with_broken(broken: &[&'static str]) -> Result<Vec<HookStatus>, BpfError> {
        skeleton::BROKEN_FOR_TEST.with(|b| *b.borrow_mut() = broken.to_vec());
        let tuning = BpfConfig::default().tuning();
        let (mut first, mut second) = (MaybeUninit::uninit(), MaybeUninit::uninit());
        let result = load_and_attach(&mut first, &mut second, tuning).map(|loaded| loaded.hooks.clone());
        skeleton::BROKEN_FOR_TEST.with(|b| b.borrow_mut().clear());
        result
    }

    #[test]
    fn a_hook_whose_preferred_program_fails_falls_back_and_the_others_are_untouched() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let hooks = load_with_broken(&["tp_btf_rcvbuf_grow", "tp_btf_sendmsg_locked"]).expect("loads");
        let attach_points: Vec<_> = hooks.iter().map(|h| (h.attach_point, h.state.clone())).collect();
        assert!(hooks[3..].iter().all(|h| h.state == HookState::Attached), "{hooks:?}");
        assert_eq!(
            attach_points[..3],
            [
                ("raw_tp/tcp_rcvbuf_grow", HookState::Attached),
                ("tp_btf/tcp_rcv_space_adjust", HookState::Attached),
                ("raw_tp/tcp_sendmsg_locked", HookState::Attached),
            ]
        );
    }

    #[test]
    fn a_hook_with_no_working_program_fails_alone_with_every_reason() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let hooks = load_with_broken(&["tp_btf_rcv_space_adjust", "raw_tp_rcv_space_adjust"]).expect("loads");
        assert_eq!(hooks[0].state, HookState::Attached);
        assert_eq!(hooks[2].state, HookState::Attached);
        let HookState::Failed { reason } = &hooks[1].state else { panic!("{:?} attached", hooks[1]) };
        println!("{reason}");
        assert_eq!(hooks[1].attach_point, "tp_btf/tcp_rcv_space_adjust");
        assert!(reason.contains("tp_btf/tcp_rcv_space_adjust: load: "), "{reason}");
        assert!(reason.contains("raw_tp/tcp_rcv_space_adjust: load: "), "{reason}");
        assert!(reason.contains("verifier: "), "the verifier's complaint is part of the reason: {reason}");
    }

    #[test]
    fn nothing_loading_at_all_is_an_error_naming_each_hook() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: loading BPF programs needs root");
            return;
        }
        let every_program: Vec<&'static str> = HOOKS.iter().flat_map(|h| h.candidates).map(|c| c.program).collect();
        match load_with_broken(&every_program) {
            Err(BpfError::NoHookLoads { hooks }) => {
                assert_eq!(hooks.len(), HOOKS.len());
                assert!(hooks.iter().all(|h| matches!(h.state, HookState::Failed { .. })));
                let message = BpfError::NoHookLoads { hooks }.to_string();
                for hook in HOOKS {
                    assert!(message.contains(hook.name), "{message}");
                }
            }
            other => panic!("expected NoHookLoads, got {other:?}", other = other.map(|_| ())),
        }
    }
}
