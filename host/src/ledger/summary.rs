//! The summary an administrator reads when the daemon exits: per scenario how
//! many changes it caused, per tunable its original and final value, and a
//! command to paste to make the same change on another machine.
//!
//! It covers every change still in effect — since the journal last recorded
//! a complete rollback, across crashes and restarts — so "original" is the
//! value before wasmtune first touched the tunable, not before this run.
//!
//! Per-destination settings (the sockops map) are listed too. They live only
//! as long as the daemon: no sysctl reproduces them, and there is nothing to
//! type to undo them — they end when the daemon stops, and connections opened
//! meanwhile keep what they were given.

use super::state::{DerivedState, PeerEntry};
use crate::netns::INIT_NAME;
use crate::sysctl::Value;

/// Changes still in effect, or under `--dry-run` the changes that would have
/// been made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub dry_run: bool,
    pub scenarios: Vec<ScenarioCount>,
    pub tunables: Vec<TunableSummary>,
    /// Tunables whose journaled changes a reboot undid.
    pub voided_by_reboot: usize,
    /// Per-destination settings in effect in this daemon's sockops map.
    pub peers: Vec<PeerEntry>,
}

/// How many changes one scenario caused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioCount {
    pub scenario: String,
    pub changes: u32,
}

/// One tunable in one namespace: where it started and where it is now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunableSummary {
    pub netns: String,
    pub tunable: String,
    pub original: Value,
    pub last: Value,
    pub changes: u32,
    /// The policy that made the last change.
    pub policy: String,
}

impl Summary {
    pub fn from_state(state: &DerivedState, dry_run: bool) -> Summary {
        let scenarios = state
            .scenarios()
            .iter()
            .map(|(scenario, changes)| ScenarioCount { scenario: scenario.clone(), changes: *changes })
            .collect();
        let tunables = state
            .tunables()
            .iter()
            .filter_map(|(key, history)| {
                let last = history.last_written.clone().or_else(|| history.unconfirmed.clone())?;
                Some(TunableSummary {
                    netns: key.netns.clone(),
                    tunable: key.tunable.clone(),
                    original: history.original.clone(),
                    last,
                    changes: history.changes,
                    policy: history.last_policy.clone(),
                })
            })
            .collect();
        let peers = state.peers().cloned().collect();
        Summary { dry_run, scenarios, tunables, voided_by_reboot: state.voided_by_reboot(), peers }
    }

    /// Logs each line as an INFO `event="summary"` line.
    pub fn log(&self) {
        for line in self.lines() {
            tracing::info!(event = "summary", "{line}");
        }
    }

    /// The summary as log lines, each readable on its own.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let changes: u32 = self.tunables.iter().map(|t| t.changes).sum();
        let tunables = self.tunables.len();
        if self.tunables.is_empty() {
            lines.push(if self.dry_run {
                "dry run: no sysctl change would have been made".to_string()
            } else {
                "no sysctl changes by wasmtune are in effect".to_string()
            });
        } else if self.dry_run {
            lines.push(format!(
                "dry run: nothing was written; {changes} change(s) to {tunables} tunable(s) would have been made"
            ));
        } else {
            lines.push(format!("{changes} sysctl change(s) to {tunables} tunable(s) are in effect"));
        }
        for scenario in &self.scenarios {
            lines.push(format!("scenario '{}': {} change(s)", scenario.scenario, scenario.changes));
        }
        for tunable in &self.tunables {
            lines.push(format!(
                "{} in netns {}: ({}) -> ({}) after {} change(s), last by policy {}",
                tunable.tunable, tunable.netns, tunable.original, tunable.last, tunable.changes, tunable.policy
            ));
            lines.push(match tunable.replicate_command() {
                Some(command) => format!("to replicate: {command}"),
                None => format!("to replicate in netns {}: sysctl -w {}", tunable.netns, tunable.assignment()),
            });
        }
        lines.extend(self.peer_lines());
        if self.voided_by_reboot > 0 {
            lines.push(format!(
                "{} tunable(s) changed before the last reboot are no longer in effect (the kernel started afresh)",
                self.voided_by_reboot
            ));
        }
        lines
    }
}

