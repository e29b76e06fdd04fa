//! The real thing, as a person sees it: the reference browser runtime, its live view opened
//! in a real (headless) Chromium on the host through the gateway, and an agent's run whose
//! page must then be on that person's screen.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use common::browser::HostBrowser;
use common::*;
use serde_json::json;

/// Share of the noVNC canvas that is magenta (the colour of the page the agent opens).
const MAGENTA_SHARE: &str = r#"(() => {
  const canvas = document.querySelector('#noVNC_container canvas') || document.querySelector('canvas');
  if (!canvas || !canvas.width) return 0;
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let magenta = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] > 200 && data[i + 1] < 60 && data[i + 2] > 200) magenta++;
  }
  return magenta / (data.length / 4);
})()"#;

#[tokio::test(flavor = "multi_thread")]
async fn the_live_view_shows_the_agents_page_in_a_real_browser() {
    let scope = Scope::new("browser-view");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_IMAGE", BROWSER_IMAGE)
        .env("BROWSER_RUNTIME_START_TIMEOUT", "60")
        .start();
    let owner = unique("viewer");
    let hash = seed_hash(&owner);
    let browser = HostBrowser::launch().await;

    // A cold view: the runtime does not exist until this navigation asks for it.
    assert!(inspect(&container_name(&hash)).is_none());
    let view = gateway.url(&format!(
        "/view/{hash}/vnc.html?path=view/{hash}/websockify&autoconnect=1&resize=scale"
    ));
    let started = Instant::now();
    let mut page = browser.open(&view).await;
    let connected = "document.documentElement.classList.contains('noVNC_connected')";
    let mut reloads = 0;
    let mut navigated = Instant::now();
    // noVNC gave up: its page is there, but it is neither connecting nor connected.
    let gave_up = "document.readyState === 'complete' && !!document.getElementById('noVNC_status') \
        && !document.documentElement.classList.contains('noVNC_connecting') \
        && !document.documentElement.classList.contains('noVNC_connected')";
    loop {
        if page.eval(connected).await == json!(true) {
            break;
        }
        // A new container's network change can abort the host browser's load or WebSocket in
        // flight (net::ERR_NETWORK_CHANGED): load a failed page again, as a person would.
        let failed = page.eval("location.href.startsWith('chrome-error:')").await == json!(true)
            || page.eval(gave_up).await == json!(true);
        if failed && navigated.elapsed() > Duration::from_secs(2) && reloads < 5 {
            reloads += 1;
            navigated = Instant::now();
            page.call("Page.navigate", json!({"url": view})).await;
        }
        if started.elapsed() > Duration::from_secs(90) {
            let state = page
                .eval("JSON.stringify({href: location.href, class: document.documentElement.className, status: (document.getElementById('noVNC_status') || {}).textContent})")
                .await;
            panic!("noVNC did not connect through the gateway: {state}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cold_to_connected = started.elapsed();
    eprintln!("cold /view request to noVNC connected: {cold_to_connected:?} ({reloads} reloads)");
    assert!(gateway.log_lines("cold=true").iter().any(|l| l.contains(&hash)));

    // The agent opens a page; the person must see it.
    let run = json!({"actions": [
        {"action": "open", "url": "data:text/html,<title>lazygate-e2e</title><body style='margin:0;background:%23ff00ff'></body>"},
        {"action": "title"}
    ]});
    let reply = post(&gateway.url(&format!("/rpc/{owner}")), &run.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["results"][1]["title"], "lazygate-e2e");

    let shown = Instant::now();
    let mut share = 0.0;
    while share <= 0.5 {
        assert!(
            shown.elapsed() < Duration::from_secs(60),
            "the agent's page never showed (share {share})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        share = page.eval(MAGENTA_SHARE).await.as_f64().unwrap_or(0.0);
    }
    let waited = shown.elapsed();
    eprintln!("remote page on screen {waited:?} after the run answered; magenta share {share:.2}");

    let shot = page.call("Page.captureScreenshot", json!({"format": "png"})).await;
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-view-through-gateway.png");
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_runtime_answers_runs_and_health() {
    let scope = Scope::new("browser-rpc");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_IMAGE", BROWSER_IMAGE)
        .env("BROWSER_RUNTIME_START_TIMEOUT", "60")
        .start();
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
