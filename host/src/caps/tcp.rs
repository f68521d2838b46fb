//! `wasmtune:policy/tcp`: per-destination TCP settings, applied by the
//! host's sockops program to new connections whose peer falls in a prefix.
//! Every request is checked, in this order: the namespace is tuned, the
//! prefix is one, the policy has a `[tcp]` grant, the sockops program runs,
//! the settings encode and the grant allows them (prefixes, algorithms,
//! bounds; algorithms this kernel offers), a prefix no one holds yet
//! overlaps no other policy's and the policy holds few enough, and the
//! arbiter admits it (one owner per `tcp-peer:<prefix>` per namespace, rate
//! limit). Accepted changes go to the actuator, which applies them in order
//! with sysctl changes and logs each one.

use std::sync::Arc;

use crate::actuate::PeerEntryChange;
use crate::caps::denials::DenialLog;
use crate::caps::kernel::KernelSide;
use crate::caps::sysctl::SysctlCap;
use crate::grants::{Arbiter, EffectiveGrant};
use crate::peer::{PeerPrefix, PeerSettings, peer_prefix};
use crate::text;
use crate::wit::Denial;
use crate::wit::wasmtune::policy::tcp::{Host, IpPrefix, PeerChange};

/// Where the kernel lists the congestion control algorithms it offers.
const AVAILABLE_CONGESTION: &str = "/proc/sys/net/ipv4/tcp_available_congestion_control";
/// Per-destination entries one policy may hold in one namespace.
pub const MAX_PEERS_PER_POLICY: usize = 256;

pub struct TcpCap {
    pub policy: String,
    grant: Arc<EffectiveGrant>,
    arbiter: Arc<Arbiter>,
    kernel: Arc<dyn KernelSide>,
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
    /// Shares the sysctl capability's grant, arbiter and kernel.
    pub fn new(sysctl: &SysctlCap) -> TcpCap {
        TcpCap {
            policy: sysctl.policy.clone(),
            grant: sysctl.grant.clone(),
            arbiter: sysctl.arbiter.clone(),
            kernel: sysctl.kernel.clone(),
            denials: if sysctl.shadow { DenialLog::for_shadow() } else { DenialLog::default() },
        }
    }

    fn check(&self, netns: u64, prefix: &IpPrefix, settings: Option<&PeerSettings>) -> Result<PeerPrefix, Denial> {
        if !self.kernel.is_known_tuned(netns) {
            return Err(Denial::UnknownNetns(netns));
        }
        let prefix = PeerPrefix::new(&prefix.addr, prefix.len).map_err(|e| Denial::InvalidValue(e.to_string()))?;
        let Some(grant) = &self.grant.tcp else {
            return Err(Denial::NotGranted(format!(
                "{} may not set per-destination TCP settings: its manifest has no [tcp] table",
                self.policy
            )));
        };
        if !self.kernel.has_peer_map() {
            return Err(Denial::Unsupported("per-destination settings: the sockops program is not attached".into()));
        }
        match settings {
            Some(settings) => {
                settings.encode().map_err(|e| Denial::InvalidValue(e.to_string()))?;
                grant.check(&self.policy, &prefix, settings, &self.kernel.available_congestion())?;
            }
            None if !grant.covers(&prefix) => {
                return Err(Denial::NotGranted(format!("{} may not configure peers in {prefix}", self.policy)));
            }
            None => {}
        }
        if let Some(why) = self.kernel.scope_refusal(netns, Some(&prefix)) {
            return Err(Denial::NotGranted(why));
        }
        let tunable = peer_tunable(&prefix);
        if settings.is_some() && self.arbiter.owner_of(netns, &tunable).is_none() {
            self.check_new_peer(netns, &prefix)?;
        }
        self.arbiter.admit(&self.policy, netns, &tunable, self.kernel.now())?;
        Ok(prefix)
    }

    /// A prefix no one holds yet: it may not overlap another policy's (one
    /// owner per destination, whatever the prefix lengths), and a policy
    /// holds at most [`MAX_PEERS_PER_POLICY`] per namespace, so that it
    /// cannot fill the kernel map the others share.
    fn check_new_peer(&self, netns: u64, prefix: &PeerPrefix) -> Result<(), Denial> {
        peer_conflict(&self.arbiter.owners(), &self.policy, netns, prefix)
    }

    fn queued_or_refused(&mut self, queued: bool, netns: u64, peer: &IpPrefix) -> Result<(), Denial> {
        if queued {
            return Ok(());
        }
        let denial = Denial::RateLimited(crate::caps::sysctl::QUEUE_FULL_RETRY_MS);
        self.log_denial(netns, peer, &denial);
        Err(denial)
    }

