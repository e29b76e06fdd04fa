//! `loadgen`: the compiled client `bench/run.sh` uses where wrk does not fit.
//!
//! - `ws-relay`: WebSocket frames of one size, echoed by the runtime, over N connections for
//!   a fixed time; prints messages/s, MB/s and round-trip percentiles as one JSON line.
//! - `hold`: opens N idle keep-alive HTTP connections (one request each) or N WebSockets,
//!   prints `ready` and keeps them open until killed, so the harness can read the gateway's
//!   memory meanwhile.
//! - `ready`: runs `docker run -d …` and polls the new container's `/health` every 2 ms over
//!   the container network; prints the milliseconds from the command to the first 200.
//! - `many-owners`: the gateway itself (`lazygate::run`, configured from the environment like
//!   `lazygate serve`) over the Docker backend, with N−1 more owners registered whose
//!   runtimes all answer at the one real runtime's address ([`many_owners`]): the warm path
//!   with 10 000 owners in the gateway's tables, without starting 10 000 containers.
//!
//! - `soak`: mixed use of a running gateway for a bounded time, sampled ([`soak`]), for
//!   `bench/soak.sh`.
//!
//! Every loop is bounded in count or time; all traffic goes to the address given.

mod floor;
mod many_owners;
mod soak;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[derive(Parser)]
#[command(about = "lazygate's benchmark client")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The allocator `lazygate serve` uses, so the gateway run here is the same.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Subcommand)]
enum Command {
    /// Serve as `lazygate serve` does, with `owners - 1` extra registered owners whose
    /// runtimes answer where the runtime of `--owner` does (it must be running).
    ManyOwners {
        #[arg(long)]
        owners: usize,
        #[arg(long)]
        owner: String,
    },
    /// Echo binary frames of `size` bytes over `connections` WebSockets for `seconds`.
    WsRelay {
        #[arg(long)]
        url: String,
        #[arg(long)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        connections: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Extra request header, `Name: value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// Open `connections` connections and keep them open until killed.
    Hold {
        /// `http://…` (one GET each, then idle keep-alive) or `ws://…` (a WebSocket each).
        #[arg(long)]
        url: String,
        #[arg(long)]
        connections: usize,
        #[arg(long = "header")]
        headers: Vec<String>,
    },
    /// Soak a running gateway with views, runs, churning owners and faults; write samples.
    Soak {
        /// `host:port` of the gateway and of its admin listener.
        #[arg(long)]
        gateway: String,
        #[arg(long)]
        admin: String,
        /// The gateway's process id (its memory and descriptors are read from /proc).
        #[arg(long)]
        pid: u32,
        #[arg(long)]
        minutes: f64,
        #[arg(long)]
        token: String,
        #[arg(long)]
        view_secret: String,
        #[arg(long)]
        scope: String,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// The least reverse proxy on hyper ([`floor`]): forwards every request on `listen` to
    /// `upstream`, for comparing lazygate's warm path with hyper's own cost.
    HyperFloor {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        upstream: std::net::SocketAddr,
        #[arg(long, default_value_t = 2)]
        workers: usize,
    },
    /// Time `docker run -d <args>` to the container's first `/health` 200.
    Ready {
        /// Network the container joins; its address there is polled.
        #[arg(long)]
        network: String,
        #[arg(long, default_value_t = 8787)]
        port: u16,
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        /// Arguments after `docker run -d --network <network>`.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let command = Cli::parse().command;
    if let Command::ManyOwners { owners, owner } = command {
        // `lazygate::run` starts its own worker threads; this thread is its control plane.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        return runtime.block_on(many_owners::serve(owners, &owner));
    }
    if let Command::HyperFloor {
        listen,
        upstream,
        workers,
    } = command
    {
        return floor::serve(listen, upstream, workers);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(client(command))
}

async fn client(command: Command) -> Result<(), Error> {
    match command {
        Command::ManyOwners { .. } | Command::HyperFloor { .. } => unreachable!("served above"),
        Command::WsRelay {
            url,
            size,
            connections,
            seconds,
            headers,
        } => ws_relay(&url, size, connections, Duration::from_secs_f64(seconds), &headers).await,
        Command::Hold {
            url,
            connections,
            headers,
        } => hold(&url, connections, &headers).await,
        Command::Soak {
            gateway,
            admin,
            pid,
            minutes,
            token,
            view_secret,
            scope,
            out,
        } => {
            soak::soak(soak::Soak {
                gateway,
                admin,
                pid,
                duration: Duration::from_secs_f64(minutes.clamp(0.1, 30.0) * 60.0),
                token,
                view_secret,
                scope,
                out,
            })
            .await
        }
        Command::Ready {
            network,
            port,
            timeout,
            args,
        } => ready(&network, port, Duration::from_secs_f64(timeout), &args).await,
    }
}

fn split_header(header: &str) -> Result<(String, String), Error> {
    let (name, value) = header
        .split_once(':')
        .ok_or_else(|| format!("header {header:?} is not `Name: value`"))?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

type WebSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn open_websocket(url: &str, headers: &[String]) -> Result<WebSocket, Error> {
    let mut request = url.into_client_request()?;
    for header in headers {
        let (name, value) = split_header(header)?;
        request.headers_mut().insert(http_name(&name)?, value.parse()?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request).await?;
    if let tokio_tungstenite::MaybeTlsStream::Plain(stream) = socket.get_ref() {
        stream.set_nodelay(true)?;
    }
    Ok(socket)
}

fn http_name(name: &str) -> Result<hyper::header::HeaderName, Error> {
    Ok(hyper::header::HeaderName::from_bytes(name.as_bytes())?)
}

async fn ws_relay(
    url: &str,
    size: usize,
    connections: usize,
    run_for: Duration,
    headers: &[String],
) -> Result<(), Error> {
    let payload = Bytes::from(vec![0x5a; size]);
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(open_websocket(url, headers).await?);
    }
    let started = Instant::now();
    let deadline = started + run_for;
    let mut tasks = Vec::new();
    for mut socket in sockets {
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut round_trips = Vec::new();
            while Instant::now() < deadline {
                let sent = Instant::now();
                socket.send(Message::Binary(payload.clone())).await?;
                match socket.next().await {
                    Some(Ok(Message::Binary(echo))) if echo.len() == payload.len() => {}
                    other => return Err(format!("unexpected answer: {other:?}").into()),
                }
                round_trips.push(sent.elapsed().as_micros() as u32);
            }
            let _ = socket.close(None).await;
            Ok::<_, Error>(round_trips)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let percentile = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let messages = 2.0 * all.len() as f64;
    println!(
        "{}",
        serde_json::json!({
            "size": size,
            "connections": connections,
            "round_trips": all.len(),
            "msgs_per_s": messages / elapsed,
            "mb_per_s": messages * size as f64 / elapsed / 1e6,
            "rtt_p50_us": percentile(0.50),
            "rtt_p99_us": percentile(0.99),
        })
    );
    Ok(())
}

async fn hold(url: &str, connections: usize, headers: &[String]) -> Result<(), Error> {
    // Enough handshakes at once to be quick, few enough not to overrun the listen backlog.
    let gate = Arc::new(Semaphore::new(200));
    let opened = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(connections);
    let websocket = url.starts_with("ws://");
    for _ in 0..connections {
        let gate = gate.clone();
        let opened = opened.clone();
        let url = url.to_owned();
        let headers = headers.to_vec();
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("never closed");
            // Bounded, so a connection the server never answers is counted as failed
            // instead of holding up the report.
            let open = async {
                Ok::<Box<dyn Send>, Error>(if websocket {
                    Box::new(open_websocket(&url, &headers).await?)
                } else {
                    Box::new(open_keep_alive(&url, &headers).await?)
                })
            };
            let kept = tokio::time::timeout(Duration::from_secs(10), open)
                .await
                .map_err(|_| "no answer within 10 s")??;
            drop(permit);
            opened.fetch_add(1, Ordering::Relaxed);
            Ok::<_, Error>(kept)
        }));
    }
    let mut kept = Vec::with_capacity(connections);
    let mut failed = 0;
    let mut first_error = None;
    for task in tasks {
        match task.await? {
            Ok(connection) => kept.push(connection),
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(error.to_string());
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({"ready": kept.len(), "failed": failed, "first_error": first_error})
    );
    // Held until the harness kills this process.
    std::future::pending::<()>().await;
    Ok(())
}

/// An open HTTP/1.1 connection and the task that drives it.
type KeptAlive = (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
);

/// One GET on a fresh connection, answered 200, with the connection kept open afterwards.
async fn open_keep_alive(url: &str, headers: &[String]) -> Result<KeptAlive, Error> {
    let uri: hyper::Uri = url.parse()?;
    let authority = uri.authority().ok_or("URL without a host")?.clone();
    let stream = TcpStream::connect(authority.as_str()).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let mut request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())?;
    for header in headers {
        let (name, value) = split_header(header)?;
        request.headers_mut().insert(http_name(&name)?, value.parse()?);
    }
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    if status != hyper::StatusCode::OK {
        return Err(format!("status {status}").into());
    }
    Ok((sender, driver))
}

async fn ready(network: &str, port: u16, timeout: Duration, args: &[String]) -> Result<(), Error> {
    let started = Instant::now();
    let output = tokio::process::Command::new("docker")
        .args(["run", "-d", "--network", network])
        .args(args)
        .output()
        .await?;
    if !output.status.success() {
        return Err(format!("docker run: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    let id = String::from_utf8(output.stdout)?.trim().to_owned();
    let format = format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}");
    let output = tokio::process::Command::new("docker")
        .args(["inspect", "-f", &format, &id])
        .output()
        .await?;
    let address = format!("{}:{port}", String::from_utf8(output.stdout)?.trim());
    loop {
        if health_ok(&address).await {
            break;
        }
        if started.elapsed() > timeout {
            return Err(format!("{id} not ready within {timeout:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ready_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!("{}", serde_json::json!({"container": id, "ready_ms": ready_ms}));
    Ok(())
}

/// One `GET /health` on a fresh connection: true on a 200.
async fn health_ok(address: &str) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(b"GET /health HTTP/1.0\r\nHost: runtime\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Ok(true))
    )
}
