//! WebSocket tunnels: the handshake goes to the runtime on a connection of its own, and once
//! both sides have upgraded, bytes are copied both ways, unchanged, until both sides close.
//! The tunnel task holds the lease, so an open live view keeps its runtime alive; so that a
//! client that is gone without closing (a laptop lid shut) does not hold it forever, the
//! gateway pings the client between the runtime's frames ([`super::frames`]) and closes the
//! tunnel with 1001 when it stops answering, when the tunnel reaches its age cap, and at the
//! drain deadline.
//!
//! Each direction copies through a buffer that starts small and grows once a read fills it:
//! an idle live view (or a quiet input channel) costs a few KiB, while a stream of large
//! frame updates moves through 64 KiB reads. A small frame's copy is cheap next to what is
//! around it, so the relay keeps that small too: it copies between the TCP sockets
//! themselves where it can (not through hyper's upgraded connections, shared by the two
//! directions behind a lock), and what it waits on besides the bytes (the drain, the other
//! direction's end, the ping timer) costs little to poll at every wake ([`super::latch`]).

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Chain, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::Instant;
use tokio_util::either::Either;
use tokio_util::task::TaskTracker;

use super::frames::{self, FrameBoundaries};
use super::latch::Latch;
use super::upstream::HostHeader;
use super::{SendError, UpstreamBody};
use crate::body::Body;
use crate::metrics::{GaugeHold, Metrics, ReasonLabels};
use crate::provision::Lease;
use crate::report::error_chain;

/// A direction's buffer while its reads are small.
const SMALL_BUFFER: usize = 2 * 1024;
/// A direction's buffer once a read has filled the small one.
const LARGE_BUFFER: usize = 64 * 1024;

/// Sends the handshake (a GET with `head`, made by [`super::headers::Forwarding`] for an
/// upgrade) to `authority` on a fresh connection and returns the runtime's answer together
/// with its upgrade, when it agreed to switch protocols.
pub async fn handshake(
    head: http::HeaderMap,
    host: HostHeader,
    authority: &str,
    path_and_query: &str,
    timeout: Duration,
) -> Result<(Response<UpstreamBody>, Option<OnUpgrade>), SendError> {
    let stream = super::upstream::connect(authority).await?;
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
    *request.uri_mut() = uri;
    *request.headers_mut() = head;
    let upstream = http::HeaderValue::from_str(authority).map_err(|e| SendError::Failed(e.to_string()))?;
    host.apply(request.headers_mut(), &upstream);
    let mut response = tokio::time::timeout(timeout, sender.send_request(request))
        .await
        .map_err(|_| SendError::Timeout(timeout))?
        .map_err(|e| SendError::Failed(error_chain(&e)))?;
    let upgrade = (response.status() == StatusCode::SWITCHING_PROTOCOLS).then(|| hyper::upgrade::on(&mut response));
    Ok((response.map(UpstreamBody::unkept), upgrade))
}

/// How a tunnel watches its client: pings find a peer that is gone (a closed laptop lid
/// leaves a connection that never closes) and keep a quiet view open through a tunnel's idle
/// limit; a cap bounds any tunnel's age. Off for tunnels that hold no runtime.
#[derive(Debug, Clone, Copy, Default)]
pub struct Watch {
    /// Ping the client after this long without hearing from it; `None`: never.
    pub ping_after: Option<Duration>,
    /// A client that has sent nothing (no pong, no data) this long after a ping is gone;
    /// also the longest a write to the client may make no progress.
    pub pong_timeout: Duration,
    /// The longest a tunnel stays open; `None`: no limit.
    pub max_age: Option<Duration>,
}

/// The open tunnels of all workers: tracked so that shutdown can wait for them, and told to
/// close (1001, "going away") at the drain deadline.
#[derive(Clone)]
pub struct Tunnels {
    pub tasks: TaskTracker,
    /// Set at the drain deadline: every tunnel sends its client a close frame and ends.
    pub closing: Arc<Latch>,
    /// The plain TCP socket under a client's upgraded connection, if it is one: the server
    /// knows how it wraps its sockets (the relay copies between the sockets themselves).
    pub client_socket: ClientSocket,
}

