//! Shared helpers for the integration tests: a real gateway process on an ephemeral port,
//! the real container engine (through the `docker` CLI), and an HTTP client.
//!
//! Every test runs its gateway with a scope of its own (`LAZYGATE_SCOPE`), so gateways
//! running in parallel never adopt or reap each other's runtimes; a [`Scope`] removes what
//! carries its label when it is made (leftovers of an earlier run) and when it is dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub mod browser;
pub mod fake_engine;
pub mod swarm;

/// The API token and view secret every test gateway is configured with.
pub const TEST_API_TOKEN: &str = "test-api-token-0123456789";
pub const TEST_VIEW_SECRET: &str = "test-view-secret-0123456789-0123456789";

/// A signed view token for `owner`, made by the gateway's own `view-url` command with the
/// tests' secret.
pub fn view_token(owner: &str) -> String {
    view_token_with(owner, TEST_VIEW_SECRET, &[])
}

/// A view token for `owner` that expired the moment it was signed (the CLI refuses
/// `--ttl 0`, so it is signed with the library).
pub fn expired_view_token(owner: &str) -> String {
    let env = [
        ("LAZYGATE_VIEW_SECRET", TEST_VIEW_SECRET),
        ("LAZYGATE_API_TOKENS", TEST_API_TOKEN),
    ];
    let settings = lazygate::config::Settings::load(None, &env).expect("test settings");
    let auth = lazygate::auth::Auth::from_settings(&settings).expect("configured secrets");
    auth.sign_view(lazygate::owner::OwnerHash::of(owner), Some(Duration::ZERO))
}

/// A view token signed with `secret`, with extra `view-url` arguments (e.g. `--ttl 60`).
pub fn view_token_with(owner: &str, secret: &str, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lazygate"))
        .args(["view-url", owner, "--base", "http://gateway.test"])
        .args(args)
        .env_remove("LAZYGATE_CONFIG")
        .env("LAZYGATE_VIEW_SECRET", secret)
        .env("LAZYGATE_API_TOKENS", TEST_API_TOKEN)
        .output()
        .expect("lazygate view-url runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8(out.stdout).unwrap();
    url.trim()
        .rsplit_once("token=")
        .expect("a token in the URL")
        .1
        .to_owned()
}

pub const STUB_IMAGE: &str = "lazygate-stub-runtime:test";
pub const TEST_NETWORK: &str = "lazygate-test";
/// The reference browser runtime, built from runtime/ by scripts/build-runtime-image.sh.
pub const BROWSER_IMAGE: &str = "browser-use-browser-runtime:latest";

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The seed's owner hash, computed independently of the crate (by Python's hashlib).
pub fn seed_hash(owner: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import hashlib,sys;print(hashlib.sha256(sys.argv[1].encode()).hexdigest()[:16])",
            owner,
        ])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

pub fn container_name(owner_hash: &str) -> String {
    format!("browser-use-browser-{owner_hash}")
}

pub fn volume_name(owner_hash: &str) -> String {
    format!("browser-use-profile-{owner_hash}")
}

