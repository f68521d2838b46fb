//! Turning a [`Policy`] into the component's exports: the manifest section,
//! the guest-side state and the `handler` interface.
//!
//! [`export_policy!`](crate::export_policy) expands, in the policy crate, to
//! a `#[used]` static holding `policy.toml` in the `wasmtune-manifest` custom
//! section (which the host reads without running the guest), a thread-local
//! slot for the policy value, and an implementation of the generated
//! `Guest` trait that forwards to the functions below.

use std::cell::RefCell;
use std::thread::LocalKey;

use crate::{Config, Event, Info, InstantMs, Policy};

/// Where the exported policy lives between calls. A component instance is
/// single-threaded, so a thread-local is the whole guest's state.
pub type Slot<P> = LocalKey<RefCell<Option<P>>>;

/// `handler.init`: builds the policy and stores it, replacing any previous one.
pub fn init<P: Policy>(slot: &'static Slot<P>, config: Config) -> Result<Info, String> {
    let (policy, info) = P::init(&config)?;
    slot.with(|cell| *cell.borrow_mut() = Some(policy));
    Ok(info)
}

/// `handler.on-events`, after noting what the batch says about the initial
/// namespace ([`crate::init_netns`]). The host delivers nothing before a
/// successful init; if it did, the batch is dropped rather than trapping.
pub fn on_events<P: Policy>(slot: &'static Slot<P>, batch: Vec<Event>) {
    batch.iter().for_each(crate::netns::observe);
    slot.with(|cell| {
        if let Some(policy) = cell.borrow_mut().as_mut() {
            policy.on_events(&batch);
        }
    });
}

/// `handler.on-tick`.
pub fn on_tick<P: Policy>(slot: &'static Slot<P>, now: InstantMs) {
    slot.with(|cell| {
        if let Some(policy) = cell.borrow_mut().as_mut() {
            policy.on_tick(now);
        }
    });
}

/// Exports a [`Policy`] implementation as the component's `handler`, and
/// embeds the calling crate's `policy.toml` (next to its `Cargo.toml`) as
/// the `wasmtune-manifest` custom section; an `events` list there that names
/// an unknown kind fails the build (see [`crate::manifest`]). Invoke it
/// exactly once per policy crate:
///
/// ```ignore
/// wasmtune_sdk::export_policy!(MyPolicy);
/// ```
#[macro_export]
#[rustfmt::skip]
macro_rules! export_policy {
    ($policy:ty) => {
        const _: () = {
            // Fails the build on an `events` list the host would refuse.
            const _: usize = $crate::manifest::event_count(::core::include_bytes!(::core::concat!(
                ::core::env!("CARGO_MANIFEST_DIR"),
                "/policy.toml"
            )));

            // `include_bytes!` yields a fixed-size array, so the section's
            // length is known in const context.
            #[cfg_attr(target_arch = "wasm32", unsafe(link_section = "wasmtune-manifest"))]
            #[used]
            static WASMTUNE_MANIFEST: [u8; ::core::include_bytes!(::core::concat!(
                ::core::env!("CARGO_MANIFEST_DIR"),
                "/policy.toml"
            ))
            .len()] = *::core::include_bytes!(::core::concat!(::core::env!("CARGO_MANIFEST_DIR"), "/policy.toml"));

            ::std::thread_local! {
                static POLICY: ::core::cell::RefCell<::core::option::Option<$policy>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            // Constructed only by the generated exports, which exist only
            // in the component.
            #[allow(dead_code)]
            struct WasmtunePolicyExport;

            impl $crate::bindings::exports::wasmtune::policy::handler::Guest for WasmtunePolicyExport {
                fn init(config: $crate::Config) -> ::core::result::Result<$crate::Info, ::std::string::String> {
                    $crate::export::init::<$policy>(&POLICY, config)
                }

                fn on_events(batch: ::std::vec::Vec<$crate::Event>) {
                    $crate::export::on_events::<$policy>(&POLICY, batch)
                }

                fn on_tick(now: $crate::InstantMs) {
                    $crate::export::on_tick::<$policy>(&POLICY, now)
                }
            }

            // Native builds (unit tests of a policy crate) get no exports:
            // component export names are not valid native symbol names.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::export!(WasmtunePolicyExport with_types_in $crate::bindings);
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventKind;

    struct Recorder {
        batches: Vec<usize>,
        ticks: Vec<InstantMs>,
    }

    impl Policy for Recorder {
        fn init(config: &Config) -> Result<(Self, Info), String> {
            if config.learning_rate > 4 {
                return Err(format!("learning rate {} is above 4", config.learning_rate));
            }
            Ok((Recorder { batches: vec![], ticks: vec![] }, Info::events(&[EventKind::TcpBufferLimit])))
        }
        fn on_event(&mut self, _: &Event) {}
        fn on_events(&mut self, batch: &[Event]) {
            self.batches.push(batch.len());
        }
        fn on_tick(&mut self, now: InstantMs) {
            self.ticks.push(now);
        }
    }

    thread_local! {
        static SLOT: RefCell<Option<Recorder>> = const { RefCell::new(None) };
    }

    fn config(rate: u8) -> Config {
        Config { learning_rate: rate, settings: vec![] }
    }

    #[test]
    fn calls_before_init_are_dropped_and_later_ones_reach_the_policy() {
        on_events(&SLOT, vec![Event::Lost(1)]);
        on_tick(&SLOT, 5);
        assert!(SLOT.with(|s| s.borrow().is_none()));

        let info = init(&SLOT, config(4)).unwrap();
        assert_eq!(info.subscriptions, vec![EventKind::TcpBufferLimit]);
        on_events(&SLOT, vec![Event::Lost(1), Event::Lost(2)]);
        on_tick(&SLOT, 7);
        SLOT.with(|s| {
            let state = s.borrow();
            let recorder = state.as_ref().unwrap();
            assert_eq!(recorder.batches, vec![2]);
            assert_eq!(recorder.ticks, vec![7]);
        });
    }

    #[test]
    fn a_refused_init_keeps_no_state() {
        thread_local! {
            static EMPTY: RefCell<Option<Recorder>> = const { RefCell::new(None) };
        }
        assert_eq!(init(&EMPTY, config(9)).unwrap_err(), "learning rate 9 is above 4");
        assert!(EMPTY.with(|s| s.borrow().is_none()));
    }
}
