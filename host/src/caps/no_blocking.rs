//! WASI calls that would wait, refused. Fuel and the epoch deadline
//! interrupt guest code only: a host call that waits (for a timer, for I/O)
//! holds the policy's thread for as long as the guest asks, and with it
//! whatever waits for that thread (unload, replace, the daemon's stop).
//! Rust's `std::thread::sleep` is such a call. A policy has no reason to
//! wait, so the WASI functions that can are redefined over what
//! `wasmtime_wasi::p2::add_to_linker_sync` put in the linker:
//!
//! - `wasi:io/poll` `poll` and `[method]pollable.block` fail the call
//!   outright, even on a pollable that is ready: wasmtime-wasi's zero-length
//!   timer reports itself not ready the first time it is polled (it yields
//!   to tokio), so "ready ones pass" would not even hold for
//!   `subscribe-duration(0)`. `[method]pollable.ready`, which never waits,
//!   stays for a guest that wants to know.
//! - The `blocking-*` methods of `wasi:io/streams` run wasmtime-wasi's own
//!   implementation, polled once: they fail the call only if it would wait.
//!   The streams a policy can reach (stdin closed; stdout and stderr sinks)
//!   never do, and must keep working: Rust's standard library writes its
//!   panic messages with them.
//!
//! Nothing else in the set can wait on anything a policy can reach: there
//! are no preopened directories (so no file descriptors), name lookup is
//! denied, and every socket address is refused before a connection exists.
//!
//! A refusal is a trap carrying [`PolicyBlocked`], which the fault
//! classification names `blocked`.

use std::future::Future;
use std::pin::pin;

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, LinkerInstance, Resource};
use wasmtime_wasi::p2::bindings::io::streams::{HostInputStream, HostOutputStream};
use wasmtime_wasi::p2::bindings::sync::io::streams::{Host as StreamsHost, StreamError as WitStreamError};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamResult};
use wasmtime_wasi::runtime::{poll_noop, with_ambient_tokio_runtime};
use wasmtime_wasi::{ResourceTable, WasiView};

/// The `wasi:io` interfaces as wasmtime-wasi 48 defines them (its
/// `wit/deps/io.wit`); a guest built against any 0.2.x links to these.
/// Redefining under another version would leave the originals in place:
/// the tests in `host/tests/no_blocking.rs` catch that on an upgrade.
pub const POLL_INTERFACE: &str = "wasi:io/poll@0.2.12";
pub const STREAMS_INTERFACE: &str = "wasi:io/streams@0.2.12";

/// A policy called a WASI function that would have waited.
#[derive(Debug, thiserror::Error)]
#[error("a policy may not block ({call}): {why}")]
pub struct PolicyBlocked {
    pub call: &'static str,
    why: &'static str,
}

const WAITS_FOR_READINESS: &str =
    "it waits for a timer or for I/O, which neither fuel nor the call's deadline can interrupt";
const STREAM_NOT_READY: &str = "the stream is not ready, and waiting for it would hold the policy's thread";

/// Replaces every WASI function that could wait; call after
/// `wasmtime_wasi::p2::add_to_linker_sync`.
pub fn refuse_waiting<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let redefined = refuse_poll(linker).and_then(|()| refuse_waiting_streams(linker));
    linker.allow_shadowing(false);
    redefined
}

fn refuse_poll<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut poll = linker.instance(POLL_INTERFACE)?;
    poll.func_wrap("poll", |_, _: (Vec<Resource<DynPollable>>,)| -> wasmtime::Result<(Vec<u32>,)> {
        Err(PolicyBlocked { call: "wasi:io/poll.poll", why: WAITS_FOR_READINESS }.into())
    })?;
    poll.func_wrap("[method]pollable.block", |_, _: (Resource<DynPollable>,)| -> wasmtime::Result<()> {
        Err(PolicyBlocked { call: "wasi:io/poll.[method]pollable.block", why: WAITS_FOR_READINESS }.into())
    })?;
    Ok(())
}

