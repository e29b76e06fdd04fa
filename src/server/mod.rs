//! The listener: the acceptor takes connections and hands them to worker threads, which
//! serve HTTP/1.1 (with upgrades) and HTTP/2 on them; on shutdown the acceptor stops and the
//! workers drain open connections within a deadline. Which of the two a connection speaks is
//! known before hyper reads from it: by ALPN over TLS, by peeking at a plain connection's
//! first bytes (`sniff_protocol`); each is then served by hyper's server for it.
//!
//! Each worker is a thread with its own single-threaded event loop (as nginx has worker
//! processes): a client connection, the kept upstream connections its requests use and the
//! WebSocket tunnels it opens all live on one thread, so forwarding a request wakes nothing
//! on another core. The acceptor gives each connection to the worker with the fewest open,
//! and enforces the connection cap for all of them.
//!
//! Every connection is watched (`connection`, with what `activity` records of it): one that
//! has had no request open for `limits.header_read_timeout` — since it was accepted, or since
//! its last response went out — is closed (silent sockets, bare HTTP/2 prefaces, heads sent
//! a byte at a time and idle keep-alive connections must not fill the connection cap); an
//! HTTP/2 one is shut down gracefully (GOAWAY). HTTP/2 peers are also pinged, so a dead one
//! is noticed. hyper has a header-read timeout of its own for HTTP/1.1, off here: it arms a
//! timer for every request head (a boxed sleep, registered and cancelled: about 900
//! instructions a request, counted with callgrind), where the watchdog's one timer per
//! connection fires at most every 100 ms (once a second on a busy connection), however many
//! requests go by. An idle HTTP/1.1 connection is parked after those 100 ms (`parking`): it
//! keeps its socket and gives up hyper's buffers until its client sends again.

mod activity;
mod connection;
pub(crate) mod parking;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::service::Gateway;
use connection::serve_io;

/// A connection accepted by the acceptor, on its way to a worker.
struct Accepted {
    stream: std::net::TcpStream,
    peer: SocketAddr,
    /// The connection's place under the cap, given back when it closes.
    permit: OwnedSemaphorePermit,
}

/// What one worker thread serves with.
pub struct Worker {
    /// This worker's pipeline: shared state, plus an upstream pool of its own.
    pub gateway: Arc<Gateway>,
    pub tls: Option<TlsAcceptor>,
    pub drain: Duration,
}

/// The acceptor's side of a running worker.
pub struct WorkerHandle {
    connections: mpsc::UnboundedSender<Accepted>,
    /// Connections this worker has open, so the acceptor can pick the least busy one.
    open: Arc<AtomicUsize>,
    done: oneshot::Receiver<()>,
}

