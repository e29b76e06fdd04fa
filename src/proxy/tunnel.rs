//! WebSocket tunnels: the handshake goes to the runtime on a connection of its own, and once
//! both sides have upgraded, bytes are copied both ways, unchanged, until both sides close.
//! The tunnel task holds the lease, so an open live view keeps its runtime alive.
//!
//! Each direction copies through a buffer that starts small and grows once a read fills it:
//! an idle live view (or a quiet input channel) costs a few KiB, while a stream of large
//! frame updates moves through 64 KiB reads.

use prometheus_client::metrics::gauge::Gauge;

use crate::metrics::GaugeHold;
use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use super::{SendError, headers};
use crate::body::Body;
use crate::provision::Lease;
use crate::report::error_chain;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A direction's buffer while its reads are small.
const SMALL_BUFFER: usize = 2 * 1024;
/// A direction's buffer once a read has filled the small one.
const LARGE_BUFFER: usize = 64 * 1024;

/// Sends the handshake to `authority` on a fresh connection and returns the runtime's answer
/// together with its upgrade, when it agreed to switch protocols.
pub async fn handshake(
    parts: &http::request::Parts,
    authority: &str,
    path_and_query: &str,
    timeout: Duration,
) -> Result<(Response<Incoming>, Option<OnUpgrade>), SendError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| SendError::Connect(format!("connecting to {authority} timed out")))?
        .map_err(|e| SendError::Connect(format!("connecting to {authority}: {e}")))?;
    stream.set_nodelay(true).ok();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| SendError::Failed(error_chain(&e)))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(error = %error_chain(&error), "upstream handshake connection ended");
        }
    });
    let uri: Uri = path_and_query
        .parse()
        .map_err(|e| SendError::Failed(format!("bad upstream path: {e}")))?;
    let mut request = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = parts.headers.clone();
    headers::strip_hop_by_hop(request.headers_mut(), true);
    if !request.headers().contains_key(http::header::HOST) {
        let host = http::HeaderValue::from_str(authority).map_err(|e| SendError::Failed(e.to_string()))?;
        request.headers_mut().insert(http::header::HOST, host);
    }
    let mut response = tokio::time::timeout(timeout, sender.send_request(request))
        .await
        .map_err(|_| SendError::Timeout(timeout))?
        .map_err(|e| SendError::Failed(error_chain(&e)))?;
    let upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut response));
    Ok((response, upgrade))
}

/// Answers the client with the runtime's `101 Switching Protocols` and, in a tracked task,
/// joins the two upgraded connections until either side closes.
pub fn splice(
    response: Response<Incoming>,
    client: OnUpgrade,
    upstream: OnUpgrade,
    mut lease: Option<Lease>,
    tasks: &TaskTracker,
    open: &Gauge,
) -> Response<Body> {
    let (parts, _) = response.into_parts();
    if let Some(lease) = lease.as_mut() {
        lease.mark_websocket();
    }
    // Counted as open from the handshake's answer to the end of the relay.
    let counted = GaugeHold::new(open);
    let owner_hash = lease
        .as_ref()
        .map(|l| l.runtime().owner_hash.to_string())
        .unwrap_or_default();
    tasks.spawn(async move {
        let (_lease, _counted) = (lease, counted);
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%owner_hash, error = %error_chain(&error), "websocket upgrade failed");
                return;
            }
        };
        match relay(TokioIo::new(client), TokioIo::new(upstream)).await {
            Ok((to_runtime, to_client)) => {
                tracing::debug!(%owner_hash, to_runtime, to_client, "websocket closed")
            }
            Err(error) => tracing::debug!(%owner_hash, %error, "websocket ended with an error"),
        }
    });
    Response::from_parts(parts, crate::body::empty())
}

/// Copies both ways until both directions have ended; returns the bytes sent each way
/// (client → runtime, runtime → client). When one side stops sending, the other side's
/// write half is shut down, as `tokio::io::copy_bidirectional` does.
async fn relay<C, U>(client: C, upstream: U) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    tokio::try_join!(pump(client_read, upstream_write), pump(upstream_read, client_write))
}

/// One direction of a relay, with a buffer that grows from small to large on a full read.
async fn pump<R, W>(mut from: R, mut to: W) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; SMALL_BUFFER];
    let mut total = 0u64;
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            to.shutdown().await?;
            return Ok(total);
        }
        to.write_all(&buffer[..read]).await?;
        // TLS buffers what it is given: push it out now, the other side waits for it.
        to.flush().await?;
        total += read as u64;
        if read == buffer.len() && buffer.len() < LARGE_BUFFER {
            buffer.resize(LARGE_BUFFER, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relay_copies_both_ways_and_ends_when_both_sides_close() {
        let (client, mut client_peer) = tokio::io::duplex(1 << 20);
        let (upstream, mut upstream_peer) = tokio::io::duplex(1 << 20);
        let relayed = tokio::spawn(relay(client, upstream));
        // Large enough to grow the buffer: the bytes must arrive whole and in order.
        let frame: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        client_peer.write_all(&frame).await.unwrap();
        let mut received = vec![0u8; frame.len()];
        upstream_peer.read_exact(&mut received).await.unwrap();
        assert_eq!(received, frame);
        upstream_peer.write_all(b"pong").await.unwrap();
        let mut pong = [0u8; 4];
        client_peer.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"pong");
        // The client closes: the runtime sees the end, then closes too, and the relay ends.
        client_peer.shutdown().await.unwrap();
        let mut rest = Vec::new();
        upstream_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        upstream_peer.shutdown().await.unwrap();
        let (to_runtime, to_client) = relayed.await.unwrap().unwrap();
        assert_eq!((to_runtime, to_client), (frame.len() as u64, 4));
    }
}
