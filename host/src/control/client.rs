//! Asking a running daemon: connect, send one request line, read one
//! response line.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::protocol::{Request, Response};

/// How long the daemon may take to answer (a rollback enters every namespace).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens on the socket (absent, or refused).
    #[error("no wasmtune daemon answers on {path}: {source}")]
    NotRunning { path: PathBuf, source: std::io::Error },
    /// The connection broke while talking.
    #[error("talking to the daemon on {path} failed: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The daemon's answer is not a response line.
    #[error("the daemon on {path} answered something that is not a response: {source}")]
    Decode { path: PathBuf, source: serde_json::Error },
    /// The daemon closed the connection without answering (e.g. the peer
    /// was not allowed).
    #[error("the daemon on {path} closed the connection without answering (not allowed?)")]
    NoAnswer { path: PathBuf },
}

/// A connection to the daemon's control socket.
pub struct ControlClient {
    path: PathBuf,
    stream: UnixStream,
}

impl ControlClient {
    pub fn connect(path: &Path) -> Result<ControlClient, ClientError> {
        let stream =
            UnixStream::connect(path).map_err(|source| ClientError::NotRunning { path: path.to_path_buf(), source })?;
        let io = |source| ClientError::Io { path: path.to_path_buf(), source };
        stream.set_read_timeout(Some(ANSWER_TIMEOUT)).map_err(io)?;
        Ok(ControlClient { path: path.to_path_buf(), stream })
    }

    /// Sends one request and waits for its answer.
    pub fn ask(&mut self, request: &Request) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io { path: self.path.clone(), source };
        let mut line =
            serde_json::to_string(request).map_err(|source| ClientError::Decode { path: self.path.clone(), source })?;
        line.push('\n');
        self.stream.write_all(line.as_bytes()).map_err(io)?;
        let mut answer = String::new();
        let mut reader = BufReader::new(&self.stream);
        let read =
            reader.read_line(&mut answer).map_err(|source| ClientError::Io { path: self.path.clone(), source })?;
        if read == 0 {
            return Err(ClientError::NoAnswer { path: self.path.clone() });
        }
        serde_json::from_str(&answer).map_err(|source| ClientError::Decode { path: self.path.clone(), source })
    }
}