    /// One line per denial kind per interval: prefixes come from the guest,
    /// so they are not a subject of their own.
    fn log_denial(&mut self, netns: u64, prefix: &IpPrefix, denial: &Denial) {
        let kernel = &self.kernel;
        let peer = || {
            PeerPrefix::new(&prefix.addr, prefix.len)
                .map_or_else(|_| "(invalid prefix)".to_string(), |p| peer_tunable(&p))
        };
        self.denials.say(&self.policy, "tcp-peer", denial, peer, || kernel.netns_name(netns));
    }
}

/// Whether `policy` may take `prefix` in `netns`, given who owns what
/// (`(netns, tunable, owner)`, as [`Arbiter::owners`] lists them). Pure.
pub fn peer_conflict(
    owners: &[(u64, String, String)],
    policy: &str,
    netns: u64,
    prefix: &PeerPrefix,
) -> Result<(), Denial> {
    let mut held = 0usize;
    for (owner_netns, tunable, owner) in owners {
        let Some(other) = tunable.strip_prefix("tcp-peer:").and_then(peer_prefix) else { continue };
        if *owner_netns != netns {
            continue;
        }
        if owner == policy {
            held += 1;
        } else if other.contains(prefix) || prefix.contains(&other) {
            return Err(Denial::NotOwner(owner.clone()));
        }
    }
    if held >= MAX_PEERS_PER_POLICY {
        return Err(Denial::NotGranted(format!(
            "{policy} already holds {held} per-destination entries in this namespace, the most one policy may"
        )));
    }
    Ok(())
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
        Ok(self.kernel.available_congestion())
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
        let queued = self.kernel.submit_peer(PeerEntryChange {
            policy: self.policy.clone(),
            netns: change.netns,
            prefix,
            settings: Some(settings),
            scenario: text::scenario(&change.scenario),
            reason: text::reason(&change.reason),
        });
        Ok(self.queued_or_refused(queued, change.netns, &change.peer))
    }

    fn clear_peer(&mut self, netns: u64, peer: IpPrefix, reason: String) -> wasmtime::Result<Result<(), Denial>> {
        let prefix = match self.check(netns, &peer, None) {
            Ok(prefix) => prefix,
            Err(denial) => {
                self.log_denial(netns, &peer, &denial);
                return Ok(Err(denial));
            }
        };
        let queued = self.kernel.submit_peer(PeerEntryChange {
            policy: self.policy.clone(),
            netns,
            prefix,
            settings: None,
            scenario: "per-destination settings no longer needed".to_string(),
            reason: text::reason(&reason),
        });
        if queued {
            // A destination handed back is no one's: it no longer counts
            // against the policy's entries, and another may take it.
            self.arbiter.forget(netns, &peer_tunable(&prefix));
        }
        Ok(self.queued_or_refused(queued, netns, &peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> PeerPrefix {
        peer_prefix(text).expect("a prefix")
    }

    fn owned(netns: u64, text: &str, owner: &str) -> (u64, String, String) {
        (netns, peer_tunable(&prefix(text)), owner.to_string())
    }

    #[test]
    fn overlapping_prefixes_have_one_owner() {
        let owners = vec![owned(1, "10.0.0.0/8", "tcp-cong")];
        let wider = peer_conflict(&owners, "other", 1, &prefix("10.0.0.0/7"));
        let narrower = peer_conflict(&owners, "other", 1, &prefix("10.1.2.3/32"));
        assert_eq!(wider, Err(Denial::NotOwner("tcp-cong".into())));
        assert_eq!(narrower, Err(Denial::NotOwner("tcp-cong".into())));
        assert_eq!(peer_conflict(&owners, "other", 1, &prefix("11.0.0.0/8")), Ok(()));
        assert_eq!(peer_conflict(&owners, "other", 2, &prefix("10.1.2.3/32")), Ok(()), "another namespace");
        assert_eq!(peer_conflict(&owners, "tcp-cong", 1, &prefix("10.1.2.3/32")), Ok(()), "its own");
    }

    #[test]
    fn one_policy_cannot_fill_the_shared_map() {
        let owners: Vec<_> = (0..MAX_PEERS_PER_POLICY)
            .map(|i| owned(1, &format!("10.0.{}.{}/32", i / 256, i % 256), "greedy"))
            .collect();
        assert!(matches!(peer_conflict(&owners, "greedy", 1, &prefix("192.168.0.1/32")), Err(Denial::NotGranted(_))));
        assert_eq!(peer_conflict(&owners, "greedy", 2, &prefix("192.168.0.1/32")), Ok(()));
    }
}