/// Takes the TCP socket out of a client's upgraded connection, with the bytes already read
/// from it and not yet used; gives the connection back when it is not plain TCP (TLS).
pub type ClientSocket = fn(Upgraded) -> Result<(TcpStream, Bytes), Upgraded>;

impl Tunnels {
    pub fn new(client_socket: ClientSocket) -> Self {
        Tunnels {
            tasks: TaskTracker::new(),
            closing: Arc::default(),
            client_socket,
        }
    }
}

/// Answers the client with the runtime's `101 Switching Protocols` and, in a tracked task,
/// joins the two upgraded connections until either side closes (or the gateway closes the
/// tunnel: a client gone, the age cap, the drain deadline).
pub fn splice(
    response: Response<UpstreamBody>,
    client: OnUpgrade,
    upstream: OnUpgrade,
    mut lease: Option<Lease>,
    tunnels: &Tunnels,
    watch: Watch,
    metrics: &Metrics,
) -> Response<Body> {
    let (parts, _) = response.into_parts();
    if let Some(lease) = lease.as_mut() {
        lease.mark_websocket();
    }
    // Counted as open from the handshake's answer to the end of the relay.
    let counted = GaugeHold::new(&metrics.websockets_open);
    let (pings, closes) = (metrics.websocket_pings.clone(), metrics.websocket_closes.clone());
    let owner_hash = lease
        .as_ref()
        .map(|l| l.runtime().owner_hash.to_string())
        .unwrap_or_default();
    let closing = tunnels.closing.clone();
    let client_socket = tunnels.client_socket;
    tunnels.tasks.spawn(async move {
        let (_lease, _counted) = (lease, counted);
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%owner_hash, error = %error_chain(&error), "websocket upgrade failed");
                return;
            }
        };
        // The sockets themselves where they are plain TCP (the runtime's always is): hyper's
        // layers over an upgraded connection, and a lock at each read and write to share it
        // between the two directions, cost more than the copying of a small frame.
        let upstream = upstream
            .downcast::<TokioIo<TcpStream>>()
            .map(|parts| (parts.io.into_inner(), parts.read_buf));
        let relayed = relay(halves(client_socket(client)), halves(upstream), watch, closing, &pings).await;
        match relayed {
            Ok(Relayed {
                to_runtime,
                to_client,
                ending: Ending::Closed,
            }) => tracing::debug!(%owner_hash, to_runtime, to_client, "websocket closed"),
            Ok(Relayed { ending, .. }) => {
                closes
                    .get_or_create(&ReasonLabels {
                        reason: ending.as_str(),
                    })
                    .inc();
                tracing::info!(%owner_hash, reason = ending.as_str(), "closed a websocket (1001)")
            }
            Err(error) => tracing::debug!(%owner_hash, %error, "websocket ended with an error"),
        }
    });
    Response::from_parts(parts, crate::body::empty())
}

/// A tunnel's side as its relay reads and writes it, in two halves: a TCP socket's (split
/// without a lock; the bytes read from it before, by hyper or the server, come first), or an
/// upgraded connection's (shared behind a lock).
type Halves = (
    Either<Chain<Cursor<Bytes>, OwnedReadHalf>, ReadHalf<TokioIo<Upgraded>>>,
    Either<OwnedWriteHalf, WriteHalf<TokioIo<Upgraded>>>,
);

