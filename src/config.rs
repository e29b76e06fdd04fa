//! Configuration: one validated [`Settings`], read from TOML and then environment overrides.
//!
//! The raw file maps onto [`RawConfig`] (every key optional, unknown keys refused), the
//! environment is layered on top through an [`Environment`] (the seed's variable names where
//! the seed has one, `LAZYGATE_*` otherwise), and `Settings::try_from(raw)` checks every value.
//! Unlike the seed, an invalid value is never silently replaced by a default: the error names
//! the key and the value, and the binary exits with status 2.
//!
//! (Long because each key is spelled in four places today — raw field, environment overlay,
//! check with its default, setting — plus its tests; defining each key once is the open
//! part of the architecture issue.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

/// How runtimes are shared between owners (the seed's `BROWSER_USE_ISOLATION_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IsolationMode {
    /// One shared browser for everyone, at `BROWSER_URL` / `BROWSER_USE_RPC_URL`.
    Shared,
    /// One runtime per principal (user, session or thread); its profile volume is kept.
    DockerPerPrincipal,
    /// One runtime per task; its profile volume is removed with it.
    DockerPerTask,
}

impl IsolationMode {
    pub fn as_str(self) -> &'static str {
        match self {
            IsolationMode::Shared => "shared",
            IsolationMode::DockerPerPrincipal => "docker-per-principal",
            IsolationMode::DockerPerTask => "docker-per-task",
        }
    }
}

impl FromStr for IsolationMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "shared" => Ok(IsolationMode::Shared),
            "docker-per-principal" => Ok(IsolationMode::DockerPerPrincipal),
            "docker-per-task" => Ok(IsolationMode::DockerPerTask),
            _ => Err("expected shared, docker-per-principal or docker-per-task".into()),
        }
    }
}

/// The container platform runtimes run on (`LAZYGATE_BACKEND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// One Docker engine (`DOCKER_HOST`, else the local socket).
    Docker,
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "docker" => Ok(BackendKind::Docker),
            _ => Err("expected docker (the only backend so far)".into()),
        }
    }
}

/// How the gateway dials a runtime (`LAZYGATE_UPSTREAM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMode {
    /// The gateway shares the runtime network and dials `<container-name>:<port>`.
    Network,
    /// Runtime ports are published on 127.0.0.1 with ephemeral host ports.
    Published,
}

impl FromStr for UpstreamMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "network" => Ok(UpstreamMode::Network),
            "published" => Ok(UpstreamMode::Published),
            _ => Err("expected network or published".into()),
        }
    }
}

/// Where the `cdp_url` and `rpc_url` of an ensure answer point (`LAZYGATE_ANSWER_URLS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerUrls {
    /// Through the gateway, `…/cdp/<owner>` and `…/rpc/<owner>`, at the host the caller used:
    /// the only way in, now that each runtime is alone on its network, and the caller's
    /// traffic holds the runtime.
    Gateway,
    /// The seed's `http://<container>:<port>`: reachable only from the runtime's own network.
    Direct,
}

impl FromStr for AnswerUrls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "gateway" => Ok(AnswerUrls::Gateway),
            "direct" => Ok(AnswerUrls::Direct),
            _ => Err("expected gateway or direct".into()),
        }
    }
}

/// The file as written: every key optional so that defaults live in one place.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub shared: RawShared,
    #[serde(default)]
    pub view: RawView,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub api: RawApi,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub answer_urls: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_runtimes: Option<usize>,
    pub max_concurrent_starts: Option<usize>,
    pub runtime_memory_bytes: Option<u64>,
    pub runtime_cpus: Option<f64>,
    pub runtime_pids: Option<i64>,
    pub max_connections: Option<usize>,
    pub max_headers: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub header_read_timeout_seconds: Option<u64>,
    pub max_rpc_body_bytes: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub upstream_timeout_seconds: Option<u64>,
    pub drain_seconds: Option<u64>,
    pub workers: Option<usize>,
    pub trusted_proxies: Option<Vec<String>>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub backend: Option<String>,
    pub isolation_mode: Option<String>,
    pub image: Option<String>,
    pub network: Option<String>,
    pub ttl_seconds: Option<u64>,
    pub start_timeout_seconds: Option<u64>,
    pub enable_ui: Option<bool>,
    pub upstream: Option<String>,
    pub view_port: Option<u16>,
    pub rpc_port: Option<u16>,
    pub cdp_port: Option<u16>,
    pub shm_size_bytes: Option<u64>,
    pub state_dir: Option<String>,
    pub scope: Option<String>,
    pub subnet_pool: Option<String>,
    pub subnet_prefix: Option<u8>,
    pub gateway_container: Option<String>,
    pub fence_image: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    pub cdp_url: Option<String>,
    pub rpc_url: Option<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub api_tokens: Option<Vec<String>>,
    pub view_secret: Option<String>,
    pub view_secret_previous: Option<String>,
    pub view_token_ttl_seconds: Option<u64>,
    pub allowed_origins: Option<Vec<String>>,
    pub insecure_dev: Option<bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawView {
    pub base_url: Option<String>,
    pub tunnel_container: Option<String>,
}

