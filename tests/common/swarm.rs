//! Helpers of the Swarm tests: gateway replicas as containers on this manager, and what the
//! engine says of a runtime's service and tasks.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// The gateway image, built by scripts/build-gateway-image.sh.
pub const GATEWAY_IMAGE: &str = "lazygate:latest";
/// The TTL the replicas run with: short, so scale-to-zero is seen within a test.
pub const TTL_SECONDS: u64 = 3;

/// A gateway replica: a container of the gateway image on this manager, with the engine's
/// socket, the Swarm backend and the stub runtime image; its port published on loopback.
pub struct Replica {
    pub name: String,
    pub addr: String,
}

impl Replica {
    pub async fn start(scope: &Scope, env: &[(&str, &str)]) -> Replica {
        Replica::start_with(scope, env, &[]).await
    }

    /// [`Replica::start`] with more `docker run` options (a mounted file, say).
    pub async fn start_with(scope: &Scope, env: &[(&str, &str)], run_options: &[&str]) -> Replica {
        let name = format!("lazygate-{}", unique("swarm-gw"));
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &format!("lazygate.scope={}", scope.name),
            // The gateway joins every runtime's network: it must not route between them.
            "--sysctl",
            "net.ipv4.ip_forward=0",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-p",
            "127.0.0.1::8080",
        ]
        .map(str::to_owned)
        .to_vec();
        args.extend(run_options.iter().map(|o| o.to_string()));
        let ttl = TTL_SECONDS.to_string();
        let mut settings = vec![
            ("LAZYGATE_BACKEND", "swarm"),
            ("LAZYGATE_SCOPE", scope.name.as_str()),
            ("BROWSER_RUNTIME_IMAGE", STUB_IMAGE),
            ("BROWSER_RUNTIME_NETWORK", "lgswarm"),
            ("BROWSER_RUNTIME_TTL_SECONDS", ttl.as_str()),
            ("BROWSER_RUNTIME_START_TIMEOUT", "60"),
            ("LAZYGATE_API_TOKENS", TEST_API_TOKEN),
            ("LAZYGATE_VIEW_SECRET", TEST_VIEW_SECRET),
            ("RUST_LOG", "info,lazygate::provision=debug"),
        ];
        settings.extend_from_slice(env);
        for (key, value) in settings {
            args.push("-e".to_owned());
            args.push(format!("{key}={value}"));
        }
        args.push(GATEWAY_IMAGE.to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).expect("gateway replica starts");
        let port = docker(&["port", &name, "8080/tcp"]).expect("published port");
        let addr = port.lines().next().unwrap().trim().to_owned();
        let replica = Replica { name, addr };
        let health = replica.url("/healthz");
        eventually_async("the replica answers", async || {
            let request = http::Request::get(health.as_str()).body(Default::default()).unwrap();
            matches!(
                tokio::time::timeout(Duration::from_secs(1), client().request(request)).await,
                Ok(Ok(response)) if response.status() == 200
            )
        })
        .await;
        replica
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn logs(&self) -> String {
        container_logs(&self.name)
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- log of replica {}:\n{}", self.name, self.logs());
        }
        docker(&["rm", "-f", "-v", &self.name]);
    }
}

pub fn service(hash: &str) -> Option<Value> {
    let out = docker(&["service", "inspect", &container_name(hash)])?;
    serde_json::from_str::<Value>(&out).ok()?.as_array()?.first().cloned()
}

pub fn replicas(hash: &str) -> i64 {
    service(hash).map_or(-1, |s| {
        s["Spec"]["Mode"]["Replicated"]["Replicas"].as_i64().unwrap_or(-1)
    })
}

pub fn last_used_label(hash: &str) -> f64 {
    service(hash)
        .and_then(|s| s["Spec"]["Labels"]["lazygate.last_used"].as_str()?.parse().ok())
        .unwrap_or(0.0)
}

/// Tasks of the owner's service: (id, desired state, current state, error).
pub fn tasks(hash: &str) -> Vec<(String, String, String, String)> {
    let out = docker(&[
        "service",
        "ps",
        "--no-trunc",
        "--format",
        "{{.ID}}|{{.DesiredState}}|{{.CurrentState}}|{{.Error}}",
        &container_name(hash),
    ])
    .unwrap_or_default();
    out.lines()
        .map(|line| {
            let mut fields = line.split('|').map(str::to_owned);
            let mut next = || fields.next().unwrap_or_default();
            (next(), next(), next(), next())
        })
        .collect()
}

/// The id of the owner's one running task.
pub fn running_task(hash: &str) -> String {
    let running: Vec<_> = tasks(hash)
        .into_iter()
        .filter(|(_, desired, current, _)| desired == "Running" && current.starts_with("Running"))
        .collect();
    assert_eq!(running.len(), 1, "one running task: {running:?}");
    running[0].0.clone()
}

/// The container of the owner's running task, on this node.
pub fn task_container(hash: &str) -> String {
    let filter = format!("label=com.docker.swarm.service.name={}", container_name(hash));
    let ids = docker(&["ps", "-q", "--filter", &filter]).unwrap_or_default();
    ids.lines().next().expect("a running task container").trim().to_owned()
}

/// How many times the owner's runtime has booted on its profile, asked through `replica`.
pub async fn boots_via(replica: &Replica, owner: &str) -> usize {
    let reply = get(&replica.url(&format!("/rpc/{owner}/boots"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.text().lines().count()
}

pub async fn open_view(
    replica: &Replica,
    owner: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let hash = seed_hash(owner);
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        replica.addr,
        view_token(owner)
    );
    let (mut ws, response) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("websocket through the replica");
    assert_eq!(response.status(), 101);
    ws.send(Message::Binary(vec![7, 7].into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Binary(vec![7, 7].into()));
    ws
}
