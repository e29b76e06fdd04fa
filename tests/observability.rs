//! What an operator sees: a real Prometheus (Debian's) scraping the gateway's admin
//! listener under the test's own traffic, `Server-Timing` on a cold request, and the admin
//! API that `lazygate runtimes` uses.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request};
use http_body_util::Full;
use tokio_tungstenite::tungstenite::Message;

/// A Prometheus server scraping `target` every second; killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn scraping(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: lazygate\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus runs (Debian package prometheus)");
        Prometheus { child, port, _dir: dir }
    }

    /// The value of an instant query's first sample, if it has one.
    async fn value(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!("http://127.0.0.1:{}/api/v1/query?query={encoded}", self.port);
        let request = Request::get(url).body(Full::new(Bytes::new())).unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), send_request(request))
            .await
            .ok()?;
        let answer = serde_json::from_slice::<serde_json::Value>(&reply.body).ok()?;
        answer["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `query` has a value that `holds`; panics with the last value after 60 s.
    async fn until(&self, query: &str, holds: impl Fn(f64) -> bool) -> f64 {
        let started = Instant::now();
        loop {
            let value = self.value(query).await;
            if let Some(value) = value.filter(|v| holds(*v)) {
                return value;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "Prometheus never saw {query} as expected (last: {value:?})"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// Opens `owner`'s live view WebSocket as a person would, and checks that it echoes.
async fn watch(
    gateway: &Gateway,
    owner: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let hash = seed_hash(owner);
    let url = format!(
        "ws://{}/view/{hash}/websockify?token={}",
        gateway.addr,
        view_token(owner)
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.expect("the view opens");
    ws.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Text("hello".into()));
    ws
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_the_cold_start_with_its_phases_the_open_websocket_and_the_removal() {
    let scope = Scope::new("metrics");
    let gateway = GatewayConfig::new(&scope)
        .env("BROWSER_RUNTIME_TTL_SECONDS", "3")
        .start();
    let metrics = gateway.admin_url("/metrics");
    let target = metrics
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_owned();
    let prometheus = Prometheus::scraping(&target);

    // A cold run: its answer says what the start cost, phase by phase.
    let owner = unique("measured");
    let hash = seed_hash(&owner);
    let run = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(run.status, 200, "{}", run.text());
    let timing = run.headers["server-timing"].to_str().unwrap().to_owned();
    for phase in [
        "provision",
        "volume",
        "network",
        "create",
        "start",
        "join",
        "fence",
        "ready",
    ] {
        assert!(timing.contains(&format!("{phase};dur=")), "{phase} missing: {timing}");
    }
    let warm = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
    assert!(warm.headers.get("server-timing").is_none(), "a warm request has none");

    // A person watches: the WebSocket is held open.
    let mut ws = watch(&gateway, &owner).await;

    prometheus
        .until("lazygate_starts_total{outcome=\"ok\"}", |v| v >= 1.0)
        .await;
    for phase in ["volume", "network", "create", "start", "join", "fence", "ready"] {
        let query = format!("lazygate_start_phase_seconds_count{{phase=\"{phase}\"}}");
        prometheus.until(&query, |v| v >= 1.0).await;
    }
    prometheus
        .until(
            "lazygate_requests_total{route=\"rpc\",status=\"2xx\",cold=\"true\"}",
            |v| v >= 1.0,
        )
        .await;
    prometheus.until("lazygate_websockets_open", |v| v == 1.0).await;
    prometheus
        .until("lazygate_runtimes{state=\"ready\"}", |v| v == 1.0)
        .await;
    prometheus
        .until(
            "lazygate_engine_calls_total{operation=\"ensure\",outcome=\"ok\"}",
            |v| v >= 1.0,
        )
        .await;

    // The view closes; after the TTL the runtime is removed as idle, and Prometheus sees it.
    ws.close(None).await.unwrap();
    drop(ws);
    prometheus.until("lazygate_websockets_open", |v| v == 0.0).await;
    prometheus
        .until("lazygate_removals_total{reason=\"idle\"}", |v| v >= 1.0)
        .await;
    prometheus
        .until("lazygate_runtimes{state=\"ready\"}", |v| v == 0.0)
        .await;
    assert!(inspect(&container_name(&hash)).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_lists_and_removes_runtimes_only_with_the_token_and_only_on_its_listener() {
    let scope = Scope::new("admin-api");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("listed");
    let hash = seed_hash(&owner);
    let run = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(run.status, 200, "{}", run.text());

    let admin = |method: Method, path: &str, token: Option<&str>| {
        let mut builder = Request::builder().method(method).uri(gateway.admin_url(path));
        if let Some(token) = token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        send_request(builder.body(Full::new(Bytes::new())).unwrap())
    };
    // Without the token, or with another: 401, like the API; nothing removed.
    let refused = admin(Method::GET, "/admin/runtimes", None).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.error_code(), "unauthorized");
    let path = format!("/admin/runtimes/{hash}");
    let refused = admin(Method::DELETE, &path, Some("not-the-token-0123456789")).await;
    assert_eq!(refused.status, 401);
    assert!(inspect(&container_name(&hash)).is_some());

    // A person watches: the list tells the open view from runs.
    let mut ws = watch(&gateway, &owner).await;
    let listed = admin(Method::GET, "/admin/runtimes", Some(TEST_API_TOKEN)).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let runtimes = listed.json()["runtimes"].as_array().unwrap().clone();
    assert_eq!(runtimes.len(), 1, "{runtimes:?}");
    assert_eq!(runtimes[0]["owner_hash"], hash.as_str());
    assert_eq!(runtimes[0]["state"], "ready");
    assert_eq!(runtimes[0]["container"], container_name(&hash));
    assert_eq!(runtimes[0]["websockets"], 1, "{runtimes:?}");
    assert_eq!(runtimes[0]["requests"], 0, "{runtimes:?}");
    assert!(runtimes[0]["age_seconds"].is_u64(), "{runtimes:?}");
    ws.close(None).await.unwrap();
    drop(ws);

    // An unknown owner: a clear 404, nothing touched.
    let unknown = admin(Method::DELETE, "/admin/runtimes/0123456789abcdef", Some(TEST_API_TOKEN)).await;
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(unknown.error_code(), "no_such_runtime");
    let malformed = admin(Method::DELETE, "/admin/runtimes/not-a-hash", Some(TEST_API_TOKEN)).await;
    assert_eq!(malformed.status, 400);
    assert!(inspect(&container_name(&hash)).is_some());

    let removed = admin(Method::DELETE, &path, Some(TEST_API_TOKEN)).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    assert!(inspect(&container_name(&hash)).is_none());

    // The main listener (the one the tunnel reaches) serves neither.
    assert_eq!(get(&gateway.url("/metrics")).await.status, 404);
    assert_eq!(get(&gateway.url("/admin/runtimes")).await.status, 404);
}

/// Runs the `lazygate` binary with the tests' secrets; returns (exit status, stdout, stderr).
fn lazygate(args: &[&str], token: &str) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lazygate"))
        .args(args)
        .env_remove("LAZYGATE_CONFIG")
        .env("LAZYGATE_API_TOKENS", token)
        .env("LAZYGATE_VIEW_SECRET", TEST_VIEW_SECRET)
        .output()
        .expect("lazygate runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_runtimes_command_lists_and_removes_and_says_why_when_it_cannot() {
    let scope = Scope::new("admin-cli");
    let gateway = GatewayConfig::new(&scope).start();
    let owner = unique("commanded");
    let hash = seed_hash(&owner);
    let run = post(&gateway.url(&format!("/rpc/{owner}")), "{}").await;
    assert_eq!(run.status, 200, "{}", run.text());
    let admin = gateway.admin_url("").trim_start_matches("http://").to_owned();
    let with_admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--admin", &admin]);
        tokio::task::block_in_place(|| lazygate(&all, TEST_API_TOKEN))
    };

    let (code, table, stderr) = with_admin(&["runtimes", "list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(table.starts_with("OWNER_HASH"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&hash) && l.contains("ready") && l.contains(&container_name(&hash))),
        "{table}"
    );
    let (code, json, _) = with_admin(&["runtimes", "list", "--json"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["runtimes"][0]["owner_hash"], hash.as_str());

    // Refused token, unreachable gateway: exit 1 with the reason.
    let mut args = vec!["runtimes", "list", "--admin", &admin];
    let (code, _, stderr) = tokio::task::block_in_place(|| lazygate(&args, "a-token-the-gateway-refuses"));
    assert_eq!(code, Some(1));
    assert!(stderr.contains("refused the API token"), "{stderr}");
    args[3] = "127.0.0.1:1";
    let (code, _, stderr) = tokio::task::block_in_place(|| lazygate(&args, TEST_API_TOKEN));
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("cannot reach the gateway's admin listener at 127.0.0.1:1"),
        "{stderr}"
    );

    // rm by owner id; again: no such runtime.
    let (code, out, stderr) = with_admin(&["runtimes", "rm", &owner]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.contains(&hash), "{out}");
    assert!(inspect(&container_name(&hash)).is_none());
    let (code, _, stderr) = with_admin(&["runtimes", "rm", &hash]);
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no such runtime") && stderr.contains(&hash), "{stderr}");
}

#[test]
fn check_config_validates_like_serve_and_names_the_key_or_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.toml");
    let (code, _, stderr) = lazygate(&["check-config", "--config", missing.to_str().unwrap()], TEST_API_TOKEN);
    assert_eq!(code, Some(2));
    assert!(stderr.contains(missing.to_str().unwrap()), "{stderr}");
    let file = dir.path().join("lazygate.toml");
    std::fs::write(&file, "[server]\nadmin_listen = \"everywhere\"\n").unwrap();
    let (code, _, stderr) = lazygate(&["check-config", "--config", file.to_str().unwrap()], TEST_API_TOKEN);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("server.admin_listen") && stderr.contains("everywhere"),
        "{stderr}"
    );
    std::fs::write(&file, "[runtime]\nttl_seconds = 60\n").unwrap();
    let (code, out, stderr) = lazygate(&["check-config", "--config", file.to_str().unwrap()], TEST_API_TOKEN);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(out.contains("configuration is valid"), "{out}");
    let (code, out, _) = lazygate(&["--version"], TEST_API_TOKEN);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("lazygate {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deploy_alerts_and_dashboard_are_valid_and_query_only_metrics_that_exist() {
    let root = env!("CARGO_MANIFEST_DIR");
    for args in [
        ["check", "config", "deploy/prometheus/prometheus.yml"],
        ["check", "rules", "deploy/prometheus/alerts.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(root)
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let rules = std::fs::read_to_string(format!("{root}/deploy/prometheus/alerts.yml")).unwrap();
    let dashboard = std::fs::read_to_string(format!("{root}/deploy/grafana/lazygate.json")).unwrap();
    let dashboard_json: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    assert!(!dashboard_json["panels"].as_array().unwrap().is_empty());

    let scope = Scope::new("metrics-names");
    let gateway = GatewayConfig::new(&scope).start();
    // A run, so that the request and engine-call families have their first series.
    let run = post(&gateway.url(&format!("/rpc/{}", unique("named"))), "{}").await;
    assert_eq!(run.status, 200, "{}", run.text());
    let exposed = get(&gateway.admin_url("/metrics")).await.text();
    let mut checked = 0;
    for text in [&rules, &dashboard] {
        let words = text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for name in words.filter(|w| w.starts_with("lazygate_") || w.starts_with("process_")) {
            let family = ["_total", "_bucket", "_sum", "_count", "_info"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            assert!(
                exposed.contains(&format!("# TYPE {family} ")),
                "{name} is queried but the gateway exposes no {family}:\n{exposed}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 15, "only {checked} metric names found");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_request_has_an_id_in_its_log_line_its_error_and_at_the_runtime_and_logs_can_be_json() {
    let scope = Scope::new("request-id");
    let gateway = GatewayConfig::new(&scope).env("LAZYGATE_LOG_FORMAT", "json").start();
    let owner = unique("traced");
    let with_id = |url: String, id: &'static str| {
        let request = Request::get(url)
            .header("authorization", bearer())
            .header("x-request-id", id)
            .body(Full::new(Bytes::new()))
            .unwrap();
        send_request(request)
    };
    // From an untrusted peer the client's id is replaced; the runtime sees the gateway's.
    let seen = with_id(gateway.url(&format!("/rpc/{owner}/headers")), "made-up-by-the-client").await;
    assert_eq!(seen.status, 200, "{}", seen.text());
    let id = seen.headers["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(id, "made-up-by-the-client");
    assert_eq!(seen.json()["x-request-id"], id.as_str(), "the runtime got the same id");
    // An error names it too.
    let missing = get(&gateway.url("/nowhere")).await;
    assert_eq!(missing.status, 404);
    let error_id = missing.json()["error"]["request_id"].as_str().unwrap().to_owned();
    assert_eq!(missing.headers["x-request-id"].to_str().unwrap(), error_id);
    assert_ne!(error_id, id, "ids are unique");

    // Every line is JSON, and the request's line carries its id.
    eventually("the request lines", Duration::from_secs(10), || {
        gateway
            .log_lines(&error_id)
            .iter()
            .any(|l| line_message(l).as_deref() == Some("request"))
    })
    .await;
    let lines = gateway.log_lines("");
    assert!(lines.len() > 3);
    for line in &lines {
        let value: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(value["level"].is_string() && value["message"].is_string(), "{line}");
    }
    let request_line = lines
        .iter()
        .find(|l| l.contains(&id) && line_message(l).as_deref() == Some("request"))
        .expect("the first request's line");
    assert_eq!(line_field(request_line, "route").as_deref(), Some("rpc"));
    assert_eq!(line_field(request_line, "status").as_deref(), Some("200"));

    // Behind a trusted proxy (the tunnel), its id is kept end to end.
    drop(gateway);
    let trusting = GatewayConfig::new(&scope)
        .env("LAZYGATE_TRUSTED_PROXIES", "127.0.0.1")
        .start();
    let seen = with_id(trusting.url(&format!("/rpc/{owner}/headers")), "tunnel-id-42").await;
    assert_eq!(seen.headers["x-request-id"], "tunnel-id-42");
    assert_eq!(seen.json()["x-request-id"], "tunnel-id-42");
    // A bad log format is refused before anything runs.
    let (code, stderr) = GatewayConfig::new(&scope)
        .env("LAZYGATE_LOG_FORMAT", "xml")
        .run_to_exit();
    assert_eq!(code, Some(2));
    assert!(stderr.contains("LAZYGATE_LOG_FORMAT"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_whose_admin_address_is_taken_still_serves_and_says_so() {
    let scope = Scope::new("admin-taken");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let gateway = GatewayConfig::new(&scope)
        .env("LAZYGATE_ADMIN_LISTEN", &address)
        .start();
    assert_eq!(get(&gateway.url("/healthz")).await.status, 200);
    eventually("the warning", Duration::from_secs(10), || {
        gateway
            .log_lines("cannot listen on the admin address")
            .iter()
            .any(|l| l.contains(&address))
    })
    .await;
}
