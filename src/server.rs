//! The listener: accepts connections, serves HTTP/1.1 (with upgrades) and HTTP/2 on them,
//! and on shutdown stops accepting and drains open connections within a deadline.

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
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::service::Gateway;

/// Marks a request that arrived over TLS on this listener (in the request's extensions).
#[derive(Clone, Copy, Debug)]
pub struct ClientTls;

/// Accepts until `shutdown` fires, then waits up to `drain` for open requests to finish.
/// With `tls`, every connection is a TLS one (ALPN picks HTTP/2 or HTTP/1.1).
pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let limits = &gateway.settings.limits;
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
    // One permit per client connection: past the cap, a connection gets a 503 and is closed.
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
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
        let gateway = gateway.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
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
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("all connections drained"),
        _ = tokio::time::sleep(drain) => tracing::warn!(?drain, "drain deadline passed; closing the rest"),
    }
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
        async move { Ok::<_, Infallible>(gateway.handle(request, peer).await) }
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
