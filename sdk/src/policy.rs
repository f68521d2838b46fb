//! The trait a policy implements, and conveniences on the types it receives
//! at start-up and returns from it.

use crate::{Config, Event, EventKind, Info, InstantMs};

/// A tuning policy. Export it with [`crate::export_policy!`]; the SDK keeps
/// the value between calls.
///
/// The host calls [`init`](Policy::init) once, then delivers batches of
/// events and, if [`Info::tick_ms`] asked for it, periodic ticks. A panic
/// traps: the host counts it as a fault of this policy and eventually
/// quarantines the policy, so handle denials and odd values instead.
pub trait Policy: Sized + 'static {
    /// Builds the policy from the administrator's config and says what to
    /// deliver. An `Err` refuses to start, with the message logged.
    fn init(config: &Config) -> Result<(Self, Info), String>;

    /// Handles one event (the default [`on_events`](Policy::on_events)
    /// calls it for each event of a batch, in kernel order).
    fn on_event(&mut self, event: &Event);

    /// Handles a batch of events. Override to act once per batch.
    fn on_events(&mut self, batch: &[Event]) {
        for event in batch {
            self.on_event(event);
        }
    }

    /// Called every [`Info::tick_ms`] milliseconds; `now` is the host's
    /// monotonic clock in milliseconds.
    fn on_tick(&mut self, now: InstantMs) {
        let _ = now;
    }
}

impl Info {
    /// Subscribes to `kinds`, without ticks.
    pub fn events(kinds: &[EventKind]) -> Info {
        Info { subscriptions: kinds.to_vec(), tick_ms: None }
    }

    /// Asks for [`Policy::on_tick`] every `period_ms` (the host clamps it to
    /// 100 ms ..= 1 h).
    pub fn with_tick_ms(self, period_ms: u32) -> Info {
        Info { tick_ms: Some(period_ms), ..self }
    }
}

impl Config {
    /// The administrator's setting `key` for this policy, if any.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_builders_fill_both_fields() {
        let info = Info::events(&[EventKind::TcpBufferLimit]).with_tick_ms(1000);
        assert_eq!(info.subscriptions, vec![EventKind::TcpBufferLimit]);
        assert_eq!(info.tick_ms, Some(1000));
        assert_eq!(Info::events(&[]).tick_ms, None);
    }

    #[test]
    fn settings_are_found_by_key() {
        let config = Config { learning_rate: 4, settings: vec![("mode".into(), "gentle".into())] };
        assert_eq!(config.setting("mode"), Some("gentle"));
        assert_eq!(config.setting("other"), None);
    }

    struct Counter {
        events: usize,
    }

    impl Policy for Counter {
        fn init(_: &Config) -> Result<(Self, Info), String> {
            Ok((Counter { events: 0 }, Info::events(&[])))
        }
        fn on_event(&mut self, _: &Event) {
            self.events += 1;
        }
    }

    #[test]
    fn default_on_events_visits_every_event() {
        let (mut policy, _) = Counter::init(&Config { learning_rate: 4, settings: vec![] }).unwrap();
        policy.on_events(&[Event::Lost(1), Event::Lost(2), Event::Lost(3)]);
        assert_eq!(policy.events, 3);
    }
}
