//! The bookkeeping around every change a tuner makes, kept in one place so
//! that each policy's code is its decision and nothing else.
//!
//! For each tunable it changes, a tuner
//!
//! 1. leaves it alone in a namespace where the administrator has taken it
//!    over (an `admin-override` event, until `admin-release`: see
//!    [`Overrides`]);
//! 2. reads it as the number of integer fields it expects: one this kernel
//!    lacks, or of another shape, is said once (at debug level when the host
//!    has already reported it missing), a refused read once per kind;
//! 3. waits while an earlier request has not shown in the kernel yet: the
//!    host applies requests after the call returns, so the next batch may
//!    still carry events about the old value (see [`Settle`]);
//! 4. decides, then requests the change: an accepted one is remembered for
//!    step 3, a refusal said once per namespace, tunable and kind.
//!
//! [`Tunables::reading`] is steps 1 to 3 for one tunable and
//! [`Tunables::request`] step 4; [`Tunables::observe`] follows the events
//! step 1 depends on. The smaller steps ([`read`](Tunables::read),
//! [`settling`](Tunables::settling), ...) are there for tuners that plan
//! several tunables together.
//!
//! ```no_run
//! use wasmtune_sdk::{Change, Event, Reading, RouteTable, Tunables, rate};
//!
//! const MAX_SIZE: &str = "net.ipv6.route.max_size";
//!
//! struct Route {
//!     learning_rate: u8,
//!     tunables: Tunables,
//! }
//!
//! impl Route {
//!     fn new(learning_rate: u8) -> Route {
//!         Route { learning_rate, tunables: Tunables::new(&[MAX_SIZE]) }
//!     }
//!
//!     fn on_event(&mut self, event: &Event) {
//!         match event {
//!             Event::RouteTable(table) => self.on_table(table),
//!             // Overrides, releases and namespaces; anything else is ignored.
//!             other => self.tunables.observe(other),
//!         }
//!     }
//!
//!     fn on_table(&mut self, table: &RouteTable) {
//!         let Reading::Ready(max) = self.tunables.reading_one(table.netns, MAX_SIZE) else { return };
//!         let max = max.max(0).unsigned_abs();
//!         if !rate::nearly_full(u64::from(table.entries), max, self.learning_rate) {
//!             return;
//!         }
//!         let Some(new) = rate::raise(max, self.learning_rate, i32::MAX as u64) else { return };
//!         let reason = format!("{} routes of at most {max}", table.entries);
//!         let change = Change::new(MAX_SIZE, vec![new as i64], "IPv6 route table nearly full", reason);
//!         // A refusal is already logged, once; nothing else to do about it.
//!         let _ = self.tunables.request(table.netns, &change);
//!     }
//! }
//! ```

use crate::change::{LogOnce, denial_level};
use crate::host::{Host, Imports};
use crate::overrides::{self, Overrides};
use crate::settle::Settle;
use crate::sysctl::{self, Tunable};
use crate::{Change, Denial, Event, InstantMs, Level, NetnsId};

/// What [`Tunables::reading`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reading<T> {
    /// The value in force: decide with it.
    Ready(T),
    /// Not on this kernel, not of the expected shape, or refused (said
    /// once): the decisions that need it are skipped, the others go on.
    Unavailable,
    /// The administrator owns it here, or an earlier request has not shown
    /// yet: leave the event alone.
    Hold,
}

impl<T> Reading<T> {
    /// The value, unless [`Reading::Hold`] or [`Reading::Unavailable`].
    pub fn ready(self) -> Option<T> {
        match self {
            Reading::Ready(value) => Some(value),
            Reading::Unavailable | Reading::Hold => None,
        }
    }
}

/// The tunables one policy changes, and what it remembers about them:
/// administrator overrides, requests on their way, problems already said.
#[derive(Debug)]
pub struct Tunables<H = Imports> {
    host: H,
    /// The sysctls this policy changes: overrides of others are not its news.
    ours: &'static [&'static str],
    overrides: Overrides,
    settle: Settle,
    said: LogOnce,
}

