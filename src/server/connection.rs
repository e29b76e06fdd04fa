//! One client connection, served by hyper's server for its protocol and watched: closed when
//! it has had no request in flight for `limits.header_read_timeout` (an HTTP/2 one shut
//! down gracefully), finished gracefully when the gateway drains, and — HTTP/1.1 — parked
//! when idle for [`PARK_AFTER`] ([`super::parking`]), taken up again when its client's next
//! bytes arrive.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper::service::{HttpService, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Builders;
use super::Protocol;
use super::activity::{Activity, InFlight};
use super::parking::{PARK_AFTER, Parkable, Socket};
use crate::body::{Body, BodyWatch, BoxError, ClientBody};
use crate::metrics::GaugeHold;
use crate::peer::Peer;
use crate::service::Gateway;
use prometheus_client::metrics::gauge::Gauge;

/// How often the watchdog looks at a connection it found busy twice in a row: a connection
/// that carries request after request is not woken every [`PARK_AFTER`] to be found busy
/// again, and one that goes idle after being busy is parked within this. (Under callgrind,
/// where time runs slow, looks every 100 ms cost about 200 instructions a warm GET: 51,452
/// against 51,257 with this, the unparked 0.6.3 at 51,015 and 51,023 in the same runs.)
const BUSY_RECHECK: Duration = Duration::from_secs(1);

