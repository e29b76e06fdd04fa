//! The listener: the acceptor takes connections and hands them to worker threads, which
//! serve HTTP/1.1 (with upgrades) and HTTP/2 on them; on shutdown the acceptor stops and the
//! workers drain open connections within a deadline.
//!
//! Each worker is a thread with its own single-threaded event loop (as nginx has worker
//! processes): a client connection, the pooled upstream connections its requests use and the
//! WebSocket tunnels it opens all live on one thread, so forwarding a request wakes nothing
//! on another core. The acceptor gives each connection to the worker with the fewest open,
//! and enforces the connection cap for all of them.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use crate::body::BoxError;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::service::Gateway;

/// Marks a request that arrived over TLS on this listener (in the request's extensions).
#[derive(Clone, Copy, Debug)]
pub struct ClientTls;

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
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_headers(limits.max_headers)
            .max_buf_size(limits.max_header_bytes);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32);
        let graceful = GracefulShutdown::new();
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
            let builder = builder.clone();
            let watcher = graceful.watcher();
            let tls = self.tls.clone();
            let open = open.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let result = match tls {
                    None => serve_io(stream, peer, false, gateway, &builder, watcher).await,
                    Some(acceptor) => match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => serve_io(stream, peer, true, gateway, &builder, watcher).await,
                        Ok(Err(error)) => Err(format!("TLS handshake: {error}").into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    },
                };
                open.fetch_sub(1, Ordering::Relaxed);
                if let Err(error) = result {
                    tracing::debug!(%peer, %error, "connection ended with an error");
                }
            });
        }
        // The acceptor has stopped: let open requests finish, within the deadline.
        tokio::select! {
            _ = graceful.shutdown() => tracing::debug!("worker's connections drained"),
            _ = tokio::time::sleep(self.drain) => tracing::warn!(drain = ?self.drain, "drain deadline passed; closing the rest"),
        }
        // WebSocket tunnels outlive their HTTP connection: they get the deadline too.
        self.gateway.tunnels.close();
        if tokio::time::timeout(self.drain, self.gateway.tunnels.wait())
            .await
            .is_err()
        {
            tracing::warn!("closing WebSocket tunnels still open at the drain deadline");
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

/// Serves one connection (plain or TLS) until it ends or shutdown asks it to.
async fn serve_io<I>(
    io: I,
    peer: SocketAddr,
    tls: bool,
    gateway: Arc<Gateway>,
    builder: &Builder<TokioExecutor>,
    watcher: Watcher,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let gateway = gateway.clone();
        if tls {
            request.extensions_mut().insert(ClientTls);
        }
        // Boxed: hyper keeps room for this future in every connection, idle or not, and the
        // pipeline's future is several KiB; boxed, an idle keep-alive connection holds a pointer.
        let handling = Box::pin(async move { gateway.handle(request, peer).await });
        async move { Ok::<_, Infallible>(handling.await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    watcher.watch(connection.into_owned()).await
}

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