impl Tunables {
    /// Bookkeeping for `ours`, the sysctls the policy changes, through the
    /// component's imports.
    pub fn new(ours: &'static [&'static str]) -> Tunables {
        Tunables::with_host(Imports, ours)
    }
}

impl<H: Host> Tunables<H> {
    /// [`Tunables::new`] through another [`Host`] (a fake, in native tests).
    pub fn with_host(host: H, ours: &'static [&'static str]) -> Tunables<H> {
        Tunables { host, ours, overrides: Overrides::new(), settle: Settle::new(), said: LogOnce::new() }
    }

    /// The host these calls go through.
    pub fn host(&mut self) -> &mut H {
        &mut self.host
    }

    /// The host these calls went through, giving up the bookkeeping.
    pub fn into_host(self) -> H {
        self.host
    }

    /// The host's clock, milliseconds.
    pub fn now(&mut self) -> InstantMs {
        self.host.now()
    }

    /// Follows the events every tuner treats alike: an administrator taking
    /// one of ours over or handing it back (each said once in the log) and
    /// namespaces going away. Any other event is ignored, so a policy can
    /// pass on everything it does not handle itself.
    pub fn observe(&mut self, event: &Event) {
        match event {
            Event::AdminOverride(taken)
                if self.ours.contains(&taken.sysctl.as_str()) && self.overrides.record(taken) =>
            {
                self.host.log(Level::Info, &overrides::taken_over(taken));
            }
            Event::AdminRelease(released) if self.overrides.forget(released.netns, &released.sysctl) => {
                self.host.log(Level::Info, &overrides::handed_back(released));
            }
            Event::NamespaceChange(change) if !change.created => self.overrides.forget_netns(change.netns),
            _ => {}
        }
    }

    /// Whether the administrator owns `name` in `netns`.
    pub fn overridden(&self, netns: NetnsId, name: &str) -> bool {
        self.overrides.owns(netns, name)
    }

    /// Steps 1 to 3 for `name` in `netns`, read as exactly `fields`
    /// integers.
    pub fn reading(&mut self, netns: NetnsId, name: &str, fields: usize) -> Reading<Vec<i64>> {
        if self.overridden(netns, name) {
            return Reading::Hold;
        }
        let Some(current) = self.read(netns, name, fields) else { return Reading::Unavailable };
        if self.settling(netns, name, &current) {
            return Reading::Hold;
        }
        Reading::Ready(current)
    }

    /// [`Tunables::reading`] of a one-integer sysctl.
    pub fn reading_one(&mut self, netns: NetnsId, name: &str) -> Reading<i64> {
        match self.reading(netns, name, 1) {
            Reading::Ready(fields) => match fields.as_slice() {
                [value] => Reading::Ready(*value),
                _ => Reading::Unavailable,
            },
            Reading::Unavailable => Reading::Unavailable,
            Reading::Hold => Reading::Hold,
        }
    }

    /// `name` in `netns` as exactly `fields` integers, or `None` (said once)
    /// when there is none to decide with. Overrides and requests on their
    /// way are not considered: see [`Tunables::reading`].
    pub fn read(&mut self, netns: NetnsId, name: &str, fields: usize) -> Option<Vec<i64>> {
        let read = self.host.read(netns, name);
        // The host reports a tunable this kernel lacks (`tunable-missing`);
        // a value of an unexpected shape only this policy can notice.
        let level = if read.is_ok() { Level::Warn } else { Level::Debug };
        match sysctl::integers_outcome(name, fields, read) {
            Tunable::Present(values) => Some(values),
            Tunable::Missing(why) => {
                let message = format!("{why}; the decisions that need {name} in netns {netns} are skipped");
                self.say_once(&format!("{netns}/{name}/missing"), level, &message);
                None
            }
            Tunable::Refused(denial) => {
                self.log_denial(netns, name, &denial);
                None
            }
        }
    }

    /// [`Tunables::read`] of a one-integer sysctl.
    pub fn read_one(&mut self, netns: NetnsId, name: &str) -> Option<i64> {
        match self.read(netns, name, 1)?.as_slice() {
            [value] => Some(*value),
            _ => None,
        }
    }

    /// Whether a request for `name` in `netns` is still on its way: made,
    /// not yet shown in `current`, and not yet presumed lost.
    pub fn settling(&mut self, netns: NetnsId, name: &str, current: &[i64]) -> bool {
        let now = self.host.now();
        self.settle.waiting(&settle_key(netns, name), current, now)
    }

    /// Step 4: asks for `change` in `netns`. An accepted request is
    /// remembered until the kernel shows it; a refusal is said once per
    /// namespace, tunable and kind, and returned for a caller that must act
    /// on it. A tunable the administrator owns is not asked for: that is
    /// answered here with the host's `admin-override`, without a word (its
    /// override was said when it came).
    pub fn request(&mut self, netns: NetnsId, change: &Change) -> Result<(), Denial> {
        if self.overridden(netns, &change.name) {
            return Err(Denial::AdminOverride(format!("the administrator changed {} in netns {netns}", change.name)));
        }
        match self.host.request(netns, change) {
            Ok(()) => {
                let now = self.host.now();
                self.settle.requested(&settle_key(netns, &change.name), &change.fields, now);
                Ok(())
            }
            Err(denial) => {
                self.log_denial(netns, &change.name, &denial);
                Err(denial)
            }
        }
    }

    /// Says that `name` in `netns` was not changed because of `denial`,
    /// once per namespace, tunable and kind, at the level the kind deserves.
    /// For a request made through [`Tunables::host`] to handle a denial
    /// first (a retry under a narrower bound, say).
    pub fn log_denial(&mut self, netns: NetnsId, name: &str, denial: &Denial) {
        let message = format!("{name} in netns {netns} not changed: {}", denial.explain());
        self.say_once(&format!("{netns}/{name}/{}", denial.kind()), denial_level(denial), &message);
    }

    /// Writes `message` the first time `key` is said.
    pub fn say_once(&mut self, key: &str, level: Level, message: &str) {
        if self.said.first(key) {
            self.host.log(level, message);
        }
    }
}

