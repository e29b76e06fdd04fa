//! Upstream connections: how a forwarded request reaches its runtime (or the default upstream).
//!
//! Each worker keeps its own idle HTTP/1.1 connections, by authority ([`IdleConnections`]).
//! A request takes the connection that went idle last (its buffers are the warmest), or
//! dials one; the connection goes back when the response body has been read to its end
//! ([`UpstreamBody`]), so a keep-alive client's requests find the same connection again and
//! again. A response dropped before its end closes its connection (HTTP/1.1 cannot reuse a
//! connection with a message half read).
//!
//! This is what hyper-util's pooled client does, without what a forward does not need per
//! request: an absolute URI built and parsed, a checkout future keyed by scheme and
//! authority, a reaper task. A request on a reused connection that the runtime closed
//! before taking it is sent again on a fresh one (hyper hands the unsent request back).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{RequestBody, SendError};
use crate::body::BoxError;
use crate::metrics::Metrics;
use crate::report::error_chain;

/// Longest wait for a TCP connection to a runtime.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections kept per authority (per worker): past a burst, a few are enough
/// (nginx's `keepalive` is the same idea), and each costs memory on both ends.
const MAX_IDLE_PER_AUTHORITY: usize = 32;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the whole idle list is swept of closed and expired connections (runtimes that
/// are gone leave theirs behind).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Sends forwarded requests over kept-alive HTTP/1.1 connections; one per worker.
#[derive(Clone)]
pub struct Upstream {
    idle: Arc<IdleConnections>,
    /// Longest wait for a runtime's response head.
    timeout: Duration,
    /// Counts the connections dialled (each reuse is one not dialled).
    metrics: Arc<Metrics>,
}

/// What the runtime's request gets for `Host`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HostHeader {
    /// The runtime's own address, whatever the client sent (a runtime serves itself, not
    /// the gateway's public name).
    Runtime,
    /// `localhost`: Chrome's DevTools server answers only to an IP address or `localhost`.
    Devtools,
    /// The client's (the default upstream serves the public name), or the upstream's address
    /// when the client sent none.
    Keep,
}

impl HostHeader {
    /// Sets `Host` in `headers` as this says; `upstream` is the upstream's own address.
    pub fn apply(self, headers: &mut http::HeaderMap, upstream: &HeaderValue) {
        match self {
            HostHeader::Runtime => {
                headers.insert(header::HOST, upstream.clone());
            }
            HostHeader::Devtools => {
                headers.insert(header::HOST, HeaderValue::from_static(super::cdp::DEVTOOLS_HOST));
            }
            HostHeader::Keep => {
                if !headers.contains_key(header::HOST) {
                    headers.insert(header::HOST, upstream.clone());
                }
            }
        }
    }
}

/// One upstream connection.
struct Connection {
    authority: Arc<str>,
    /// `Host` for requests that come without one (the authority, as a client would send it).
    host: HeaderValue,
    sender: SendRequest<RequestBody>,
    /// When it last went idle (tokio's clock, as its timer).
    since: Instant,
    /// The response-head timeout of the request it carries. One timer a connection, moved
    /// on for each request: moving a pending timer later is an atomic store, where a
    /// timer of its own per request is registered in tokio's wheel and taken out again
    /// (about 800 instructions a request, counted with callgrind).
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// A worker's idle connections, by authority; the most recently idle last.
#[derive(Default)]
struct IdleConnections {
    /// Behind a lock only because the gateway is shared with the worker's tasks: a worker is
    /// one thread, so it is never contended.
    state: Mutex<IdleState>,
}

#[derive(Default)]
struct IdleState {
    /// The list of the authority a connection last went back to, out of the map: a worker
    /// busy with one runtime takes and gives back without hashing (a hash of the authority
    /// and a probe cost more than the rest of a take, counted with callgrind).
    hot: Option<(Arc<str>, Vec<Connection>)>,
    /// The other authorities' lists.
    by_authority: HashMap<Arc<str>, Vec<Connection>>,
    swept: Option<Instant>,
}

impl IdleState {
    /// The list of `authority`, if there is one.
    fn list(&mut self, authority: &str) -> Option<&mut Vec<Connection>> {
        match &mut self.hot {
            Some((hot, idle)) if **hot == *authority => Some(idle),
            _ => self.by_authority.get_mut(authority),
        }
    }

