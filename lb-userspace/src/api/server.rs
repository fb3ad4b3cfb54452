//! The controller's side of the control socket. Connections are served on their own tasks;
//! each request is handed to the controller's main loop, which answers it.

use std::{os::unix::fs::PermissionsExt, path::Path};

use anyhow::{Context, Result};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::warn;

use super::protocol::{Request, Response};

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<Response>);

/// Largest request line accepted.
const REQUEST_LIMIT: u64 = 64 * 1024;

/// Binds the socket (root-only) and serves it until the returned task is dropped.
pub fn serve(path: &Path, calls: mpsc::Sender<Call>) -> Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // A socket file left by a controller that died; the pin-dir lock already proved no other
    // controller of this data plane runs.
    let _ = std::fs::remove_file(path);
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, calls.clone()));
                }
                Err(e) => {
                    warn!("control socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }))
}

async fn answer(stream: UnixStream, calls: mpsc::Sender<Call>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = tokio::io::AsyncReadExt::take(BufReader::new(read), REQUEST_LIMIT);
    let response = match reader.read_line(&mut line).await {
        Err(e) => Response::Error {
            message: format!("reading the request: {e}"),
        },
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Response::Error {
                message: format!("not a request: {e}"),
            },
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if calls.send((request, tx)).await.is_err() {
                    return;
                }
                match rx.await {
                    Ok(response) => response,
                    Err(_) => return,
                }
            }
        },
    };
    if let Ok(mut text) = serde_json::to_string(&response) {
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
    }
}
