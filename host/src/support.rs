//! `wasmtune support`: what this kernel lets wasmtune do, probed for real.
//! Each hook's program is loaded and attached on its own, then detached, so
//! the report says exactly which event sources work here and why the others
//! do not (like `bpftune -S`, but per hook).

use std::fmt::Write as _;
use std::path::Path;

use crate::bpf::{self, BpfConfig, HOOKS, Hook, KERNEL_BTF, Tuning};
pub use crate::probe::ProbeLine;

/// How much of wasmtune this kernel supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Everything probed works.
    Full,
    /// Some hook or feature is missing; the rest works.
    Partial,
    /// No hook works: wasmtune would receive no kernel events.
    None,
}

impl Support {
    /// The exit code of `wasmtune support`: 0, 1 or 2.
    pub fn exit_code(self) -> i32 {
        match self {
            Support::Full => 0,
            Support::Partial => 1,
            Support::None => 2,
        }
    }
}

/// Probes kernel BTF, every hook (loaded and attached alone, then
/// detached), ring-buffer maps and the cgroup v2 mount. Needs the
/// privileges the daemon has; without them the hooks show as missing with
/// the kernel's reason.
pub fn probe() -> Vec<ProbeLine> {
    let mut lines = vec![probe_btf()];
    let defaults = BpfConfig::default();
    let tuning = defaults.tuning();
    for hook in HOOKS {
        lines.push(probe_hook(hook, tuning));
    }
    lines.push(probe_ring_buffer());
    lines.push(probe_cgroup2());
    lines.push(probe_netns_cookie());
    lines.extend(crate::signals::probe_lines());
    for extra in EXTRA_PROBES {
        lines.extend(extra());
    }
    lines.extend(policy_tunable_lines());
    lines
}

/// What every namespace-aware part of the host relies on: a socket's
/// namespace cookie (`SO_NETNS_COOKIE`, Linux 5.14) names each namespace.
fn probe_netns_cookie() -> ProbeLine {
    let feature = "netns cookie".to_string();
    match crate::netns::current_cookie() {
        Ok(cookie) => ProbeLine {
            feature,
            ok: true,
            detail: format!("SO_NETNS_COOKIE names each network namespace (this one: {cookie})"),
        },
        Err(errno) => ProbeLine {
            feature,
            ok: false,
            detail: format!(
                "because SO_NETNS_COOKIE failed ({errno}; it needs Linux 5.14): namespaces cannot be told apart"
            ),
        },
    }
}

/// For each built-in policy, the tunables it may change and whether this
/// kernel has each one (in the daemon's own namespace). A missing one costs
/// only the decisions that need it.
pub fn policy_tunable_lines() -> Vec<ProbeLine> {
    let mut lines = Vec::new();
    for (file, bytes) in crate::builtin::BUILTIN_POLICIES {
        let name = file.trim_end_matches(".wasm");
        let manifest = match crate::manifest::Manifest::from_component(bytes) {
            Ok(manifest) => manifest,
            Err(error) => {
                lines.push(ProbeLine {
                    feature: format!("policy {name}"),
                    ok: false,
                    detail: format!("because its manifest cannot be read: {error}"),
                });
                continue;
            }
        };
        for grant in manifest.sysctls.iter().filter(|g| g.access == crate::manifest::Access::Write) {
            let feature = format!("{name}: {}", grant.name);
            let purpose = grant.purpose.as_deref().unwrap_or("what the policy does with it");
            lines.push(match crate::sysctl::read(&grant.name) {
                Ok(value) => ProbeLine { feature, ok: true, detail: format!("now ({value}); for {purpose}") },
                Err(crate::sysctl::SysctlError::DoesNotExist { .. }) => ProbeLine {
                    feature,
                    ok: false,
                    detail: format!("because this kernel does not have it: {purpose} is off, the rest of {name} works"),
                },
                Err(error) => ProbeLine { feature, ok: false, detail: format!("because it cannot be read: {error}") },
            });
        }
    }
    lines
}

