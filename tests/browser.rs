//! The real thing, as a person sees it: the reference browser runtime, its live view opened
//! in a real (headless) Chromium on the host through the gateway, and an agent's run whose
//! page must then be on that person's screen.

mod common;

use std::time::Instant;

use base64::Engine;
use common::browser::live_view_shows_agent_page;
use common::*;
use serde_json::json;

/// A gateway in front of the reference browser runtime (a real Chromium takes longer to start).
fn start_with_browser_runtime(scope: &Scope) -> Gateway {
    GatewayConfig::new(scope)
        .env("BROWSER_RUNTIME_IMAGE", BROWSER_IMAGE)
        .env("BROWSER_RUNTIME_START_TIMEOUT", "60")
        .start()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_shows_the_agents_page_in_a_real_browser() {
    let scope = Scope::new("browser-view");
    let gateway = start_with_browser_runtime(&scope);
    let owner = unique("viewer");
    let hash = seed_hash(&owner);
    // A cold view: the runtime does not exist until the navigation asks for it.
    assert!(inspect(&container_name(&hash)).is_none());
    let report = live_view_shows_agent_page(&gateway.url(""), &owner).await;
    eprintln!("{report}");
    // The first navigation got the waiting page (503), which reloaded itself into noVNC.
    let waiting = gateway.log_lines("status=503");
    assert!(
        waiting
            .iter()
            .any(|l| l.contains(&hash) && l.contains("route=\"view\"")),
        "{waiting:?}"
    );
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-view-through-gateway.png");
    std::fs::write(&path, &report.screenshot).unwrap();
    eprintln!("screenshot: {}", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_runtime_answers_runs_and_health() {
    let scope = Scope::new("browser-rpc");
    let gateway = start_with_browser_runtime(&scope);
    let owner = unique("agent");
    let health = get(&gateway.url(&format!("/rpc/{owner}/health"))).await;
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(
        health.json()["checks"],
        json!({"cdp": true, "vnc": true, "websockify": true})
    );

    let run = json!({"actions": [
        {"action": "open", "url": "data:text/html,<title>first</title>"},
        {"action": "evaluate", "expression": "6 * 7"},
        {"action": "screenshot"}
    ]});
    let reply = post(&gateway.url(&format!("/rpc/{owner}")), &run.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let results = &reply.json()["results"];
    assert_eq!(results[0]["title"], "first");
    assert_eq!(results[1]["value"], 42);
    let png = base64::engine::general_purpose::STANDARD
        .decode(results[2]["png_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(&png[1..4], b"PNG");

    let bad = post(&gateway.url(&format!("/rpc/{owner}")), r#"{"action": "fly"}"#).await;
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("unknown action"), "{}", bad.text());

    // tini as PID 1 passes SIGTERM on: the runtime ends on it rather than being killed when
    // the stop timeout runs out (exit status 137).
    let name = container_name(&seed_hash(&owner));
    let stopping = Instant::now();
    docker(&["stop", "-t", "30", &name]).expect("docker stop");
    eprintln!("docker stop of the reference runtime: {:?}", stopping.elapsed());
    let exit_code = inspect(&name).unwrap()["State"]["ExitCode"].as_i64().unwrap();
    assert_ne!(exit_code, 137, "the runtime ignored SIGTERM and was killed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cdp_client_drives_the_browser_through_the_gateway() {
    let scope = Scope::new("browser-cdp");
    let gateway = start_with_browser_runtime(&scope);
    let owner = unique("cdp-agent");

    // Discovery answers point back through the gateway, as the client reached it.
    let version = get(&gateway.url(&format!("/cdp/{owner}/json/version"))).await;
    assert_eq!(version.status, 200, "{}", version.text());
    let ws = version.json()["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
    let expected = format!("ws://{}/cdp/{owner}/devtools/browser/", gateway.addr);
    assert!(ws.starts_with(&expected), "{ws} should start with {expected}");
    let list = get(&gateway.url(&format!("/cdp/{owner}/json/list"))).await;
    let pages = list.json();
    let first = &pages.as_array().unwrap()[0];
    assert!(
        first["webSocketDebuggerUrl"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ws://{}/cdp/", gateway.addr))
    );
    assert!(
        first["devtoolsFrontendUrl"]
            .as_str()
            .unwrap()
            .contains(&format!("ws={}/cdp/{owner}/devtools/page/", gateway.addr))
    );

    // A real CDP client: playwright-core (from npm) connected to the gateway's endpoint.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cdp-client/cdp_check.mjs");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cdp-through-gateway.png");
    let endpoint = gateway.url(&format!("/cdp/{owner}"));
    let page_url = "data:text/html,<title>cdp-through-lazygate</title><h1 style='font-size:80px'>hello over CDP</h1>";
    let shot_path = shot.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(endpoint)
            .arg(page_url)
            .arg(shot_path)
            .arg(TEST_API_TOKEN)
            .output()
            .expect("node runs")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "playwright failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["title"], "cdp-through-lazygate");
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    eprintln!(
        "CDP screenshot through the gateway: {} ({} bytes)",
        shot.display(),
        png.len()
    );
    // The CDP WebSocket tunnels appear in the gateway's log as upgrades.
    assert!(
        gateway
            .log_lines("route=\"cdp\"")
            .iter()
            .any(|l| l.contains("status=101"))
    );
}
