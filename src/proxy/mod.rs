//! Proxy: forwards a request to a runtime over a pooled client and streams the answer back.
//!
//! Bodies stream both ways without being buffered; the response body carries the request's
//! [`Lease`] so the runtime stays held until the last byte has gone out. WebSocket
//! handshakes go through [`tunnel`].

pub mod cdp;
pub mod frames;
pub mod headers;
pub mod tunnel;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::{Body, BoxError};
use crate::error::RequestError;
use crate::provision::Lease;
use crate::report::error_chain;

/// Idle connections kept per runtime (per worker thread).
const IDLE_UPSTREAM_CONNECTIONS: usize = 32;

/// The pooled HTTP/1.1 client every forwarded request goes through.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpConnector, RequestBody>,
    /// Longest wait for a runtime's response head.
    timeout: Duration,
}

impl Upstream {
    pub fn new(timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        // A burst opens as many upstream connections as it has requests in flight; past it,
        // a few idle ones per runtime are enough (nginx's `keepalive` pool is the same idea),
        // and keeping every one would cost memory per connection the burst ever had.
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(IDLE_UPSTREAM_CONNECTIONS)
            .build(connector);
        Upstream { client, timeout }
    }

    /// Sends `request` to `http://<authority><path_and_query>`.
    pub async fn send(
        &self,
        parts: &http::request::Parts,
        authority: &str,
        path_and_query: &str,
        body: RequestBody,
    ) -> Result<Response<Incoming>, SendError> {
        let uri: Uri = format!("http://{authority}{path_and_query}")
            .parse()
            .map_err(|e| SendError::Failed(format!("bad upstream URI: {e}")))?;
        let mut request = Request::new(body);
        *request.method_mut() = parts.method.clone();
        *request.uri_mut() = uri;
        *request.headers_mut() = parts.headers.clone();
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err(SendError::Timeout(self.timeout)),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) if error.is_connect() => Err(SendError::Connect(error_chain(&error))),
            Ok(Err(error)) => Err(SendError::Failed(error_chain(&error))),
        }
    }
}

/// How sending to a runtime failed.
#[derive(Debug)]
pub enum SendError {
    /// Nothing was sent: the runtime could not be reached (may be gone).
    Connect(String),
    Timeout(Duration),
    Failed(String),
}

impl SendError {
    /// The error of a request to the default upstream at `authority` (not a runtime).
    pub fn at_default_upstream(self, authority: &str) -> RequestError {
        let (problem, timed_out) = match self {
            SendError::Connect(message) => (format!("refused the connection: {message}"), false),
            SendError::Timeout(waited) => (format!("did not answer within {waited:?}"), true),
            SendError::Failed(message) => (format!("connection failed: {message}"), false),
        };
        RequestError::DefaultUpstream {
            authority: authority.to_owned(),
            problem,
            timed_out,
        }
    }
}

impl From<SendError> for RequestError {
    fn from(error: SendError) -> Self {
        match error {
            SendError::Connect(message) => RequestError::UpstreamRefused(message),
            SendError::Timeout(waited) => RequestError::UpstreamTimeout(waited),
            SendError::Failed(message) => RequestError::UpstreamFailed(message),
        }
    }
}

/// How much of a request body is kept to send it again: a run's body is usually small, and
/// a pooled connection to a runtime that died may have taken some of it before failing.
const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body that can be sent again to a replaced runtime: the first
/// [`REPLAY_LIMIT`] bytes read are kept, and the unread rest goes back to the handle when an
/// attempt is dropped, so a request whose runtime turned out to be gone is sent again, body
/// and all, to its replacement (unless more than the limit had already gone out).
pub struct RequestBody {
    state: Arc<Mutex<BodyState>>,
    /// This attempt's hold on the unread rest of the client's body.
    taken: Option<Incoming>,
    /// Kept frames this attempt has yielded again so far.
    replayed: usize,
    /// Still keeping what is read (false once past the limit, to skip the lock).
    recording: bool,
    hint: SizeHint,
    end_stream: bool,
    /// Bytes allowed through, and a flag raised when a body goes past them.
    limit: BodyLimit,
    sent: u64,
}

/// What attempts share of one client body.
struct BodyState {
    /// The unread rest of the client's body, while no attempt holds it.
    incoming: Option<Incoming>,
    /// What has been read so far, to send again.
    kept: Vec<Bytes>,
    kept_len: usize,
    /// More was read than is kept: the body cannot be sent again.
    lost: bool,
}

