//! The WASI functions that could wait are refused at once, on a linker
//! wired like the daemon's (`add_to_linker_sync`, then
//! `caps::no_blocking::refuse_waiting`): a guest that sleeps fails its call
//! with a `blocked` fault instead of holding its thread, whether or not the
//! pollable is already ready; a stream call that would wait is refused, and
//! one that would not (stdout, a sink) still works. The guests are written
//! as component text against the WASI 0.2.0 interfaces, as older toolchains
//! import them, so the test also shows that semver linking reaches the
//! redefinitions.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::cli::AsyncStdinStream;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtune::caps::no_blocking::{PolicyBlocked, refuse_waiting};
use wasmtune::runtime::instance::{Fault, FaultKind};

/// Far longer than the test: a call that waited would hang it.
const FOREVER_NS: u64 = 1_000_000 * 1_000_000_000;
/// A refused call returns at once; this only absorbs a slow machine.
const PROMPTLY: Duration = Duration::from_millis(500);

struct Guest {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Guest {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// Input that never arrives: a read of it would wait forever.
struct NeverReadable;

impl tokio::io::AsyncRead for NeverReadable {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        _: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

/// `wasi:io/poll` and a monotonic-clock timer, called three ways: `block`,
/// `poll` on a one-element list, and `ready` (which never waits).
const TIMER_GUEST: &str = r#"
(component
  (import "wasi:io/poll@0.2.0" (instance $poll
    (export "pollable" (type $p (sub resource)))
    (export "[method]pollable.block" (func (param "self" (borrow $p))))
    (export "[method]pollable.ready" (func (param "self" (borrow $p)) (result bool)))
    (export "poll" (func (param "in" (list (borrow $p))) (result (list u32))))))
  (alias export $poll "pollable" (type $pollable))
  (import "wasi:clocks/monotonic-clock@0.2.0" (instance $clock
    (alias outer 1 $pollable (type $p))
    (export "subscribe-duration" (func (param "when" u64) (result (own $p))))))
  (core module $libc
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local.set $at (global.get $next))
      (global.set $next (i32.add (global.get $next) (local.get 3)))
      (local.get $at)))
  (core instance $libc (instantiate $libc))
  (core func $block (canon lower (func $poll "[method]pollable.block")))
  (core func $ready (canon lower (func $poll "[method]pollable.ready")))
  (core func $poll_list (canon lower (func $poll "poll")
    (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (core func $subscribe (canon lower (func $clock "subscribe-duration")))
  (core module $main
    (import "libc" "memory" (memory 1))
    (import "host" "block" (func $block (param i32)))
    (import "host" "ready" (func $ready (param i32) (result i32)))
    (import "host" "poll" (func $poll (param i32 i32 i32)))
    (import "host" "subscribe" (func $subscribe (param i64) (result i32)))
    (func (export "block") (param i64)
      (call $block (call $subscribe (local.get 0))))
    (func (export "poll") (param i64)
      (i32.store (i32.const 0) (call $subscribe (local.get 0)))
      (call $poll (i32.const 0) (i32.const 1) (i32.const 8)))
    (func (export "ready") (param i64) (result i32)
      (call $ready (call $subscribe (local.get 0)))))
  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "host" (instance
      (export "block" (func $block))
      (export "ready" (func $ready))
      (export "poll" (func $poll_list))
      (export "subscribe" (func $subscribe))))))
  (func (export "block") (param "nanos" u64) (canon lift (core func $main "block")))
  (func (export "poll") (param "nanos" u64) (canon lift (core func $main "poll")))
  (func (export "ready") (param "nanos" u64) (result bool) (canon lift (core func $main "ready"))))
"#;

/// `wasi:io/streams` blocking calls: a write-and-flush of 4 bytes to
/// stdout, and a 4-byte blocking read of stdin. Each returns whether the
/// stream call succeeded.
const STREAM_GUEST: &str = r#"
(component
  (import "wasi:io/error@0.2.0" (instance $error
    (export "error" (type (sub resource)))))
  (alias export $error "error" (type $error-type))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (alias outer 1 $error-type (type $e))
    (export "input-stream" (type $in (sub resource)))
    (export "output-stream" (type $out (sub resource)))
    (type $stream-error (variant (case "last-operation-failed" (own $e)) (case "closed")))
    (export "stream-error" (type $se (eq $stream-error)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $out)) (param "contents" (list u8)) (result (result (error $se)))))
    (export "[method]input-stream.blocking-read"
      (func (param "self" (borrow $in)) (param "len" u64) (result (result (list u8) (error $se)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (alias export $streams "input-stream" (type $input-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer 1 $output-stream (type $o))
    (export "get-stdout" (func (result (own $o))))))
  (import "wasi:cli/stdin@0.2.0" (instance $stdin
    (alias outer 1 $input-stream (type $i))
    (export "get-stdin" (func (result (own $i))))))
  (core module $libc
    (memory (export "memory") 1)
    (global $next (mut i32) (i32.const 1024))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $at i32)
      (local.set $at (global.get $next))
      (global.set $next (i32.add (global.get $next) (local.get 3)))
      (local.get $at)))
  (core instance $libc (instantiate $libc))
  (core func $get_stdout (canon lower (func $stdout "get-stdout")))
  (core func $get_stdin (canon lower (func $stdin "get-stdin")))
  (core func $write (canon lower (func $streams "[method]output-stream.blocking-write-and-flush")
    (memory (core memory $libc "memory"))))
  (core func $read (canon lower (func $streams "[method]input-stream.blocking-read")
    (memory (core memory $libc "memory")) (realloc (core func $libc "realloc"))))
  (core module $main
    (import "libc" "memory" (memory 1))
    (import "host" "get-stdout" (func $get_stdout (result i32)))
    (import "host" "get-stdin" (func $get_stdin (result i32)))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "read" (func $read (param i32 i64 i32)))
    (data (i32.const 0) "ping")
    ;; result<_, stream-error> at 16: discriminant 0 is ok
    (func (export "write") (result i32)
      (call $write (call $get_stdout) (i32.const 0) (i32.const 4) (i32.const 16))
      (i32.eqz (i32.load8_u (i32.const 16))))
    (func (export "read") (result i32)
      (call $read (call $get_stdin) (i64.const 4) (i32.const 32))
      (i32.eqz (i32.load8_u (i32.const 32)))))
  (core instance $main (instantiate $main
    (with "libc" (instance $libc))
    (with "host" (instance
      (export "get-stdout" (func $get_stdout))
      (export "get-stdin" (func $get_stdin))
      (export "write" (func $write))
      (export "read" (func $read))))))
  (func (export "write") (result bool) (canon lift (core func $main "write")))
  (func (export "read") (result bool) (canon lift (core func $main "read"))))
