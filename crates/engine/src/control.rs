//! The control channel: a Unix socket on which the running engine answers requests from
//! the `call-engine` command line (statistics, routing explanations, agent status, queue
//! login/logout). One JSON object per line each way.
//!
//! ```text
//! → {"cmd":"stats"}
//! ← {"ok":true,"result":{...}}
//! → {"cmd":"set_status","agent":"alice","status":"break:lunch"}
//! ← {"ok":false,"error":"no agent `alise`"}
//! ```

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

/// Longest request line accepted (bytes).
pub const MAX_REQUEST: usize = 64 * 1024;

/// What the command line asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ControlRequest {
    /// Live statistics of every queue and agent.
    Stats,
    /// Agents: status, activity, contact, queues, counters.
    Agents,
    /// The routing decisions made for a call (candidates, scores, why each was skipped).
    Explain {
        /// The call id.
        call: u64,
    },
    /// Sets an agent's status: `available`, `available-on-demand`, `logged-out`,
    /// `break` or `break:<reason>`.
    SetStatus {
        /// The agent.
        agent: String,
        /// The status.
        status: String,
    },
    /// Logs an agent into a queue (adds or updates the membership).
    Login {
        /// The agent.
        agent: String,
        /// The queue.
        queue: String,
        /// Tier level (default 1).
        #[serde(default)]
        level: Option<u8>,
        /// Position (default 0).
        #[serde(default)]
        position: Option<u32>,
        /// Penalty (default 0).
        #[serde(default)]
        penalty: Option<u32>,
    },
    /// Logs an agent out of a queue.
    Logout {
        /// The agent.
        agent: String,
        /// The queue.
        queue: String,
    },
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether the request was carried out.
    pub ok: bool,
    /// The result, when ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// What went wrong, when not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ControlResponse {
    /// A success with a result.
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure.
    pub fn err(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }
}

/// A request on its way to the driver, with where to send the answer.
#[derive(Debug)]
pub struct Request {
    /// The request.
    pub body: ControlRequest,
    /// The answer goes here.
    pub reply: oneshot::Sender<ControlResponse>,
}

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("control socket {path}: {source}")]
pub struct ControlError {
    /// The socket path.
    pub path: PathBuf,
    /// The error.
    #[source]
    pub source: std::io::Error,
}

/// Listens on `path` (a stale socket file left by a crashed engine is replaced) and
/// forwards each request to `to`. Runs until `to` closes.
pub async fn listen(path: &Path, to: mpsc::UnboundedSender<Request>) -> Result<(), ControlError> {
    let err = |source| ControlError {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    if path.exists() {
        // Another engine still answering there? Then refuse rather than steal it.
        if UnixStream::connect(path).await.is_ok() {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another engine is listening on it",
            )));
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Only the engine's own user may change agents' status through it.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    let path = path.to_path_buf();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(stream, to.clone()));
                    }
                    Err(e) => warn!(error = %e, "control socket accept failed"),
                },
                _ = to.closed() => break,
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

async fn serve_connection(stream: UnixStream, to: mpsc::UnboundedSender<Request>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        let line = match lines.next_line().await {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "control connection closed");
                break;
            }
        };
        let response = if line.len() > MAX_REQUEST {
            ControlResponse::err(format!("request longer than {MAX_REQUEST} bytes"))
        } else {
            match serde_json::from_str::<ControlRequest>(&line) {
                Err(e) => ControlResponse::err(format!("bad request: {e}")),
                Ok(body) => {
                    let (reply, rx) = oneshot::channel();
                    if to.send(Request { body, reply }).is_err() {
                        ControlResponse::err("the engine is stopping")
                    } else {
                        rx.await
                            .unwrap_or_else(|_| ControlResponse::err("the engine is stopping"))
                    }
                }
            }
        };
        let mut text = match serde_json::to_string(&response) {
            Ok(t) => t,
            Err(e) => format!("{{\"ok\":false,\"error\":\"unserializable answer: {e}\"}}"),
        };
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            break;
        }
    }
}

/// Sends one request to the engine listening on `path` and waits for the answer.
pub async fn request(path: &Path, req: &ControlRequest) -> Result<ControlResponse, String> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        format!(
            "cannot reach the engine at {}: {e} (is `call-engine serve` running with this configuration?)",
            path.display()
        )
    })?;
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    write
        .write_all(line.as_bytes())
        .await
        .map_err(|e| format!("control socket: {e}"))?;
    let mut lines = BufReader::new(read).lines();
    let answer = lines
        .next_line()
        .await
        .map_err(|e| format!("control socket: {e}"))?
        .ok_or_else(|| "the engine closed the connection without answering".to_string())?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer from the engine: {e}"))
}