/// The validated configuration the gateway runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// Longest wait for a runtime's response head before answering 504.
    pub upstream_timeout: Duration,
    /// How long open connections may finish after shutdown is asked for.
    pub drain: Duration,
    /// Threads serving connections, each with its own event loop (one per core by default):
    /// a connection and its upstream stay on one thread, with no cross-thread wake-ups.
    pub workers: usize,
    /// The container platform runtimes run on.
    pub backend: BackendKind,
    pub isolation_mode: IsolationMode,
    pub image: String,
    /// Prefix of each runtime's own network, `<network>-<owner_hash>` (the seed's one flat
    /// network let runtimes reach each other).
    pub network: String,
    /// Addresses the runtimes' own networks are carved from, one `/subnet_prefix` each.
    pub subnet_pool: ipnet::Ipv4Net,
    pub subnet_prefix: u8,
    /// The container the gateway runs in (network mode joins it to each runtime's network);
    /// `None`: found from the hostname.
    pub gateway_container: Option<String>,
    /// Image of the helper that fences each runtime off inside its own network namespace
    /// (needs iproute2's `ip`); `None`: the gateway's own image, or `lazygate:latest`.
    pub fence_image: Option<String>,
    /// Idle time after which a runtime without holds is removed.
    pub ttl: Duration,
    /// Longest wait for a runtime to be created and answer `/health`.
    pub start_timeout: Duration,
    pub enable_ui: bool,
    pub upstream: UpstreamMode,
    pub view_port: u16,
    pub rpc_port: u16,
    pub cdp_port: u16,
    pub shm_size_bytes: u64,
    /// Where the seed's registry file `docker_runtimes.json` lives.
    pub state_dir: PathBuf,
    /// When set, an extra label `lazygate.scope=<scope>` on everything created, and only
    /// runtimes with it are adopted: keeps several gateways on one engine apart.
    pub scope: Option<String>,
    pub shared_cdp_url: String,
    pub shared_rpc_url: String,
    /// Explicit public base URL of the views (BROWSER_VIEW_BASE_URL / BROWSER_VIEW_URL).
    pub view_base_url: Option<String>,
    /// Container whose logs announce the tunnel's public URL when no base URL is set.
    pub tunnel_container: String,
    /// The gateway's MODEL_DEFAULT / OPENAI_API_KEY / OPENAI_BASE_URL, passed to runtimes.
    pub passthrough_env: Vec<(String, String)>,
    /// Peers (the tunnel) whose X-Forwarded-* headers are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// PEM certificate chain and private key: the listener speaks HTTPS when set.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub auth: AuthSettings,
    pub limits: Limits,
    /// Where ensure answers send callers for CDP and runs.
    pub answer_urls: AnswerUrls,
}

/// What keeps the host alive: caps on runtimes and starts, per-runtime resources, and
/// per-request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Runtimes at once; at the cap the least recently used one without holds makes room.
    pub max_runtimes: usize,
    /// Runtimes starting at once (starting is the expensive part).
    pub max_concurrent_starts: usize,
    pub runtime_memory_bytes: u64,
    pub runtime_cpus: f64,
    pub runtime_pids: i64,
    /// Client connections at once; past it a connection gets 503 and is closed.
    pub max_connections: usize,
    pub max_headers: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Time a client gets to send its request head (slow senders are cut off).
    pub header_read_timeout: Duration,
    /// Largest request body on /rpc (413 beyond it).
    pub max_rpc_body_bytes: u64,
}

/// Who may reach runtimes; see [`crate::auth`].
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// Bearer tokens accepted on /rpc, /cdp and /api; empty: generated at start.
    pub api_tokens: Vec<String>,
    /// Signs view URLs; `None`: generated at start.
    pub view_secret: Option<String>,
    /// The secret before the last rotation, still accepted so open views keep working.
    pub view_secret_previous: Option<String>,
    /// Lifetime of the view URLs the gateway hands out.
    pub view_token_ttl: Duration,
    /// Origins, besides the gateway's own, allowed to open WebSockets.
    pub allowed_origins: Vec<String>,
    /// Auth off, for local development only.
    pub insecure_dev: bool,
}

impl std::fmt::Debug for AuthSettings {
    // Secrets never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("api_tokens", &format_args!("[{} redacted]", self.api_tokens.len()))
            .field("view_secret", &self.view_secret.as_ref().map(|_| "redacted"))
            .field(
                "view_secret_previous",
                &self.view_secret_previous.as_ref().map(|_| "redacted"),
            )
            .field("view_token_ttl", &self.view_token_ttl)
            .field("allowed_origins", &self.allowed_origins)
            .field("insecure_dev", &self.insecure_dev)
            .finish()
    }
}

/// Variables passed from the gateway's environment to every runtime, as in the seed.
pub const PASSTHROUGH_ENV: [&str; 3] = ["MODEL_DEFAULT", "OPENAI_API_KEY", "OPENAI_BASE_URL"];

impl Settings {
    pub fn registry_path(&self) -> PathBuf {
        self.state_dir.join("docker_runtimes.json")
    }

    /// How often the reaper looks for idle runtimes: a tenth of the TTL, at most a second,
    /// so a runtime goes within TTL × 1.1 + 1 s.
    pub fn reap_interval(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// Reads the file (when given) and the environment, and validates the result.
    pub fn load(path: Option<&Path>, env: &dyn Environment) -> Result<Settings, ConfigError> {
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| env.var("LAZYGATE_CONFIG").map(PathBuf::from));
        let mut raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<RawConfig>(&text).map_err(|e| ConfigError::Parse {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            None => RawConfig::default(),
        };
        raw.apply_env(env)?;
        let mut settings = Settings::try_from(raw)?;
        settings.passthrough_env = PASSTHROUGH_ENV
            .iter()
            .filter_map(|key| env.var(key).map(|value| (key.to_string(), value)))
            .collect();
        Ok(settings)
    }
}

/// A configuration problem; the gateway refuses to start with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {key}: {reason}")]
    Invalid { key: String, value: String, reason: String },
}

