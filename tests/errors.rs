//! Errors a user can meet: malformed input (never reaches the engine), an engine that is
//! away and comes back, a runtime that does not answer, a broken image, bad configuration.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::Method;
use http_body_util::{BodyExt, Full};

#[tokio::test(flavor = "multi_thread")]
async fn malformed_owners_hashes_and_paths_are_refused_without_creating_anything() {
    let scope = Scope::new("malformed");
    let gateway = GatewayConfig::new(&scope).start();
    let hash = seed_hash("someone");
    let long = "a".repeat(10_000);
    let cases: Vec<(Method, String, u16, &str)> = vec![
        (
            Method::GET,
            "/view/ABCDEF0123456789/vnc.html".into(),
            400,
            "invalid_owner_hash",
        ),
        (
            Method::GET,
            "/view/0123456789abcde/vnc.html".into(),
            400,
            "invalid_owner_hash",
        ),
        (
            Method::GET,
            "/view/0123456789abcdef0/vnc.html".into(),
            400,
            "invalid_owner_hash",
        ),
        (
            Method::GET,
            "/view/zzzzzzzzzzzzzzzz/vnc.html".into(),
            400,
            "invalid_owner_hash",
        ),
        (
            Method::GET,
            "/view/..%2f..%2f..%2fetc/passwd".into(),
            400,
            "invalid_owner_hash",
        ),
        (
            Method::GET,
            format!("/view/{hash}/../../etc/passwd"),
            400,
            "invalid_path",
        ),
        (
            Method::GET,
            format!("/view/{hash}/%2e%2e/%2e%2e/etc/passwd"),
            400,
            "invalid_path",
        ),
        (Method::GET, format!("/view/{hash}/a%2fb"), 400, "invalid_path"),
        (Method::GET, format!("/view/{hash}/%252e%252e/x"), 400, "invalid_path"),
        (Method::GET, format!("/view/{hash}/a%00b"), 400, "invalid_path"),
        (Method::POST, "/rpc/..".into(), 400, "invalid_owner"),
        (Method::POST, "/rpc/%2e%2E".into(), 400, "invalid_owner"),
        (Method::POST, "/rpc/a%2Fb".into(), 400, "invalid_owner"),
        (Method::POST, "/rpc/a%5Cb".into(), 400, "invalid_owner"),
        (Method::POST, "/rpc/a%00b".into(), 400, "invalid_owner"),
        (Method::POST, "/rpc/a%0d%0ab".into(), 400, "invalid_owner"),
        (Method::POST, "/rpc/%ff%fe".into(), 400, "invalid_owner"),
        (Method::POST, "/rpc/".into(), 400, "invalid_owner"),
        (Method::POST, format!("/rpc/{long}"), 400, "invalid_owner"),
        (Method::POST, "/rpc/ok/..%2f..%2fx".into(), 400, "invalid_path"),
        (Method::GET, "/".into(), 404, "not_found"),
        (Method::GET, "/view".into(), 404, "not_found"),
        (Method::GET, "/api/runtimes/ensure".into(), 405, "method_not_allowed"),
        (Method::POST, "/healthz".into(), 405, "method_not_allowed"),
    ];
    for (method, path, status, code) in &cases {
        let reply = send(method.clone(), &gateway.url(path), "").await;
        assert_eq!(reply.status.as_u16(), *status, "{method} {path:.60}: {}", reply.text());
        assert_eq!(&reply.error_code(), code, "{method} {path:.60}");
        assert!(!reply.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    let bad_json = post(&gateway.url("/api/runtimes/ensure"), "{\"task_id\": 5").await;
    assert_eq!(bad_json.status, 400);
    assert_eq!(bad_json.error_code(), "invalid_body");

    // Shapes a client library would refuse to send, written on the wire by hand.
    for raw in [
        "GET /rpc/a\\b HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes(),
        b"GET /rpc/a\0b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /rpc/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /view/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let status = raw_status(gateway.addr, raw);
        assert!(
            (400..500).contains(&status),
            "{:?} answered {status}",
            String::from_utf8_lossy(raw)
        );
    }
    // Malformed WebSocket handshakes to a valid, authorised view: refused before any start.
    let owner = unique("ws-hostile");
    let view_hash = seed_hash(&owner);
    let token = view_token(&owner);
    let upgrade = |extra: &str, method: &str| {
        format!(
            "{method} /view/{view_hash}/websockify?token={token} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n{extra}\r\n"
        )
    };
    for (extra, method) in [
        ("", "GET"),
        ("Sec-WebSocket-Version: 13\r\n", "GET"),
        (
            "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "GET",
        ),
        ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: not-base64!\r\n", "GET"),
        ("Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: c2hvcnQ=\r\n", "GET"),
        (
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            "POST",
        ),
    ] {
        let request = upgrade(extra, method);
        let status = raw_status(gateway.addr, request.as_bytes());
        assert_eq!(status, 400, "{request}");
    }
    assert!(scope.containers().is_empty(), "bad input created a container");
    assert!(scope.volumes().is_empty(), "bad input created a volume");
}

/// Writes raw bytes and returns the status code of the answer.
fn raw_status(addr: std::net::SocketAddr, request: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(request).unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_engine_answers_503_and_recovers_by_itself() {
    let scope = Scope::new("engine-down");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("engine.sock");
    let gateway = GatewayConfig::new(&scope)
        .env("DOCKER_HOST", &format!("unix://{}", socket.display()))
        .start();
    let owner = unique("patient");

    let health = get(&gateway.url("/healthz")).await;
    assert_eq!(health.status, 200, "the process is alive without an engine");
    let ready = get(&gateway.url("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.error_code(), "engine_unavailable");
    let run = post(&gateway.url(&format!("/rpc/{owner}")), "").await;
    assert_eq!(run.status, 503, "{}", run.text());
    assert_eq!(run.error_code(), "engine_unavailable");
    assert_eq!(run.headers.get("retry-after").unwrap(), "2");

    // The engine comes back (a socket that forwards to the real one).
    let (forwarder, links) = forward_engine(&socket);
    let ready = get(&gateway.url("/readyz")).await;
    assert_eq!(ready.status, 200, "{}", ready.text());
    let run = post(&gateway.url(&format!("/rpc/{owner}")), "now").await;
    assert_eq!(run.status, 200, "{}", run.text());
    // One runtime (a fence helper of the reaper's adoption pass, which found the runtime
    // the moment the engine came back, may still be on its way out).
    let filter = format!("label=lazygate.scope={}", scope.name);
    let runtimes = docker(&[
        "ps",
        "-aq",
        "--filter",
        &filter,
        "--filter",
        "label=browser_use.runtime=true",
    ]);
    assert_eq!(runtimes.unwrap_or_default().lines().count(), 1);

    // A run is in flight at the runtime (no answer yet) when the engine goes away again,
    // and the runtime dies with it (as when the engine restarts).
    let in_flight = gateway.url(&format!("/rpc/{owner}/wait?id=in-flight"));
    let waiting = tokio::spawn(async move { get(&in_flight).await });
    let held = gateway.url(&format!("/rpc/{owner}/held"));
    let mut arrived = false;
    for _ in 0..500 {
        if get(&held).await.text().contains("in-flight") {
            arrived = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(arrived, "the run reached the runtime");
    forwarder.abort();
    for link in links.lock().unwrap().drain(..) {
        link.abort();
    }
    std::fs::remove_file(&socket).unwrap();
    docker(&["kill", &container_name(&seed_hash(&owner))]).expect("runtime killed");
    // The run in flight, a new run, a view WebSocket and a CDP request all say "engine
    // unavailable, retry", never 502.
    let cut = waiting.await.unwrap();
    assert_eq!(cut.status, 503, "{}", cut.text());
    assert_eq!(cut.error_code(), "engine_unavailable");
    let run = post(&gateway.url(&format!("/rpc/{owner}")), "lost").await;
    assert_eq!(run.status, 503, "{}", run.text());
    assert_eq!(run.error_code(), "engine_unavailable");
    assert_eq!(run.headers.get("retry-after").unwrap(), "2");
    let cdp = get(&gateway.url(&format!("/cdp/{owner}/json/version"))).await;
    assert_eq!(cdp.status, 503, "{}", cdp.text());
    let url = format!(
        "ws://{}/view/{}/websockify?token={}",
        gateway.addr,
        seed_hash(&owner),
        view_token(&owner)
    );
    match tokio_tungstenite::connect_async(&url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("expected a 503 for the view WebSocket, got {other:?}"),
    }

    // The engine is back (its runtimes died with it): the next request starts the runtime
    // again, on the profile it had.
    let (_forwarder, _links) = forward_engine(&socket);
    assert_eq!(boots(&gateway, &owner).await, 2, "the profile survived");
}

/// Open connections through an engine socket stand-in, so that cutting it cuts them too.
type Links = std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// Serves `socket` by forwarding each connection to the real engine's socket.
fn forward_engine(socket: &std::path::Path) -> (tokio::task::JoinHandle<()>, Links) {
    let listener = tokio::net::UnixListener::bind(socket).unwrap();
    let links: Links = Default::default();
    let forwarding = links.clone();
    let forwarder = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                break;
            };
            forwarding.lock().unwrap().push(tokio::spawn(async move {
                if let Ok(mut engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                }
            }));
        }
    });
    (forwarder, links)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_does_not_answer_gives_504() {
    let scope = Scope::new("upstream-timeout");
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_UPSTREAM_TIMEOUT_SECONDS", "1")
        .start();
    let owner = unique("sleepy");
    let reply = get(&gateway.url(&format!("/rpc/{owner}/sleep?ms=5000"))).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.error_code(), "runtime_timeout");

    // On a kept connection too, whose timer has run out while it sat idle: a quick answer
    // is not taken for a late one, a late one still times out, and the next request after
    // it is answered.
    let keep_alive = client();
    let status_of = |path: &str| {
        let request = http::Request::get(gateway.url(&format!("/rpc/{owner}/{path}")))
            .header("authorization", bearer())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let keep_alive = keep_alive.clone();
        async move {
            let response = keep_alive.request(request).await.unwrap();
            let status = response.status().as_u16();
            response.into_body().collect().await.unwrap();
            status
        }
    };
    assert_eq!(status_of("headers").await, 200);
    // Longer than the timeout, so that the kept connection's timer goes off while it is idle.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status_of("headers").await, 200, "a quick answer after an idle spell");
    assert_eq!(
        status_of("sleep?ms=5000").await,
        504,
        "a late answer on a kept connection"
    );
    assert_eq!(status_of("headers").await, 200, "the request after a timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_is_a_502_that_names_the_operation_backs_off_and_makes_the_gateway_unready() {
    let scope = Scope::new("missing-image");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_IMAGE", "lazygate-no-such-image:never")
        .start();
    let owner = unique("unlucky");
    let reply = post(&gateway.url(&format!("/rpc/{owner}")), "").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(reply.error_code(), "runtime_failed");
    let message = reply.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("create container") && message.contains("lazygate-no-such-image"),
        "{message}"
    );
    // The failed start left nothing behind: no container, no volume, no network.
    assert!(scope.containers().is_empty(), "{:?}", scope.containers());
    assert!(scope.volumes().is_empty(), "{:?}", scope.volumes());
    assert!(scope.networks().is_empty(), "{:?}", scope.networks());
    // Asked again at once, the gateway answers the same without creating it again, and says
    // when it will try.
    let again = post(&gateway.url(&format!("/rpc/{owner}")), "").await;
    assert_eq!(again.status, 502, "{}", again.text());
    assert_eq!(again.error_code(), "runtime_failed");
    let message = again.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        message.contains("lazygate-no-such-image") && message.contains("failed 1 time(s) in a row"),
        "{message}"
    );
    let retry_after: u64 = again.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    // Another owner is not held back by this one's failures.
    let other = post(&gateway.url(&format!("/rpc/{}", unique("unlucky"))), "").await;
    assert!(!other.text().contains("in a row"), "{}", other.text());
    // And the gateway is not ready: it cannot start runtimes.
    let ready = get(&gateway.url("/readyz")).await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert_eq!(ready.error_code(), "image_missing");
    assert!(
        ready.text().contains("lazygate-no-such-image:never"),
        "{}",
        ready.text()
    );
}

#[test]
fn invalid_configuration_is_refused_with_status_2_naming_the_key() {
    let scope = Scope::new("bad-config");
    let cases = [
        ("BROWSER_RUNTIME_TTL_SECONDS", "soon"),
        ("BROWSER_RUNTIME_TTL_SECONDS", "0"),
        ("BROWSER_USE_ISOLATION_MODE", "docker-per-everything"),
        ("LAZYGATE_UPSTREAM", "telepathy"),
        ("LAZYGATE_LISTEN", "not-an-address"),
        ("BROWSER_RUNTIME_ENABLE_UI", "perhaps"),
    ];
    for (key, value) in cases {
        let (code, stderr) = GatewayConfig::new(&scope).env(key, value).run_to_exit();
        assert_eq!(code, Some(2), "{key}={value}: {stderr}");
        assert!(
            stderr.contains(key) && stderr.contains(value),
            "{key}={value}: {stderr}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lazygate.toml");
    std::fs::write(&file, "[runtime]\nttl_secs = 5\n").unwrap();
    let (code, stderr) = GatewayConfig::new(&scope)
        .env("LAZYGATE_CONFIG", file.to_str().unwrap())
        .run_to_exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("ttl_secs") && stderr.contains("did you mean runtime.ttl_seconds?"),
        "{stderr}"
    );
    // A value of the wrong type in the file names its key.
    std::fs::write(&file, "[runtime]\nttl_seconds = \"15m\"\n").unwrap();
    let (code, stderr) = GatewayConfig::new(&scope)
        .env("LAZYGATE_CONFIG", file.to_str().unwrap())
        .run_to_exit();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("runtime.ttl_seconds") && stderr.contains("15m"),
        "{stderr}"
    );
    let (code, stderr) = GatewayConfig::new(&scope)
        .env("LAZYGATE_CONFIG", "/nonexistent/lazygate.toml")
        .run_to_exit();
    assert_eq!(code, Some(2), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_config_file_starts_the_gateway() {
    let scope = Scope::new("shipped-config");
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/config/lazygate.toml");
    let gateway = GatewayConfig::new(&scope).env("LAZYGATE_CONFIG", file).start();
    assert_eq!(get(&gateway.url("/healthz")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_misspelt_variable_is_warned_about_with_the_name_it_resembles() {
    let scope = Scope::new("misspelt-variable");
    let gateway = GatewayConfig::new(&scope).env("LAZYGATE_MAX_RUNTIME", "5").start();
    let warnings = gateway.log_lines("unknown variable");
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("LAZYGATE_MAX_RUNTIME") && l.contains("did you mean LAZYGATE_MAX_RUNTIMES?")),
        "{warnings:?}"
    );
    assert_eq!(get(&gateway.url("/healthz")).await.status, 200);
}

#[test]
fn a_view_url_that_would_expire_at_once_is_refused() {
    for ttl in ["--ttl=0", "--ttl=-5"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lazygate"))
            .args(["view-url", "alice", ttl])
            .env("LAZYGATE_VIEW_SECRET", TEST_VIEW_SECRET)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{ttl}: {stderr}");
        assert!(stderr.contains("--ttl"), "{stderr}");
        assert!(out.stdout.is_empty(), "no URL printed");
    }
}

#[test]
fn view_url_never_makes_up_a_secret() {
    let state = tempfile::tempdir().unwrap();
    let view_url = |dir: &std::path::Path, extra: &[(&str, &str)]| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_lazygate"));
        command
            .args(["view-url", "alice"])
            .env_remove("LAZYGATE_VIEW_SECRET")
            .env_remove("LAZYGATE_CONFIG")
            .env("BROWSER_RUNTIME_STATE_DIR", dir);
        for (key, value) in extra {
            command.env(key, value);
        }
        command.output().unwrap()
    };
    // No secret configured and none generated: exit 2, saying where it looked; nothing made.
    for dir in [state.path().to_path_buf(), state.path().join("not-there")] {
        let out = view_url(&dir, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(dir.join("lazygate-secrets.json").to_str().unwrap()) && stderr.contains("docker exec"),
            "{stderr}"
        );
        assert!(out.stdout.is_empty());
        assert!(!dir.join("lazygate-secrets.json").exists(), "no secrets file made up");
    }
    // The gateway's generated secret is used once it exists, and TLS gives an https:// URL.
    let written =
        r#"{"api_token": "generated-token-0123456789", "view_secret": "generated-secret-0123456789-0123456789"}"#;
    std::fs::write(state.path().join("lazygate-secrets.json"), written).unwrap();
    std::fs::set_permissions(
        state.path().join("lazygate-secrets.json"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(state.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let out = view_url(
        state.path(),
        &[
            ("LAZYGATE_TLS_CERT", "/unused/cert.pem"),
            ("LAZYGATE_TLS_KEY", "/unused/key.pem"),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.starts_with("https://127.0.0.1:8080/view/"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_never_becomes_ready_leaves_its_last_words_in_the_warning() {
    let scope = Scope::new("never-ready");
    // The gateway image as a "runtime": it runs and logs, but nothing answers /health on
    // the RPC port.
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_IMAGE", "lazygate:latest")
        .env("BROWSER_RUNTIME_START_TIMEOUT", "3")
        .start();
    let reply = post(&gateway.url(&format!("/rpc/{}", unique("mute"))), "").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.error_code(), "runtime_not_ready");
    // Before: only "/health did not answer"; the runtime's own logs went with it.
    let warned = || {
        gateway
            .log_lines("did not become ready")
            .iter()
            .any(|l| l.contains("runtime_output") && l.contains("listening"))
    };
    eventually(
        "the warning with the runtime's own output",
        Duration::from_secs(10),
        warned,
    )
    .await;
    eventually("the unready runtime removed", Duration::from_secs(10), || {
        scope.containers().is_empty()
    })
    .await;
}