/// The halves of a side: its TCP socket with what was read from it, or its upgraded
/// connection.
fn halves(side: Result<(TcpStream, Bytes), Upgraded>) -> Halves {
    match side {
        Ok((socket, read)) => {
            let (from, to) = socket.into_split();
            // Copied (usually nothing): what hyper read past a head is a slice of its read
            // buffer, which it would keep whole for the tunnel's life.
            let read = if read.is_empty() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(&read)
            };
            (Either::Left(Cursor::new(read).chain(from)), Either::Left(to))
        }
        Err(upgraded) => {
            let (from, to) = tokio::io::split(TokioIo::new(upgraded));
            (Either::Right(from), Either::Right(to))
        }
    }
}

/// Why a tunnel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Both sides ended it.
    Closed,
    /// The client answered no ping (or took no bytes) within the pong timeout.
    ClientGone,
    /// Open for `limits.max_view_seconds`.
    MaxAge,
    /// The gateway is shutting down and the drain deadline has come.
    Drained,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Closed => "closed",
            Ending::ClientGone => "client_gone",
            Ending::MaxAge => "max_age",
            Ending::Drained => "drained",
        }
    }
}

/// What a relay did.
#[derive(Debug)]
pub struct Relayed {
    pub to_runtime: u64,
    pub to_client: u64,
    pub ending: Ending,
}

/// How long a client whose runtime has closed gets to close its side, and how long the
/// gateway waits for a frame boundary to put its close frame at.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// Copies both ways until both directions have ended (when one side stops sending, the
/// other side's write half is shut down, as `tokio::io::copy_bidirectional` does), watching
/// the client as `watch` says and closing it with 1001 when it is gone, too old, or the
/// gateway drains.
async fn relay<CR, CW, UR, UW>(
    (client_read, client_write): (CR, CW),
    (upstream_read, upstream_write): (UR, UW),
    watch: Watch,
    closing: Arc<Latch>,
    pings: &Counter,
) -> std::io::Result<Relayed>
where
    CR: AsyncRead + Unpin,
    CW: AsyncWrite + Unpin,
    UR: AsyncRead + Unpin,
    UW: AsyncWrite + Unpin,
{
    let heard = Heard::new();
    // The upward direction is over (the client ended it, or the gateway did).
    let upward_done = Latch::default();
    let up = async {
        let sent = pump_up(client_read, upstream_write, &heard, &upward_done).await;
        upward_done.set();
        sent
    };
    let down = async {
        let result = pump_down(upstream_read, client_write, &heard, watch, &closing, pings).await;
        if result.is_err() || result.as_ref().is_ok_and(|(_, ending)| *ending != Ending::Closed) {
            upward_done.set();
        } else {
            // The runtime closed: the client gets a moment to close its side.
            tokio::select! {
                () = upward_done.wait() => {}
                () = tokio::time::sleep(CLOSE_GRACE) => upward_done.set(),
            }
        }
        result
    };
    let (to_runtime, (to_client, ending)) = tokio::try_join!(up, down)?;
    Ok(Relayed {
        to_runtime,
        to_client,
        ending,
    })
}

/// What the client has sent: how many reads (a ping is answered once this moves on) and
/// when the last one was, in ms since the relay began (for when to ping next).
struct Heard {
    began: Instant,
    at_ms: AtomicU64,
    reads: AtomicU64,
}

impl Heard {
    fn new() -> Self {
        Heard {
            began: Instant::now(),
            at_ms: AtomicU64::new(0),
            reads: AtomicU64::new(0),
        }
    }

    fn now(&self) {
        self.at_ms
            .store(self.began.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Release);
    }

    fn last(&self) -> Instant {
        self.began + Duration::from_millis(self.at_ms.load(Ordering::Relaxed))
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::Acquire)
    }
}

