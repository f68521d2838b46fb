//! The control socket's listening thread. The socket's directory is made
//! 0700 and the socket 0600; on top of the file modes, every connection's
//! peer credentials (SO_PEERCRED) are checked: only root and the daemon's
//! own user are answered. Each connection is served on its own short-lived
//! thread, so a slow client cannot hold up another.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use super::protocol::{Request, Response};
use super::queries::ControlContext;

/// After a failed accept (out of descriptors, say), the wait before the next.
const RETRY: Duration = Duration::from_millis(100);
/// A client must send its request within this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest request line accepted.
const MAX_REQUEST: u64 = 64 * 1024;

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket's directory could not be made.
    #[error("cannot create control socket directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    /// Another daemon answers on this socket.
    #[error("another wasmtune daemon answers on {path}")]
    InUse { path: PathBuf },
    /// Binding or setting up the socket failed.
    #[error("cannot listen on control socket {path}: {source}")]
    Bind { path: PathBuf, source: std::io::Error },
    /// The listening thread could not be started.
    #[error("cannot start the control thread: {source}")]
    Spawn { source: std::io::Error },
}

/// The running control socket; removed when stopped.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    /// Written to on stop: the accept loop sleeps in poll() until a client
    /// or this, so an idle daemon's control thread never wakes.
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl ControlServer {
    pub fn start(path: &Path, ctx: ControlContext) -> Result<ControlServer, ServerError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| ServerError::Dir { path: dir.to_path_buf(), source })?;
        }
        if path.exists() {
            // A socket file left by a daemon that died; unless one answers.
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::InUse { path: path.to_path_buf() });
            }
            let _ = std::fs::remove_file(path);
        }
        let bind = |source| ServerError::Bind { path: path.to_path_buf(), source };
        // The socket is born 0600: a chmod by path after bind would leave a
        // window, and follow whatever the path points to by then. Narrowing
        // the umask for a moment only ever makes other new files stricter.
        let previous = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(path);
        nix::sys::stat::umask(previous);
        let listener = bound.map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let ctx = Arc::new(ctx);
        let (wake, woken) = UnixStream::pair().map_err(bind)?;
        let thread = std::thread::Builder::new()
            .name("control".into())
            .spawn(move || accept_loop(&listener, &woken, &stopping, &ctx))
            .map_err(|source| ServerError::Spawn { source })?;
        tracing::info!(socket = %path.display(), "control socket listening on {}", path.display());
        Ok(ControlServer { path: path.to_path_buf(), stop, wake, thread: Some(thread) })
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Err(e) = (&self.wake).write_all(&[1]) {
            tracing::warn!("cannot wake the control thread to stop it: {e}");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: &UnixListener, woken: &UnixStream, stop: &AtomicBool, ctx: &Arc<ControlContext>) {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    while !stop.load(Ordering::Relaxed) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN), PollFd::new(woken.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::warn!("control socket poll failed: {e}");
                std::thread::sleep(RETRY);
                continue;
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let ctx = ctx.clone();
                let spawned =
                    std::thread::Builder::new().name("control-conn".into()).spawn(move || serve(stream, &ctx));
                if let Err(e) = spawned {
                    tracing::warn!("cannot serve a control connection: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Whether the peer may use the socket: root, or the daemon's own user.
fn peer_allowed(stream: &UnixStream) -> Result<u32, String> {
    let creds = getsockopt(stream, PeerCredentials).map_err(|e| format!("cannot read peer credentials: {e}"))?;
    let uid = creds.uid();
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        Ok(uid)
    } else {
        Err(format!("uid {uid} (pid {}) is not allowed", creds.pid()))
    }
}

fn serve(stream: UnixStream, ctx: &ControlContext) {
    if let Err(refused) = peer_allowed(&stream) {
        tracing::warn!("control connection refused: {refused}");
        return;
    }
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(REQUEST_TIMEOUT)).is_err() {
        return;
    }
    let Ok(read_half) = stream.try_clone() else { return };
    let mut reader = BufReader::new(std::io::Read::take(read_half, MAX_REQUEST));
    let mut writer = stream;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let response = match Request::from_line(&line) {
            Ok(request) => {
                tracing::debug!(?request, "control request");
                ctx.answer(&request)
            }
            Err(e) => Response::error(format!("not a request: {e}")),
        };
        let Ok(mut out) = serde_json::to_string(&response) else { return };
        out.push('\n');
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}