impl Summary {
    /// One line per per-destination entry, and how it is reproduced or undone.
    fn peer_lines(&self) -> Vec<String> {
        if self.peers.is_empty() {
            return Vec::new();
        }
        let mut lines = vec![format!(
            "{} per-destination setting(s) {} in wasmtune's sockops map{}",
            self.peers.len(),
            if self.dry_run { "would have been set" } else { "are set" },
            if self.dry_run {
                ""
            } else {
                "; they end when wasmtune stops (nothing to undo by hand), and connections opened meanwhile keep them"
            }
        )];
        for peer in &self.peers {
            lines.push(format!(
                "new connections to {} in netns {}: {} (policy {}: {})",
                peer.peer, peer.netns, peer.settings, peer.policy, peer.scenario
            ));
            lines.push(match route_equivalent(peer) {
                Some(route) => format!("to reproduce without wasmtune (nearest, per route): {route}"),
                None => "to reproduce: no sysctl or ip command sets this; only a sockops program can".to_string(),
            });
        }
        lines
    }
}

/// The nearest iproute2 equivalent of a per-destination entry: route
/// attributes `congctl` and `initcwnd` set the same on connections that use
/// the route. Only when the entry sets nothing else, else it would mislead.
pub fn route_equivalent(peer: &PeerEntry) -> Option<String> {
    let settings = &peer.settings;
    let only_route_attributes = settings.window_clamp.is_none()
        && settings.no_delay.is_none()
        && settings.syn_rto_ms.is_none()
        && settings.on_loss_congestion.is_none()
        && (settings.congestion.is_some() || settings.initial_cwnd.is_some());
    if !only_route_attributes {
        return None;
    }
    let mut attributes = String::new();
    if let Some(congestion) = &settings.congestion {
        attributes.push_str(&format!(" congctl {congestion}"));
    }
    if let Some(cwnd) = settings.initial_cwnd {
        attributes.push_str(&format!(" initcwnd {cwnd}"));
    }
    let netns = if peer.netns == INIT_NAME {
        String::new()
    } else if peer.netns.starts_with("pid:") || peer.netns.starts_with("netns:") {
        return None;
    } else {
        format!("-n {} ", shell_word(&peer.netns))
    };
    Some(format!("ip {netns}route add {} <via/dev of its current route>{attributes}", peer.peer))
}

impl TunableSummary {
    /// `'net.ipv4.tcp_rmem=4096 131072 6291456'`, quoted for a shell.
    fn assignment(&self) -> String {
        shell_quote(&format!("{}={}", self.tunable, self.last))
    }

    /// A command that makes the same change: `sysctl -w '…'`, run inside the
    /// namespace with `ip netns exec NAME` (or `nsenter` for a process's
    /// namespace). `None` for a namespace without a name a shell can reach.
    pub fn replicate_command(&self) -> Option<String> {
        let sysctl = format!("sysctl -w {}", self.assignment());
        if self.netns == INIT_NAME {
            Some(sysctl)
        } else if let Some(pid) = self.netns.strip_prefix("pid:") {
            Some(format!("nsenter --net=/proc/{pid}/ns/net {sysctl}"))
        } else if self.netns.starts_with("netns:") {
            None
        } else {
            Some(format!("ip netns exec {} {sysctl}", shell_word(&self.netns)))
        }
    }
}

