//! The production shape: the gateway itself in a container on the runtime network, with the
//! engine's socket mounted, dialling runtimes by container name (`LAZYGATE_UPSTREAM=network`),
//! checked from the host through its published port as a person and an agent would.

mod common;

use std::time::Duration;

use common::browser::live_view_shows_agent_page;
use common::*;
use serde_json::json;

/// The gateway image, built by scripts/build-gateway-image.sh.
const GATEWAY_IMAGE: &str = "lazygate:latest";

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_runs_in_a_container_and_reaches_runtimes_by_name() {
    let scope = Scope::new("gateway-container");
    ensure_test_network();
    let name = format!("lazygate-{}", unique("gw"));
    let scope_label = format!("lazygate.scope={}", scope.name);
    let scope_env = format!("LAZYGATE_SCOPE={}", scope.name);
    let image_env = format!("BROWSER_RUNTIME_IMAGE={BROWSER_IMAGE}");
    let network_env = format!("BROWSER_RUNTIME_NETWORK={TEST_NETWORK}");
    let token_env = format!("LAZYGATE_API_TOKENS={TEST_API_TOKEN}");
    let secret_env = format!("LAZYGATE_VIEW_SECRET={TEST_VIEW_SECRET}");
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &scope_label,
        "--network",
        TEST_NETWORK,
        "-v",
        "/var/run/docker.sock:/var/run/docker.sock",
        "-p",
        "127.0.0.1::8080",
        "-e",
        "LAZYGATE_UPSTREAM=network",
        "-e",
        &scope_env,
        "-e",
        &image_env,
        "-e",
        &network_env,
        "-e",
        "BROWSER_RUNTIME_START_TIMEOUT=60",
        "-e",
        &token_env,
        "-e",
        &secret_env,
        GATEWAY_IMAGE,
    ])
    .expect("gateway container starts");
    let port = docker(&["port", &name, "8080/tcp"]).expect("published port");
    let addr = port.lines().next().unwrap().trim().to_owned();
    let base = format!("http://{addr}");
    // Wait for the gateway to answer (the published port accepts before the process listens).
    let client = client();
    let mut answered = false;
    for _ in 0..300 {
        let request = http::Request::get(format!("{base}/healthz"))
            .body(Default::default())
            .unwrap();
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(1), client.request(request)).await
            && response.status() == 200
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered, "gateway container never answered: {}", container_logs(&name));
    assert_eq!(
        get(&format!("{base}/readyz")).await.status,
        200,
        "the mounted socket reaches the engine"
    );

    // A person's live view and an agent's run, through the containerised gateway.
    let owner = unique("boxed");
    let report = live_view_shows_agent_page(&base, &owner).await;
    eprintln!("gateway in a container: {report}");

    // It dialled the runtime by container name on the shared network, not a published port.
    let runtime = inspect(&container_name(&seed_hash(&owner))).unwrap();
    let bindings = &runtime["HostConfig"]["PortBindings"];
    assert!(
        bindings.is_null() || bindings == &json!({}),
        "nothing published in network mode: {bindings}"
    );
    let logs = container_logs(&name);
    eprintln!("gateway container log:\n{logs}");
    assert!(logs.contains("runtime ready"), "{logs}");

    // CDP by container name too: Chrome only answers when the gateway sends Host: localhost.
    let version = get(&format!("{base}/cdp/{owner}/json/version")).await;
    assert_eq!(version.status, 200, "{}", version.text());
    assert!(
        version.json()["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ws://{addr}/cdp/"))
    );
}