/// Where environment overrides come from: the process environment, or a map in tests.
pub trait Environment {
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment. Empty variables count as unset, as in the seed.
pub struct ProcessEnv;

impl Environment for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Environment for [(&str, &str); N] {
    fn var(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.trim().is_empty())
    }
}

fn invalid(key: &str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_env<T: FromStr>(env: &dyn Environment, key: &str, reason: &str) -> Result<Option<T>, ConfigError> {
    match env.var(key) {
        None => Ok(None),
        Some(value) => value
            .trim()
            .parse::<T>()
            .map(Some)
            .map_err(|_| invalid(key, value, reason)),
    }
}

fn parse_bool_env(env: &dyn Environment, key: &str) -> Result<Option<bool>, ConfigError> {
    match env.var(key) {
        None => Ok(None),
        Some(value) => match value.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(Some(true)),
            "0" | "false" | "no" | "off" => Ok(Some(false)),
            _ => Err(invalid(key, value, "expected true/false, yes/no, on/off or 1/0")),
        },
    }
}

/// A comma-separated list, blanks dropped.
fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

impl RawConfig {
    /// Layers environment variables over the file's values.
    pub fn apply_env(&mut self, env: &dyn Environment) -> Result<(), ConfigError> {
        const SECONDS: &str = "expected a whole number of seconds";
        const PORT: &str = "expected a port number";
        let s = &mut self.server;
        set(&mut s.listen, env.var("LAZYGATE_LISTEN"));
        set(
            &mut s.upstream_timeout_seconds,
            parse_env(env, "LAZYGATE_UPSTREAM_TIMEOUT_SECONDS", SECONDS)?,
        );
        set(&mut s.drain_seconds, parse_env(env, "LAZYGATE_DRAIN_SECONDS", SECONDS)?);
        set(
            &mut s.workers,
            parse_env(env, "LAZYGATE_WORKERS", "expected a whole number (0: one per core)")?,
        );
        set(
            &mut s.trusted_proxies,
            env.var("LAZYGATE_TRUSTED_PROXIES").map(|v| split_list(&v)),
        );
        set(&mut s.tls_cert, env.var("LAZYGATE_TLS_CERT"));
        set(&mut s.tls_key, env.var("LAZYGATE_TLS_KEY"));
        let a = &mut self.auth;
        set(
            &mut a.api_tokens,
            env.var("LAZYGATE_API_TOKENS").map(|v| split_list(&v)),
        );
        set(&mut a.view_secret, env.var("LAZYGATE_VIEW_SECRET"));
        set(&mut a.view_secret_previous, env.var("LAZYGATE_VIEW_SECRET_PREVIOUS"));
        set(
            &mut a.view_token_ttl_seconds,
            parse_env(env, "LAZYGATE_VIEW_TOKEN_TTL_SECONDS", SECONDS)?,
        );
        set(
            &mut a.allowed_origins,
            env.var("LAZYGATE_ALLOWED_ORIGINS").map(|v| split_list(&v)),
        );
        set(&mut a.insecure_dev, parse_bool_env(env, "LAZYGATE_INSECURE_DEV")?);
        const COUNT: &str = "expected a whole number";
        let l = &mut self.limits;
        set(&mut l.max_runtimes, parse_env(env, "LAZYGATE_MAX_RUNTIMES", COUNT)?);
        set(
            &mut l.max_concurrent_starts,
            parse_env(env, "LAZYGATE_MAX_CONCURRENT_STARTS", COUNT)?,
        );
        set(
            &mut l.runtime_memory_bytes,
            parse_env(env, "LAZYGATE_RUNTIME_MEMORY_BYTES", COUNT)?,
        );
        set(
            &mut l.runtime_cpus,
            parse_env(env, "LAZYGATE_RUNTIME_CPUS", "expected a number of CPUs")?,
        );
        set(&mut l.runtime_pids, parse_env(env, "LAZYGATE_RUNTIME_PIDS", COUNT)?);
        set(
            &mut l.max_connections,
            parse_env(env, "LAZYGATE_MAX_CONNECTIONS", COUNT)?,
        );
        set(&mut l.max_headers, parse_env(env, "LAZYGATE_MAX_HEADERS", COUNT)?);
        set(
            &mut l.max_header_bytes,
            parse_env(env, "LAZYGATE_MAX_HEADER_BYTES", COUNT)?,
        );
        set(
            &mut l.header_read_timeout_seconds,
            parse_env(env, "LAZYGATE_HEADER_READ_TIMEOUT_SECONDS", SECONDS)?,
        );
        set(
            &mut l.max_rpc_body_bytes,
            parse_env(env, "LAZYGATE_MAX_RPC_BODY_BYTES", COUNT)?,
        );
        let r = &mut self.runtime;
        set(&mut r.backend, env.var("LAZYGATE_BACKEND"));
        set(&mut r.isolation_mode, env.var("BROWSER_USE_ISOLATION_MODE"));
        set(&mut r.image, env.var("BROWSER_RUNTIME_IMAGE"));
        set(&mut r.network, env.var("BROWSER_RUNTIME_NETWORK"));
        set(
            &mut r.ttl_seconds,
            parse_env(env, "BROWSER_RUNTIME_TTL_SECONDS", SECONDS)?,
        );
        set(
            &mut r.start_timeout_seconds,
            parse_env(env, "BROWSER_RUNTIME_START_TIMEOUT", SECONDS)?,
        );
        set(&mut r.enable_ui, parse_bool_env(env, "BROWSER_RUNTIME_ENABLE_UI")?);
        set(&mut r.upstream, env.var("LAZYGATE_UPSTREAM"));
        set(&mut r.view_port, parse_env(env, "LAZYGATE_VIEW_PORT", PORT)?);
        set(&mut r.rpc_port, parse_env(env, "LAZYGATE_RPC_PORT", PORT)?);
        set(&mut r.cdp_port, parse_env(env, "LAZYGATE_CDP_PORT", PORT)?);
        set(
            &mut r.shm_size_bytes,
            parse_env(env, "LAZYGATE_SHM_SIZE_BYTES", "expected a number of bytes")?,
        );
        set(&mut r.state_dir, env.var("BROWSER_RUNTIME_STATE_DIR"));
        set(&mut r.scope, env.var("LAZYGATE_SCOPE"));
        set(&mut r.subnet_pool, env.var("LAZYGATE_SUBNET_POOL"));
        set(
            &mut r.subnet_prefix,
            parse_env(env, "LAZYGATE_SUBNET_PREFIX", "expected a prefix length")?,
        );
        set(&mut r.gateway_container, env.var("LAZYGATE_GATEWAY_CONTAINER"));
        set(&mut r.fence_image, env.var("LAZYGATE_FENCE_IMAGE"));
        set(&mut self.shared.cdp_url, env.var("BROWSER_URL"));
        set(&mut self.shared.rpc_url, env.var("BROWSER_USE_RPC_URL"));
        // The seed reads BROWSER_VIEW_BASE_URL first, then BROWSER_VIEW_URL.
        set(
            &mut self.view.base_url,
            env.var("BROWSER_VIEW_BASE_URL").or_else(|| env.var("BROWSER_VIEW_URL")),
        );
        set(&mut self.view.tunnel_container, env.var("LAZYGATE_TUNNEL_CONTAINER"));
        set(&mut self.api.answer_urls, env.var("LAZYGATE_ANSWER_URLS"));
        Ok(())
    }
}

