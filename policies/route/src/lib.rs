//! # route: raise the IPv6 route table maximum when the table nears it
//!
//! On a `route-table` event whose entry count is within one learning-rate
//! step of `net.ipv6.route.max_size` (per network namespace), the maximum is
//! raised by one step, up to the kernel's int maximum. The decision is the
//! pure [`tuner`] module; this file carries it out through the host.
//!
//! `max_size` is the only tunable: where it does not exist (the host says
//! so once) or cannot be read, that namespace is left alone, quietly for a
//! missing one; the other namespaces are still tuned.

pub mod tuner;

use wasmtune_sdk::{Config, Event, Info, Level, Policy, Reading, RouteTable, Tunables};

use crate::tuner::{Decision, MAX_SIZE};

pub struct Route {
    learning_rate: u8,
    tunables: Tunables,
}

impl Route {
    fn on_table(&mut self, table: &RouteTable) {
        let Reading::Ready(current) = self.tunables.reading_one(table.netns, MAX_SIZE) else { return };
        match tuner::decide(table, Some(current), self.learning_rate) {
            Decision::Skip => {}
            Decision::CapReached => {
                let message = format!(
                    "{MAX_SIZE} in netns {} is at its cap ({}) and the table is still nearly full",
                    table.netns, table.max_size
                );
                self.tunables.say_once(&format!("{}/cap", table.netns), Level::Info, &message);
            }
            Decision::Raise(change) => {
                // A refusal is said once by `Tunables`; the next event retries.
                let _ = self.tunables.request(table.netns, &change);
            }
        }
    }
}

impl Policy for Route {
    fn init(config: &Config) -> Result<(Self, Info), String> {
        let policy = Route { learning_rate: config.learning_rate, tunables: Tunables::new(&[MAX_SIZE]) };
        Ok((policy, Info::events(wasmtune_sdk::declared_events!())))
    }

    fn on_event(&mut self, event: &Event) {
        match event {
            Event::RouteTable(table) => self.on_table(table),
            // Overrides and namespaces; lost events need no catching up (the
            // kernel reports the table again while it stays nearly full).
            other => self.tunables.observe(other),
        }
    }
}

wasmtune_sdk::export_policy!(Route);

#[cfg(test)]
mod tests {
    use wasmtune_sdk::EventKind;

    use super::*;

    #[test]
    fn init_subscribes_to_what_policy_toml_declares() {
        let config = Config { learning_rate: 4, settings: vec![] };
        let Ok((_, info)) = Route::init(&config) else { panic!("init refused") };
        assert_eq!(info.subscriptions, [EventKind::RouteTable, EventKind::AdminOverride]);
    }
}