/// Probes of event sources outside this module's hook table (the cgroup
/// programs, for instance): each returns its own lines, in the same form.
const EXTRA_PROBES: &[fn() -> Vec<ProbeLine>] = &[crate::bpf::cgroup::probe_lines];

fn probe_btf() -> ProbeLine {
    let feature = "kernel BTF".to_string();
    match std::fs::metadata(KERNEL_BTF) {
        Ok(meta) => ProbeLine { feature, ok: true, detail: format!("{KERNEL_BTF} ({} bytes)", meta.len()) },
        Err(e) => ProbeLine { feature, ok: false, detail: format!("because {KERNEL_BTF} cannot be read: {e}") },
    }
}

/// The first candidate that loads and attaches alone; a working fallback
/// counts as working, and the line says what it stands in for.
fn probe_hook(hook: &Hook, tuning: Tuning) -> ProbeLine {
    let mut reasons = Vec::new();
    for candidate in hook.candidates {
        match bpf::try_alone(candidate, tuning) {
            Ok(()) => {
                let mut detail = format!("feeds {}", hook.feeds);
                if !reasons.is_empty() {
                    let _ = write!(detail, " (fallback; {})", reasons.join("; "));
                }
                return ProbeLine { feature: candidate.attach_point.to_string(), ok: true, detail };
            }
            Err(reason) => reasons.push(format!("{}: {reason}", candidate.attach_point)),
        }
    }
    ProbeLine {
        feature: hook.preferred().attach_point.to_string(),
        ok: false,
        detail: format!("feeds {} because {}", hook.feeds, reasons.join("; ")),
    }
}

fn probe_ring_buffer() -> ProbeLine {
    let feature = "ring buffer map".to_string();
    let opts = libbpf_rs::libbpf_sys::bpf_map_create_opts {
        sz: size_of::<libbpf_rs::libbpf_sys::bpf_map_create_opts>() as libbpf_rs::libbpf_sys::size_t,
        ..Default::default()
    };
    match libbpf_rs::MapHandle::create(libbpf_rs::MapType::RingBuf, Some("wt_probe_ring"), 0, 0, 4096, &opts) {
        Ok(_map) => ProbeLine { feature, ok: true, detail: "carries kernel events to the host".to_string() },
        Err(e) => ProbeLine { feature, ok: false, detail: format!("because creating one failed: {e}") },
    }
}

fn probe_cgroup2() -> ProbeLine {
    let feature = "cgroup v2".to_string();
    match std::fs::read_to_string("/proc/self/mounts") {
        Ok(mounts) => match cgroup2_mount(&mounts) {
            Some(path) => ProbeLine {
                feature,
                ok: true,
                detail: format!("mounted at {path} (for cgroup hooks: sockops, cgroup/sysctl)"),
            },
            None => ProbeLine {
                feature,
                ok: false,
                detail: "because no cgroup2 file system is mounted (cgroup hooks cannot attach)".to_string(),
            },
        },
        Err(e) => ProbeLine { feature, ok: false, detail: format!("because /proc/self/mounts cannot be read: {e}") },
    }
}

/// The mount point of the first cgroup2 file system in a mounts table.
fn cgroup2_mount(mounts: &str) -> Option<String> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (_source, target, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2" && Path::new(target).is_absolute()).then(|| unescape_mount_path(target))
    })
}

/// /proc/self/mounts writes space, tab, newline and backslash as octal escapes.
fn unescape_mount_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest.get(i + 1..i + 4).and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// One line per feature: `works   FEATURE  DETAIL` or `missing FEATURE  DETAIL`,
/// features padded to one column.
pub fn render(lines: &[ProbeLine]) -> String {
    let width = lines.iter().map(|l| l.feature.len()).max().unwrap_or(0);
    let mut out = String::new();
    for line in lines {
        let status = if line.ok { "works" } else { "missing" };
        let _ = writeln!(out, "{status:<8}{:<width$}  {}", line.feature, line.detail);
    }
    out
}