fn seconds(key: &str, value: Option<u64>, default: u64, min: u64) -> Result<Duration, ConfigError> {
    let value = value.unwrap_or(default);
    if value < min {
        return Err(invalid(key, value, format!("must be at least {min}")));
    }
    Ok(Duration::from_secs(value))
}

fn port(key: &str, value: Option<u16>, default: u16) -> Result<u16, ConfigError> {
    match value.unwrap_or(default) {
        0 => Err(invalid(key, 0, "port 0 cannot be dialled")),
        p => Ok(p),
    }
}

fn http_url(key: &str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned()).trim().to_owned();
    match value.parse::<http::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.authority().is_some() => Ok(value),
        _ => Err(invalid(key, value, "expected an http:// URL with a host")),
    }
}

fn non_empty(key: &str, value: Option<String>, default: &str) -> Result<String, ConfigError> {
    let value = value.unwrap_or_else(|| default.to_owned()).trim().to_owned();
    if value.is_empty() {
        return Err(invalid(key, value, "must not be empty"));
    }
    Ok(value)
}

/// Docker names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn docker_name(key: &str, value: String) -> Result<String, ConfigError> {
    let ok = value.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(value)
    } else {
        Err(invalid(
            key,
            value,
            "expected a Docker name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)",
        ))
    }
}

/// The seed's `_normalize_browser_view_base_url`: cut at `/vnc.html` or `/index.html`, drop
/// trailing slashes.
pub fn normalize_view_base_url(raw: &str) -> String {
    let mut url = raw.trim();
    for marker in ["/vnc.html", "/index.html"] {
        if let Some(i) = url.find(marker) {
            url = &url[..i];
            break;
        }
    }
    url.trim_end_matches('/').to_owned()
}

