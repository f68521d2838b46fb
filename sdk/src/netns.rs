//! The initial network namespace: where the global sysctls live
//! (`net.core.*`, `tcp_mem`, `udp_mem`, the default neighbour table), whatever
//! namespace the event that calls for a change was seen in.
//!
//! The host names it once, in a `namespace-change` event called `init`,
//! before any other event (and again after an instance rebuild). The export
//! glue notes it before the policy sees the batch, so a policy that declares
//! `namespace-change` in its manifest just asks [`init_netns`].

use std::cell::Cell;

use crate::{Event, NamespaceChange, NetnsId};

/// The name the host gives the initial namespace in `namespace-change`.
pub const INIT_NAME: &str = "init";

thread_local! {
    // A component instance is single-threaded, and rebuilt with empty memory
    // after a fault, when the host names the namespaces again.
    static INIT_NETNS: Cell<Option<NetnsId>> = const { Cell::new(None) };
}

/// The initial namespace, once the host has named it; `None` before that,
/// when the host does not tune it, or when the policy's manifest does not
/// declare `namespace-change`.
pub fn init_netns() -> Option<NetnsId> {
    INIT_NETNS.with(Cell::get)
}

/// Notes what `event` says about the initial namespace. The export glue
/// calls it for every event; native tests that drive a policy directly call
/// it themselves, as the glue would.
pub fn observe(event: &Event) {
    let Event::NamespaceChange(change) = event else { return };
    INIT_NETNS.with(|init| init.set(following(init.get(), change)));
}

/// The initial namespace after `change`, given `known` before it.
fn following(known: Option<NetnsId>, change: &NamespaceChange) -> Option<NetnsId> {
    match (change.created, change.name == INIT_NAME) {
        (true, true) => Some(change.netns),
        (false, _) if known == Some(change.netns) => None,
        _ => known,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(netns: NetnsId, name: &str, created: bool) -> Event {
        Event::NamespaceChange(NamespaceChange { netns, name: name.into(), created })
    }

    #[test]
    fn the_namespace_named_init_is_the_initial_one() {
        assert_eq!(init_netns(), None);
        observe(&change(7, "pid:12", true));
        observe(&Event::Lost(3));
        assert_eq!(init_netns(), None);
        observe(&change(1, INIT_NAME, true));
        observe(&change(7, "pid:12", false));
        assert_eq!(init_netns(), Some(1));
        observe(&change(1, INIT_NAME, false));
        assert_eq!(init_netns(), None, "gone with its namespace");
    }
}
