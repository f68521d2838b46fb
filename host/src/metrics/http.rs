//! `GET /metrics` over HTTP/1.1: one route, one response per connection.
//!
//! An idle daemon must not wake for it, so the listening thread sleeps in a
//! blocking `accept()` with no timeout; [`MetricsServer::stop`] wakes it by
//! shutting the listening socket down. Each connection is served on a
//! short-lived thread of its own (a few at once; more are closed at once),
//! with a read and a write timeout and a cap on the request's size, so a
//! slow or hostile client costs a thread for seconds, not the endpoint.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use super::exposition::Format;

/// The request line and headers may be this long; Prometheus sends ~300 bytes.
pub const MAX_REQUEST: usize = 8 * 1024;
/// A client must send its request, and take the answer, within this long.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; more are closed unanswered.
const MAX_CONNECTIONS: usize = 4;
/// What is read and dropped of a refused oversized request before closing.
const DRAIN_AFTER_REFUSAL: u64 = 64 * 1024;
/// After a failed accept (out of descriptors, say), the wait before the next.
const RETRY: Duration = Duration::from_millis(100);

/// What produces the exposition, in the format asked for.
pub type Source = Arc<dyn Fn(Format) -> String + Send + Sync>;

/// Why the endpoint could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen for metrics on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot start the metrics thread: {source}")]
    Spawn { source: std::io::Error },
}

/// The running endpoint.
pub struct MetricsServer {
    addr: SocketAddr,
    /// The listening socket, shut down to wake the blocked `accept()`.
    listener: TcpListener,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    pub fn start(addr: SocketAddr, source: Source) -> Result<MetricsServer, ServeError> {
        let bind = |source| ServeError::Bind { addr, source };
        let listener = TcpListener::bind(addr).map_err(bind)?;
        let bound = listener.local_addr().map_err(bind)?;
        let accepting = listener.try_clone().map_err(bind)?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || accept_loop(&accepting, &stop, &source))
            .map_err(|source| ServeError::Spawn { source })?;
        tracing::info!(event = "metrics", address = %bound, "metrics served at http://{bound}/metrics");
        Ok(MetricsServer { addr: bound, listener, stopping, thread: Some(thread) })
    }

    /// Where it listens (the port chosen, when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // shutdown(2) on a listening socket ends a blocked accept() at once
        // (EINVAL) on Linux; std only offers it for connected streams.
        // SAFETY: a plain syscall on a descriptor this struct owns.
        let shut = unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if shut != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot wake the metrics thread; connecting to it");
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("the metrics thread panicked");
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: &TcpListener, stopping: &AtomicBool, source: &Source) {
    let busy = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = listener.accept();
        if stopping.load(Ordering::Relaxed) {
            return;
        }
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!("metrics accept failed: {e}");
                std::thread::sleep(RETRY);
                continue;
            }
        };
        if busy.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            busy.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let (source, done) = (source.clone(), busy.clone());
        let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
            serve(stream, &source);
            done.fetch_sub(1, Ordering::AcqRel);
        });
        if let Err(e) = spawned {
            busy.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!("cannot serve a metrics connection: {e}");
        }
    }
}