impl TryFrom<RawConfig> for Settings {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Settings, ConfigError> {
        let RawConfig {
            server,
            runtime,
            shared,
            view,
            auth,
            limits,
            api,
        } = raw;
        let answer_urls = match api.answer_urls {
            None => AnswerUrls::Gateway,
            Some(v) => v
                .parse()
                .map_err(|reason| invalid("api.answer_urls (LAZYGATE_ANSWER_URLS)", &v, reason))?,
        };
        let at_least = |key: &str, value: Option<u64>, default: u64, min: u64| -> Result<u64, ConfigError> {
            let value = value.unwrap_or(default);
            if value < min {
                return Err(invalid(key, value, format!("must be at least {min}")));
            }
            Ok(value)
        };
        let cpus = limits.runtime_cpus.unwrap_or(2.0);
        if !(cpus.is_finite() && cpus >= 0.1) {
            return Err(invalid(
                "limits.runtime_cpus (LAZYGATE_RUNTIME_CPUS)",
                cpus,
                "must be at least 0.1",
            ));
        }
        let count = |v: Option<usize>| v.map(|v| v as u64);
        let limits = Limits {
            max_runtimes: at_least(
                "limits.max_runtimes (LAZYGATE_MAX_RUNTIMES)",
                count(limits.max_runtimes),
                20,
                1,
            )? as usize,
            max_concurrent_starts: at_least(
                "limits.max_concurrent_starts (LAZYGATE_MAX_CONCURRENT_STARTS)",
                count(limits.max_concurrent_starts),
                4,
                1,
            )? as usize,
            runtime_memory_bytes: at_least(
                "limits.runtime_memory_bytes (LAZYGATE_RUNTIME_MEMORY_BYTES)",
                limits.runtime_memory_bytes,
                4 * 1024 * 1024 * 1024,
                64 * 1024 * 1024,
            )?,
            runtime_cpus: cpus,
            runtime_pids: at_least(
                "limits.runtime_pids (LAZYGATE_RUNTIME_PIDS)",
                limits.runtime_pids.map(|v| v.max(0) as u64),
                2048,
                64,
            )? as i64,
            max_connections: at_least(
                "limits.max_connections (LAZYGATE_MAX_CONNECTIONS)",
                count(limits.max_connections),
                4096,
                1,
            )? as usize,
            max_headers: at_least(
                "limits.max_headers (LAZYGATE_MAX_HEADERS)",
                count(limits.max_headers),
                100,
                8,
            )? as usize,
            max_header_bytes: at_least(
                "limits.max_header_bytes (LAZYGATE_MAX_HEADER_BYTES)",
                count(limits.max_header_bytes),
                64 * 1024,
                8192,
            )? as usize,
            header_read_timeout: seconds(
                "limits.header_read_timeout_seconds (LAZYGATE_HEADER_READ_TIMEOUT_SECONDS)",
                limits.header_read_timeout_seconds,
                10,
                1,
            )?,
            max_rpc_body_bytes: at_least(
                "limits.max_rpc_body_bytes (LAZYGATE_MAX_RPC_BODY_BYTES)",
                limits.max_rpc_body_bytes,
                16 * 1024 * 1024,
                1024,
            )?,
        };
        let tls = match (
            server.tls_cert.clone().filter(|v| !v.trim().is_empty()),
            server.tls_key.clone().filter(|v| !v.trim().is_empty()),
        ) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some((PathBuf::from(cert.trim()), PathBuf::from(key.trim()))),
            (Some(cert), None) => {
                return Err(invalid(
                    "server.tls_key (LAZYGATE_TLS_KEY)",
                    "",
                    format!("needed with the certificate {cert}"),
                ));
            }
            (None, Some(key)) => {
                return Err(invalid(
                    "server.tls_cert (LAZYGATE_TLS_CERT)",
                    "",
                    format!("needed with the key {key}"),
                ));
            }
        };
        let trusted_proxies = server
            .trusted_proxies
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|ip| {
                ip.trim().parse::<std::net::IpAddr>().map_err(|_| {
                    invalid(
                        "server.trusted_proxies (LAZYGATE_TRUSTED_PROXIES)",
                        ip,
                        "expected IP addresses",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let api_tokens = auth.api_tokens.unwrap_or_default();
        if let Some(short) = api_tokens.iter().find(|t| t.len() < 16) {
            return Err(invalid(
                "auth.api_tokens (LAZYGATE_API_TOKENS)",
                format!("{}…", short.chars().take(3).collect::<String>()),
                "every token must be at least 16 characters",
            ));
        }
        let secret = |key: &str, value: Option<String>| -> Result<Option<String>, ConfigError> {
            match value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty()) {
                Some(v) if v.len() < 32 => Err(invalid(key, "(redacted)", "must be at least 32 characters")),
                other => Ok(other),
            }
        };
        let auth = AuthSettings {
            api_tokens,
            view_secret: secret("auth.view_secret (LAZYGATE_VIEW_SECRET)", auth.view_secret)?,
            view_secret_previous: secret(
                "auth.view_secret_previous (LAZYGATE_VIEW_SECRET_PREVIOUS)",
                auth.view_secret_previous,
            )?,
            view_token_ttl: seconds(
                "auth.view_token_ttl_seconds (LAZYGATE_VIEW_TOKEN_TTL_SECONDS)",
                auth.view_token_ttl_seconds,
                12 * 3600,
                1,
            )?,
            allowed_origins: auth.allowed_origins.unwrap_or_default(),
            insecure_dev: auth.insecure_dev.unwrap_or(false),
        };
        let listen_text = server.listen.unwrap_or_else(|| "0.0.0.0:8080".to_owned());
        let listen = listen_text
            .trim()
            .parse::<SocketAddr>()
            .map_err(|_| invalid("server.listen (LAZYGATE_LISTEN)", &listen_text, "expected IP:PORT"))?;
        let isolation_mode = match runtime.isolation_mode {
            None => IsolationMode::DockerPerPrincipal,
            Some(v) => v
                .parse()
                .map_err(|reason| invalid("runtime.isolation_mode (BROWSER_USE_ISOLATION_MODE)", &v, reason))?,
        };
        let backend = match runtime.backend {
            None => BackendKind::Docker,
            Some(v) => v
                .parse()
                .map_err(|reason| invalid("runtime.backend (LAZYGATE_BACKEND)", &v, reason))?,
        };
        let upstream = match runtime.upstream {
            None => UpstreamMode::Network,
            Some(v) => v
                .parse()
                .map_err(|reason| invalid("runtime.upstream (LAZYGATE_UPSTREAM)", &v, reason))?,
        };
        let image = non_empty(
            "runtime.image (BROWSER_RUNTIME_IMAGE)",
            runtime.image,
            "browser-use-browser-runtime:latest",
        )?;
        if image.chars().any(char::is_whitespace) {
            return Err(invalid(
                "runtime.image (BROWSER_RUNTIME_IMAGE)",
                image,
                "must not contain spaces",
            ));
        }
        let network = docker_name(
            "runtime.network (BROWSER_RUNTIME_NETWORK)",
            non_empty(
                "runtime.network (BROWSER_RUNTIME_NETWORK)",
                runtime.network,
                "browser-net",
            )?,
        )?;
        let scope = match runtime.scope.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(docker_name("runtime.scope (LAZYGATE_SCOPE)", s)?),
        };
        const POOL_KEY: &str = "runtime.subnet_pool (LAZYGATE_SUBNET_POOL)";
        let pool_text = runtime.subnet_pool.unwrap_or_else(|| "10.213.0.0/16".to_owned());
        let subnet_pool = pool_text
            .trim()
            .parse::<ipnet::Ipv4Net>()
            .map_err(|_| invalid(POOL_KEY, &pool_text, "expected an IPv4 network such as 10.213.0.0/16"))?;
        if subnet_pool != subnet_pool.trunc() {
            return Err(invalid(
                POOL_KEY,
                &pool_text,
                format!("host bits are set; did you mean {}?", subnet_pool.trunc()),
            ));
        }
        let subnet_prefix = runtime.subnet_prefix.unwrap_or(28);
        if !(subnet_pool.prefix_len()..=29).contains(&subnet_prefix) {
            return Err(invalid(
                "runtime.subnet_prefix (LAZYGATE_SUBNET_PREFIX)",
                subnet_prefix,
                format!(
                    "must be between the pool's /{} and /29 (a runtime's network holds the runtime and the gateway)",
                    subnet_pool.prefix_len()
                ),
            ));
        }
        let gateway_container = match runtime
            .gateway_container
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(name) => Some(docker_name(
                "runtime.gateway_container (LAZYGATE_GATEWAY_CONTAINER)",
                name,
            )?),
        };
        let fence_image = runtime
            .fence_image
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if let Some(fence_image) = fence_image.as_ref().filter(|i| i.chars().any(char::is_whitespace)) {
            return Err(invalid(
                "runtime.fence_image (LAZYGATE_FENCE_IMAGE)",
                fence_image,
                "an image reference has no spaces",
            ));
        }
        let shm_size_bytes = runtime.shm_size_bytes.unwrap_or(2 * 1024 * 1024 * 1024);
        if shm_size_bytes < 1024 * 1024 {
            return Err(invalid(
                "runtime.shm_size_bytes (LAZYGATE_SHM_SIZE_BYTES)",
                shm_size_bytes,
                "must be at least 1 MiB",
            ));
        }
        let view_base_url = view
            .base_url
            .map(|u| normalize_view_base_url(&u))
            .filter(|u| !u.is_empty());
        if let Some(url) = &view_base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "view.base_url (BROWSER_VIEW_BASE_URL / BROWSER_VIEW_URL)",
                url,
                "expected an http:// or https:// URL",
            ));
        }
        Ok(Settings {
            listen,
            upstream_timeout: seconds(
                "server.upstream_timeout_seconds (LAZYGATE_UPSTREAM_TIMEOUT_SECONDS)",
                server.upstream_timeout_seconds,
                300,
                1,
            )?,
            drain: seconds(
                "server.drain_seconds (LAZYGATE_DRAIN_SECONDS)",
                server.drain_seconds,
                10,
                0,
            )?,
            workers: match server.workers.unwrap_or(0) {
                0 => std::thread::available_parallelism().map_or(1, usize::from),
                n if n > 1024 => return Err(invalid("server.workers (LAZYGATE_WORKERS)", n, "must be at most 1024")),
                n => n,
            },
            backend,
            isolation_mode,
            image,
            network,
            subnet_pool,
            subnet_prefix,
            gateway_container,
            fence_image,
            ttl: seconds(
                "runtime.ttl_seconds (BROWSER_RUNTIME_TTL_SECONDS)",
                runtime.ttl_seconds,
                900,
                1,
            )?,
            start_timeout: seconds(
                "runtime.start_timeout_seconds (BROWSER_RUNTIME_START_TIMEOUT)",
                runtime.start_timeout_seconds,
                45,
                1,
            )?,
            enable_ui: runtime.enable_ui.unwrap_or(true),
            upstream,
            view_port: port("runtime.view_port (LAZYGATE_VIEW_PORT)", runtime.view_port, 6080)?,
            rpc_port: port("runtime.rpc_port (LAZYGATE_RPC_PORT)", runtime.rpc_port, 8787)?,
            cdp_port: port("runtime.cdp_port (LAZYGATE_CDP_PORT)", runtime.cdp_port, 9222)?,
            shm_size_bytes,
            state_dir: PathBuf::from(non_empty(
                "runtime.state_dir (BROWSER_RUNTIME_STATE_DIR)",
                runtime.state_dir,
                "/tmp/browser-use-api",
            )?),
            scope,
            shared_cdp_url: http_url("shared.cdp_url (BROWSER_URL)", shared.cdp_url, "http://browser:9222")?,
            shared_rpc_url: http_url(
                "shared.rpc_url (BROWSER_USE_RPC_URL)",
                shared.rpc_url,
                "http://browser:8787/run",
            )?,
            view_base_url,
            tunnel_container: docker_name(
                "view.tunnel_container (LAZYGATE_TUNNEL_CONTAINER)",
                non_empty(
                    "view.tunnel_container (LAZYGATE_TUNNEL_CONTAINER)",
                    view.tunnel_container,
                    "browser-use-tunnel",
                )?,
            )?,
            passthrough_env: Vec::new(),
            trusted_proxies,
            tls,
            auth,
            limits,
            answer_urls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml_text: &str, env: &dyn Environment) -> Result<Settings, ConfigError> {
        let mut raw: RawConfig = toml::from_str(toml_text).map_err(|e| ConfigError::Parse {
            path: "test.toml".into(),
            message: e.to_string(),
        })?;
        raw.apply_env(env)?;
        Settings::try_from(raw)
    }

    #[test]
    fn defaults_match_the_seed() {
        let s = load("", &[]).unwrap();
        assert_eq!(s.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(s.image, "browser-use-browser-runtime:latest");
        assert_eq!(s.network, "browser-net");
        assert_eq!(s.ttl, Duration::from_secs(900));
        assert_eq!(s.start_timeout, Duration::from_secs(45));
        assert!(s.enable_ui);
        assert_eq!(s.upstream, UpstreamMode::Network);
        assert_eq!((s.view_port, s.rpc_port, s.cdp_port), (6080, 8787, 9222));
        assert_eq!(
            s.registry_path(),
            PathBuf::from("/tmp/browser-use-api/docker_runtimes.json")
        );
        assert_eq!(s.shared_rpc_url, "http://browser:8787/run");
        assert_eq!(s.view_base_url, None);
    }

    #[test]
    fn workers_default_to_one_per_core_and_are_bounded() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(load("", &[]).unwrap().workers, cores);
        assert_eq!(load("[server]\nworkers = 3", &[]).unwrap().workers, 3);
        assert_eq!(load("", &[("LAZYGATE_WORKERS", "1")]).unwrap().workers, 1);
        let error = load("", &[("LAZYGATE_WORKERS", "5000")]).unwrap_err().to_string();
        assert!(error.contains("LAZYGATE_WORKERS") && error.contains("5000"), "{error}");
        assert!(load("", &[("LAZYGATE_WORKERS", "many")]).is_err());
    }

    #[test]
    fn the_shipped_file_parses_to_the_defaults() {
        let text = include_str!("../config/lazygate.toml");
        let s = load(text, &[]).unwrap();
        let d = load("", &[]).unwrap();
        assert_eq!(format!("{s:?}"), format!("{d:?}"));
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = [
            ("BROWSER_USE_ISOLATION_MODE", "docker-per-task"),
            ("BROWSER_RUNTIME_TTL_SECONDS", "5"),
            ("BROWSER_RUNTIME_ENABLE_UI", "off"),
            ("LAZYGATE_UPSTREAM", "published"),
            ("LAZYGATE_LISTEN", "127.0.0.1:0"),
            ("BROWSER_VIEW_URL", "https://x.example/vnc.html?path=websockify"),
            ("BROWSER_RUNTIME_IMAGE", ""),
        ];
        let s = load("[runtime]\nttl_seconds = 60\nimage = \"img:1\"\n", &env).unwrap();
        assert_eq!(s.isolation_mode, IsolationMode::DockerPerTask);
        assert_eq!(s.ttl, Duration::from_secs(5));
        assert!(!s.enable_ui);
        assert_eq!(s.upstream, UpstreamMode::Published);
        assert_eq!(s.image, "img:1", "an empty variable counts as unset");
        assert_eq!(s.view_base_url.as_deref(), Some("https://x.example"));
    }

    #[test]
    fn invalid_values_name_the_key() {
        type Case<'a> = (&'a str, [(&'a str, &'a str); 1], &'a str);
        let cases: Vec<Case> = vec![
            (
                "",
                [("BROWSER_RUNTIME_TTL_SECONDS", "abc")],
                "BROWSER_RUNTIME_TTL_SECONDS",
            ),
            (
                "",
                [("BROWSER_RUNTIME_TTL_SECONDS", "0")],
                "BROWSER_RUNTIME_TTL_SECONDS",
            ),
            (
                "",
                [("BROWSER_USE_ISOLATION_MODE", "docker")],
                "BROWSER_USE_ISOLATION_MODE",
            ),
            (
                "",
                [("BROWSER_RUNTIME_ENABLE_UI", "maybe")],
                "BROWSER_RUNTIME_ENABLE_UI",
            ),
            ("", [("LAZYGATE_UPSTREAM", "carrier-pigeon")], "LAZYGATE_UPSTREAM"),
            ("", [("LAZYGATE_LISTEN", "8080")], "LAZYGATE_LISTEN"),
            ("", [("LAZYGATE_VIEW_PORT", "70000")], "LAZYGATE_VIEW_PORT"),
            ("", [("LAZYGATE_RPC_PORT", "0")], "LAZYGATE_RPC_PORT"),
            ("", [("BROWSER_URL", "browser:9222")], "BROWSER_URL"),
            (
                "",
                [("BROWSER_RUNTIME_NETWORK", "no spaces")],
                "BROWSER_RUNTIME_NETWORK",
            ),
            ("[runtime]\nttl_seconds = 0\n", [("X", "")], "runtime.ttl_seconds"),
            ("", [("LAZYGATE_SUBNET_POOL", "10.213.0.0")], "LAZYGATE_SUBNET_POOL"),
            ("", [("LAZYGATE_SUBNET_POOL", "10.213.0.1/16")], "LAZYGATE_SUBNET_POOL"),
            ("", [("LAZYGATE_SUBNET_PREFIX", "30")], "LAZYGATE_SUBNET_PREFIX"),
            ("", [("LAZYGATE_ANSWER_URLS", "sideways")], "LAZYGATE_ANSWER_URLS"),
            ("", [("LAZYGATE_BACKEND", "podman")], "LAZYGATE_BACKEND"),
            (
                "[runtime]\nsubnet_pool = \"10.213.0.0/24\"\n",
                [("LAZYGATE_SUBNET_PREFIX", "20")],
                "LAZYGATE_SUBNET_PREFIX",
            ),
        ];
        for (file, env, key) in cases {
            let err = load(file, &env).unwrap_err().to_string();
            assert!(err.contains(key), "{err} should name {key}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = load("[runtime]\nttl = 5\n", &[]).unwrap_err().to_string();
        assert!(err.contains("ttl"), "{err}");
    }

    #[test]
    fn view_base_url_is_normalized_like_the_seed() {
        assert_eq!(normalize_view_base_url(" https://a.b/x/vnc.html?p=1 "), "https://a.b/x");
        assert_eq!(normalize_view_base_url("https://a.b/index.html"), "https://a.b");
        assert_eq!(normalize_view_base_url("https://a.b///"), "https://a.b");
    }

    /// The README's configuration table as (key, environment variables, default) rows.
    fn readme_rows() -> Vec<(String, Vec<String>, String)> {
        let readme = include_str!("../README.md");
        let section = &readme[readme.find("## Configuration").unwrap()..readme.find("## Errors").unwrap()];
        let ticked = |cell: &str| -> Vec<String> { cell.split('`').skip(1).step_by(2).map(str::to_owned).collect() };
        let mut rows = Vec::new();
        for line in section.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (keys, envs, default) = (ticked(cells[1]), ticked(cells[2]), cells[3]);
            // `900`, `0` (one per core): the first ticked value; "empty", "generated": none.
            let default = ticked(default).into_iter().next().unwrap_or_default();
            for (i, key) in keys.iter().enumerate() {
                // Rows naming several keys pair them with as many variables, in order.
                let env = if keys.len() > 1 {
                    vec![envs[i].clone()]
                } else {
                    envs.clone()
                };
                rows.push((key.clone(), env, default.clone()));
            }
        }
        rows
    }

    /// The shipped file's keys with their values as text ("" for an empty string or list).
    fn shipped_keys() -> Vec<(String, String)> {
        let table: toml::Table = toml::from_str(include_str!("../config/lazygate.toml")).unwrap();
        let mut keys = Vec::new();
        for (section, values) in &table {
            for (name, value) in values.as_table().unwrap() {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Array(a) if a.is_empty() => String::new(),
                    other => other.to_string(),
                };
                keys.push((format!("{section}.{name}"), text));
            }
        }
        keys
    }

    #[test]
    fn the_readme_table_and_the_shipped_file_list_the_same_keys_and_defaults() {
        let mut readme: Vec<(String, String)> = readme_rows().into_iter().map(|(k, _, d)| (k, d)).collect();
        let mut shipped = shipped_keys();
        readme.sort();
        shipped.sort();
        assert_eq!(
            readme, shipped,
            "README table (left) and config/lazygate.toml (right) differ"
        );
        // Every key also parses, so the file can never list a key the gateway refuses.
        load(include_str!("../config/lazygate.toml"), &[]).unwrap();
    }

    #[test]
    fn every_environment_variable_read_is_in_the_readme_and_does_something() {
        let readme: Vec<String> = readme_rows().into_iter().flat_map(|(_, env, _)| env).collect();
        // The variables this file reads (`env.var("…")` and `parse_env(env, "…", …)`).
        let source = include_str!("config.rs");
        let read: Vec<String> = source
            .split("env.var(\"")
            .skip(1)
            .chain(source.split("parse_env(env, \"").skip(1))
            .chain(source.split("parse_bool_env(env, \"").skip(1))
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .filter(|name| name.chars().all(|c| c.is_ascii_uppercase() || c == '_') && name.len() > 3)
            .filter(|name| !PASSTHROUGH_ENV.contains(&name.as_str()) && name != "LAZYGATE_CONFIG")
            .collect();
        for name in &read {
            assert!(readme.contains(name), "{name} is read but not in the README's table");
        }
        for name in &readme {
            assert!(read.contains(name), "{name} is in the README's table but never read");
            // Setting it to nonsense is noticed (or, for free text, taken), never ignored.
            let env = [(name.as_str(), "\u{1}nonsense")];
            let loaded = load("", &env);
            if let Ok(settings) = loaded {
                assert_ne!(
                    format!("{settings:?}"),
                    format!("{:?}", load("", &[]).unwrap()),
                    "{name} changed nothing"
                );
            }
        }
    }
}