/// A cap on a streamed body (a chunked body has no length to check up front).
#[derive(Clone)]
pub struct BodyLimit {
    max: u64,
    exceeded: Arc<std::sync::atomic::AtomicBool>,
}

impl BodyLimit {
    pub fn new(max: u64) -> Self {
        BodyLimit {
            max,
            exceeded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    pub fn unlimited() -> Self {
        Self::new(u64::MAX)
    }

    /// True when the body was cut off for being too large.
    pub fn exceeded(&self) -> bool {
        self.exceeded.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl RequestBody {
    /// Wraps `incoming`; the returned handle makes fresh attempts at sending it.
    pub fn new(incoming: Incoming, limit: BodyLimit) -> (Self, BodyHandle) {
        let hint = incoming.size_hint();
        let end_stream = incoming.is_end_stream();
        let state = Arc::new(Mutex::new(BodyState {
            incoming: Some(incoming),
            kept: Vec::new(),
            kept_len: 0,
            lost: false,
        }));
        let handle = BodyHandle {
            state,
            hint,
            end_stream,
            limit,
        };
        let body = handle.attempt();
        (body, handle)
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // The unread rest goes back for the next attempt.
        if let Some(incoming) = self.taken.take() {
            self.state.lock().expect("body lock").incoming = Some(incoming);
        }
    }
}

/// The other end of a [`RequestBody`].
pub struct BodyHandle {
    state: Arc<Mutex<BodyState>>,
    hint: SizeHint,
    end_stream: bool,
    limit: BodyLimit,
}

impl BodyHandle {
    fn attempt(&self) -> RequestBody {
        RequestBody {
            state: self.state.clone(),
            taken: None,
            replayed: 0,
            recording: true,
            hint: self.hint,
            end_stream: self.end_stream,
            limit: self.limit.clone(),
            sent: 0,
        }
    }

    /// True while the body can still be sent again whole.
    pub fn can_resend(&self) -> bool {
        !self.state.lock().expect("body lock").lost
    }

    /// A fresh body for a resend, unless more of it went out than can be sent again.
    pub fn resend(&self) -> Option<RequestBody> {
        self.can_resend().then(|| self.attempt())
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.taken.is_none() {
            let mut state = self.state.lock().expect("body lock");
            // What earlier attempts read goes out again first.
            if let Some(kept) = state.kept.get(self.replayed).cloned() {
                drop(state);
                self.replayed += 1;
                self.sent += kept.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(kept))));
            }
            let incoming = state.incoming.take();
            drop(state);
            match incoming {
                Some(incoming) => self.taken = Some(incoming),
                None => return Poll::Ready(None),
            }
        }
        let incoming = self.taken.as_mut().expect("taken above");
        let polled = Pin::new(incoming).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.sent += data.len() as u64;
            if self.sent > self.limit.max {
                self.limit.exceeded.store(true, std::sync::atomic::Ordering::Release);
                return Poll::Ready(Some(Err("request body too large".into())));
            }
            if self.recording {
                let kept = {
                    let mut state = self.state.lock().expect("body lock");
                    if state.kept_len + data.len() <= REPLAY_LIMIT {
                        state.kept_len += data.len();
                        state.kept.push(data.clone());
                        Some(state.kept.len())
                    } else {
                        state.lost = true;
                        state.kept = Vec::new();
                        None
                    }
                };
                match kept {
                    Some(count) => self.replayed = count,
                    None => self.recording = false,
                }
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.taken {
            Some(incoming) => incoming.is_end_stream(),
            None => self.end_stream,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.taken {
            Some(incoming) => incoming.size_hint(),
            None => self.hint,
        }
    }
}

/// A response body that holds the lease until it has been sent whole (or dropped).
struct LeasedBody {
    inner: Incoming,
    /// `None` once the body has ended (or in shared mode, which has no leases).
    lease: Option<Lease>,
}

impl HttpBody for LeasedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            self.lease = None;
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

/// Turns a runtime's response into the client's: hop-by-hop headers removed, the body
/// streamed through with the lease attached.
pub fn into_client_response(response: Response<Incoming>, lease: Option<Lease>) -> Response<Body> {
    let (mut parts, incoming) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let body = if incoming.is_end_stream() {
        drop(lease);
        crate::body::empty()
    } else {
        LeasedBody { inner: incoming, lease }.boxed()
    };
    Response::from_parts(parts, body)
}