fn serve(mut stream: TcpStream, source: &Source) {
    if stream.set_read_timeout(Some(IO_TIMEOUT)).is_err() || stream.set_write_timeout(Some(IO_TIMEOUT)).is_err() {
        return;
    }
    let (response, unread) = match read_head(&mut stream) {
        Ok(head) => (respond(&head, source), false),
        Err(HeadError::TooLarge) => (Response::status(431, "Request Header Fields Too Large"), true),
        // Nothing to answer: the client went away or stalled.
        Err(HeadError::Gone) => return,
    };
    let _ = stream.write_all(&response.to_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    if unread {
        // Closing with the request still unread would reset the connection
        // and could discard the answer before the client reads it.
        let _ = std::io::copy(&mut (&stream).take(DRAIN_AFTER_REFUSAL), &mut std::io::sink());
    }
}

#[derive(Debug)]
enum HeadError {
    TooLarge,
    /// The client closed, stalled past the timeout, or the read failed.
    Gone,
}

/// The request line and headers, up to the blank line.
fn read_head(reader: &mut impl Read) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find(&head, b"\r\n\r\n") {
            head.truncate(end);
            return Ok(head);
        }
        if head.len() >= MAX_REQUEST {
            return Err(HeadError::TooLarge);
        }
        match reader.read(&mut chunk) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(HeadError::Gone),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One response; always `Connection: close`.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    code: u16,
    reason: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn status(code: u16, reason: &'static str) -> Response {
        Response { code, reason, content_type: "text/plain; charset=utf-8", body: format!("{reason}\n") }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.code,
            self.reason,
            self.content_type,
            self.body.len()
        );
        if self.code == 405 {
            out.push_str("Allow: GET\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

/// The answer to a request head: the exposition for `GET /metrics`.
fn respond(head: &[u8], source: &Source) -> Response {
    let Ok(head) = std::str::from_utf8(head) else { return Response::status(400, "Bad Request") };
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (request_line.next(), request_line.next(), request_line.next(), request_line.next())
    else {
        return Response::status(400, "Bad Request");
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Response::status(400, "Bad Request");
    }
    let path = target.split('?').next().unwrap_or(target);
    if path != "/metrics" {
        return Response::status(404, "Not Found");
    }
    if method != "GET" {
        return Response::status(405, "Method Not Allowed");
    }
    let accept = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim().eq_ignore_ascii_case("accept").then(|| value.trim())
    });
    let format = Format::for_accept(accept);
    Response { code: 200, reason: "OK", content_type: format.content_type(), body: source(format) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::time::Instant;

    fn source() -> Source {
        Arc::new(|format| match format {
            Format::OpenMetrics => "# EOF\n".to_string(),
            Format::Text => "up 1\n".to_string(),
        })
    }

    fn answer(head: &str) -> Response {
        respond(head.as_bytes(), &source())
    }

    #[test]
    fn get_metrics_answers_in_the_format_asked_for() {
        let plain = answer("GET /metrics HTTP/1.1\r\nHost: x");
        assert_eq!((plain.code, plain.content_type, plain.body.as_str()), (200, Format::Text.content_type(), "up 1\n"));
        assert!(plain.content_type.starts_with("text/plain; version=0.0.4"));
        let om =
            answer("GET /metrics?x=1 HTTP/1.1\r\nACCEPT: application/openmetrics-text;version=1.0.0,text/plain;q=0.5");
        assert_eq!((om.code, om.body.as_str()), (200, "# EOF\n"));
        assert_eq!(om.content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    }

    #[test]
    fn other_paths_are_not_found_and_other_methods_not_allowed() {
        assert_eq!(answer("GET / HTTP/1.1").code, 404);
        assert_eq!(answer("GET /metricsx HTTP/1.1").code, 404);
        assert_eq!(answer("POST /metrics HTTP/1.1").code, 405);
        assert!(String::from_utf8_lossy(&answer("PUT /metrics HTTP/1.0").to_bytes()).contains("Allow: GET\r\n"));
    }

    #[test]
    fn malformed_requests_are_bad() {
        for bad in
            ["", "GET", "GET /metrics", "GET /metrics HTTP/1.1 extra", "GET metrics HTTP/1.1", "GET /metrics SPDY/3"]
        {
            assert_eq!(answer(bad).code, 400, "{bad:?}");
        }
        assert_eq!(respond(b"GET /metrics HTTP/1.1\xff", &source()).code, 400);
    }

    #[test]
    fn an_oversized_request_is_refused_before_it_is_read_whole() {
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', 1 << 20));
        let mut reader = huge.as_slice();
        assert!(matches!(read_head(&mut reader), Err(HeadError::TooLarge)));
        assert!(reader.len() > (1 << 20) - 2 * MAX_REQUEST, "read no further than the cap");
        let mut ok: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\nignored";
        assert_eq!(read_head(&mut ok).expect("a head"), b"GET /metrics HTTP/1.1\r\nHost: x");
        let mut cut: &[u8] = b"GET /metrics HTTP/1.1\r\n";
        assert!(matches!(read_head(&mut cut), Err(HeadError::Gone)));
    }

    fn exchange(addr: SocketAddr, request: &[u8]) -> (String, String) {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.write_all(request).expect("send");
        let mut reader = std::io::BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        let mut rest = String::new();
        reader.read_to_string(&mut rest).expect("rest");
        (status.trim_end().to_string(), rest)
    }

    #[test]
    fn serves_over_loopback_and_stops_at_once() {
        let server = MetricsServer::start("127.0.0.1:0".parse().expect("addr"), source()).expect("start");
        let addr = server.local_addr();
        let (status, rest) = exchange(addr, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert!(rest.ends_with("\r\n\r\nup 1\n") && rest.contains("Content-Length: 5\r\n"), "{rest}");
        assert_eq!(exchange(addr, b"GET /nope HTTP/1.1\r\n\r\n").0, "HTTP/1.1 404 Not Found");
        let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST));
        assert_eq!(exchange(addr, &huge).0, "HTTP/1.1 431 Request Header Fields Too Large");
        let stopping = Instant::now();
        server.stop();
        assert!(stopping.elapsed() < Duration::from_secs(1), "stop took {:?}", stopping.elapsed());
        assert!(TcpStream::connect(addr).is_err(), "nothing listens after stop");
    }
}
