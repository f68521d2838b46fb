//! The compiled `bpf/tracepoints.bpf.c` object: loading it with the host's
//! settings and a chosen set of programs, attaching one program, and turning
//! what libbpf printed meanwhile into a one-line reason.
//!
//! libbpf's messages go to `tracing` (target `wasmtune::bpf::libbpf`) instead
//! of stderr; this replaces libbpf's process-wide print callback.

use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Once;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{Link, OpenObject, PrintLevel};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/tracepoints.skel.rs"));
}

pub(crate) use generated::TracepointsSkel;
use generated::TracepointsSkelBuilder;

/// The layout the BPF object was compiled with must be the one the decoder reads.
const _: () = {
    use crate::events::record_len;
    use generated::types as t;
    assert!(size_of::<t::wasmtune_tcp_buffer_record>() == record_len::TCP_BUFFER_LIMIT);
    assert!(size_of::<t::wasmtune_memory_pressure_record>() == record_len::MEMORY_PRESSURE);
    assert!(size_of::<t::wasmtune_connection_summary_record>() == record_len::CONNECTION_SUMMARY);
    assert!(size_of::<t::wasmtune_retransmit_burst_record>() == record_len::RETRANSMIT_BURST);
    assert!(size_of::<t::wasmtune_backlog_drops_record>() == record_len::BACKLOG_DROPS);
    assert!(size_of::<t::wasmtune_neighbour_table_record>() == record_len::NEIGHBOUR_TABLE);
    assert!(size_of::<t::wasmtune_udp_drop_record>() == record_len::UDP_DROP);
};

/// Read-only settings of the BPF programs, fixed at load time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// A buffer is near its limit when `buffer >= limit - (limit >> near_limit_shift)`.
    pub near_limit_shift: u32,
    /// At most one record per (netns, direction) per this many nanoseconds.
    pub min_interval_ns: u64,
    /// At most one record per (netns, signal, subject) of the other signals
    /// (and one aggregated record per CPU or netns) per this many nanoseconds.
    pub signal_interval_ns: u64,
    /// Connection summaries per netns and second (0: no cap).
    pub connection_summaries_per_s: u32,
}

/// A program that is loaded and attached.
pub(crate) struct AttachedProgram {
    /// Keeps the program attached; dropping it detaches.
    pub _link: Link,
    /// A second descriptor of the program, for reading its run counters
    /// from any thread.
    pub program_fd: OwnedFd,
}

/// Loads the object with only `programs` (C function names) enabled.
///
/// On failure, returns a one-line reason that includes libbpf's first
/// complaint and the verifier's last line, which together name the cause.
pub(crate) fn load<'obj>(
    storage: &'obj mut MaybeUninit<OpenObject>,
    tuning: Tuning,
    programs: &[&str],
) -> Result<TracepointsSkel<'obj>, String> {
    route_libbpf_log();
    let (result, log) = capture_libbpf_log(|| {
        let mut open = TracepointsSkelBuilder::default().open(storage).map_err(|e| format!("open: {e}"))?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| "the object's read-only data is not memory-mapped".to_string())?;
        rodata.near_limit_shift = tuning.near_limit_shift;
        rodata.min_interval_ns = tuning.min_interval_ns;
        rodata.signal_interval_ns = tuning.signal_interval_ns;
        rodata.connection_summaries_per_s = tuning.connection_summaries_per_s;
        for mut program in open.open_object_mut().progs_mut() {
            let wanted = program.name().to_str().is_some_and(|name| programs.contains(&name));
            program.set_autoload(wanted);
            #[cfg(test)]
            if BROKEN_FOR_TEST.with(|broken| broken.borrow().iter().any(|b| program.name() == *b)) {
                // A socket filter may not call bpf_probe_read_kernel: the
                // verifier refuses the program, as a kernel lacking it would.
                program.set_prog_type(libbpf_rs::ProgramType::SocketFilter);
            }
        }
        open.load().map_err(|e| format!("load: {e}"))
    });
    result.map_err(|reason| with_libbpf_detail(reason, &log))
}

/// Attaches the loaded program named `program` (its C function name).
pub(crate) fn attach(skel: &TracepointsSkel<'_>, program: &str) -> Result<AttachedProgram, String> {
    let (result, log) = capture_libbpf_log(|| {
        let found = skel.object().progs_mut().find(|p| p.name().to_str() == Some(program));
        let found = found.ok_or_else(|| format!("the BPF object has no program {program}"))?;
        let program_fd = found.as_fd().try_clone_to_owned().map_err(|e| format!("duplicate program fd: {e}"))?;
        let link = found.attach().map_err(|e| format!("attach: {e}"))?;
        Ok(AttachedProgram { _link: link, program_fd })
    });
    result.map_err(|reason: String| with_libbpf_detail(reason, &log))
}

