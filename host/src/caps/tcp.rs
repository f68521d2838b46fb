//! `wasmtune:policy/tcp`: per-destination TCP settings, applied by the
//! host's sockops program to new connections whose peer falls in a prefix.
//! Every request is checked, in this order, against: the namespace being
//! tuned, the sockops program running, the policy's `[tcp]` grant (allowed
//! prefixes, algorithms and bounds), the algorithms this kernel offers, and
//! the arbiter (one owner per `tcp-peer:<prefix>` per namespace, rate
//! limit). Accepted changes go to the actuator, which applies them in order
//! with sysctl changes and logs each one.

use std::sync::Arc;
use std::time::Instant;

use crate::actuate::{Actuator, PeerChange as AppliedPeerChange};
use crate::bpf::cgroup::{PeerPrefix, PeerSettings};
use crate::caps::denials::DenialLog;
use crate::caps::sysctl::SysctlCap;
use crate::caps::text::printable;
use crate::grants::{self, Arbiter, EffectiveGrant};
use crate::netns::NetnsRegistry;
use crate::wit::Denial;
use crate::wit::wasmtune::policy::tcp::{Host, IpPrefix, PeerChange};

/// Where the kernel lists the congestion control algorithms it offers.
const AVAILABLE_CONGESTION: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
/// Longest scenario and reason kept from a policy.
const MAX_SCENARIO: usize = 120;
const MAX_REASON: usize = 400;

pub struct TcpCap {
    pub policy: String,
    grant: Arc<EffectiveGrant>,
    arbiter: Arc<Arbiter>,
    actuator: Actuator,
    registry: Arc<NetnsRegistry>,
    denials: DenialLog,
}

/// Congestion control algorithms this kernel offers (loaded or built in).
/// Never `tcp_allowed_congestion_control`, which the host does not rewrite:
/// sockops may choose any available algorithm without it.
pub fn available_congestion() -> Vec<String> {
    std::fs::read_to_string(AVAILABLE_CONGESTION)
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// The arbiter's name for a prefix's settings.
pub fn peer_tunable(prefix: &PeerPrefix) -> String {
    format!("tcp-peer:{prefix}")
}

impl TcpCap {
    /// Shares the sysctl capability's grant, arbiter, actuator and registry.
    pub fn new(sysctl: &SysctlCap) -> TcpCap {
        TcpCap {
            policy: sysctl.policy.clone(),
            grant: sysctl.grant.clone(),
            arbiter: sysctl.arbiter.clone(),
            actuator: sysctl.actuator.clone(),
            registry: sysctl.registry.clone(),
            denials: DenialLog::default(),
        }
    }

    fn check(&self, netns: u64, prefix: &IpPrefix, settings: Option<&PeerSettings>) -> Result<PeerPrefix, Denial> {
        if !self.registry.is_known_tuned(netns) {
            return Err(Denial::UnknownNetns(netns));
        }
        let prefix = PeerPrefix::new(&prefix.addr, prefix.len).map_err(|e| Denial::InvalidValue(e.to_string()))?;
        let Some(grant) = &self.grant.tcp else {
            return Err(Denial::NotGranted(format!(
                "{} may not set per-destination TCP settings: its manifest has no [tcp] table",
                self.policy
            )));
        };
        if !self.actuator.has_peer_map() {
            return Err(Denial::Unsupported("per-destination settings: the sockops program is not attached".into()));
        }
        match settings {
            Some(settings) => {
                settings.encode().map_err(|e| Denial::InvalidValue(e.to_string()))?;
                grant.check(&self.policy, &prefix, settings, &available_congestion())?;
            }
            None if !grant.covers(&prefix) => {
                return Err(Denial::NotGranted(format!("{} may not configure peers in {prefix}", self.policy)));
            }
            None => {}
        }
        self.arbiter.admit(&self.policy, netns, &peer_tunable(&prefix), Instant::now())?;
        Ok(prefix)
    }

    /// One line per denial kind per interval: prefixes come from the guest,
    /// so they are not a subject of their own.
    fn log_denial(&mut self, netns: u64, prefix: &IpPrefix, denial: &Denial) {
        let kind = grants::denial_kind(denial);
        let Some(unsaid) = self.denials.admit("tcp-peer", kind, Instant::now()) else { return };
        let detail = grants::denial_detail(denial);
        let netns_name = self.registry.name_of(netns).unwrap_or_else(|| format!("netns:{netns}"));
        let peer = PeerPrefix::new(&prefix.addr, prefix.len)
            .map_or_else(|_| "(invalid prefix)".to_string(), |p| peer_tunable(&p));
        tracing::warn!(
            event = "denied",
            policy = %self.policy,
            tunable = %peer,
            netns = %netns_name,
            denial = grants::denial_kind(denial),
            detail = %detail,
            unsaid,
            "denied policy {} a change of {peer}: {detail}{}",
            self.policy,
            if unsaid > 0 { format!(" ({unsaid} more denial(s) of this kind not logged)") } else { String::new() }
        );
    }
}

fn settings_from_wit(s: &crate::wit::wasmtune::policy::tcp::PeerSettings) -> PeerSettings {
    PeerSettings {
        congestion: s.congestion.clone(),
        initial_cwnd: s.initial_cwnd,
        window_clamp: s.window_clamp,
        no_delay: s.no_delay,
        syn_rto_ms: s.syn_rto_ms,
        on_loss_congestion: s.on_loss_congestion.clone(),
    }
}

impl Host for TcpCap {
    fn available_congestion(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(available_congestion())
    }

    fn set_peer(&mut self, change: PeerChange) -> wasmtime::Result<Result<(), Denial>> {
        let settings = settings_from_wit(&change.settings);
        let prefix = match self.check(change.netns, &change.peer, Some(&settings)) {
            Ok(prefix) => prefix,
            Err(denial) => {
                self.log_denial(change.netns, &change.peer, &denial);
                return Ok(Err(denial));
            }
        };
        self.actuator.submit_peer(AppliedPeerChange {
            policy: self.policy.clone(),
            netns: change.netns,
            prefix,
            settings: Some(settings),
            scenario: printable(&change.scenario, MAX_SCENARIO),
            reason: printable(&change.reason, MAX_REASON),
        });
        Ok(Ok(()))
    }

    fn clear_peer(&mut self, netns: u64, peer: IpPrefix, reason: String) -> wasmtime::Result<Result<(), Denial>> {
        let prefix = match self.check(netns, &peer, None) {
            Ok(prefix) => prefix,
            Err(denial) => {
                self.log_denial(netns, &peer, &denial);
                return Ok(Err(denial));
            }
        };
        self.actuator.submit_peer(AppliedPeerChange {
            policy: self.policy.clone(),
            netns,
            prefix,
            settings: None,
            scenario: "per-destination settings no longer needed".to_string(),
            reason: printable(&reason, MAX_REASON),
        });
        Ok(Ok(()))
    }
}
