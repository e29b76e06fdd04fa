//! `hyper-floor`: the least an HTTP/1.1 reverse proxy built on hyper and tokio does, for
//! measuring what lazygate's warm path costs above hyper's own machinery.
//!
//! The same shape as lazygate's listener: one acceptor, worker threads with a
//! single-threaded event loop each, TCP_NODELAY on both sides. Each client connection is
//! served by hyper's HTTP/1.1 server and pinned to one kept connection to the upstream
//! (hyper's HTTP/1.1 client), dialled on its first request; the request goes on with its
//! head unchanged and the response streams back. No routing, no authorisation, no header
//! rewriting, no log, no metrics, no timers: whatever lazygate spends above this is its own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Serves on `listen`, forwarding every request to `upstream`, with `workers` threads.
pub fn serve(listen: SocketAddr, upstream: SocketAddr, workers: usize) -> Result<(), Error> {
    let mut inboxes = Vec::new();
    for index in 0..workers {
        let (tx, rx) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        std::thread::Builder::new()
            .name(format!("floor-worker-{index}"))
            .spawn(move || runtime.block_on(work(rx, upstream)))?;
        inboxes.push(tx);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(listen).await?;
        println!("listening on {}", listener.local_addr()?);
        let mut next = 0;
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            inboxes[next % inboxes.len()].send(stream.into_std()?)?;
            next += 1;
        }
    })
}

async fn work(mut inbox: mpsc::UnboundedReceiver<std::net::TcpStream>, upstream: SocketAddr) {
    while let Some(stream) = inbox.recv().await {
        let Ok(stream) = TcpStream::from_std(stream) else {
            continue;
        };
        tokio::spawn(async move {
            // The client's requests come one after another: one upstream connection serves them.
            let pinned: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
            let service = service_fn(move |request: Request<Incoming>| {
                let pinned = pinned.clone();
                forward(pinned, upstream, request)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    pinned: Arc<Mutex<Option<SendRequest<Incoming>>>>,
    upstream: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, Error> {
    let kept = pinned.lock().expect("pinned").take();
    let mut sender = match kept {
        Some(sender) => sender,
        None => dial(upstream).await?,
    };
    if sender.ready().await.is_err() {
        sender = dial(upstream).await?;
    }
    let answer = sender.send_request(request);
    *pinned.lock().expect("pinned") = Some(sender);
    Ok(answer.await?)
}

async fn dial(upstream: SocketAddr) -> Result<SendRequest<Incoming>, Error> {
    let stream = TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}