/// The names of every program in the object, without loading it.
#[cfg(test)]
pub(crate) fn program_names() -> Vec<String> {
    let mut storage = MaybeUninit::uninit();
    let open = TracepointsSkelBuilder::default().open(&mut storage).expect("the embedded object opens");
    open.open_object().progs().map(|p| p.name().to_string_lossy().into_owned()).collect()
}

#[cfg(test)]
thread_local! {
    /// Programs whose loads fail on this thread, to exercise the fallbacks.
    pub(crate) static BROKEN_FOR_TEST: RefCell<Vec<&'static str>> = const { RefCell::new(Vec::new()) };
}

thread_local! {
    /// libbpf warnings printed on this thread while a capture is running.
    static CAPTURED: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `f`, collecting what libbpf warns about on this thread meanwhile
/// (libbpf prints on the thread that calls it).
fn capture_libbpf_log<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let result = f();
    let log = CAPTURED.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (result, log)
}

fn route_libbpf_log() {
    static ROUTED: Once = Once::new();
    ROUTED.call_once(|| {
        libbpf_rs::set_print(Some((PrintLevel::Info, libbpf_to_tracing)));
    });
}

fn libbpf_to_tracing(level: PrintLevel, message: String) {
    let message = message.trim_end();
    let captured = CAPTURED.with(|c| match c.borrow_mut().as_mut() {
        Some(log) if level == PrintLevel::Warn => {
            log.push(message.to_owned());
            true
        }
        _ => false,
    });
    // A captured warning ends up in a hook's failure reason, logged once
    // by the caller; only uncaptured ones are worth a warning here.
    if level == PrintLevel::Warn && !captured {
        tracing::warn!(target: "wasmtune::bpf::libbpf", "{message}");
    } else {
        tracing::debug!(target: "wasmtune::bpf::libbpf", "{message}");
    }
}

/// `reason` followed by libbpf's first warning line and, when the verifier
/// refused a program, the verifier's complaint (its last line before the
/// `processed N insns` statistics).
fn with_libbpf_detail(reason: String, log: &[String]) -> String {
    let lines: Vec<&str> =
        log.iter().flat_map(|m| m.lines()).map(|l| l.trim_start_matches("libbpf: ").trim()).collect();
    let first = lines.iter().find(|l| !l.is_empty());
    let verifier_last = lines.iter().position(|l| l.contains("-- BEGIN PROG LOAD LOG --")).and_then(|begin| {
        let verifier_log = &lines[begin + 1..];
        let end = verifier_log.iter().position(|l| l.contains("-- END PROG LOAD LOG --")).unwrap_or(verifier_log.len());
        verifier_log[..end].iter().rfind(|l| !l.is_empty() && !l.starts_with("processed "))
    });
    let mut out = reason;
    if let Some(first) = first {
        out.push_str(" (");
        out.push_str(first);
        if let Some(last) = verifier_last {
            out.push_str("; verifier: ");
            out.push_str(last);
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::hooks::HOOKS;

    #[test]
    fn every_hook_candidate_is_a_program_of_the_object_and_every_program_serves_a_hook() {
        let names = program_names();
        let candidates: Vec<&str> = HOOKS.iter().flat_map(|h| h.candidates).map(|c| c.program).collect();
        for c in &candidates {
            assert!(names.iter().any(|n| n == c), "{c} is not in the object ({names:?})");
        }
        for n in &names {
            assert!(candidates.contains(&n.as_str()), "program {n} serves no hook");
        }
    }

    #[test]
    fn failure_reason_names_libbpfs_first_complaint_and_the_verifiers() {
        let log = vec![
            "libbpf: prog 'p': BPF program load failed: Permission denied\n".to_string(),
            "libbpf: prog 'p': -- BEGIN PROG LOAD LOG --\n0: R1=ctx()\nR1 invalid mem access 'scalar'\nprocessed 3 insns (limit 1000000)\n\n-- END PROG LOAD LOG --\n".to_string(),
            "libbpf: failed to load object\n".to_string(),
        ];
        assert_eq!(
            with_libbpf_detail("load: Permission denied (os error 13)".into(), &log),
            "load: Permission denied (os error 13) (prog 'p': BPF program load failed: Permission denied; verifier: R1 invalid mem access 'scalar')"
        );
        assert_eq!(with_libbpf_detail("x".into(), &[]), "x");
    }
}
