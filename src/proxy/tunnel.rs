//! WebSocket tunnels: the handshake goes to the runtime on a connection of its own, and once
//! both sides have upgraded, bytes are copied both ways, unchanged, until either side closes.
//! The tunnel task holds the lease, so an open live view keeps its runtime alive.

use std::time::Duration;

use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use super::{SendError, error_chain, headers};
use crate::body::Body;
use crate::provision::Lease;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

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
    lease: Option<Lease>,
    tasks: &TaskTracker,
) -> Response<Body> {
    let (parts, _) = response.into_parts();
    let owner_hash = lease
        .as_ref()
        .map(|l| l.runtime().owner_hash.to_string())
        .unwrap_or_default();
    tasks.spawn(async move {
        let _lease = lease;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%owner_hash, error = %error_chain(&error), "websocket upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((to_runtime, to_client)) => {
                tracing::debug!(%owner_hash, to_runtime, to_client, "websocket closed")
            }
            Err(error) => tracing::debug!(%owner_hash, %error, "websocket ended with an error"),
        }
    });
    Response::from_parts(parts, crate::body::empty())
}
