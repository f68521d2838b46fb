//! # tcp-cong: learn the congestion control algorithm per remote peer
//!
//! For every finished TCP connection (`connection-summary`) the policy
//! scores the algorithm it ran under at its peer (remote address cut to a
//! prefix, /32 and /64 by default; settings `ipv4-prefix`, `ipv6-prefix`)
//! with bpftune's cost — relative excess of its minimum RTT over the peer's
//! best, plus relative shortfall of its delivery rate from the peer's best —
//! and chooses for that peer's new connections, through the host's sockops
//! map (`tcp.set-peer`), the algorithm with the lowest cost over the medians
//! of its recent connections, keeping its choice until another is clearly
//! cheaper and exploring another one time in twenty ([`learner`]). Arms are
//! the algorithms both granted in `policy.toml` and offered by this kernel
//! (`tcp_available_congestion_control`); `tcp_allowed_congestion_control` is
//! never touched.
//!
//! When bbr is offered, every peer setting also carries
//! `on-loss-congestion = "bbr"`, so the sockops program switches a live
//! connection that retransmits more than 1/64 of its segments at once; a
//! `retransmit-burst` for a peer without settings installs that alone. A
//! connection switched that way is scored as a sample of bbr; the arm it
//! started under counts it as tried ([`learner::Peer::learn_switched`]).
//!
//! Kernels differ in the algorithms they offer (each is a module that may
//! not be built): one that is missing is only left out of the arms, and
//! without bbr ([`on_loss_algorithm`]) only the switch on loss is off; the
//! other algorithms are still learned per peer. The policy changes no
//! sysctl.

pub mod learner;
pub mod peers;

use std::collections::BTreeMap;

use wasmtune_sdk::tcp::{self, format_prefix};
use wasmtune_sdk::{
    Config, ConnectionSummary, Event, Info, IpPrefix, LogOnce, NetnsId, PeerSettings, Policy, RetransmitBurst,
    log_denial,
};

use crate::learner::{Peer, Reason};
use crate::peers::{PeerKey, PrefixLengths};

/// The algorithms the manifest grants, in preference order for ties.
pub const GRANTED: &[&str] =
    &["bbr", "cubic", "reno", "htcp", "vegas", "westwood", "illinois", "hybla", "highspeed", "veno"];
/// What a lossy live connection is switched to.
pub const ON_LOSS: &str = "bbr";

pub const SCENARIO_CHOOSE: &str = "congestion control chosen for a peer";
pub const SCENARIO_LOSS: &str = "connections to a peer are losing packets";

struct PeerState {
    prefix: IpPrefix,
    learner: Peer,
    /// The algorithm set for the peer's new connections, if any.
    applied: Option<String>,
    /// Whether the learned choice has been announced: the first choice
    /// after measuring is requested (and so logged) even when the last arm
    /// measured is also the best one.
    announced: bool,
}

pub struct TcpCong {
    algorithms: Vec<String>,
    on_loss: Option<String>,
    lengths: PrefixLengths,
    peers: BTreeMap<(NetnsId, PeerKey), PeerState>,
    seed: u64,
    said: LogOnce,
}

impl TcpCong {
    fn peer(&mut self, netns: NetnsId, remote: &wasmtune_sdk::IpAddr) -> &mut PeerState {
        let (prefix, key) = peers::peer_of(remote, self.lengths);
        let seed = self.seed ^ (key.1 as u64) ^ netns;
        let algorithms = &self.algorithms;
        self.peers.entry((netns, key)).or_insert_with(|| PeerState {
            prefix,
            learner: Peer::new(algorithms, seed),
            applied: None,
            announced: false,
        })
    }

    fn on_summary(&mut self, summary: &ConnectionSummary) {
        let on_loss = self.on_loss.clone();
        let state = self.peer(summary.netns, &summary.remote);
        // A connection the sockops program switched to the on-loss algorithm
        // started under the arm set for the peer: what it achieved is mostly
        // the on-loss algorithm's, and its starting arm could not keep its
        // loss under 1/64 there (see `Peer::learn_switched`).
        let started = state.applied.clone().filter(|applied| *applied != summary.congestion);
        let scored = match started {
            Some(started) if on_loss.as_deref() == Some(summary.congestion.as_str()) => {
                state.learner.learn_switched(summary, &started, &summary.congestion)
            }
            _ => state.learner.learn(summary, &summary.congestion),
        };
        if scored.is_none() {
            return;
        }
        let Some(choice) = state.learner.choose() else { return };
        let first_learned = choice.reason == Reason::Best && !state.announced;
        if state.applied.as_deref() == Some(choice.algorithm.as_str()) && !first_learned {
            return;
        }
        let why = match choice.reason {
            Reason::Measuring => "still measuring every algorithm there",
            Reason::Best => {
                "the lowest cost over its recent connections (median min RTT above the best arm's plus median delivery rate below the best arm's); another must be 5 % cheaper to replace it"
            }
            Reason::Exploring => "exploring another algorithm (one choice in twenty)",
        };
        let reason = format!(
            "peer {}: {} connections scored; choosing {} for new connections, {why} [{}]",
            format_prefix(&state.prefix),
            state.learner.connections,
            choice.algorithm,
            state.learner.describe()
        );
        let settings = PeerSettings {
            congestion: Some(choice.algorithm.clone()),
            on_loss_congestion: on_loss,
            ..PeerSettings::none()
        };
        let prefix = state.prefix;
        match tcp::set_peer(summary.netns, prefix, settings, SCENARIO_CHOOSE, &reason) {
            Ok(()) => {
                let state = self.peer(summary.netns, &summary.remote);
                state.announced |= choice.reason == Reason::Best;
                state.applied = Some(choice.algorithm);
            }
            Err(denial) => log_denial(&mut self.said, summary.netns, "per-peer congestion control", &denial),
        }
    }

