//! Where a canary acts: namespaces (everything the policy does there) or
//! peer prefixes (per-destination settings for those peers only), and the
//! rule each side (canary, current version) is held to while it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::RwLock;

use crate::peer::{PeerPrefix, peer_prefix};

/// The scope of one canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryScope {
    /// Network namespaces, by the name the daemon shows them under.
    Netns(BTreeSet<String>),
    /// Peer prefixes: per-destination settings for peers inside them.
    Peers(Vec<PeerPrefix>),
}

/// Why a scope cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("a canary needs a scope: --netns NAME... or --prefix CIDR...")]
    Empty,
    #[error("a canary is scoped to namespaces or to peer prefixes, not both")]
    Both,
    #[error("{0:?} is not a peer prefix (such as 10.1.0.0/16 or fd00::/8)")]
    BadPrefix(String),
    #[error("{0:?} is not a namespace name")]
    BadNetns(String),
}

impl CanaryScope {
    /// From the command line's or the configuration's lists.
    pub fn parse(netns: &[String], prefixes: &[String]) -> Result<CanaryScope, ScopeError> {
        match (netns.is_empty(), prefixes.is_empty()) {
            (true, true) => Err(ScopeError::Empty),
            (false, false) => Err(ScopeError::Both),
            (false, true) => {
                for name in netns {
                    if name.is_empty() || name.len() > 255 || name.contains('/') || name.chars().any(char::is_control) {
                        return Err(ScopeError::BadNetns(name.clone()));
                    }
                }
                Ok(CanaryScope::Netns(netns.iter().cloned().collect()))
            }
            (true, false) => prefixes
                .iter()
                .map(|text| peer_prefix(text).ok_or_else(|| ScopeError::BadPrefix(text.clone())))
                .collect::<Result<Vec<_>, _>>()
                .map(CanaryScope::Peers),
        }
    }

    /// Whether the namespace named `netns` is the canary's as a whole.
    pub fn owns_netns(&self, netns: &str) -> bool {
        matches!(self, CanaryScope::Netns(names) if names.contains(netns))
    }

    /// Whether a peer address lies inside a prefix of the scope.
    pub fn covers_peer(&self, peer: &PeerPrefix) -> bool {
        matches!(self, CanaryScope::Peers(prefixes) if prefixes.iter().any(|p| p.contains(peer)))
    }

    /// Why a change by `side` in `netns` (of `peer`'s settings, or of a
    /// sysctl when `None`) is not that side's to make while the canary
    /// runs; `None` when it is.
    pub fn refusal(&self, side: Side, netns: &str, peer: Option<&PeerPrefix>) -> Option<String> {
        match (self, side) {
            (CanaryScope::Netns(_), Side::Canary) => (!self.owns_netns(netns)).then(|| {
                format!("netns {netns} is outside the canary's scope ({self}); the current version acts there")
            }),
            (CanaryScope::Netns(_), Side::Current) => self.owns_netns(netns).then(|| {
                format!("netns {netns} belongs to the canary ({self}) until it is promoted, aborted or reverted")
            }),
            (CanaryScope::Peers(_), Side::Canary) => match peer {
                None => Some(format!("a canary scoped to peers ({self}) changes per-destination settings only")),
                Some(peer) if !self.covers_peer(peer) => {
                    Some(format!("peer {peer} is outside the canary's scope ({self}); the current version acts there"))
                }
                Some(_) => None,
            },
            (CanaryScope::Peers(prefixes), Side::Current) => {
                let peer = peer?;
                prefixes.iter().any(|p| p.contains(peer) || peer.contains(p)).then(|| {
                    format!(
                        "peer {peer} overlaps the canary's scope ({self}) until it is promoted, aborted or reverted"
                    )
                })
            }
        }
    }
}