/// Runs the docker CLI; returns stdout, or `None` when it failed.
pub fn docker(args: &[&str]) -> Option<String> {
    let out = Command::new("docker").args(args).output().expect("docker CLI runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A container's output, stdout and stderr together (lazygate logs to stderr).
pub fn container_logs(name: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", name])
        .output()
        .expect("docker CLI runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `docker inspect` of a container, or `None` when it does not exist.
pub fn inspect(name: &str) -> Option<serde_json::Value> {
    let text = docker(&["container", "inspect", name])?;
    let mut list: Vec<serde_json::Value> = serde_json::from_str(&text).ok()?;
    list.pop()
}

pub fn container_id(name: &str) -> Option<String> {
    inspect(name).and_then(|c| c["Id"].as_str().map(str::to_owned))
}

/// The networks a container is attached to, with its address on each.
pub fn networks_of(name: &str) -> Vec<(String, String)> {
    let Some(c) = inspect(name) else { return Vec::new() };
    c["NetworkSettings"]["Networks"]
        .as_object()
        .map(|networks| {
            networks
                .iter()
                .map(|(n, e)| (n.clone(), e["IPAddress"].as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// The host's address on a container's network (its default gateway).
pub fn gateway_of(name: &str, network: &str) -> String {
    inspect(name).unwrap()["NetworkSettings"]["Networks"][network]["Gateway"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// From inside the runtime container `name` (the stub's `connect` command), tries a TCP
/// connection to each address; returns whether each opened.
pub fn connects_from(name: &str, addresses: &[String]) -> Vec<(String, bool)> {
    let mut args = vec!["exec", name, "/stub-runtime", "connect"];
    args.extend(addresses.iter().map(String::as_str));
    let out = docker(&args).expect("docker exec runs the stub's connect command");
    eprintln!("from {name}:\n{out}");
    addresses
        .iter()
        .map(|a| {
            let open = out.lines().any(|l| l == format!("{a} open"));
            (a.clone(), open)
        })
        .collect()
}

/// From inside the runtime container `name` (the stub's `ask` command), asks each address
/// for `/health`; returns which runtime answered (its hostname), if one did. Stronger than
/// [`connects_from`] where something on the path accepts any connection.
pub fn runtimes_answering_from(name: &str, addresses: &[String]) -> Vec<(String, Option<String>)> {
    let mut args = vec!["exec", name, "/stub-runtime", "ask"];
    args.extend(addresses.iter().map(String::as_str));
    let out = docker(&args).expect("docker exec runs the stub's ask command");
    eprintln!("asked from {name}:\n{out}");
    addresses
        .iter()
        .map(|a| {
            let host = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{a} answered by ")).map(str::to_owned));
            (a.clone(), host)
        })
        .collect()
}

pub fn volume_exists(name: &str) -> bool {
    docker(&["volume", "inspect", name]).is_some()
}

/// Makes sure the shared test network exists (gateways create it on demand; a container
/// joining it at `docker run` needs it first).
pub fn ensure_test_network() {
    // Tests of one binary run in parallel; two creating it at once would make two networks
    // of that name (the test command makes it first; this is for running tests alone).
    static CREATING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = CREATING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if docker(&["network", "inspect", TEST_NETWORK]).is_none() {
        docker(&["network", "create", "--label", "lazygate.test=1", TEST_NETWORK]);
    }
}

/// A test's own label scope: its containers and volumes are removed at start and at drop.
pub struct Scope {
    pub name: String,
}

impl Scope {
    pub fn new(test: &str) -> Scope {
        let scope = Scope {
            name: format!("lgtest-{test}"),
        };
        scope.clean();
        scope
    }

    /// Ids of what a `docker … ls`-style command lists with the scope's label.
    fn labelled(&self, list: &[&str]) -> Vec<String> {
        let filter = format!("label=lazygate.scope={}", self.name);
        let mut args = list.to_vec();
        args.extend(["-q", "--filter", &filter]);
        docker(&args)
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    pub fn containers(&self) -> Vec<String> {
        self.labelled(&["ps", "-a"])
    }

    pub fn volumes(&self) -> Vec<String> {
        self.labelled(&["volume", "ls"])
    }

    /// Networks carrying the scope's label (each runtime's own network).
    pub fn networks(&self) -> Vec<String> {
        self.labelled(&["network", "ls"])
    }

    /// Swarm services carrying the scope's label (the Swarm backend's runtimes).
    pub fn services(&self) -> Vec<String> {
        if docker(&["info", "-f", "{{.Swarm.ControlAvailable}}"]).is_none_or(|a| a.trim() != "true") {
            return Vec::new();
        }
        self.labelled(&["service", "ls"])
    }

    fn clean(&self) {
        let services = self.services();
        if !services.is_empty() {
            let mut args = vec!["service", "rm"];
            args.extend(services.iter().map(String::as_str));
            docker(&args);
        }
        let containers = self.containers();
        if !containers.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(containers.iter().map(String::as_str));
            docker(&args);
        }
        for network in self.networks() {
            // A gateway container of another test may still be attached: take it off first.
            if let Some(attached) = docker(&[
                "network",
                "inspect",
                "-f",
                "{{range .Containers}}{{.Name}} {{end}}",
                &network,
            ]) {
                for container in attached.split_whitespace() {
                    docker(&["network", "disconnect", "-f", &network, container]);
                }
            }
            docker(&["network", "rm", &network]);
        }
        let volumes = self.volumes();
        if !volumes.is_empty() {
            let mut args = vec!["volume", "rm", "-f"];
            args.extend(volumes.iter().map(String::as_str));
            docker(&args);
        }
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        self.clean();
    }
}

/// How to start a gateway: environment on top of the test defaults.
pub struct GatewayConfig {
    pub env: Vec<(String, String)>,
    pub state_dir: Arc<tempfile::TempDir>,
}

impl GatewayConfig {
    /// A gateway on 127.0.0.1:0 with published upstreams, the stub image and `scope`.
    pub fn new(scope: &Scope) -> GatewayConfig {
        let state_dir = Arc::new(tempfile::tempdir().unwrap());
        let env = [
            ("LAZYGATE_LISTEN", "127.0.0.1:0"),
            ("LAZYGATE_ADMIN_LISTEN", "127.0.0.1:0"),
            ("LAZYGATE_UPSTREAM", "published"),
            ("BROWSER_RUNTIME_IMAGE", STUB_IMAGE),
            ("BROWSER_RUNTIME_NETWORK", TEST_NETWORK),
            ("BROWSER_RUNTIME_START_TIMEOUT", "30"),
            ("LAZYGATE_SCOPE", &scope.name),
            ("BROWSER_RUNTIME_STATE_DIR", state_dir.path().to_str().unwrap()),
            ("LAZYGATE_DRAIN_SECONDS", "1"),
            ("LAZYGATE_API_TOKENS", TEST_API_TOKEN),
            ("LAZYGATE_VIEW_SECRET", TEST_VIEW_SECRET),
        ];
        GatewayConfig {
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            state_dir,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Leaves `key` out of the gateway's environment (so the file's value counts).
    pub fn unset(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lazygate"));
        command.arg("serve");
        for key in [
            "LAZYGATE_CONFIG",
            "BROWSER_USE_ISOLATION_MODE",
            "BROWSER_RUNTIME_TTL_SECONDS",
            "BROWSER_VIEW_BASE_URL",
            "BROWSER_VIEW_URL",
            "DOCKER_HOST",
            "LAZYGATE_INSECURE_DEV",
            "LAZYGATE_VIEW_SECRET_PREVIOUS",
            "LAZYGATE_VIEW_SECRET",
            "LAZYGATE_API_TOKENS",
        ] {
            command.env_remove(key);
        }
        command.env("RUST_LOG", "info");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// The gateway process, its log on a pipe.
    fn spawn(&self) -> Child {
        self.command()
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gateway starts")
    }

    /// Runs the gateway to completion (for configurations that must be refused); one still
    /// running after 30 s is killed and reported with no exit status.
    pub fn run_to_exit(&self) -> (Option<i32>, String) {
        let mut child = self.spawn();
        let mut stderr = child.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stderr, &mut text).ok();
            text
        });
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if started.elapsed() > Duration::from_secs(30) {
                child.kill().ok();
                child.wait().ok();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, reader.join().unwrap_or_default())
    }

    /// Starts the gateway and waits for it to listen.
    pub fn start(&self) -> Gateway {
        let mut child = self.spawn();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[gateway] {line}");
                let listening =
                    (line_message(&line) == Some("listening".to_owned())).then(|| line_field(&line, "addr"));
                // Kept before the start is announced, so the test that reads it finds it.
                sink.lock().unwrap().push(line);
                if let Some(addr) = listening {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("gateway printed its address")
            .expect("address in the listening line")
            .parse()
            .unwrap();
        Gateway {
            child,
            addr,
            logs,
            _state_dir: self.state_dir.clone(),
        }
    }
}

/// A log line's message, in either format (text: the words after the target; JSON: the
/// `message` field).
pub fn line_message(line: &str) -> Option<String> {
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        return value["message"].as_str().map(str::to_owned);
    }
    // `<time> <LEVEL> <target>: <message> key=value…`
    let (_, rest) = line.split_once(": ")?;
    let message: Vec<&str> = rest.split_whitespace().take_while(|w| !w.contains('=')).collect();
    Some(message.join(" "))
}

/// A field of a log line, in either format.
pub fn line_field(line: &str, name: &str) -> Option<String> {
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        return match &value[name] {
            serde_json::Value::String(text) => Some(text.clone()),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        };
    }
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix))
        .map(|v| v.trim_matches('"').to_owned())
}

/// `Authorization` value of the tests' agent.
pub fn bearer() -> String {
    format!("Bearer {TEST_API_TOKEN}")
}

/// A running gateway process; killed (SIGKILL) when dropped.
pub struct Gateway {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// The gateway's state directory lives as long as the gateway.
    _state_dir: Arc<tempfile::TempDir>,
}

impl Gateway {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// A URL on the gateway's admin listener (its address is in the log, before `listening`).
    pub fn admin_url(&self, path: &str) -> String {
        let lines = self.log_lines("admin listener ready");
        let addr = lines
            .iter()
            .find_map(|l| line_field(l, "addr"))
            .expect("the admin listener's address in the log");
        format!("http://{addr}{path}")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the gateway gets no chance to clean up.
    pub fn kill(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(mut self) -> Option<i32> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .ok();
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `error.code` of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Which runtime container answered (the stub's hostname header).
    pub fn runtime_host(&self) -> String {
        self.headers
            .get("x-runtime-host")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// Sends one request as an authenticated agent (the tests' bearer token) and reads the whole
/// response (bounded at 60 s so nothing hangs).
pub async fn send(method: Method, url: &str, body: &str) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("authorization", format!("Bearer {TEST_API_TOKEN}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send_request(request).await
}

pub async fn send_request(request: Request<Full<Bytes>>) -> Reply {
    let work = async {
        let response = client().request(request).await.expect("request sent");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body read").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(60), work)
        .await
        .expect("answer within 60 s")
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, "").await
}

pub async fn post(url: &str, body: &str) -> Reply {
    send(Method::POST, url, body).await
}

/// Starts a run that the stub holds open (`…/hold?id=…`) as an authenticated agent; returns
/// once its answer is 200 and its first chunk has arrived, with the rest still to come.
pub async fn start_held_run(url: &str) -> (hyper::body::Incoming, Bytes) {
    let request = Request::get(url)
        .header("authorization", format!("Bearer {TEST_API_TOKEN}"))
        .body(Default::default())
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(!first.is_empty());
    (body, first)
}

/// How many times `owner`'s runtime has booted on its profile (the stub's boot log in the
/// volume), asked through the gateway.
pub async fn boots(gateway: &Gateway, owner: &str) -> usize {
    let boots = get(&gateway.url(&format!("/rpc/{owner}/boots"))).await;
    assert_eq!(boots.status, 200, "{}", boots.text());
    boots.text().lines().count()
}

/// The value of a sample on the gateway's `/metrics` (0 when it has none yet).
pub async fn metric(gateway: &Gateway, sample: &str) -> f64 {
    let text = get(&gateway.admin_url("/metrics")).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Polls `condition` every 20 ms until it holds; panics after `limit` (a hang guard, not a
/// performance threshold). Returns how long it took.
pub async fn eventually(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    started.elapsed()
}

/// [`eventually`] for a condition that must await (an HTTP request, say): polled every 20 ms
/// for at most 30 s.
pub async fn eventually_async(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !condition().await {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out after 30 s waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