impl Worker {
    /// Starts the worker on a thread of its own with a single-threaded event loop. It serves
    /// what the acceptor hands it and, once the acceptor is gone, drains and exits.
    pub fn spawn(self, index: usize) -> std::io::Result<WorkerHandle> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (connections, inbox) = mpsc::unbounded_channel();
        let open = Arc::new(AtomicUsize::new(0));
        let (done_tx, done) = oneshot::channel();
        let counter = open.clone();
        std::thread::Builder::new()
            .name(format!("lazygate-worker-{index}"))
            .spawn(move || {
                runtime.block_on(self.run(inbox, counter));
                // Dropping the runtime ends whatever this worker still had going.
                drop(runtime);
                let _ = done_tx.send(());
            })?;
        Ok(WorkerHandle {
            connections,
            open,
            done,
        })
    }

    async fn run(self, mut inbox: mpsc::UnboundedReceiver<Accepted>, open: Arc<AtomicUsize>) {
        let limits = &self.gateway.settings.limits;
        let handshake_timeout = limits.header_read_timeout;
        let builders = Arc::new(Builders::new(limits));
        // Asks every open connection to finish (graceful shutdown) once the acceptor is gone.
        let drain = CancellationToken::new();
        let connections = TaskTracker::new();
        while let Some(Accepted { stream, peer, permit }) = inbox.recv().await {
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%peer, %error, "worker cannot take a connection");
                    open.fetch_sub(1, Ordering::Relaxed);
                    continue;
                }
            };
            let gateway = self.gateway.clone();
            let builders = builders.clone();
            let drain = drain.clone();
            let tls = self.tls.clone();
            let open = open.clone();
            connections.spawn(async move {
                let _permit = permit;
                let accepted = Instant::now();
                let result = match tls {
                    None => match sniff_protocol(&stream, accepted + handshake_timeout, &drain).await {
                        Ok(Some(protocol)) => {
                            serve_io(stream, protocol, peer, false, accepted, gateway, &builders, drain).await
                        }
                        Ok(None) => Ok(()),
                        Err(error) => Err(error.into()),
                    },
                    // Boxed: a TLS session's state is several KiB, which a plain connection's
                    // task would otherwise reserve too.
                    Some(acceptor) => {
                        Box::pin(async {
                            match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                                Ok(Ok(stream)) => {
                                    // As RFC 9113 has it, HTTP/2 over TLS is chosen by ALPN.
                                    let protocol = match stream.get_ref().1.alpn_protocol() {
                                        Some(b"h2") => Protocol::Http2,
                                        _ => Protocol::Http1,
                                    };
                                    serve_io(stream, protocol, peer, true, accepted, gateway, &builders, drain).await
                                }
                                Ok(Err(error)) => Err(format!("TLS handshake: {error}").into()),
                                Err(_) => Err("TLS handshake timed out".into()),
                            }
                        })
                        .await
                    }
                };
                open.fetch_sub(1, Ordering::Relaxed);
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }
        // The acceptor has stopped: let open requests finish, within the deadline.
        let deadline = tokio::time::Instant::now() + self.drain;
        drain.cancel();
        connections.close();
        tokio::select! {
            _ = connections.wait() => tracing::debug!("worker's connections drained"),
            _ = tokio::time::sleep_until(deadline) => tracing::warn!(drain = ?self.drain, "drain deadline passed; closing the rest"),
        }
        // WebSocket tunnels outlive their HTTP connection: they get the same deadline, then
        // a close frame (1001, "going away"), so that a live view reconnects instead of
        // taking the gateway's exit for a crash.
        let tunnels = &self.gateway.tunnels;
        tunnels.tasks.close();
        if tokio::time::timeout_at(deadline, tunnels.tasks.wait()).await.is_err() {
            tracing::info!(
                open = tunnels.tasks.len(),
                "closing WebSocket tunnels still open at the drain deadline (1001)"
            );
            tunnels.closing.set();
            if tokio::time::timeout(TUNNEL_CLOSE_WAIT, tunnels.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!(
                    open = tunnels.tasks.len(),
                    "WebSocket tunnels did not close in time; dropping them"
                );
            }
        }
    }
}

/// Accepts connections until `shutdown` fires and hands each to the worker with the fewest
/// open; then lets the workers drain and waits for them to finish.
pub async fn serve(
    listener: TcpListener,
    workers: Vec<WorkerHandle>,
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        stream.set_nodelay(true).ok();
        // A peer whose machine is gone (no FIN, no RST) is found by the kernel within
        // about two minutes, even on a connection that is silent both ways.
        socket2::SockRef::from(&stream).set_tcp_keepalive(&TCP_KEEPALIVE).ok();
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse_over_capacity(stream));
            continue;
        };
        // Out of this thread's event loop, into the chosen worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%peer, %error, "cannot hand a connection to a worker");
                continue;
            }
        };
        let Some(worker) = workers.iter().min_by_key(|w| w.open.load(Ordering::Relaxed)) else {
            break;
        };
        worker.open.fetch_add(1, Ordering::Relaxed);
        if worker.connections.send(Accepted { stream, peer, permit }).is_err() {
            tracing::error!("a worker thread has stopped; closing a connection");
        }
    }
    drop(listener);
    let mut finished = Vec::with_capacity(workers.len());
    for worker in workers {
        // Closing its inbox tells the worker to drain.
        drop(worker.connections);
        finished.push(worker.done);
    }
    for done in finished {
        // An error means the thread ended without saying so (a panic): finished all the same.
        let _ = done.await;
    }
    tracing::info!("all connections drained");
}

