//! Hijacked connections (HTTP 101, `Upgrade: tcp`), as attach and exec start use them: after
//! the head, the client's bytes are the process's stdin and the process's output comes back raw
//! with a terminal, or in Docker's stream frames without one.

use std::future::Future;

use bytes::Bytes;
use containers::{LogEntry, Stream};
use http::{HeaderValue, Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::{ResponseBody, empty, frame};

/// What flows over a hijacked connection.
pub struct Session {
    /// Ends when the process's output is over.
    pub output: mpsc::Receiver<LogEntry>,
    /// Where the client's bytes go; dropped when the client ends its side.
    pub input: Option<mpsc::Sender<Vec<u8>>>,
}

impl Session {
    /// A session that only shows `message`, as dockerd reports a failure after the 101.
    pub fn error(message: String) -> Session {
        let (tx, output) = mpsc::channel(1);
        let entry = LogEntry {
            stream: Stream::Stdout,
            time: std::time::SystemTime::now(),
            bytes: format!("{message}\r\n").into(),
        };
        let _ = tx.try_send(entry);
        Session { output, input: None }
    }
}

/// Answers 101 and, once the connection is upgraded, runs the session `start` yields on it.
pub fn respond(
    on_upgrade: OnUpgrade,
    tty: bool,
    start: impl Future<Output = Session> + Send + 'static,
) -> Response<ResponseBody> {
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "hijack: no upgrade");
                return;
            }
        };
        let Session { mut output, input } = start.await;
        let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
        let copy_input = tokio::spawn(async move {
            let Some(input) = input else { return };
            let mut buffer = vec![0u8; 32 * 1024];
            // The client's end of input (`CloseWrite`) or a broken connection ends the copy and
            // drops `input`.
            while let Ok(n) = reader.read(&mut buffer).await {
                let Some(bytes) = buffer.get(..n).filter(|b| !b.is_empty()) else { break };
                if input.send(bytes.to_vec()).await.is_err() {
                    break;
                }
            }
        });
        while let Some(entry) = output.recv().await {
            let bytes = if tty { Bytes::from(entry.bytes) } else { frame(&entry, false) };
            if writer.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = writer.flush().await;
        let _ = writer.shutdown().await;
        copy_input.abort();
    });
    let mut response = empty(StatusCode::SWITCHING_PROTOCOLS);
    let headers = response.headers_mut();
    let content_type =
        if tty { "application/vnd.docker.raw-stream" } else { "application/vnd.docker.multiplexed-stream" };
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    response
}
