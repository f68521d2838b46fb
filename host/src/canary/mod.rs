//! Canary versions: a new version of a policy that acts only in a scope
//! (some network namespaces, or some peers' per-destination settings) while
//! the current version keeps everything else, judged by the health the host
//! already sees there and reverted on its own when it does worse.
//!
//! This module holds what the capabilities and the router need to honour a
//! scope ([`scope`]) and the pure judgement of health ([`health`]); the
//! reconciler starts, promotes, aborts and reverts canaries, and the daemon's
//! judge thread asks for a verdict once a second.

pub mod health;
pub mod scope;

/// How a canary's changes are named in the journal and the log: apart from
/// the current version's, so that they can be undone alone.
pub fn journal_label(policy: &str) -> String {
    format!("{policy} (canary)")
}