/// What a connection speaks, known before hyper reads a byte of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

/// The first bytes of an HTTP/2 connection with prior knowledge (RFC 9113, 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Tells HTTP/2 with prior knowledge from HTTP/1.1 by a plain connection's first bytes,
/// peeked at rather than read, so that hyper reads them into its own buffer (hyper-util's
/// `auto` server reads them into one of its own, and hyper's read buffer then grew to
/// 16 KiB on every connection: 8 KiB more per idle keep-alive connection, seen with
/// valgrind's DHAT). `None`: nothing came before `deadline`, or the gateway is draining.
async fn sniff_protocol(
    stream: &TcpStream,
    deadline: Instant,
    drain: &CancellationToken,
) -> std::io::Result<Option<Protocol>> {
    let sniffing = async {
        let mut head = [0u8; HTTP2_PREFACE.len()];
        loop {
            stream.readable().await?;
            // Peeked within `try_io`: when only a part of the preface has come, the
            // readiness it clears is the one seen before the peek, so the next wait ends as
            // soon as more bytes arrive, however soon that is.
            let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
                let (n, _) = rustix::net::recv(stream, &mut head[..], rustix::net::RecvFlags::PEEK)?;
                if n == 0 || head[..n] != HTTP2_PREFACE[..n] {
                    // Closed (hyper sees that), or anything but the preface.
                    Ok(Protocol::Http1)
                } else if n == HTTP2_PREFACE.len() {
                    Ok(Protocol::Http2)
                } else {
                    Err(std::io::ErrorKind::WouldBlock.into())
                }
            });
            match peeked {
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => continue,
                peeked => return peeked,
            }
        }
    };
    tokio::select! {
        sniffed = tokio::time::timeout_at(deadline, sniffing) => match sniffed {
            Ok(protocol) => protocol.map(Some),
            Err(_) => {
                tracing::debug!("closing a connection with no request in time");
                Ok(None)
            }
        },
        () = drain.cancelled() => Ok(None),
    }
}

/// The connection settings a worker serves with, one builder per protocol.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &crate::config::Limits) -> Self {
        let mut http1 = http1::Builder::new();
        http1
            // The watchdog's to enforce (module doc).
            .header_read_timeout(None)
            // Both: hyper checks its buffer's limit only while a head is incomplete, and its
            // buffer grows by doubling, so a head somewhat over the limit can arrive whole
            // (100 KB against 64 KiB did); the head's size is checked once it is parsed.
            .max_buf_size(limits.max_header_bytes)
            .max_header_size(limits.max_header_bytes);
        // Only a limit other than hyper's own (100) is set: with one set, hyper sizes and
        // fills its header arrays for every request head it parses (about 1 700 instructions
        // a request, counted with callgrind), where its default arrays cost nothing.
        if limits.max_headers != HYPER_MAX_HEADERS {
            http1.max_headers(limits.max_headers);
        }
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32)
            .keep_alive_interval(Some(HTTP2_PING_INTERVAL))
            .keep_alive_timeout(HTTP2_PING_TIMEOUT);
        Builders { http1, http2 }
    }
}

/// The number of headers hyper's HTTP/1.1 parser takes when no limit is set.
const HYPER_MAX_HEADERS: usize = 100;

/// How often an HTTP/2 peer is pinged, and how long its answer may take before the
/// connection is closed as dead.
const HTTP2_PING_INTERVAL: Duration = Duration::from_secs(20);
const HTTP2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// TCP keepalive of client connections: probes after 60 s of silence, every 10 s, 6 times.
const TCP_KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(Duration::from_secs(60))
    .with_interval(Duration::from_secs(10))
    .with_retries(6);

/// How long tunnels told to close at the drain deadline get to send their close frame.
const TUNNEL_CLOSE_WAIT: Duration = Duration::from_secs(6);

/// Answers a connection past the connection cap with a 503 and closes it.
async fn refuse_over_capacity(mut stream: tokio::net::TcpStream) {
    tracing::warn!("connection cap reached; refusing a connection");
    let body = r#"{"error":{"code":"too_many_connections","message":"the gateway is at its connection limit; retry shortly"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}
