//! The real thing, as a person sees it: the reference browser runtime, its live view opened
//! in a real (headless) Chromium on the host through the gateway, and an agent's run whose
//! page must then be on that person's screen.

mod common;

use std::time::Instant;

use base64::Engine;
use common::browser::{live_view_shows_run, live_view_shows_run_then};
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
    // Pinged after every second of silence: a live noVNC session must never be cut by it.
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_IMAGE", BROWSER_IMAGE)
        .env("BROWSER_RUNTIME_START_TIMEOUT", "60")
        .env("LAZYGATE_WS_PING_SECONDS", "1")
        .env("LAZYGATE_WS_PONG_TIMEOUT_SECONDS", "1")
        .start();
    let owner = unique("viewer");
    let hash = seed_hash(&owner);
    // A cold view: the runtime does not exist until the navigation asks for it.
    assert!(inspect(&container_name(&hash)).is_none());
    let token = view_token(&owner);
    let view = gateway.url(&format!(
        "/view/{hash}/vnc.html?path=view/{hash}/websockify&autoconnect=1&resize=scale&token={token}"
    ));
    // Watched for three of the gateway's pings, each answered by the browser itself.
    let report = live_view_shows_run_then(&view, &gateway.url(&format!("/rpc/{owner}")), async || {
        metric(&gateway, "lazygate_websocket_pings_total").await >= 3.0
    })
    .await;
    eprintln!("{report}");
    assert!(gateway.log_lines("closed a websocket (1001)").is_empty());
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