    /// The list of `authority`, made the hot one.
    fn hot_list(&mut self, authority: &Arc<str>) -> &mut Vec<Connection> {
        let is_hot = matches!(&self.hot, Some((hot, _)) if *hot == *authority);
        if !is_hot {
            if let Some((previous, idle)) = self.hot.take()
                && !idle.is_empty()
            {
                self.by_authority.insert(previous, idle);
            }
            let idle = self.by_authority.remove(authority).unwrap_or_default();
            self.hot = Some((authority.clone(), idle));
        }
        &mut self.hot.as_mut().expect("made hot above").1
    }
}

impl IdleConnections {
    /// The most recently idle connection to `authority` that can take a request `now`.
    fn take(&self, authority: &str, now: Instant) -> Option<Connection> {
        let mut state = self.state.lock().expect("idle connections lock");
        let idle = state.list(authority)?;
        while let Some(connection) = idle.pop() {
            if connection.sender.is_ready() && now.saturating_duration_since(connection.since) < IDLE_TIMEOUT {
                return Some(connection);
            }
            // Closed by the runtime, expired, or still finishing its last message (then
            // hyper closes it once dropped): a fresh one is cheaper than waiting.
        }
        None
    }

    /// Keeps `connection` for the next request to its authority.
    fn put(&self, mut connection: Connection) {
        if connection.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        connection.since = now;
        let mut state = self.state.lock().expect("idle connections lock");
        if state.swept.is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY) {
            state.swept = Some(now);
            let fresh = |c: &Connection| !c.sender.is_closed() && now.duration_since(c.since) < IDLE_TIMEOUT;
            state.by_authority.retain(|_, idle| {
                idle.retain(fresh);
                !idle.is_empty()
            });
            if let Some((_, idle)) = &mut state.hot {
                idle.retain(fresh);
            }
        }
        let idle = state.hot_list(&connection.authority);
        if idle.len() >= MAX_IDLE_PER_AUTHORITY {
            idle.remove(0);
        }
        idle.push(connection);
    }
}

impl Upstream {
    pub fn new(timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Upstream {
            idle: Arc::new(IdleConnections::default()),
            timeout,
            metrics,
        }
    }

