//! Moving over from the seed: the seed's own module and lazygate side by side on one engine
//! and one state directory, and lazygate as the only door behind the tunnel (every other
//! path to the application, through `server.default_upstream`).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request};
use http_body_util::Full;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Calls the seed's `ensure_browser_runtime` / `cleanup_browser_runtime` (tests/seed/harness.py)
/// in `mode`, on the test network and image, with its registry in `state_dir`.
fn seed(scope: &Scope, mode: &str, state_dir: &Path, command: &str, arguments: Value) -> Value {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seed/harness.py"))
        .args([command, &arguments.to_string()])
        .env("BROWSER_USE_ISOLATION_MODE", mode)
        .env("BROWSER_RUNTIME_IMAGE", STUB_IMAGE)
        .env("BROWSER_RUNTIME_NETWORK", TEST_NETWORK)
        .env("BROWSER_RUNTIME_STATE_DIR", state_dir)
        .env("BROWSER_RUNTIME_START_TIMEOUT", "30")
        .env("BROWSER_VIEW_BASE_URL", "http://gateway.test")
        .env("HARNESS_SCOPE", &scope.name)
        .output()
        .expect("python3 runs the seed");
    assert!(
        out.status.success(),
        "the seed's {command} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the seed's answer as JSON")
}

/// The registry file as it is now.
fn registry(state_dir: &Path) -> Value {
    let text = std::fs::read_to_string(state_dir.join("docker_runtimes.json")).unwrap_or_default();
    serde_json::from_str(&text).unwrap_or(json!({"runtimes": {}}))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_seed_and_lazygate_adopt_reuse_and_clean_each_others_runtimes() {
    ensure_test_network();
    let scope = Scope::new("seed-side-by-side");
    let config = GatewayConfig::new(&scope).env("BROWSER_USE_ISOLATION_MODE", "docker-per-principal");
    let state_dir = config.state_dir.path().to_path_buf();
    let gateway = config.start();
    let principal = "docker-per-principal";

    // The seed makes alice's runtime; lazygate serves her from that very container.
    let alice = unique("alice");
    let answer = seed(
        &scope,
        principal,
        &state_dir,
        "ensure",
        json!({"metadata": {"user_id": alice}}),
    );
    let alice_hash = seed_hash(&alice);
    assert_eq!(answer["owner_hash"], alice_hash.as_str());
    let made_by_seed = container_id(&container_name(&alice_hash)).expect("the seed's container");
    let reply = post(&gateway.url(&format!("/rpc/{alice}")), "{}").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        container_id(&container_name(&alice_hash)).as_deref(),
        Some(made_by_seed.as_str()),
        "adopted, not recreated"
    );

    // lazygate makes bob's; the seed's ensure reuses it without recreating it.
    let bob = unique("bob");
    let bob_hash = seed_hash(&bob);
    let reply = get(&gateway.url(&format!("/rpc/{bob}/health"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let made_by_gateway = container_id(&container_name(&bob_hash)).expect("lazygate's container");
    let bob_key = format!("{principal}:{bob_hash}");
    eventually("lazygate writes bob's entry", Duration::from_secs(10), || {
        registry(&state_dir)["runtimes"][&bob_key].is_object()
    })
    .await;
    let answer = seed(
        &scope,
        principal,
        &state_dir,
        "ensure",
        json!({"metadata": {"user_id": bob}}),
    );
    assert_eq!(answer["owner_hash"], bob_hash.as_str());
    assert_eq!(
        container_id(&container_name(&bob_hash)).as_deref(),
        Some(made_by_gateway.as_str()),
        "the seed reused lazygate's runtime"
    );
    let seed_last_used = registry(&state_dir)["runtimes"][&bob_key]["last_used"]
        .as_f64()
        .unwrap();

    // An entry only the seed knows (a runtime it made that is gone since) stays in the file,
    // and neither writer loses the other's entries or last use.
    let carol_key = format!("{principal}:{}", seed_hash("carol-elsewhere"));
    let mut file = registry(&state_dir);
    file["runtimes"][&carol_key] = json!({
        "container_name": container_name(&seed_hash("carol-elsewhere")),
        "last_used": 0, "mode": principal, "owner_hash": seed_hash("carol-elsewhere"),
        "volume_name": volume_name(&seed_hash("carol-elsewhere")), "written_by": "a newer seed",
    });
    std::fs::write(state_dir.join("docker_runtimes.json"), file.to_string()).unwrap();
    let reply = get(&gateway.url(&format!("/rpc/{alice}/health"))).await;
    assert_eq!(reply.status, 200);
    let alice_key = format!("{principal}:{alice_hash}");
    eventually("lazygate merges its last use in", Duration::from_secs(10), || {
        let file = registry(&state_dir);
        file["runtimes"][&alice_key]["last_used"].as_f64() > Some(seed_last_used)
    })
    .await;
    let file = registry(&state_dir);
    assert_eq!(file["runtimes"][&carol_key]["written_by"], "a newer seed", "{file}");
    assert!(file["runtimes"][&bob_key]["last_used"].as_f64() >= Some(seed_last_used));

    // Per-task: the seed's cleanup removes a runtime lazygate made, and lazygate notices.
    let task_scope = Scope::new("seed-cleanup");
    let task_config = GatewayConfig::new(&task_scope).env("BROWSER_USE_ISOLATION_MODE", "docker-per-task");
    let task_dir = task_config.state_dir.path().to_path_buf();
    let task_gateway = task_config.start();
    let task = unique("task");
    let task_hash = seed_hash(&task);
    let reply = get(&task_gateway.url(&format!("/rpc/{task}/health"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let first = container_id(&container_name(&task_hash)).unwrap();
    eventually("lazygate writes the task's entry", Duration::from_secs(10), || {
        registry(&task_dir)["runtimes"][&format!("docker-per-task:{task_hash}")].is_object()
    })
    .await;
    seed(
        &task_scope,
        "docker-per-task",
        &task_dir,
        "cleanup",
        json!({"task_id": task}),
    );
    assert!(inspect(&container_name(&task_hash)).is_none(), "the seed removed it");
    assert!(!volume_exists(&volume_name(&task_hash)));
    eventually("lazygate notices the seed's cleanup", Duration::from_secs(10), || {
        !task_gateway.log_lines("removed by another manager").is_empty()
    })
    .await;
    let reply = get(&task_gateway.url(&format!("/rpc/{task}/health"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let second = container_id(&container_name(&task_hash)).expect("started again");
    assert_ne!(first, second);
}

/// A stand-in for the API application behind the same tunnel: the stub runtime's RPC server
/// on port 8000 (`/headers`, `/echo`, the WebSocket echo `/ws`), in a container of the scope.
async fn start_application(scope: &Scope) -> (String, String) {
    let name = format!("{}-app", scope.name);
    let label = format!("lazygate.scope={}", scope.name);
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        TEST_NETWORK,
        "--label",
        &label,
        "-e",
        "BROWSER_USE_RPC_PORT=8000",
        STUB_IMAGE,
    ])
    .expect("the application starts");
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &name,
    ])
    .unwrap()
    .trim()
    .to_owned();
    let address = format!("{ip}:8000");
    let health = format!("http://{address}/health");
    let started = std::time::Instant::now();
    while get(&health).await.status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the application never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (name, address)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_other_path_goes_to_the_default_upstream_over_http_and_websocket() {
    ensure_test_network();
    let scope = Scope::new("default-upstream");
    let (application, address) = start_application(&scope).await;
    let app_host = docker(&["inspect", "-f", "{{.Config.Hostname}}", &application]).unwrap();
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_DEFAULT_UPSTREAM", &format!("http://{address}"))
        .start();

    // The application's own credentials and cookies reach it; the gateway's do not.
    let request = Request::builder()
        .uri(gateway.url("/headers?from=client"))
        .header("authorization", "Bearer the-applications-own-token")
        .header("cookie", "session=s1; lazygate_view=not-for-the-application")
        .header("x-lazygate-runtime-key", "forged")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "dropped")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let reply = send_request(request).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.runtime_host(), app_host.trim(), "the application answered");
    let seen = reply.json();
    assert_eq!(seen["authorization"], "Bearer the-applications-own-token");
    assert_eq!(seen["cookie"], "session=s1");
    assert!(seen.get("x-lazygate-runtime-key").is_none(), "{seen}");
    assert!(
        seen.get("x-hop").is_none(),
        "hop-by-hop headers stop at the gateway: {seen}"
    );
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(
        seen["host"],
        gateway.url("").trim_start_matches("http://"),
        "the client's Host"
    );
    assert!(seen["x-request-id"].is_string());

    // Bodies stream both ways, unlimited by the run limit.
    let body = "x".repeat(3 * 1024 * 1024);
    let reply = send(Method::POST, &gateway.url("/echo"), &body).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), body.len());

    // A WebSocket with the application's own origin: the application decides, not the gateway.
    let mut request = gateway
        .url("/ws")
        .replace("http://", "ws://")
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    let (mut ws, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("a tunnel to the application");
    assert_eq!(response.status(), 101);
    ws.send(Message::text("through the only door")).await.unwrap();
    let echoed = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("an echo")
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_text().unwrap().as_str(), "through the only door");
    ws.close(None).await.ok();

    // The gateway's own paths stay the gateway's, with its authorisation.
    let health = get(&gateway.url("/healthz")).await;
    assert_eq!(health.json(), json!({"status": "ok"}));
    let unauthenticated = Request::builder()
        .method(Method::POST)
        .uri(gateway.url("/rpc/someone"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send_request(unauthenticated).await.status, 401);

    // The application down: a JSON 502 that names it; nothing else changes.
    docker(&["stop", "-t", "1", &application]).unwrap();
    let reply = get(&gateway.url("/headers")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.error_code(), "default_upstream_failed");
    assert!(reply.json()["error"]["message"].as_str().unwrap().contains(&address));

    // Without a default upstream, other paths are 404 as before.
    let alone = GatewayConfig::new(&scope).start();
    let reply = get(&alone.url("/headers")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "not_found");
}
