//! Proxy: forwards a request to a runtime over a kept-alive connection ([`upstream`]) and
//! streams the answer back.
//!
//! Bodies stream both ways without being buffered; the response body carries the request's
//! [`Lease`] so the runtime stays held until the last byte has gone out. WebSocket
//! handshakes go through [`tunnel`].

pub mod cdp;
pub mod frames;
pub mod headers;
pub mod latch;
pub mod tunnel;
pub mod upstream;

pub use upstream::{Upstream, UpstreamBody};

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError, ClientBody};
use crate::error::RequestError;
use crate::provision::Lease;

/// Whether a request with `method` may be sent a second time when the first may have
/// reached its upstream: a GET or HEAD, never a run.
pub fn may_repeat(method: &http::Method) -> bool {
    method == http::Method::GET || method == http::Method::HEAD
}

/// How sending to a runtime failed.
#[derive(Debug)]
pub enum SendError {
    /// Nothing was sent: the runtime could not be reached (may be gone).
    Connect(String),
    Timeout(Duration),
    /// A kept connection closed after it took the request and before any of the answer:
    /// most often the runtime closing it for idleness just as the request went (its
    /// keep-alive timeout), or the runtime dying on it. A request that may be repeated goes
    /// again, on a new connection.
    Dropped(String),
    Failed(String),
}

impl SendError {
    /// The error of a request to the default upstream at `authority` (not a runtime).
    pub fn at_default_upstream(self, authority: &str) -> RequestError {
        let (problem, timed_out) = match self {
            SendError::Connect(message) => (format!("refused the connection: {message}"), false),
            SendError::Timeout(waited) => (format!("did not answer within {waited:?}"), true),
            SendError::Dropped(message) | SendError::Failed(message) => {
                (format!("connection failed: {message}"), false)
            }
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
            SendError::Dropped(message) | SendError::Failed(message) => RequestError::UpstreamFailed(message),
        }
    }
}

/// How much of a request body is kept to send it again: a run's body is usually small, and
/// a kept connection to a runtime that died may have taken some of it before failing.
const REPLAY_LIMIT: usize = 64 * 1024;

/// A request body that can be sent again to a replaced runtime: the first
/// [`REPLAY_LIMIT`] bytes read are kept, and the unread rest goes back to the handle when an
/// attempt is dropped, so a request whose runtime turned out to be gone is sent again, body
/// and all, to its replacement (unless more than the limit had already gone out). A request
/// that has no body (most GETs) shares nothing.
pub struct RequestBody {
    /// What attempts share; `None` for a request without a body.
    state: Option<Arc<Mutex<BodyState>>>,
    /// This attempt's hold on the unread rest of the client's body.
    taken: Option<ClientBody>,
    /// Kept frames this attempt has yielded again so far.
    replayed: usize,
    /// Still keeping what is read (false once past the limit, to skip the lock).
    recording: bool,
    hint: SizeHint,
    end_stream: bool,
    /// Bytes allowed through: a chunked body has no length to check up front.
    max: u64,
    sent: u64,
}

/// What attempts share of one client body.
struct BodyState {
    /// The unread rest of the client's body, while no attempt holds it.
    incoming: Option<ClientBody>,
    /// What has been read so far, to send again.
    kept: Vec<Bytes>,
    kept_len: usize,
    /// More was read than is kept: the body cannot be sent again.
    lost: bool,
    /// The body went past its cap and was cut off.
    exceeded: bool,
}

impl RequestBody {
    /// Wraps `incoming`, letting at most `max` bytes through; the returned handle makes
    /// fresh attempts at sending it.
    pub fn new(incoming: ClientBody, max: u64) -> (Self, BodyHandle) {
        let hint = incoming.size_hint();
        let end_stream = incoming.is_end_stream();
        let state = (!end_stream).then(|| {
            Arc::new(Mutex::new(BodyState {
                incoming: Some(incoming),
                kept: Vec::new(),
                kept_len: 0,
                lost: false,
                exceeded: false,
            }))
        });
        let handle = BodyHandle {
            state,
            hint,
            end_stream,
            max,
        };
        let body = handle.attempt();
        (body, handle)
    }
}

#[cfg(test)]
impl RequestBody {
    /// A request's body that is `bytes` (none when empty), as if already read whole.
    pub(crate) fn of(bytes: &'static [u8]) -> RequestBody {
        let state = (!bytes.is_empty()).then(|| {
            Arc::new(Mutex::new(BodyState {
                incoming: None,
                kept: vec![Bytes::from_static(bytes)],
                kept_len: bytes.len(),
                lost: false,
                exceeded: false,
            }))
        });
        RequestBody {
            state,
            taken: None,
            replayed: 0,
            recording: false,
            hint: SizeHint::with_exact(bytes.len() as u64),
            end_stream: bytes.is_empty(),
            max: u64::MAX,
            sent: 0,
        }
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        // The unread rest goes back for the next attempt.
        if let (Some(incoming), Some(state)) = (self.taken.take(), &self.state) {
            state.lock().expect("body lock").incoming = Some(incoming);
        }
    }
}

/// The other end of a [`RequestBody`].
pub struct BodyHandle {
    state: Option<Arc<Mutex<BodyState>>>,
    hint: SizeHint,
    end_stream: bool,
    max: u64,
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
            max: self.max,
            sent: 0,
        }
    }

    /// True while the body can still be sent again whole.
    pub fn can_resend(&self) -> bool {
        self.state
            .as_ref()
            .is_none_or(|state| !state.lock().expect("body lock").lost)
    }

    /// A fresh body for a resend, unless more of it went out than can be sent again.
    pub fn resend(&self) -> Option<RequestBody> {
        self.can_resend().then(|| self.attempt())
    }

    /// True when the body was cut off for being larger than its cap.
    pub fn exceeded(&self) -> bool {
        self.state
            .as_ref()
            .is_some_and(|state| state.lock().expect("body lock").exceeded)
    }
}

impl HttpBody for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(shared) = self.state.clone() else {
            return Poll::Ready(None);
        };
        if self.taken.is_none() {
            let mut state = shared.lock().expect("body lock");
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
            if self.sent > self.max {
                shared.lock().expect("body lock").exceeded = true;
                return Poll::Ready(Some(Err("request body too large".into())));
            }
            if self.recording {
                let kept = {
                    let mut state = shared.lock().expect("body lock");
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
    inner: UpstreamBody,
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
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The client connection's upgrade (for a WebSocket handshake), as `hyper::upgrade::on` takes
/// it from a whole request: out of the head's extensions, or (when hyper put none there) one
/// that fails when awaited.
pub fn take_upgrade(parts: &mut http::request::Parts) -> hyper::upgrade::OnUpgrade {
    parts
        .extensions
        .remove::<hyper::upgrade::OnUpgrade>()
        .unwrap_or_else(|| hyper::upgrade::on(http::Request::new(())))
}

/// Turns a runtime's response into the client's: hop-by-hop headers removed, the body
/// streamed through with the lease attached.
pub fn into_client_response(response: Response<UpstreamBody>, lease: Option<Lease>) -> Response<Body> {
    let (mut parts, incoming) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    let body = if incoming.is_end_stream() {
        drop(lease);
        crate::body::empty()
    } else {
        LeasedBody { inner: incoming, lease }.boxed()
    };
    Response::from_parts(parts, body)
}