    /// Sends a request with `method`, `head` (made by [`super::headers::Forwarding`]) and
    /// `body` to `http://<authority><path_and_query>`.
    pub async fn send(
        &self,
        method: &http::Method,
        head: http::HeaderMap,
        host: HostHeader,
        authority: &str,
        path_and_query: &str,
        body: RequestBody,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let uri = Uri::try_from(path_and_query).map_err(|e| SendError::Failed(format!("bad upstream path: {e}")))?;
        let mut request = Request::new(body);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = head;
        // A kept connection is tried first, once; a request that one never took goes again
        // on a new connection. One connection at a time is held across the send: this
        // future is moved whole into its caller's, so its size counts on every request.
        let mut may_reuse = true;
        loop {
            // One clock read for the kept connection's age and the response's deadline.
            let now = Instant::now();
            let (mut connection, fresh) = match may_reuse.then(|| self.idle.take(authority, now)).flatten() {
                Some(connection) => (connection, false),
                // Boxed: rare, and its future (name resolution, connect, handshake) is large.
                None => (Box::pin(self.dial(authority)).await?, true),
            };
            host.apply(request.headers_mut(), &connection.host);
            // A new connection's dial took time of its own: the deadline counts from now.
            let now = if fresh { Instant::now() } else { now };
            connection.timer.as_mut().reset(now + self.timeout);
            let mut sending = std::pin::pin!(connection.sender.try_send_request(request));
            let timer = &mut connection.timer;
            // hyper's answer (several hundred bytes, the unsent request inside) is made small
            // where it is polled: it is moved at each step up, twice a request.
            let sent = std::future::poll_fn(|cx| match sending.as_mut().poll(cx) {
                Poll::Ready(Ok(response)) => Poll::Ready(Sent::Answer(response)),
                Poll::Ready(Err(mut error)) => Poll::Ready(match error.take_message() {
                    Some(unsent) if !fresh => Sent::Unsent(Box::new(unsent)),
                    _ if !fresh && error.error().is_incomplete_message() => {
                        Sent::Dropped(error_chain(&error.into_error()))
                    }
                    _ => Sent::Failed(error_chain(&error.into_error())),
                }),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| Sent::TimedOut),
            })
            .await;
            match sent {
                Sent::TimedOut => return Err(SendError::Timeout(self.timeout)),
                Sent::Answer(response) => {
                    let (parts, incoming) = response.into_parts();
                    let body = UpstreamBody::new(incoming, connection, self.idle.clone());
                    return Ok(Response::from_parts(parts, body));
                }
                // The runtime closed a kept connection before it took the request: the
                // request went nowhere, so it goes again, on a new connection.
                Sent::Unsent(unsent) => {
                    request = *unsent;
                    may_reuse = false;
                }
                Sent::Dropped(error) => {
                    self.metrics.upstream_dropped();
                    return Err(SendError::Dropped(format!(
                        "the runtime closed a kept connection without answering: {error}"
                    )));
                }
                Sent::Failed(error) => return Err(SendError::Failed(error)),
            }
        }
    }

    /// A new connection to `authority`, its HTTP/1.1 task running on this worker (it ends
    /// when the connection closes or its sender is dropped while idle).
    async fn dial(&self, authority: &str) -> Result<Connection, SendError> {
        let host =
            HeaderValue::from_str(authority).map_err(|e| SendError::Failed(format!("bad upstream address: {e}")))?;
        let stream = connect(authority).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Failed(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(error = %error_chain(&error), "upstream connection ended");
            }
        });
        self.metrics.upstream_dialled();
        Ok(Connection {
            authority: Arc::from(authority),
            host,
            sender,
            since: Instant::now(),
            timer: Box::pin(tokio::time::sleep(self.timeout)),
        })
    }
}

/// What became of a request handed to a connection.
enum Sent {
    Answer(Response<Incoming>),
    /// The connection closed before it took the request (rare: boxed).
    Unsent(Box<Request<RequestBody>>),
    /// A kept connection closed after it took the request, before any of the answer came.
    Dropped(String),
    Failed(String),
    TimedOut,
}

/// A TCP connection to `authority` (`host:port`), with Nagle off, within [`CONNECT_TIMEOUT`].
pub async fn connect(authority: &str) -> Result<TcpStream, SendError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(authority))
        .await
        .map_err(|_| SendError::Connect(format!("connecting to {authority} timed out")))?
        .map_err(|e| SendError::Connect(format!("connecting to {authority}: {e}")))?;
    stream.set_nodelay(true).ok();
    Ok(stream)
}

/// A runtime's response body; its connection goes back to the worker's idle connections
/// once the body has been read to its end.
pub struct UpstreamBody {
    inner: Incoming,
    /// The connection and where it goes back to; `None` once given back, and for a body
    /// that does not come from a kept connection (a WebSocket handshake's).
    release: Option<(Connection, Arc<IdleConnections>)>,
}

impl UpstreamBody {
    fn new(inner: Incoming, connection: Connection, idle: Arc<IdleConnections>) -> Self {
        let mut body = UpstreamBody {
            inner,
            release: Some((connection, idle)),
        };
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    }