"#;

fn engine() -> Engine {
    let mut config = Config::new();
    config.wasm_component_model(true);
    Engine::new(&config).expect("engine")
}

fn linker(engine: &Engine) -> Linker<Guest> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("WASI");
    refuse_waiting(&mut linker).expect("redefine the WASI calls that wait");
    linker
}

fn instantiate(text: &str, wasi: WasiCtx) -> (Store<Guest>, wasmtime::component::Instance) {
    let engine = engine();
    let component = Component::new(&engine, wat::parse_str(text).expect("component text")).expect("compile");
    let mut store = Store::new(&engine, Guest { wasi, table: ResourceTable::new() });
    let instance = linker(&engine).instantiate(&mut store, &component).expect("instantiate");
    (store, instance)
}

/// Calls export `name` with `nanos`; the error it fails with, and how long it took.
fn call_timer(name: &str, nanos: u64) -> (wasmtime::Error, Duration) {
    let (mut store, instance) = instantiate(TIMER_GUEST, WasiCtx::builder().build());
    let func = instance.get_typed_func::<(u64,), ()>(&mut store, name).expect("export");
    let started = Instant::now();
    let error = func.call(&mut store, (nanos,)).expect_err("a wait was allowed");
    (error, started.elapsed())
}

fn assert_blocked(error: &wasmtime::Error, call: &str) {
    let refusal = error.chain().find_map(|e| e.downcast_ref::<PolicyBlocked>());
    assert_eq!(refusal.map(|r| r.call), Some(call), "not refused as blocking: {error:#}");
    let fault = Fault::from_error(error);
    assert_eq!(fault.kind, FaultKind::Blocked, "{fault}");
    assert!(fault.detail.contains("a policy may not block"), "{fault}");
}

#[test]
fn sleeping_with_block_or_poll_is_refused_at_once() {
    for (export, call) in [("block", "wasi:io/poll.[method]pollable.block"), ("poll", "wasi:io/poll.poll")] {
        let (error, took) = call_timer(export, FOREVER_NS);
        assert_blocked(&error, call);
        assert!(took < PROMPTLY, "{export}: refused after {took:?}");
    }
}

#[test]
fn a_ready_pollable_is_refused_too() {
    // subscribe-duration(0): already due, yet `block` still refuses: the
    // rule is simply that a policy never waits.
    let (error, _) = call_timer("block", 0);
    assert_blocked(&error, "wasi:io/poll.[method]pollable.block");
}

#[test]
fn asking_whether_a_pollable_is_ready_still_works() {
    let (mut store, instance) = instantiate(TIMER_GUEST, WasiCtx::builder().build());
    let ready = instance.get_typed_func::<(u64,), (bool,)>(&mut store, "ready").expect("export");
    assert_eq!(ready.call(&mut store, (FOREVER_NS,)).expect("ready never waits"), (false,));
}

#[test]
fn a_stream_that_is_ready_is_written_and_one_that_is_not_is_refused() {
    // The daemon's context: stdout a sink (always ready), stdin closed.
    let (mut store, instance) = instantiate(STREAM_GUEST, WasiCtx::builder().build());
    let write = instance.get_typed_func::<(), (bool,)>(&mut store, "write").expect("export");
    assert_eq!(write.call(&mut store, ()).expect("writing to a sink"), (true,));
    let read = instance.get_typed_func::<(), (bool,)>(&mut store, "read").expect("export");
    assert_eq!(read.call(&mut store, ()).expect("reading closed stdin"), (false,), "closed stdin read data");

    // A stdin that never has data: the read would wait, so it is refused.
    let mut wasi = WasiCtx::builder();
    wasi.stdin(AsyncStdinStream::new(NeverReadable));
    let (mut store, instance) = instantiate(STREAM_GUEST, wasi.build());
    let read = instance.get_typed_func::<(), (bool,)>(&mut store, "read").expect("export");
    let started = Instant::now();
    let error = read.call(&mut store, ()).expect_err("a waiting read was allowed");
    assert_blocked(&error, "wasi:io/streams.[method]input-stream.blocking-read");
    assert!(started.elapsed() < PROMPTLY, "refused after {:?}", started.elapsed());
}