/// Client → runtime, until the client ends it or `done` says the tunnel is over.
async fn pump_up<R, W>(mut from: R, mut to: W, heard: &Heard, done: &Latch) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; SMALL_BUFFER];
    let mut total = 0u64;
    // Made once for the tunnel's life: a fresh one for each read would put itself on the
    // latch's list of waiters and take itself off again every time.
    let over = done.wait();
    tokio::pin!(over);
    loop {
        let read = tokio::select! {
            // In this order, without drawing a random number for it each time: the end is
            // seen even while the client keeps sending.
            biased;
            () = &mut over => 0,
            read = from.read(&mut buffer) => read?,
        };
        if read == 0 {
            to.shutdown().await.ok();
            return Ok(total);
        }
        heard.now();
        to.write_all(&buffer[..read]).await?;
        to.flush().await?;
        total += read as u64;
        if read == buffer.len() && buffer.len() < LARGE_BUFFER {
            buffer.resize(LARGE_BUFFER, 0);
        }
    }
}

/// Runtime → client: copies the runtime's frames unchanged and puts the gateway's pings and
/// close frame between them ([`FrameBoundaries`]).
///
/// What to do besides copying (ping, close, give up) is decided only when something is due:
/// at the start, when the timer fires, and when the gateway starts closing. A chunk read
/// changes no deadline that would come sooner (the client's reads only move the next ping
/// later), so the timer may fire early: the decision then finds nothing due yet and sets it
/// again. Copying a chunk reads no clock.
async fn pump_down<R, W>(
    mut from: R,
    mut to: W,
    heard: &Heard,
    watch: Watch,
    closing: &Latch,
    pings: &Counter,
) -> std::io::Result<(u64, Ending)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let began = Instant::now();
    let mut buffer = vec![0u8; SMALL_BUFFER];
    let mut total = 0u64;
    let mut frames = FrameBoundaries::default();
    // A ping sent and not yet answered (by anything the client sent after it): when, and
    // how many reads the client had made then.
    let mut ping_sent: Option<(Instant, u64)> = None;
    // A frame of the gateway's waiting for a boundary in the runtime's stream.
    let mut queued: Option<&'static [u8]> = None;
    // Set once the gateway has decided to close: why, and the latest it waits for a boundary.
    let mut ending: Option<(Ending, Instant)> = None;
    // A write that makes no progress this long means the client is gone.
    let write_limit = watch.ping_after.map(|p| p + watch.pong_timeout);
    // One timer for the tunnel's life, moved only when a decision moves what is due next.
    let timer = tokio::time::sleep_until(began);
    tokio::pin!(timer);
    let mut timed = false;
    // Made once, as `pump_up`'s.
    let drain = closing.wait();
    tokio::pin!(drain);
    let mut decide = true;
    loop {
        if decide {
            decide = false;
            if let Some((_, reads)) = ping_sent
                && heard.reads() > reads
            {
                ping_sent = None;
            }
            let now = Instant::now();
            // What the gateway decides at this moment: close, ping, or nothing.
            if let Some((reason, give_up)) = ending {
                if now >= give_up {
                    // No boundary came in time: end without the close frame.
                    to.shutdown().await.ok();
                    return Ok((total, reason));
                }
            } else {
                let reason = if closing.is_set() {
                    Some(Ending::Drained)
                } else if watch.max_age.is_some_and(|age| now >= began + age) {
                    Some(Ending::MaxAge)
                } else if ping_sent.is_some_and(|(sent, _)| now >= sent + watch.pong_timeout) {
                    Some(Ending::ClientGone)
                } else {
                    None
                };
                if let Some(reason) = reason {
                    ending = Some((reason, now + CLOSE_GRACE));
                    queued = Some(&frames::CLOSE_GOING_AWAY);
                } else if let Some(after) = watch.ping_after
                    && ping_sent.is_none()
                    && queued.is_none()
                    && now >= heard.last().max(began) + after
                    && !frames.is_lost()
                {
                    ping_sent = Some((now, heard.reads()));
                    queued = Some(&frames::PING);
                    pings.inc();
                }
            }
            if let Some(frame) = queued
                && frames.at_boundary()
            {
                queued = None;
                write_bounded(&mut to, frame, write_limit).await?;
            }
            if let Some((reason, _)) = ending
                && queued.is_none()
            {
                to.shutdown().await.ok();
                return Ok((total, reason));
            }
            // The next moment something is due.
            let next = [
                ending.map(|(_, give_up)| give_up),
                watch.max_age.map(|age| began + age),
                ping_sent.map(|(sent, _)| sent + watch.pong_timeout),
                // (Only when a ping can go: a past deadline that can do nothing would spin.)
                watch
                    .ping_after
                    .filter(|_| ping_sent.is_none() && queued.is_none() && !frames.is_lost())
                    .map(|after| heard.last().max(began) + after),
            ]
            .into_iter()
            .flatten()
            .min();
            timed = next.is_some();
            if let Some(next) = next
                && timer.deadline() != next
            {
                timer.as_mut().reset(next);
            }
        }
        let read = tokio::select! {
            biased;
            () = &mut drain, if ending.is_none() => {
                decide = true;
                continue;
            }
            () = &mut timer, if timed => {
                decide = true;
                continue;
            }
            read = from.read(&mut buffer) => read?,
        };
        if read == 0 {
            to.shutdown().await.ok();
            return Ok((total, ending.map_or(Ending::Closed, |(reason, _)| reason)));
        }
        let chunk = &buffer[..read];
        let boundary = frames.feed(chunk);
        match (queued.take(), boundary) {
            (Some(frame), Some(at)) => {
                write_bounded(&mut to, &chunk[..at], write_limit).await?;
                write_bounded(&mut to, frame, write_limit).await?;
                // After a close frame nothing more may follow.
                if ending.is_none() {
                    write_bounded(&mut to, &chunk[at..], write_limit).await?;
                } else {
                    to.shutdown().await.ok();
                    return Ok((total + at as u64, ending.map_or(Ending::Closed, |(r, _)| r)));
                }
            }
            (frame, _) => {
                queued = frame;
                write_bounded(&mut to, chunk, write_limit).await?;
            }
        }
        to.flush().await?;
        total += read as u64;
        if read == buffer.len() && buffer.len() < LARGE_BUFFER {
            buffer.resize(LARGE_BUFFER, 0);
        }
    }
}

