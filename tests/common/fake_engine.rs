//! An engine that lives in the test process, for the in-process tests: each "runtime" is
//! three small servers on loopback ports (RPC, view, CDP) started by `ensure`, and `kill`
//! takes one away behind the gateway's back. It proves what the gateway does with runtimes
//! (routing, admission, waiting, resending, tunnelling, rewriting), never what an engine does
//! (labels, volumes, networks, adoption): that is the engine tests' job.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lazygate::owner::OwnerHash;
use lazygate::provision::{Backend, BackendError, Endpoints, Engine, RuntimeInfo, RuntimeSpec, TunnelLogs};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[path = "../stub-runtime/src/echo.rs"]
mod echo;

type Body = BoxBody<Bytes, hyper::Error>;

fn text(body: impl Into<Bytes>) -> Body {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

/// One fake runtime: its servers, and the id that tells it from its successors.
struct FakeRuntime {
    info: RuntimeInfo,
    servers: Vec<Server>,
}

impl FakeRuntime {
    /// Stops its servers and returns once every socket of theirs is closed: a runtime
    /// killed is gone before the test goes on (an aborted task is dropped only later, and
    /// could still take a request meant to show what comes after the kill).
    async fn stop(self) {
        for server in self.servers {
            server.stop.send(()).ok();
            server.task.await.ok();
        }
    }
}

/// A fake runtime's server, and how to stop it.
struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// The in-process engine. Cheap to clone; clones share the runtimes.
#[derive(Clone, Default)]
pub struct FakeEngine {
    runtimes: Arc<Mutex<HashMap<OwnerHash, FakeRuntime>>>,
    /// Runtimes started so far, for "exactly once" and "started again" checks.
    pub starts: Arc<AtomicUsize>,
}

impl FakeEngine {
    pub fn engine(&self) -> Engine {
        Engine {
            runtimes: Arc::new(self.clone()),
            tunnel_logs: Arc::new(self.clone()),
        }
    }

    /// Stops an owner's runtime behind the gateway's back (its ports refuse from now on, and
    /// its connections are closed).
    pub async fn kill(&self, owner: &str) {
        self.stop(&OwnerHash::of(owner)).await;
    }

    /// Takes an owner's runtime out and stops it.
    async fn stop(&self, owner_hash: &OwnerHash) {
        let runtime = self.runtimes.lock().unwrap().remove(owner_hash);
        if let Some(runtime) = runtime {
            runtime.stop().await;
        }
    }
}

/// Serves `handler` on a fresh loopback port until stopped.
async fn serve<F, Fut>(handler: F) -> (String, Server)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Body>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (stop, mut stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let stream = tokio::select! {
                _ = &mut stopped => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(_) => break,
                },
            };
            let handler = handler.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(request).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
        // The port refuses from here on, and every connection is closed before the task ends.
        drop(listener);
        connections.shutdown().await;
    });
    (address, Server { stop, task })
}

/// RPC: `/health`, `/run` (echoes method, path, body and who it is), `/headers`.
async fn rpc(owner_hash: OwnerHash, request: Request<Incoming>) -> Response<Body> {
    match request.uri().path() {
        "/health" => Response::new(text("ok")),
        "/headers" => {
            let headers: HashMap<String, String> = request
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            Response::new(text(serde_json::to_string(&headers).unwrap()))
        }
        _ => {
            let method = request.method().to_string();
            let path = request.uri().to_string();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let answer = serde_json::json!({
                "method": method,
                "uri": path,
                "body": String::from_utf8_lossy(&body),
                "owner_hash": owner_hash.to_string(),
            });
            Response::new(text(answer.to_string()))
        }
    }
}

/// View: `/vnc.html`, and `/websockify`, a WebSocket echo (the stub runtime's).
async fn view(request: Request<Incoming>) -> Response<Body> {
    if request.uri().path() != "/websockify" {
        return Response::new(text("<title>fake noVNC</title>"));
    }
    echo::websocket_echo(request)
}

/// CDP: `/json/version`, naming its WebSocket with the Host it was asked for (as Chrome does).
async fn cdp(request: Request<Incoming>) -> Response<Body> {
    let host = request
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let answer = serde_json::json!({
        "Browser": "fake",
        "webSocketDebuggerUrl": format!("ws://{host}/devtools/browser/fake"),
    });
    Response::new(text(answer.to_string()))
}

#[async_trait]
impl Backend for FakeEngine {
    async fn ping(&self) -> Result<(), BackendError> {
        Ok(())
    }

    async fn list_profiles(&self) -> Result<Vec<OwnerHash>, BackendError> {
        Ok(Vec::new())
    }
    async fn remove_profile(&self, _: &OwnerHash) -> Result<bool, BackendError> {
        Ok(true)
    }
    async fn missing_images(&self, _: &str) -> Result<Vec<String>, BackendError> {
        Ok(Vec::new())
    }

    async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError> {
        let owner_hash = spec.owner_hash;
        if let Some(runtime) = self.runtimes.lock().unwrap().get(&owner_hash) {
            return Ok(runtime.info.clone());
        }
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        let (rpc_at, rpc_task) = serve(move |request| rpc(owner_hash, request)).await;
        let (view_at, view_task) = serve(view).await;
        let (cdp_at, cdp_task) = serve(cdp).await;
        let endpoints = Endpoints {
            rpc: rpc_at,
            view: view_at,
            cdp: cdp_at,
        };
        let info = RuntimeInfo {
            id: format!("fake-{n}"),
            name: format!("fake-runtime-{owner_hash}"),
            owner_hash,
            direct: endpoints.clone(),
            endpoints,
            adopted: false,
            key: None,
            phases: Vec::new(),
            last_used: None,
            profile: None,
        };
        let runtime = FakeRuntime {
            info: info.clone(),
            servers: vec![rpc_task, view_task, cdp_task],
        };
        self.runtimes.lock().unwrap().insert(owner_hash, runtime);
        Ok(info)
    }

    /// The fake's runtimes are servers in the test process: nothing to fence.
    async fn fence(&self, _: &RuntimeInfo) -> Result<(), BackendError> {
        Ok(())
    }

    async fn last_output(&self, _: &RuntimeInfo, _: usize) -> Result<String, BackendError> {
        Ok(String::new())
    }

    async fn is_running(&self, runtime: &RuntimeInfo) -> Result<bool, BackendError> {
        let runtimes = self.runtimes.lock().unwrap();
        Ok(runtimes
            .get(&runtime.owner_hash)
            .is_some_and(|r| r.info.id == runtime.id))
    }

    async fn remove(&self, owner_hash: &OwnerHash, _with_volume: bool) -> Result<(), BackendError> {
        self.stop(owner_hash).await;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<RuntimeInfo>, BackendError> {
        Ok(Vec::new())
    }
}

#[async_trait]
impl TunnelLogs for FakeEngine {
    async fn tail(&self, _container: &str, _lines: usize) -> Result<String, BackendError> {
        Ok("the tunnel is at https://views.example.test\n".to_owned())
    }
}