impl fmt::Display for CanaryScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CanaryScope::Netns(names) => {
                write!(f, "netns {}", names.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
            }
            CanaryScope::Peers(prefixes) => {
                write!(f, "peers {}", prefixes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

/// Which version of a policy name a request comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The version that runs everywhere else.
    Current,
    /// The canary, in its scope.
    Canary,
}

/// The scopes of the canaries running now, by policy name: read on every
/// change request of either side, written when a canary starts or ends.
#[derive(Debug, Default)]
pub struct CanaryScopes {
    scopes: RwLock<BTreeMap<String, CanaryScope>>,
}

impl CanaryScopes {
    pub fn set(&self, policy: &str, scope: CanaryScope) {
        self.scopes.write().unwrap_or_else(|p| p.into_inner()).insert(policy.to_string(), scope);
    }

    pub fn remove(&self, policy: &str) -> Option<CanaryScope> {
        self.scopes.write().unwrap_or_else(|p| p.into_inner()).remove(policy)
    }

    pub fn get(&self, policy: &str) -> Option<CanaryScope> {
        self.scopes.read().unwrap_or_else(|p| p.into_inner()).get(policy).cloned()
    }

    pub fn is_empty(&self) -> bool {
        self.scopes.read().unwrap_or_else(|p| p.into_inner()).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix(text: &str) -> PeerPrefix {
        peer_prefix(text).expect("a prefix")
    }

    #[test]
    fn a_scope_is_namespaces_or_peers_never_both_or_neither() {
        let names = vec!["edge".to_string()];
        let prefixes = vec!["10.1.0.0/16".to_string()];
        assert_eq!(CanaryScope::parse(&[], &[]), Err(ScopeError::Empty));
        assert_eq!(CanaryScope::parse(&names, &prefixes), Err(ScopeError::Both));
        assert_eq!(CanaryScope::parse(&[], &["10.1.0.0/99".into()]), Err(ScopeError::BadPrefix("10.1.0.0/99".into())));
        assert_eq!(CanaryScope::parse(&["../x".into()], &[]), Err(ScopeError::BadNetns("../x".into())));
        assert!(CanaryScope::parse(&names, &[]).expect("netns").owns_netns("edge"));
        assert!(CanaryScope::parse(&[], &prefixes).expect("peers").covers_peer(&prefix("10.1.2.3/32")));
    }

    #[test]
    fn in_a_namespace_scope_each_side_acts_on_its_own_side_only() {
        let scope = CanaryScope::Netns(["edge".to_string()].into());
        assert_eq!(scope.refusal(Side::Canary, "edge", None), None);
        assert!(scope.refusal(Side::Canary, "core", None).is_some());
        assert!(scope.refusal(Side::Current, "edge", None).is_some());
        assert!(scope.refusal(Side::Current, "edge", Some(&prefix("10.0.0.1/32"))).is_some());
        assert_eq!(scope.refusal(Side::Current, "core", None), None);
    }

    #[test]
    fn in_a_peer_scope_the_canary_sets_its_peers_and_nothing_else() {
        let scope = CanaryScope::Peers(vec![prefix("10.1.0.0/16")]);
        assert_eq!(scope.refusal(Side::Canary, "any", Some(&prefix("10.1.2.3/32"))), None);
        assert!(scope.refusal(Side::Canary, "any", Some(&prefix("10.2.0.1/32"))).is_some());
        assert!(scope.refusal(Side::Canary, "any", Some(&prefix("10.0.0.0/8"))).is_some(), "wider than the scope");
        assert!(scope.refusal(Side::Canary, "any", None).is_some(), "no sysctls");
        assert!(scope.refusal(Side::Current, "any", Some(&prefix("10.1.2.3/32"))).is_some());
        assert!(scope.refusal(Side::Current, "any", Some(&prefix("10.0.0.0/8"))).is_some(), "overlapping");
        assert_eq!(scope.refusal(Side::Current, "any", Some(&prefix("10.2.0.1/32"))), None);
        assert_eq!(scope.refusal(Side::Current, "any", None), None, "sysctls stay the current version's");
    }
}