/// A response body that holds its request's place in flight.
struct Tracked {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one connection (plain or TLS) until it ends, it idles out, or shutdown asks it to.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve_io<I: Socket>(
    io: I,
    protocol: Protocol,
    peer: SocketAddr,
    tls: bool,
    accepted: Instant,
    gateway: Arc<Gateway>,
    builders: &Builders,
    drain: CancellationToken,
) -> Result<(), BoxError> {
    let timeout = gateway.settings.limits.header_read_timeout;
    let metrics = gateway.provisioner.metrics().clone();
    let activity = Arc::new(Activity::new(accepted));
    let watched = activity.clone();
    let client = Peer::new(peer, tls, &gateway.settings.trusted_proxies);
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let gateway = gateway.clone();
        let client = client.clone();
        let in_flight = InFlight::start(activity.clone());
        // A body still to come is in flight too, until read whole or dropped.
        let body_watch = (!request.body().is_end_stream()).then(|| {
            activity.start();
            activity.clone() as Arc<dyn BodyWatch>
        });
        let request = request.map(|incoming| ClientBody::new(incoming, body_watch));
        if request.version() == http::Version::HTTP_2 {
            activity.http2.store(true, Ordering::Release);
        }
        // Boxed: hyper keeps room for this future in every connection, idle or not, and the
        // pipeline's future is several KiB; boxed, an idle keep-alive connection holds a pointer.
        let handling = Box::pin(async move {
            let response = gateway.handle(request, &client).await;
            response.map(|inner| Tracked {
                inner,
                _in_flight: in_flight,
            })
        });
        async move { Ok::<_, Infallible>(handling.await) }
    });
    let mut connection = match protocol {
        Protocol::Http1 => Serving::http1(builders, Parkable::new(io, watched.clone()), service),
        Protocol::Http2 => Serving::Http2(Box::pin(builders.http2.serve_connection(TokioIo::new(io), service))),
    };
    let mut draining = false;
    // The watchdog's last look found the connection busy (not parkable yet).
    let mut busy_before = false;
    let mut drained = std::pin::pin!(drain.cancelled());
    let mut check = std::pin::pin!(tokio::time::sleep_until(
        watched.next_check(connection.idle_wait(timeout))
    ));
    // The watchdog's own futures are polled with a waker of their own, and only once they
    // have used it (or have just been set): the connection's task wakes three or four times
    // a request, and polling them at each (as a `select!` does) cost about 700 instructions
    // a request, counted with callgrind.
    let alarm = Arc::new(Alarm {
        rang: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let alarm_waker = std::task::Waker::from(alarm.clone());
    std::future::poll_fn(|cx| {
        loop {
            match connection.poll(cx, builders, &metrics.connections_parked) {
                Poll::Ready(Progress::Ended(result)) => return Poll::Ready(result),
                Poll::Ready(Progress::Parked) => {
                    tracing::trace!(%peer, "parked an idle connection");
                    metrics.connection_parks.inc();
                    if draining {
                        return Poll::Ready(Ok(()));
                    }
                    // Waits for the client's next bytes (or the idle timeout) from here.
                    check.as_mut().reset(watched.next_check(timeout));
                    alarm.ring();
                }
                Poll::Ready(Progress::Unparked) => {
                    busy_before = false;
                    // Not parked again before `PARK_AFTER` (a head that comes in parts).
                    check.as_mut().reset(Instant::now() + PARK_AFTER.min(timeout));
                    alarm.ring();
                }
                Poll::Pending => break,
            }
        }
        alarm.task.register(cx.waker());
        if draining || !alarm.rang.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let mut alarm_cx = Context::from_waker(&alarm_waker);
        if drained.as_mut().poll(&mut alarm_cx).is_ready() {
            draining = true;
            if connection.is_parked() {
                return Poll::Ready(Ok(()));
            }
            connection.graceful_shutdown();
            // The connection goes on, to finish: it is polled again at once.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if check.as_mut().poll(&mut alarm_cx).is_pending() {
            return Poll::Pending;
        }
        if !watched.is_idle(timeout) {
            if connection.is_http1() && watched.is_idle(PARK_AFTER) && !watched.park.is_asked() {
                // The socket's next read that finds nothing ends hyper's connection: it is
                // polled again at once, to read.
                watched.park.ask();
                cx.waker().wake_by_ref();
                check.as_mut().reset(watched.next_check(timeout));
                busy_before = false;
            } else {
                let mut next = watched.next_check(connection.idle_wait(timeout));
                if busy_before {
                    // Busy at two looks in a row: looked at again in a while, not every
                    // `PARK_AFTER` (each look wakes the connection's task).
                    next = next.max(Instant::now() + BUSY_RECHECK.min(timeout));
                }
                busy_before = true;
                check.as_mut().reset(next);
            }
            // Polled again, so that the moved timer is armed.
            alarm.ring();
            return Poll::Pending;
        }
        if watched.http2.load(Ordering::Acquire) {
            tracing::debug!(%peer, "closing an idle HTTP/2 connection");
            draining = true;
            connection.graceful_shutdown();
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        // Nothing to answer: no request head came (whole) in time.
        tracing::debug!(%peer, ?timeout, "closing a connection with no request in time");
        Poll::Ready(Ok(()))
    })
    .await
}

/// A connection being served, by hyper's server for its protocol, or parked.
enum Serving<I, S>
where
    S: HttpService<Incoming>,
{
    /// Boxed, so that a parked connection's task does not keep its room.
    Http1(Pin<Box<http1::UpgradeableConnection<TokioIo<Parkable<I>>, S>>>),
    /// Boxed, so that a connection's task is sized for HTTP/1.1, the common case (an
    /// HTTP/2 client multiplexes its requests over few connections).
    Http2(Pin<Box<http2::Connection<TokioIo<I>, S, TokioExecutor>>>),
    /// An idle HTTP/1.1 connection without its hyper connection, until its client's next
    /// bytes arrive.
    Parked(Parked<I, S>),
    /// Between two of the above (never polled).
    Moving,
}

/// What a parked connection keeps: its socket, and the service to serve it with again.
struct Parked<I, S> {
    socket: Parkable<I>,
    service: S,
    /// Counted in `lazygate_connections_parked` while parked.
    _counted: GaugeHold,
}

/// What polling a connection came to.
enum Progress {
    Ended(Result<(), BoxError>),
    /// Its hyper connection gave the socket back, idle.
    Parked,
    /// A parked connection's client sent bytes; a new hyper connection reads them.
    Unparked,
}

impl<I, S> Serving<I, S>
where
    I: Socket,
    S: HttpService<Incoming, ResBody = Tracked> + Unpin + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    fn http1(builders: &Builders, socket: Parkable<I>, service: S) -> Self {
        Serving::Http1(Box::pin(
            builders
                .http1
                .serve_connection(TokioIo::new(socket), service)
                .with_upgrades(),
        ))
    }

    /// Polls hyper's connection, or a parked one's socket; `parked` counts parked ones.
    fn poll(&mut self, cx: &mut Context<'_>, builders: &Builders, parked: &Gauge) -> Poll<Progress> {
        match self {
            Serving::Http1(connection) => {
                let result = std::task::ready!(connection.as_mut().poll(cx));
                let Serving::Http1(connection) = std::mem::replace(self, Serving::Moving) else {
                    unreachable!("matched above");
                };
                // Nothing lost if parking's end of file ended it: hyper ends cleanly, or with
                // this error when it holds the start of a head (given back below).
                let resumable = match &result {
                    Ok(()) => true,
                    Err(error) => error.is_incomplete_message(),
                };
                let parts = Pin::into_inner(connection).into_parts();
                match parts {
                    Some(parts) if resumable && parts.io.inner().is_parked() => {
                        *self = Serving::Parked(Parked {
                            socket: parts.io.into_inner().parked(parts.read_buf),
                            service: parts.service,
                            _counted: GaugeHold::new(parked),
                        });
                        Poll::Ready(Progress::Parked)
                    }
                    // Upgraded (the socket went with the upgrade), closed or failed.
                    _ => Poll::Ready(Progress::Ended(result.map_err(BoxError::from))),
                }
            }
            Serving::Http2(connection) => connection
                .as_mut()
                .poll(cx)
                .map(|result| Progress::Ended(result.map_err(BoxError::from))),
            Serving::Parked(idle) => {
                if let Err(error) = std::task::ready!(idle.socket.poll_read_ready(cx)) {
                    return Poll::Ready(Progress::Ended(Err(error.into())));
                }
                let Serving::Parked(Parked { socket, service, .. }) = std::mem::replace(self, Serving::Moving) else {
                    unreachable!("matched above");
                };
                socket.serve();
                *self = Serving::http1(builders, socket, service);
                Poll::Ready(Progress::Unparked)
            }
            Serving::Moving => unreachable!("a connection is polled between states"),
        }
    }

    fn is_http1(&self) -> bool {
        matches!(self, Serving::Http1(_))
    }

    fn is_parked(&self) -> bool {
        matches!(self, Serving::Parked(_))
    }

    /// How long the connection may idle before the watchdog does something: park it
    /// (HTTP/1.1 being served), or close it.
    fn idle_wait(&self, timeout: Duration) -> Duration {
        if self.is_http1() {
            PARK_AFTER.min(timeout)
        } else {
            timeout
        }
    }

    /// Finishes the requests in flight, takes no more, then ends.
    fn graceful_shutdown(&mut self) {
        match self {
            Serving::Http1(connection) => connection.as_mut().graceful_shutdown(),
            Serving::Http2(connection) => connection.as_mut().graceful_shutdown(),
            Serving::Parked(_) | Serving::Moving => {}
        }
    }
}

/// The waker of a connection watchdog's futures: notes that one of them is ready to be
/// polled and wakes the connection's task.
struct Alarm {
    /// One of the watchdog's futures woke the task (or was just set): poll them.
    rang: AtomicBool,
    /// The connection's task, as of its last poll.
    task: AtomicWaker,
}

impl Alarm {
    fn ring(&self) {
        self.rang.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl std::task::Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.ring();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ring();
    }
}
