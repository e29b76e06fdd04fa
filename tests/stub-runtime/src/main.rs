//! A stand-in for the browser runtime, for lazygate's integration tests.
//!
//! It serves the same ports as the real runtime, with behaviour tests can steer:
//! - RPC (BROWSER_USE_RPC_PORT, 8787): `GET /health`; `POST /run` (echoes what it got);
//!   `GET /env`; `GET /headers`; `POST /echo` (streams the body back); `GET /ws` (a WebSocket
//!   echo, as an application behind the default upstream has);
//!   `GET` or `POST /sleep?ms=N`; `POST /oom` (takes memory until the limit kills it); `GET /hold?id=X` (sends one chunk, then waits for
//!   `GET /release?id=X` before finishing: proves streaming without timing); `GET /wait?id=X`
//!   (answers nothing at all until released); `GET /held` (the ids waiting); `GET /boots`
//!   (the boot log kept in the data volume).
//! - View (6080): `GET /vnc.html`; `/websockify`, a WebSocket echo.
//! - CDP (9222): `GET /json/version`.
//!
//! The view port starts listening only `STUB_VIEW_DELAY_MS` (default 300) after `/health`
//! first answered, as the real runtime's websockify can come up after its RPC server.
//!
//! `stub-runtime connect ADDR...` (run with `docker exec`) tries a TCP connection to each
//! address from inside the runtime and prints `ADDR open` or `ADDR closed: <why>`: the
//! tests' stand-in for a hostile page probing its neighbours.
//!
//! Every answer carries `x-runtime-host` (the container's hostname) so tests can tell
//! runtimes apart.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

mod echo;

use echo::websocket_echo;

type Body = BoxBody<Bytes, hyper::Error>;

#[derive(Default)]
struct State {
    /// Fired by the first `/health` answer: the view port listens some time after it.
    health_answered: Mutex<Option<oneshot::Sender<()>>>,
    /// Open `/hold` responses, by id, waiting for their `/release`.
    held: Mutex<HashMap<String, oneshot::Sender<()>>>,
    hostname: String,
    data_dir: String,
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into()).map_err(|never| match never {}).boxed()
}

fn query_param(req: &Request<Incoming>, key: &str) -> Option<String> {
    req.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then(|| v.to_owned())
    })
}