/// Full when everything works, None when no hook works (or BTF is
/// missing, which stops every hook), Partial otherwise.
pub fn verdict(lines: &[ProbeLine]) -> Support {
    let mut hooks = lines.iter().filter(|l| bpf::is_attach_point(&l.feature));
    let btf_missing = lines.iter().any(|l| l.feature == "kernel BTF" && !l.ok);
    if btf_missing || !hooks.any(|l| l.ok) {
        Support::None
    } else if lines.iter().all(|l| l.ok) {
        Support::Full
    } else {
        Support::Partial
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(feature: &str, ok: bool) -> ProbeLine {
        ProbeLine { feature: feature.to_string(), ok, detail: "d".to_string() }
    }

    #[test]
    fn renders_one_aligned_line_per_feature() {
        let lines = vec![
            ProbeLine {
                feature: "tp_btf/tcp_rcvbuf_grow".into(),
                ok: true,
                detail: "feeds tcp-buffer-limit (receive)".into(),
            },
            ProbeLine { feature: "cgroup v2".into(), ok: false, detail: "because no cgroup2 file system".into() },
        ];
        assert_eq!(
            render(&lines),
            "works   tp_btf/tcp_rcvbuf_grow  feeds tcp-buffer-limit (receive)\n\
             missing cgroup v2               because no cgroup2 file system\n"
        );
    }

    #[test]
    fn verdict_is_full_partial_or_none() {
        let all = vec![
            line("kernel BTF", true),
            line("tp_btf/tcp_rcvbuf_grow", true),
            line("tp_btf/tcp_sendmsg_locked", true),
            line("cgroup v2", true),
        ];
        assert_eq!(verdict(&all), Support::Full);

        let mut one_hook_missing = all.clone();
        one_hook_missing[1].ok = false;
        assert_eq!(verdict(&one_hook_missing), Support::Partial);

        let mut no_cgroup = all.clone();
        no_cgroup[3].ok = false;
        assert_eq!(verdict(&no_cgroup), Support::Partial);

        let mut no_hooks = all.clone();
        no_hooks[1].ok = false;
        no_hooks[2].ok = false;
        assert_eq!(verdict(&no_hooks), Support::None);

        let mut fallback_only = all.clone();
        fallback_only[1] = line("raw_tp/tcp_rcvbuf_grow", true);
        assert_eq!(verdict(&fallback_only), Support::Full);

        let mut no_btf = all;
        no_btf[0].ok = false;
        assert_eq!(verdict(&no_btf), Support::None);
        assert_eq!([Support::Full, Support::Partial, Support::None].map(Support::exit_code), [0, 1, 2]);
    }

    #[test]
    fn finds_the_cgroup2_mount_wherever_it_is() {
        let hybrid = "sysfs /sys sysfs rw 0 0\n\
                      tmpfs /sys/fs/cgroup tmpfs ro 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nsdelegate 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n";
        assert_eq!(cgroup2_mount(hybrid).as_deref(), Some("/sys/fs/cgroup/unified"));
        assert_eq!(cgroup2_mount("cgroup2 /mnt/with\\040space cgroup2 rw 0 0\n").as_deref(), Some("/mnt/with space"));
        assert_eq!(cgroup2_mount("sysfs /sys sysfs rw 0 0\n"), None);
    }

    #[test]
    fn probe_reports_every_hook_on_this_kernel() {
        if !nix::unistd::Uid::effective().is_root() {
            eprintln!("skipped: probing loads BPF programs, which needs root");
            return;
        }
        let lines = probe();
        print!("{}", render(&lines));
        for hook in HOOKS {
            assert!(
                lines.iter().any(|l| hook.candidates.iter().any(|c| c.attach_point == l.feature)),
                "no line for hook {}",
                hook.name
            );
        }
        assert!(lines.iter().any(|l| l.feature == "ring buffer map" && l.ok), "{lines:?}");
    }
}