/// Opens a WebSocket to `url` with extra headers; returns the handshake's HTTP status.
async fn websocket_status(url: &str, headers: &[(&str, &str)]) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("WebSocket to {url}: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn alices_page_cannot_open_bobs_browser_and_a_runtime_answers_only_its_gateway() {
    let scope = Scope::new("browser-isolation");
    let gateway = start_with_browser_runtime(&scope);
    let (alice, bob) = (unique("alice"), unique("bob"));
    for owner in [&alice, &bob] {
        let health = get(&gateway.url(&format!("/rpc/{owner}/health"))).await;
        assert_eq!(health.status, 200, "{}", health.text());
    }
    let b = container_name(&seed_hash(&bob));
    let (_, bob_ip) = networks_of(&b).pop().unwrap();
    // A small HTTP server on the host, at alice's bridge address: the outside, which alice's
    // page must still reach (the control that shows the page's requests do go out).
    let a = container_name(&seed_hash(&alice));
    let (a_network, _) = networks_of(&a).pop().unwrap();
    let host = gateway_of(&a, &a_network);
    let outside = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let outside_port = outside.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut stream, _)) = outside.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                .await;
        }
    });

    // The attack of the security issue: script in alice's page goes for bob's CDP, live view
    // and RPC ports at his address. Each attempt gives up after 3 s; "reached" would mean
    // the request got an answer (even an opaque one). The page is on a loopback origin, so
    // the browser's own private-network checks do not stop anything: only the network can.
    let attack = format!(
        r#"(async () => {{
            const out = {{}};
            for (const [name, url] of [["outside", "http://{host}:{outside_port}/"],
                                       ["cdp", "http://{bob_ip}:9222/json/version"],
                                       ["view", "http://{bob_ip}:6080/vnc.html"],
                                       ["rpc", "http://{bob_ip}:8787/health"]]) {{
                const abort = new AbortController();
                setTimeout(() => abort.abort(), 3000);
                try {{ await fetch(url, {{mode: "no-cors", signal: abort.signal}}); out[name] = "reached"; }}
                catch (e) {{ out[name] = "failed: " + e.name; }}
            }}
            out.cdp_websocket = await new Promise(done => {{
                const ws = new WebSocket("ws://{bob_ip}:9222/devtools/browser");
                ws.onopen = () => done("open");
                ws.onerror = () => done("failed");
                setTimeout(() => done("failed: timeout"), 3000);
            }});
            return out;
        }})()"#
    );
    let run = json!({"actions": [
        {"action": "open", "url": "http://127.0.0.1:8787/health"},
        {"action": "evaluate", "expression": attack}
    ]});
    let reply = post(&gateway.url(&format!("/rpc/{alice}")), &run.to_string()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let outcome = &reply.json()["results"][1]["value"];
    eprintln!("alice's page against bob's runtime: {outcome}");
    assert_eq!(outcome["outside"], "reached", "the page's requests do go out");
    for probe in ["cdp", "view", "rpc", "cdp_websocket"] {
        let result = outcome[probe].as_str().unwrap_or_default();
        if !result.starts_with("failed") {
            // Say everything needed to find out how, should it ever happen.
            let forward = std::process::Command::new("iptables")
                .args(["-S", "FORWARD"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            panic!(
                "{probe}: {result}; bob {bob_ip} on {:?}, alice on {:?}; FORWARD:\n{forward}",
                networks_of(&b),
                networks_of(&a)
            );
        }
    }

    // The second wall, tried on bob's ports as published for the gateway: whoever reaches
    // them without the runtime's key cannot run, view or drive anything.
    let published = |port: &str| -> String {
        let text = docker(&["port", &b, port]).unwrap();
        text.lines().next().unwrap().trim().to_owned()
    };
    let (rpc, view, cdp) = (published("8787/tcp"), published("6080/tcp"), published("9222/tcp"));
    let env = inspect(&b).unwrap()["Config"]["Env"].clone();
    let key = env
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e.as_str().unwrap().strip_prefix("LAZYGATE_RUNTIME_KEY="))
        .expect("the gateway gave the runtime a key")
        .to_owned();
    let run = |key: Option<String>| {
        let mut request = http::Request::post(format!("http://{rpc}/run"));
        if let Some(key) = key {
            request = request.header("x-lazygate-runtime-key", key);
        }
        send_request(request.body(r#"{"action": "title"}"#.into()).unwrap())
    };
    assert_eq!(run(None).await.status, 403, "a run without the key");
    assert_eq!(run(Some("wrong".into())).await.status, 403, "a run with a wrong key");
    assert_eq!(run(Some(key.clone())).await.status, 200, "the gateway's key works");
    let vnc = format!("ws://{view}/websockify");
    assert_eq!(
        websocket_status(&vnc, &[]).await,
        403,
        "the VNC WebSocket without the key"
    );
    assert_eq!(
        websocket_status(&vnc, &[("x-lazygate-runtime-key", &key)]).await,
        101,
        "the VNC WebSocket with it"
    );
    assert_eq!(
        websocket_status(
            &vnc,
            &[("x-lazygate-runtime-key", &key), ("origin", "http://evil.example")]
        )
        .await,
        403,
        "the VNC WebSocket with the key but a web page's Origin"
    );
    let version = send_request(
        http::Request::get(format!("http://{cdp}/json/version"))
            .body(Default::default())
            .unwrap(),
    )
    .await;
    let debugger = version.json()["webSocketDebuggerUrl"].as_str().unwrap().to_owned();
    let path = &debugger[debugger.find("/devtools/").expect("a DevTools path")..];
    let browser_ws = format!("ws://{cdp}{path}");
    assert_eq!(
        websocket_status(&browser_ws, &[("origin", "http://evil.example")]).await,
        403,
        "a DevTools WebSocket from a web page's origin"
    );
    assert_eq!(
        websocket_status(&browser_ws, &[]).await,
        101,
        "one without an Origin (the gateway's)"
    );
}

/// Evaluates `expression` in `page` until it is true; panics with `state` after `limit`.
async fn until_true(page: &mut common::browser::Cdp, expression: &str, state: &str, limit: std::time::Duration) {
    let started = Instant::now();
    while page.eval(expression).await != json!(true) {
        if started.elapsed() > limit {
            panic!("never true: {expression}; page: {}", page.eval(state).await);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_person_is_told_in_words_when_a_start_fails_or_a_link_is_expired_or_foreign() {
    let scope = Scope::new("browser-failure-pages");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_IMAGE", "lazygate-no-such-image:never")
        .start();
    let browser = common::browser::HostBrowser::launch().await;
    let text = "document.body.innerText";
    let limit = std::time::Duration::from_secs(30);

    // A start that fails: the waiting page turns into a failure a person understands, with
    // the gateway's reason, and keeps trying (the cause may be fixed meanwhile).
    let owner = unique("unlucky-viewer");
    let hash = seed_hash(&owner);
    let token = view_token(&owner);
    let view = gateway.url(&format!(
        "/view/{hash}/vnc.html?path=view/{hash}/websockify&autoconnect=1&token={token}"
    ));
    let mut page = browser.open(&view).await;
    let failed = "(() => { const f = document.getElementById('lazygate-failure'); \
        return !!f && !f.hidden && f.innerText.includes('could not be started') \
        && f.innerText.includes('lazygate-no-such-image:never') && f.innerText.includes('runtime_failed') \
        && f.innerText.includes('Trying again in'); })()";
    until_true(&mut page, failed, text, limit).await;
    assert!(scope.containers().is_empty() && scope.volumes().is_empty());

    // An expired link, a link for another browser, none at all: a page that says so, not JSON.
    let cases = [
        (expired_view_token(&owner), hash.clone(), "This link has expired"),
        (
            view_token(&unique("someone-else")),
            hash.clone(),
            "This link is for another browser",
        ),
        // (Another runtime's view: the first link left a cookie for this one.)
        (
            String::new(),
            seed_hash(&unique("nobody")),
            "This page needs a live-view link",
        ),
    ];
    for (token, hash, heading) in cases {
        let query = if token.is_empty() {
            String::new()
        } else {
            format!("?token={token}")
        };
        let url = gateway.url(&format!("/view/{hash}/vnc.html{query}"));
        page.call("Page.navigate", json!({"url": url})).await;
        let shown = format!(
            "document.querySelector('#lazygate-error h1')?.innerText === {}",
            json!(heading)
        );
        until_true(&mut page, &shown, text, limit).await;
    }
    // The same errors stay JSON for anything that is not a browser navigation.
    let reply = get(&gateway.url(&format!("/view/{hash}/vnc.html?token={}", expired_view_token(&owner)))).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.error_code(), "expired_token");
}

#[tokio::test(flavor = "multi_thread")]
async fn shared_mode_serves_the_seeds_shared_view_url_and_runs_through_the_gateway() {
    ensure_test_network();
    let scope = Scope::new("browser-shared");
    // The shared `browser` of the seed's setup: the reference runtime, started once for all.
    let browser = format!("{}-browser", scope.name);
    let label = format!("lazygate.scope={}", scope.name);
    docker(&[
        "run",
        "-d",
        "--name",
        &browser,
        "--network",
        TEST_NETWORK,
        "--label",
        &label,
        "--shm-size",
        "1g",
        BROWSER_IMAGE,
    ])
    .expect("the shared browser starts");
    let ip = docker(&[
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        &browser,
    ])
    .unwrap()
    .trim()
    .to_owned();
    let started = Instant::now();
    let health = format!("http://{ip}:8787/health");
    let answers = || async {
        let request = http::Request::get(&health).body(Default::default()).unwrap();
        client().request(request).await.is_ok_and(|r| r.status() == 200)
    };
    while !answers().await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(90),
            "the shared browser never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_USE_ISOLATION_MODE", "shared")
        .env("BROWSER_URL", &format!("http://{ip}:9222"))
        .env("BROWSER_USE_RPC_URL", &format!("http://{ip}:8787/run"))
        .env("BROWSER_VIEW_BASE_URL", "http://gateway.test")
        .start();

    // The ensure answer is the seed's shared one, its view URL signed for the shared view.
    let answer = post(&gateway.url("/api/runtimes/ensure"), "{}").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let answer = answer.json();
    assert_eq!(answer["isolation_mode"], "shared");
    let view = answer["browser_view"].as_str().unwrap();
    assert!(
        view.starts_with("http://gateway.test/vnc.html?path=websockify&token=shared."),
        "{view}"
    );
    assert_eq!(answer["rpc_url"], gateway.url("/rpc/shared"));
    let view = view.replace("http://gateway.test", gateway.url("").trim_end_matches('/'));

    // Nobody gets the shared view without it, nor with an owner's link.
    let bare = get(&gateway.url("/vnc.html?path=websockify")).await;
    assert_eq!(bare.status, 401, "{}", bare.text());
    assert_eq!(bare.error_code(), "unauthorized");
    let owners = get(&gateway.url(&format!("/vnc.html?path=websockify&token={}", view_token("alice")))).await;
    assert_eq!(owners.status, 403, "{}", owners.text());
    assert_eq!(owners.error_code(), "wrong_owner");

    // A person opens the seed's URL in a real browser: noVNC's page and assets come from the
    // shared browser, its WebSocket at /websockify too, and an agent's run shows on screen.
    let report = live_view_shows_run(
        &format!("{view}&autoconnect=1&resize=scale"),
        &gateway.url("/rpc/anyone"),
    )
    .await;
    eprintln!("{report}");
    let assets = gateway.log_lines("route=\"shared_view\"");
    assert!(assets.iter().any(|l| l.contains("status=200")), "{assets:?}");
    assert!(
        assets.iter().any(|l| l.contains("status=101")),
        "the WebSocket: {assets:?}"
    );
    // No runtime of its own was made for anyone.
    assert!(
        scope.containers().len() == 1,
        "only the shared browser runs: {:?}",
        scope.containers()
    );
}