/// Writes all of `bytes`, failing when the client takes none of them for `limit`. A timer
/// is armed only for a write that has to wait: most go out at once.
async fn write_bounded<W: AsyncWrite + Unpin>(
    to: &mut W,
    bytes: &[u8],
    limit: Option<Duration>,
) -> std::io::Result<()> {
    let mut write = std::pin::pin!(to.write_all(bytes));
    if let std::task::Poll::Ready(written) = futures_util::poll!(write.as_mut()) {
        return written;
    }
    match limit {
        None => write.await,
        Some(limit) => tokio::time::timeout(limit, write)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the client took nothing"))?,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::DuplexStream;

    const WATCHED: Watch = Watch {
        ping_after: Some(Duration::from_secs(1)),
        pong_timeout: Duration::from_secs(1),
        max_age: None,
    };

    /// A relay between two in-memory peers: (the client's end, the runtime's end, the relay).
    fn start(
        watch: Watch,
        closing: Arc<Latch>,
    ) -> (
        DuplexStream,
        DuplexStream,
        tokio::task::JoinHandle<std::io::Result<Relayed>>,
    ) {
        let (client, client_peer) = tokio::io::duplex(1 << 20);
        let (upstream, upstream_peer) = tokio::io::duplex(1 << 20);
        let relayed = tokio::spawn(async move {
            let pings = Counter::default();
            relay(
                tokio::io::split(client),
                tokio::io::split(upstream),
                watch,
                closing,
                &pings,
            )
            .await
        });
        (client_peer, upstream_peer, relayed)
    }

    /// A client's pong (masked, as clients must send frames).
    const PONG: [u8; 6] = [0x8a, 0x80, 1, 2, 3, 4];

    #[tokio::test]
    async fn relay_copies_both_ways_and_ends_when_both_sides_close() {
        let (mut client_peer, mut upstream_peer, relayed) = start(Watch::default(), Arc::default());
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
        let relayed = relayed.await.unwrap().unwrap();
        assert_eq!((relayed.to_runtime, relayed.to_client), (frame.len() as u64, 4));
        assert_eq!(relayed.ending, Ending::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_no_ping_is_closed_with_1001() {
        let (mut client_peer, mut upstream_peer, relayed) = start(WATCHED, Arc::default());
        // The client never reads nor answers: after a second of silence a ping, after one
        // more a close frame, then the end; the runtime's side is closed too.
        let relayed = relayed.await.unwrap().unwrap();
        assert_eq!(relayed.ending, Ending::ClientGone);
        let mut seen = Vec::new();
        client_peer.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, [frames::PING.as_slice(), &frames::CLOSE_GOING_AWAY].concat());
        let mut rest = Vec::new();
        upstream_peer.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_its_pings_stays_and_pings_go_between_frames() {
        let (mut client_peer, mut upstream_peer, relayed) = start(WATCHED, Arc::default());
        let mut pings = 0;
        // A frame of 10 bytes from the runtime, in two halves with a ping falling due
        // between them: the ping must come after the whole frame, never inside it.
        let frame = [0x82, 8, 1, 2, 3, 4, 5, 6, 7, 8];
        upstream_peer.write_all(&frame[..5]).await.unwrap();
        let mut first = [0u8; 5];
        client_peer.read_exact(&mut first).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        upstream_peer.write_all(&frame[5..]).await.unwrap();
        let mut rest = [0u8; 7];
        client_peer.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest[..5], &frame[5..]);
        assert_eq!(&rest[5..], &frames::PING, "the ping follows the frame");
        client_peer.write_all(&PONG).await.unwrap();
        // Twenty seconds of pings, each answered: the tunnel stays open.
        for _ in 0..10 {
            let mut ping = [0u8; 2];
            tokio::time::timeout(Duration::from_secs(5), client_peer.read_exact(&mut ping))
                .await
                .expect("a ping within the interval")
                .unwrap();
            assert_eq!(ping, frames::PING);
            pings += 1;
            client_peer.write_all(&PONG).await.unwrap();
        }
        assert!(!relayed.is_finished());
        // The runtime received the client's pongs (unsolicited pongs are allowed).
        let mut pongs = vec![0u8; PONG.len() * (pings + 1)];
        upstream_peer.read_exact(&mut pongs).await.unwrap();
        client_peer.shutdown().await.unwrap();
        upstream_peer.shutdown().await.unwrap();
        assert_eq!(relayed.await.unwrap().unwrap().ending, Ending::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_deadline_and_the_age_cap_close_with_1001() {
        let closing = Arc::new(Latch::default());
        let (mut client_peer, _upstream_peer, relayed) = start(Watch::default(), closing.clone());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!relayed.is_finished(), "an unwatched tunnel stays however quiet");
        closing.set();
        assert_eq!(relayed.await.unwrap().unwrap().ending, Ending::Drained);
        let mut seen = Vec::new();
        client_peer.read_to_end(&mut seen).await.unwrap();
        assert_eq!(seen, frames::CLOSE_GOING_AWAY);

        let capped = Watch {
            max_age: Some(Duration::from_secs(60)),
            ..Watch::default()
        };
        let (mut client_peer, mut upstream_peer, relayed) = start(capped, Arc::default());
        upstream_peer.write_all(&[0x81, 2, b'h', b'i']).await.unwrap();
        assert_eq!(relayed.await.unwrap().unwrap().ending, Ending::MaxAge);
        let mut seen = Vec::new();
        client_peer.read_to_end(&mut seen).await.unwrap();
        assert_eq!(
            seen,
            [[0x81, 2, b'h', b'i'].as_slice(), &frames::CLOSE_GOING_AWAY].concat()
        );
    }
}