    fn on_burst(&mut self, burst: &RetransmitBurst) {
        let Some(on_loss) = self.on_loss.clone() else { return };
        let state = self.peer(burst.netns, &burst.remote);
        if state.applied.is_some() {
            // Its settings already carry the on-loss switch.
            return;
        }
        let prefix = state.prefix;
        if !self.said.first(&format!("{}/{}/burst", burst.netns, format_prefix(&prefix))) {
            return;
        }
        let reason = format!(
            "a connection to {} using {} retransmitted {} of {} segments (more than 1/64); connections to this peer now switch to {on_loss} as soon as they lose that much",
            format_prefix(&prefix),
            burst.congestion,
            burst.retransmits,
            burst.segments_out
        );
        let settings = PeerSettings { on_loss_congestion: Some(on_loss), ..PeerSettings::none() };
        if let Err(denial) = tcp::set_peer(burst.netns, prefix, settings, SCENARIO_LOSS, &reason) {
            log_denial(&mut self.said, burst.netns, "per-peer on-loss congestion control", &denial);
        }
    }
}

/// The arms: granted algorithms (or the administrator's `algorithms`
/// setting, a comma list) that this kernel offers.
pub fn arms(granted: &[&str], setting: Option<&str>, available: &[String]) -> Vec<String> {
    let wanted: Vec<&str> = match setting {
        Some(list) => list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect(),
        None => granted.to_vec(),
    };
    wanted
        .into_iter()
        .filter(|a| granted.contains(a) && available.iter().any(|offered| offered == a))
        .map(str::to_string)
        .collect()
}

/// What lossy connections switch to: bbr, if it is one of the `arms` (so
/// granted and offered); without it that switch is off and nothing else.
pub fn on_loss_algorithm(arms: &[String]) -> Option<String> {
    arms.iter().any(|a| a == ON_LOSS).then(|| ON_LOSS.to_string())
}

impl Policy for TcpCong {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let available = tcp::available_congestion();
        let algorithms = arms(GRANTED, config.setting("algorithms"), &available);
        if algorithms.is_empty() {
            return Err(format!(
                "none of the granted congestion control algorithms ({}) is offered by this kernel ({})",
                GRANTED.join(" "),
                available.join(" ")
            ));
        }
        let mut lengths = PrefixLengths::default();
        if let Some(value) = config.setting("ipv4-prefix") {
            lengths.ipv4 = peers::parse_length(value, 32)?;
        }
        if let Some(value) = config.setting("ipv6-prefix") {
            lengths.ipv6 = peers::parse_length(value, 128)?;
        }
        let on_loss = on_loss_algorithm(&algorithms);
        wasmtune_sdk::info!(
            "choosing among {} per peer (/{} IPv4, /{} IPv6){}",
            algorithms.join(", "),
            lengths.ipv4,
            lengths.ipv6,
            if on_loss.is_some() { "; lossy connections switch to bbr" } else { "" }
        );
        let policy = TcpCong {
            algorithms,
            on_loss,
            lengths,
            peers: BTreeMap::new(),
            seed: wasmtune_sdk::now() ^ 0x9e37_79b9_7f4a_7c15,
            said: LogOnce::new(),
        };
        Ok((policy, Info::events(wasmtune_sdk::declared_events!())))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::ConnectionSummary(summary) => self.on_summary(summary),
            Event::RetransmitBurst(burst) => self.on_burst(burst),
            // A lost summary is one sample fewer; learning goes on. Nothing
            // else is declared in policy.toml, so nothing else arrives.
            _ => {}
        }
    }
}

wasmtune_sdk::export_policy!(TcpCong);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_are_granted_and_offered() {
        let offered: Vec<String> = ["reno", "bbr", "cubic"].iter().map(|s| s.to_string()).collect();
        assert_eq!(arms(GRANTED, None, &offered), ["bbr", "cubic", "reno"]);
        assert_eq!(arms(GRANTED, Some("cubic, bbr"), &offered), ["cubic", "bbr"]);
        assert_eq!(arms(GRANTED, Some("dctcp,htcp"), &offered), Vec::<String>::new(), "not granted or not offered");
    }

    #[test]
    fn without_bbr_the_other_arms_are_still_learned_and_only_the_loss_switch_is_off() {
        let offered: Vec<String> = ["reno", "cubic", "htcp"].iter().map(|s| s.to_string()).collect();
        let algorithms = arms(GRANTED, None, &offered);
        assert_eq!(algorithms, ["cubic", "reno", "htcp"]);
        assert_eq!(on_loss_algorithm(&algorithms), None);
        let with_bbr = arms(GRANTED, None, &["bbr".to_string(), "cubic".to_string()]);
        assert_eq!(on_loss_algorithm(&with_bbr).as_deref(), Some(ON_LOSS));
    }
}