fn refuse_waiting_streams<T: WasiView + 'static>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    let mut streams = linker.instance(STREAMS_INTERFACE)?;
    refuse_waiting_input(&mut streams)?;
    refuse_waiting_output(&mut streams)
}

fn refuse_waiting_input<T: WasiView + 'static>(streams: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    streams.func_wrap(
        "[method]input-stream.blocking-read",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynInputStream>, u64)| {
            let table = store.data_mut().ctx().table;
            let read = unless_waiting(
                "wasi:io/streams.[method]input-stream.blocking-read",
                HostInputStream::blocking_read(table, stream, len),
            )?;
            Ok((to_wit(table, read)?,))
        },
    )?;
    streams.func_wrap(
        "[method]input-stream.blocking-skip",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynInputStream>, u64)| {
            let table = store.data_mut().ctx().table;
            let skipped = unless_waiting(
                "wasi:io/streams.[method]input-stream.blocking-skip",
                HostInputStream::blocking_skip(table, stream, len),
            )?;
            Ok((to_wit(table, skipped)?,))
        },
    )
}

fn refuse_waiting_output<T: WasiView + 'static>(streams: &mut LinkerInstance<'_, T>) -> wasmtime::Result<()> {
    streams.func_wrap(
        "[method]output-stream.blocking-write-and-flush",
        |mut store: StoreContextMut<'_, T>, (stream, bytes): (Resource<DynOutputStream>, Vec<u8>)| {
            let table = store.data_mut().ctx().table;
            let written = unless_waiting(
                "wasi:io/streams.[method]output-stream.blocking-write-and-flush",
                HostOutputStream::blocking_write_and_flush(table, stream, bytes),
            )?;
            Ok((to_wit(table, written)?,))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-write-zeroes-and-flush",
        |mut store: StoreContextMut<'_, T>, (stream, len): (Resource<DynOutputStream>, u64)| {
            let table = store.data_mut().ctx().table;
            let written = unless_waiting(
                "wasi:io/streams.[method]output-stream.blocking-write-zeroes-and-flush",
                HostOutputStream::blocking_write_zeroes_and_flush(table, stream, len),
            )?;
            Ok((to_wit(table, written)?,))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-flush",
        |mut store: StoreContextMut<'_, T>, (stream,): (Resource<DynOutputStream>,)| {
            let table = store.data_mut().ctx().table;
            let flushed = unless_waiting(
                "wasi:io/streams.[method]output-stream.blocking-flush",
                HostOutputStream::blocking_flush(table, stream),
            )?;
            Ok((to_wit(table, flushed)?,))
        },
    )?;
    streams.func_wrap(
        "[method]output-stream.blocking-splice",
        |mut store: StoreContextMut<'_, T>,
         (dst, src, len): (Resource<DynOutputStream>, Resource<DynInputStream>, u64)| {
            let table = store.data_mut().ctx().table;
            let spliced = unless_waiting(
                "wasi:io/streams.[method]output-stream.blocking-splice",
                HostOutputStream::blocking_splice(table, dst, src, len),
            )?;
            Ok((to_wit(table, spliced)?,))
        },
    )
}

/// The outcome of `operation` if it is there at once; a refusal if it would
/// wait. Polled inside wasmtime-wasi's tokio runtime, which its streams
/// expect to find.
fn unless_waiting<F: Future>(call: &'static str, operation: F) -> wasmtime::Result<F::Output> {
    let operation = pin!(operation);
    with_ambient_tokio_runtime(|| poll_noop(operation))
        .ok_or_else(|| PolicyBlocked { call, why: STREAM_NOT_READY }.into())
}

/// A stream outcome as the guest sees it (a trap stays a trap).
fn to_wit<V>(table: &mut ResourceTable, result: StreamResult<V>) -> wasmtime::Result<Result<V, WitStreamError>> {
    match result {
        Ok(value) => Ok(Ok(value)),
        Err(error) => Ok(Err(StreamsHost::convert_stream_error(table, error)?)),
    }
}