/// Single-quotes text for a POSIX shell.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// A word left bare when it is plainly safe, quoted otherwise.
fn shell_word(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')) {
        text.to_string()
    } else {
        shell_quote(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::Record;
    use crate::ledger::state::tests::{applied, intent, ints};

    const RMEM: &str = "net.ipv4.tcp_rmem";
    const GROW: &str = "need to increase TCP buffer size(s)";

    fn summary_of(records: &[Record], dry_run: bool) -> Summary {
        Summary::from_state(&DerivedState::from_records(records), dry_run)
    }

    #[test]
    fn lists_scenarios_tunables_and_commands_to_replicate() {
        let records = [
            intent(1, "init", RMEM, ints(&[4096, 131072, 6291456]), ints(&[4096, 131072, 7864320]), GROW),
            applied(1),
            intent(2, "init", RMEM, ints(&[4096, 131072, 7864320]), ints(&[4096, 131072, 9830400]), GROW),
            applied(2),
            intent(3, "rx", RMEM, ints(&[4096, 131072, 98304]), ints(&[4096, 131072, 122880]), GROW),
            applied(3),
        ];
        let lines = summary_of(&records, false).lines();
        assert_eq!(
            lines,
            [
                "3 sysctl change(s) to 2 tunable(s) are in effect",
                "scenario 'need to increase TCP buffer size(s)': 3 change(s)",
                "net.ipv4.tcp_rmem in netns init: (4096 131072 6291456) -> (4096 131072 9830400) after 2 change(s), last by policy tcp-buffer",
                "to replicate: sysctl -w 'net.ipv4.tcp_rmem=4096 131072 9830400'",
                "net.ipv4.tcp_rmem in netns rx: (4096 131072 98304) -> (4096 131072 122880) after 1 change(s), last by policy tcp-buffer",
                "to replicate: ip netns exec rx sysctl -w 'net.ipv4.tcp_rmem=4096 131072 122880'",
            ]
        );
    }

    #[test]
    fn says_when_nothing_is_in_effect() {
        assert_eq!(summary_of(&[], false).lines(), ["no sysctl changes by wasmtune are in effect"]);
        assert_eq!(summary_of(&[], true).lines(), ["dry run: no sysctl change would have been made"]);
    }

    #[test]
    fn a_dry_run_says_nothing_was_written() {
        let records = [intent(1, "rx", RMEM, ints(&[1, 2, 3]), ints(&[1, 2, 4]), GROW), applied(1)];
        let lines = summary_of(&records, true).lines();
        assert!(lines[0].starts_with("dry run: nothing was written; 1 change(s)"), "{lines:?}");
    }

    #[test]
    fn replicates_in_process_and_unnamed_namespaces() {
        let mut tunable = TunableSummary {
            netns: "pid:812".into(),
            tunable: "net.ipv4.tcp_congestion_control".into(),
            original: Value::Text("cubic".into()),
            last: Value::Text("bbr".into()),
            changes: 1,
            policy: "tcp-cong".into(),
        };
        assert_eq!(
            tunable.replicate_command().as_deref(),
            Some("nsenter --net=/proc/812/ns/net sysctl -w 'net.ipv4.tcp_congestion_control=bbr'")
        );
        tunable.netns = "netns:4099".into();
        assert_eq!(tunable.replicate_command(), None);
        tunable.netns = "it's odd".into();
        assert_eq!(
            tunable.replicate_command().as_deref(),
            Some(r"ip netns exec 'it'\''s odd' sysctl -w 'net.ipv4.tcp_congestion_control=bbr'")
        );
    }

    #[test]
    fn lists_per_destination_settings_and_the_nearest_route_equivalent() {
        use crate::ledger::state::tests::peer_intent;
        let records = [
            Record::SessionStart { pid: 7, time: 0, boot_id: None, booted_at: None },
            peer_intent(1, "10.0.0.2/32", Some("reno")),
            applied(1),
        ];
        let lines = summary_of(&records, false).lines();
        assert_eq!(
            lines,
            [
                "no sysctl changes by wasmtune are in effect",
                "1 per-destination setting(s) are set in wasmtune's sockops map; they end when wasmtune stops \
                 (nothing to undo by hand), and connections opened meanwhile keep them",
                "new connections to 10.0.0.2/32 in netns rx: congestion=reno (policy tcp-cong: per-destination congestion)",
                "to reproduce without wasmtune (nearest, per route): ip -n rx route add 10.0.0.2/32 <via/dev of its current route> congctl reno",
            ]
        );
        let mut entry = summary_of(&records, false).peers.remove(0);
        entry.settings.no_delay = Some(true);
        assert_eq!(route_equivalent(&entry), None, "no route attribute sets TCP_NODELAY");
    }
}
