//! The one response body type every stage returns, constructors for it, and the request
//! body every stage reads.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

/// Errors a body can fail with while streaming.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed, streaming body: runtime responses pass through it without being buffered.
pub type Body = BoxBody<Bytes, BoxError>;

/// A body holding `bytes` whole.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// A client's request body as the pipeline reads it: hyper's, and, while it is still
/// coming, a hold on its connection, so that the connection is not taken for idle (and
/// parked, `server`) in the middle of it (a runtime may answer before it has read the whole
/// body).
pub struct ClientBody {
    inner: Incoming,
    /// Told when the body has been read to its end or dropped; `None` once told, or when
    /// nobody watches (a request without a body).
    watch: Option<Arc<dyn BodyWatch>>,
}

/// What a [`ClientBody`] tells when it is done.
pub trait BodyWatch: Send + Sync {
    /// The body has been read to its end, or dropped.
    fn body_ended(&self);
}

impl ClientBody {
    /// `inner`, whose end `watch` (if any) is told of.
    pub fn new(inner: Incoming, watch: Option<Arc<dyn BodyWatch>>) -> Self {
        ClientBody { inner, watch }
    }

    fn end(&mut self) {
        if let Some(watch) = self.watch.take() {
            watch.body_ended();
        }
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        self.end();
    }
}

impl HttpBody for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.end();
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