    /// A body whose connection is not kept.
    pub fn unkept(inner: Incoming) -> Self {
        UpstreamBody { inner, release: None }
    }

    fn give_back(&mut self) {
        if let Some((connection, idle)) = self.release.take() {
            idle.put(connection);
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.give_back(),
            Poll::Ready(Some(Err(_))) => self.release = None,
            _ => {}
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::mpsc;

    use http::{HeaderMap, Method};
    use http_body_util::BodyExt;

    use super::*;

    /// One request from `reader` (its head, and a `Content-Length` body): its request line
    /// and body; `None` once the connection has ended.
    fn read_request(reader: &mut impl BufRead) -> Option<(String, Vec<u8>)> {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut length = 0;
        loop {
            let mut field = String::new();
            reader.read_line(&mut field).ok()?;
            if field == "\r\n" {
                break;
            }
            if let Some((name, value)) = field.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().ok()?;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).ok()?;
        Some((line.trim_end().to_owned(), body))
    }

    /// The runtime closes a kept connection just as the next request is given to it (here:
    /// the close is in before the connection's task has run again, so the request is
    /// written to a closed socket). The request reaches nobody and fails as `Dropped` (which
    /// the pipeline sends again when it may be repeated), not as any other failure; the
    /// next request goes on a new connection.
    #[tokio::test]
    async fn a_kept_connection_the_runtime_closed_drops_the_request_it_is_given() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        let (close, close_asked) = mpsc::channel::<()>();
        let (closed_tx, closed) = mpsc::channel::<()>();
        let (seen_tx, seen) = mpsc::channel::<(usize, String, Vec<u8>)>();
        // The runtime, on a thread of its own: it answers each request on its first
        // connection and closes it when told; its second connection it keeps.
        std::thread::spawn(move || {
            for (index, stream) in listener.incoming().take(2).enumerate() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                while let Some((line, body)) = read_request(&mut reader) {
                    seen_tx.send((index, line, body)).unwrap();
                    stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .unwrap();
                    if index == 0 {
                        close_asked.recv().unwrap();
                        break;
                    }
                }
                drop((reader, stream));
                if index == 0 {
                    closed_tx.send(()).unwrap();
                }
            }
        });
        let metrics = Arc::new(Metrics::new("test", true));
        let upstream = Upstream::new(Duration::from_secs(10), metrics.clone());
        let get = |path: &'static str| {
            upstream.send(
                &Method::GET,
                HeaderMap::new(),
                HostHeader::Runtime,
                &authority,
                path,
                RequestBody::of(b""),
            )
        };
        let first = get("/first").await.unwrap();
        assert_eq!(first.into_body().collect().await.unwrap().to_bytes(), "ok");
        // The connection is idle and kept. The runtime closes it; this thread blocks
        // meanwhile, so the connection's task has not seen the close when the next request
        // takes the connection.
        close.send(()).unwrap();
        closed.recv().unwrap();
        match get("/second").await {
            Err(SendError::Dropped(message)) => assert!(message.contains("closed a kept connection"), "{message}"),
            other => panic!("expected the request dropped, got {:?}", other.map(|r| r.status())),
        }
        let third = upstream
            .send(
                &Method::POST,
                HeaderMap::new(),
                HostHeader::Runtime,
                &authority,
                "/third",
                RequestBody::of(b"payload"),
            )
            .await
            .expect("a new connection");
        assert_eq!(third.into_body().collect().await.unwrap().to_bytes(), "ok");
        // Counted: an operator sees what the resends hide.
        assert_eq!(metrics.upstream_dropped.get(), 1);
        assert_eq!(metrics.upstream_connections.get(), 2);
        let seen: Vec<_> = seen.try_iter().collect();
        assert_eq!(
            seen,
            [
                (0, "GET /first HTTP/1.1".to_owned(), Vec::new()),
                (1, "POST /third HTTP/1.1".to_owned(), b"payload".to_vec()),
            ]
        );
    }
}