async fn rpc(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    match (req.method().as_str(), path.as_str()) {
        ("GET", "/health") => {
            if let Some(tx) = state.health_answered.lock().unwrap().take() {
                let _ = tx.send(());
            }
            Response::new(full("ok"))
        }
        ("POST", "/run") => {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let body = req
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let answer = serde_json::json!({
                "ok": true,
                "method": method,
                "uri": uri,
                "body": String::from_utf8_lossy(&body),
                "hostname": state.hostname,
            });
            Response::new(full(answer.to_string()))
        }
        ("GET", "/env") => {
            let env: HashMap<String, String> = std::env::vars().collect();
            Response::new(full(serde_json::to_string(&env).unwrap()))
        }
        ("GET", "/headers") => {
            let headers: HashMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            Response::new(full(serde_json::to_string(&headers).unwrap()))
        }
        ("POST", "/echo") => Response::new(req.into_body().boxed()),
        // As an application behind the gateway's default upstream would have one.
        ("GET", "/ws") => websocket_echo(req),
        ("POST", "/oom") => {
            // Takes memory until the runtime's limit kills it, as a page gone wild would.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            while hoard.len() < 512 {
                hoard.push(vec![1u8; 8 << 20]);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Response::new(full(format!("still alive holding {} MiB", hoard.len() * 8)))
        }
        ("GET" | "POST", "/sleep") => {
            let ms: u64 = query_param(&req, "ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(format!("slept {ms} ms")))
        }
        ("GET", "/hold") => {
            let id = query_param(&req, "id").unwrap_or_default();
            let (tx, rx) = oneshot::channel();
            state.held.lock().unwrap().insert(id, tx);
            let first = futures_util::stream::once(async { Ok::<_, hyper::Error>(Frame::data(Bytes::from("first;"))) });
            let rest = futures_util::stream::once(async move {
                let _ = rx.await;
                Ok::<_, hyper::Error>(Frame::data(Bytes::from("rest")))
            });
            Response::new(BodyExt::boxed(StreamBody::new(first.chain(rest))))
        }
        ("GET" | "POST", "/wait") => {
            // Like /hold, but nothing at all is answered until the release.
            let id = query_param(&req, "id").unwrap_or_default();
            let (tx, rx) = oneshot::channel();
            state.held.lock().unwrap().insert(id, tx);
            let _ = rx.await;
            Response::new(full("released"))
        }
        ("GET", "/held") => {
            let mut ids: Vec<String> = state.held.lock().unwrap().keys().cloned().collect();
            ids.sort();
            Response::new(full(ids.join(",")))
        }
        ("GET", "/release") => {
            let id = query_param(&req, "id").unwrap_or_default();
            let found = state.held.lock().unwrap().remove(&id).map(|tx| tx.send(()));
            Response::new(full(if found.is_some() { "released" } else { "unknown" }))
        }
        ("GET", "/boots") => {
            let boots = std::fs::read_to_string(format!("{}/boots", state.data_dir)).unwrap_or_default();
            Response::new(full(boots))
        }
        _ => {
            let mut response = Response::new(full("stub: no such path"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

async fn view(req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/vnc.html" => {
            let mut response = Response::new(full("<!doctype html><title>stub noVNC</title><p>stub view</p>"));
            response
                .headers_mut()
                .insert("content-type", "text/html".parse().unwrap());
            response
        }
        "/websockify" => websocket_echo(req),
        _ => {
            let mut response = Response::new(full("stub view: no such path"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

async fn cdp(req: Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        // Like Chrome, it names its WebSocket with the Host it was asked for.
        "/json/version" => {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let answer = serde_json::json!({
                "Browser": "stub-runtime",
                "webSocketDebuggerUrl": format!("ws://{host}/devtools/browser/stub"),
            });
            Response::new(full(answer.to_string()))
        }
        _ => {
            let mut response = Response::new(full("stub cdp: no such path"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

async fn serve<F, Fut>(port: u16, hostname: String, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind(("0.0.0.0", port)).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        let hostname = hostname.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                let hostname = hostname.clone();
                async move {
                    let mut response = handler(req).await;
                    response
                        .headers_mut()
                        .insert("x-runtime-host", hostname.parse().unwrap());
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

fn env_number(key: &str, default: u64) -> u64 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn port(key: &str, default: u16) -> u16 {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// `connect ADDR...`: one line per address, `open` or `closed: <why>`, tried at once.
async fn probe(addresses: &[String]) {
    let attempts = addresses.iter().map(|address| async move {
        let attempt = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(address)).await;
        match attempt {
            Ok(Ok(_)) => format!("{address} open"),
            Ok(Err(error)) => format!("{address} closed: {error}"),
            Err(_) => format!("{address} closed: timed out"),
        }
    });
    for line in futures_util::future::join_all(attempts).await {
        println!("{line}");
    }
}

/// `ask ADDR...`: one line per address, `answered by <host>` when a runtime (this stub, by
/// its `x-runtime-host` header) answers `GET /health` there, else `no runtime: <why>`. Unlike
/// `connect`, a connection that something else on the path accepts does not count.
async fn ask(addresses: &[String]) {
    let attempts = addresses.iter().map(|address| async move {
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(address).await?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            stream
                .write_all(b"GET /health HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
                .await?;
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&answer).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(3), exchange).await {
            Ok(Ok(answer)) => match answer.lines().find_map(|l| l.strip_prefix("x-runtime-host: ")) {
                Some(host) => format!("{address} answered by {}", host.trim()),
                None => format!("{address} no runtime: {:?}", answer.lines().next().unwrap_or_default()),
            },
            Ok(Err(error)) => format!("{address} no runtime: {error}"),
            Err(_) => format!("{address} no runtime: timed out"),
        }
    });
    for line in futures_util::future::join_all(attempts).await {
        println!("{line}");
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("connect") => return probe(&args[2..]).await,
        Some("ask") => return ask(&args[2..]).await,
        _ => {}
    }
    let hostname = std::fs::read_to_string("/etc/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let data_dir = std::env::var("BROWSER_DATA_DIR").unwrap_or_else(|_| "/data".into());
    // Record each boot in the data volume, so tests can see that a profile survived.
    let boots_path = format!("{data_dir}/boots");
    let mut boots = std::fs::read_to_string(&boots_path).unwrap_or_default();
    boots.push_str(&hostname);
    boots.push('\n');
    let _ = std::fs::write(&boots_path, boots);

    let (health_tx, health_rx) = oneshot::channel();
    let state = Arc::new(State {
        hostname: hostname.clone(),
        data_dir,
        health_answered: Mutex::new(Some(health_tx)),
        ..Default::default()
    });
    let rpc_state = state.clone();
    tokio::spawn(serve(
        port("BROWSER_USE_RPC_PORT", 8787),
        hostname.clone(),
        move |req| rpc(rpc_state.clone(), req),
    ));
    let view_delay = Duration::from_millis(env_number("STUB_VIEW_DELAY_MS", 300));
    let view_host = hostname.clone();
    tokio::spawn(async move {
        let _ = health_rx.await;
        tokio::time::sleep(view_delay).await;
        serve(6080, view_host, view).await
    });
    tokio::spawn(serve(9222, hostname, cdp));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    term.recv().await;
}