/// Requests on their way are kept per namespace and tunable.
fn settle_key(netns: NetnsId, name: &str) -> String {
    format!("{netns}/{name}")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::settle::SETTLE_TIMEOUT_MS;
    use crate::{AdminOverride, AdminRelease, Bounds, NamespaceChange, SysctlValue};

    const NETNS: NetnsId = 7;
    const BACKLOG: &str = "net.core.netdev_max_backlog";
    const BUDGET: &str = "net.core.netdev_budget";

    /// A host with sysctls in a map, requests applied when [`Fake::returned`]
    /// says the export call is over, and every log line kept.
    #[derive(Default)]
    struct Fake {
        sysctls: BTreeMap<(NetnsId, String), SysctlValue>,
        /// The answer to every read, when set.
        unreadable: Option<Denial>,
        /// The answer to every request, when set.
        refuse: Option<Denial>,
        queued: Vec<(NetnsId, Change)>,
        requests: Vec<String>,
        logs: Vec<(Level, String)>,
        clock: InstantMs,
    }

    impl Fake {
        fn with(name: &str, fields: &[i64]) -> Fake {
            let mut fake = Fake::default();
            fake.sysctls.insert((NETNS, name.to_string()), SysctlValue::Integers(fields.to_vec()));
            fake
        }

        fn returned(&mut self) {
            for (netns, change) in self.queued.drain(..) {
                self.sysctls.insert((netns, change.name), SysctlValue::Integers(change.fields));
            }
            self.clock += 100;
        }
    }

    impl Host for Fake {
        fn read(&mut self, netns: NetnsId, name: &str) -> Result<SysctlValue, Denial> {
            if let Some(denial) = self.unreadable.clone() {
                return Err(denial);
            }
            self.sysctls
                .get(&(netns, name.to_string()))
                .cloned()
                .ok_or_else(|| Denial::Unsupported(format!("{name} does not exist on this kernel")))
        }

        fn request(&mut self, netns: NetnsId, change: &Change) -> Result<(), Denial> {
            self.requests.push(change.name.clone());
            if let Some(denial) = self.refuse.clone() {
                return Err(denial);
            }
            self.queued.push((netns, change.clone()));
            Ok(())
        }

        fn log(&mut self, level: Level, message: &str) {
            self.logs.push((level, message.to_string()));
        }

        fn now(&mut self) -> InstantMs {
            self.clock
        }
    }

    fn tunables(fake: Fake) -> Tunables<Fake> {
        Tunables::with_host(fake, &[BACKLOG, BUDGET])
    }

    fn raise(name: &str, to: i64) -> Change {
        Change::new(name, vec![to], "test", "because".into())
    }

    fn taken(sysctl: &str) -> Event {
        Event::AdminOverride(AdminOverride { netns: NETNS, sysctl: sysctl.into(), pid: 42, comm: "sysctl".into() })
    }

    #[test]
    fn a_request_is_waited_out_until_the_kernel_shows_it() {
        let mut t = tunables(Fake::with(BACKLOG, &[1000]));
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Ready(1000));
        assert_eq!(t.request(NETNS, &raise(BACKLOG, 1250)), Ok(()));
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Hold, "the same call still reads the old value");
        t.host().returned();
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Ready(1250));
        assert!(t.host().logs.is_empty(), "a change is explained by its reason: {:?}", t.host().logs);
    }

    #[test]
    fn a_request_that_never_shows_is_presumed_lost() {
        let mut t = tunables(Fake::with(BACKLOG, &[1000]));
        assert_eq!(t.request(NETNS, &raise(BACKLOG, 1250)), Ok(()));
        t.host().queued.clear();
        t.host().clock += SETTLE_TIMEOUT_MS - 1;
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Hold);
        t.host().clock += 1;
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Ready(1000));
    }

    #[test]
    fn requests_settle_per_namespace_and_tunable() {
        let mut fake = Fake::with(BACKLOG, &[1000]);
        fake.sysctls.insert((NETNS, BUDGET.into()), SysctlValue::Integers(vec![300]));
        fake.sysctls.insert((NETNS + 1, BACKLOG.into()), SysctlValue::Integers(vec![1000]));
        let mut t = tunables(fake);
        assert_eq!(t.request(NETNS, &raise(BACKLOG, 1250)), Ok(()));
        assert_eq!(t.reading_one(NETNS, BUDGET), Reading::Ready(300));
        assert_eq!(t.reading_one(NETNS + 1, BACKLOG), Reading::Ready(1000));
    }

    #[test]
    fn an_overridden_tunable_is_held_and_never_asked_for_until_handed_back() {
        let mut t = tunables(Fake::with(BACKLOG, &[1000]));
        t.observe(&taken(BACKLOG));
        t.observe(&taken(BACKLOG));
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Hold);
        assert!(matches!(t.request(NETNS, &raise(BACKLOG, 1250)), Err(Denial::AdminOverride(_))));
        assert!(t.host().requests.is_empty(), "the host is not asked");
        t.observe(&Event::AdminRelease(AdminRelease { netns: NETNS, sysctl: BACKLOG.into() }));
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Ready(1000));
        let logs: Vec<&str> = t.host().logs.iter().map(|(_, line)| line.as_str()).collect();
        assert_eq!(
            logs,
            [
                "sysctl (42) changed net.core.netdev_max_backlog in netns 7; leaving it alone there",
                "the administrator handed net.core.netdev_max_backlog in netns 7 back; tuning it again",
            ]
        );
    }

    #[test]
    fn overrides_of_other_sysctls_and_gone_namespaces_are_forgotten() {
        let mut t = tunables(Fake::with(BACKLOG, &[1000]));
        t.observe(&taken("net.core.rmem_max"));
        assert!(!t.overridden(NETNS, "net.core.rmem_max"));
        t.observe(&taken(BACKLOG));
        t.observe(&Event::NamespaceChange(NamespaceChange { netns: NETNS, name: "pid:9".into(), created: false }));
        assert!(!t.overridden(NETNS, BACKLOG));
        t.observe(&Event::Lost(3));
        assert_eq!(t.host().logs.len(), 1, "only our override is news: {:?}", t.host().logs);
    }

    #[test]
    fn a_missing_tunable_is_unavailable_and_said_once_quietly() {
        let mut t = tunables(Fake::default());
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Unavailable);
        assert_eq!(t.read_one(NETNS, BACKLOG), None);
        assert_eq!(t.host().logs.len(), 1);
        let (level, line) = &t.host().logs[0];
        assert_eq!(*level, Level::Debug);
        assert!(line.ends_with("the decisions that need net.core.netdev_max_backlog in netns 7 are skipped"), "{line}");
    }

    #[test]
    fn a_value_of_another_shape_is_unavailable_and_a_warning() {
        let mut t = tunables(Fake::with(BACKLOG, &[1000, 2000]));
        assert_eq!(t.reading(NETNS, BACKLOG, 1), Reading::Unavailable);
        assert_eq!(t.host().logs[0].0, Level::Warn);
        assert!(t.host().logs[0].1.contains("holds 2 integer(s) here, not 1"), "{:?}", t.host().logs);
        assert_eq!(t.read(NETNS, BACKLOG, 2), Some(vec![1000, 2000]));
    }

    #[test]
    fn a_refusal_is_returned_and_said_once_per_kind() {
        let mut t = tunables(Fake::with(BACKLOG, &[1000]));
        t.host().refuse = Some(Denial::OutOfBounds(Bounds { min: 64, max: 1100 }));
        for _ in 0..3 {
            assert!(matches!(t.request(NETNS, &raise(BACKLOG, 1250)), Err(Denial::OutOfBounds(_))));
        }
        t.host().refuse = Some(Denial::RateLimited(40));
        assert_eq!(t.request(NETNS, &raise(BACKLOG, 1250)), Err(Denial::RateLimited(40)));
        assert_eq!(t.host().requests.len(), 4, "nothing is held after a refusal");
        assert_eq!(
            t.host().logs,
            [
                (
                    Level::Warn,
                    "net.core.netdev_max_backlog in netns 7 not changed: outside the allowed range 64..=1100"
                        .to_string()
                ),
                (
                    Level::Debug,
                    "net.core.netdev_max_backlog in netns 7 not changed: changed too recently; retry in 40 ms"
                        .to_string()
                ),
            ]
        );
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Ready(1000));
    }

    #[test]
    fn a_refused_read_is_unavailable_and_said_once_as_a_denial() {
        let mut t = tunables(Fake::with(BACKLOG, &[1000]));
        t.host().unreadable = Some(Denial::NotGranted("not in the manifest".into()));
        assert_eq!(t.reading_one(NETNS, BACKLOG), Reading::Unavailable);
        assert_eq!(t.read_one(NETNS, BACKLOG), None);
        assert_eq!(
            t.host().logs,
            [(
                Level::Warn,
                "net.core.netdev_max_backlog in netns 7 not changed: not granted: not in the manifest".to_string()
            )]
        );
    }

    #[test]
    fn say_once_says_each_key_once() {
        let mut t = tunables(Fake::default());
        t.say_once("7/cap", Level::Info, "at its cap");
        t.say_once("7/cap", Level::Info, "at its cap");
        t.say_once("8/cap", Level::Info, "at its cap");
        assert_eq!(t.host().logs.len(), 2);
    }
}
