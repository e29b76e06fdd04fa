//! Every configuration key, defined once: where it sits in the file, the environment
//! variables that set it (the seed's names where the seed has one), its default and what it
//! is for. Loading layers the defaults, the file and the environment into one TOML table,
//! key by key, so that a value of the wrong type or an unknown key is refused naming the key;
//! [`super::RawConfig`] is that table, typed. The README's configuration table and
//! `config/lazygate.toml` are checked against this one by tests.

use toml::{Table, Value};

use super::{ConfigError, Environment, invalid};

/// A key's default (what it falls back to), which is also its type in the file and how its variable is read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fallback {
    /// Free text; `""` where empty means "not set".
    Text(&'static str),
    /// A whole number, 0 or more.
    Whole(u64),
    /// A number with a fraction.
    Number(f64),
    /// true/false (from the environment also yes/no, on/off, 1/0).
    Flag(bool),
    /// A list of strings, empty by default (from the environment: comma-separated).
    List,
}

use Fallback::{Flag, List, Number, Text, Whole};

/// One configuration key.
#[derive(Debug)]
pub struct Key {
    /// `section.name` in the file.
    pub path: &'static str,
    /// Variables that set it, the first one set winning.
    pub env: &'static [&'static str],
    pub default: Fallback,
    /// What it is for, as the README's table says it.
    pub doc: &'static str,
}

impl Key {
    /// How errors name the key: `runtime.ttl_seconds (BROWSER_RUNTIME_TTL_SECONDS)`.
    pub fn label(&self) -> String {
        format!("{} ({})", self.path, self.env.join(" / "))
    }

    fn default_value(&self) -> Value {
        match self.default {
            Text(text) => Value::String(text.to_owned()),
            Whole(n) => Value::Integer(n as i64),
            Number(x) => Value::Float(x),
            Flag(b) => Value::Boolean(b),
            List => Value::Array(Vec::new()),
        }
    }

    /// A value from the file, if it has this key's type (an integer is a fine number).
    fn check(&self, value: Value) -> Result<Value, ConfigError> {
        let refuse = |expected: &str| Err(invalid(&self.label(), shown(&value), expected));
        match (self.default, &value) {
            (Text(_), Value::String(_)) | (Flag(_), Value::Boolean(_)) | (Number(_), Value::Float(_)) => Ok(value),
            (Whole(_), Value::Integer(n)) if *n >= 0 => Ok(value),
            (Number(_), Value::Integer(n)) => Ok(Value::Float(*n as f64)),
            (List, Value::Array(items)) if items.iter().all(Value::is_str) => Ok(value),
            (Text(_), _) => refuse("expected a string"),
            (Whole(_), _) => refuse("expected a whole number, 0 or more (no units: seconds or bytes)"),
            (Number(_), _) => refuse("expected a number"),
            (Flag(_), _) => refuse("expected true or false"),
            (List, _) => refuse("expected a list of strings"),
        }
    }

    /// A value from the environment, read as this key's type.
    fn parse(&self, variable: &str, text: &str) -> Result<Value, ConfigError> {
        let label = format!("{} ({variable})", self.path);
        let trimmed = text.trim();
        match self.default {
            Text(_) => Ok(Value::String(text.to_owned())),
            Whole(_) => trimmed
                .parse::<u64>()
                .ok()
                .and_then(|n| i64::try_from(n).ok())
                .map(Value::Integer)
                .ok_or_else(|| {
                    invalid(
                        &label,
                        text,
                        "expected a whole number, 0 or more (no units: seconds or bytes)",
                    )
                }),
            Number(_) => trimmed
                .parse::<f64>()
                .map(Value::Float)
                .map_err(|_| invalid(&label, text, "expected a number")),
            Flag(_) => match trimmed.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Value::Boolean(true)),
                "0" | "false" | "no" | "off" => Ok(Value::Boolean(false)),
                _ => Err(invalid(&label, text, "expected true/false, yes/no, on/off or 1/0")),
            },
            List => Ok(Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(|v| Value::String(v.to_owned()))
                    .collect(),
            )),
        }
    }
}

/// A file value as an error shows it: strings bare, everything else as TOML.
fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every key the gateway reads, in the order of `config/lazygate.toml`.
pub const KEYS: &[Key] = &[
    Key {
        path: "server.listen",
        env: &["LAZYGATE_LISTEN"],
        default: Text("0.0.0.0:8080"),
        doc: "listen address",
    },
    Key {
        path: "server.admin_listen",
        env: &["LAZYGATE_ADMIN_LISTEN"],
        default: Text("127.0.0.1:9180"),
        doc: "admin listener (`/metrics`, the admin API of `lazygate runtimes`); empty: off. Never expose it through the tunnel",
    },
    Key {
        path: "server.default_upstream",
        env: &["LAZYGATE_DEFAULT_UPSTREAM"],
        default: Text(""),
        doc: "where every other path goes (HTTP and WebSocket, no gateway authorisation added), e.g. the API application at `http://api:8000`; empty: 404",
    },
    Key {
        path: "server.upstream_timeout_seconds",
        env: &["LAZYGATE_UPSTREAM_TIMEOUT_SECONDS"],
        default: Whole(300),
        doc: "wait for a runtime's response head, then 504",
    },
    Key {
        path: "server.drain_seconds",
        env: &["LAZYGATE_DRAIN_SECONDS"],
        default: Whole(10),
        doc: "on SIGTERM, time open requests and WebSockets get to finish",
    },
    Key {
        path: "server.ws_ping_seconds",
        env: &["LAZYGATE_WS_PING_SECONDS"],
        default: Whole(30),
        doc: "ping a view's client after this long without hearing from it (below common tunnels' 100 s idle limit); 0: never",
    },
    Key {
        path: "server.ws_pong_timeout_seconds",
        env: &["LAZYGATE_WS_PONG_TIMEOUT_SECONDS"],
        default: Whole(20),
        doc: "a view's client that answers no ping within this is gone: its tunnel is closed (1001) and its hold released",
    },
    Key {
        path: "server.workers",
        env: &["LAZYGATE_WORKERS"],
        default: Whole(0),
        doc: "threads serving connections, each with its own event loop",
    },
    Key {
        path: "server.trusted_proxies",
        env: &["LAZYGATE_TRUSTED_PROXIES"],
        default: List,
        doc: "peers whose `X-Forwarded-*` headers are believed",
    },
    Key {
        path: "server.tls_cert",
        env: &["LAZYGATE_TLS_CERT"],
        default: Text(""),
        doc: "PEM files: serve HTTPS",
    },
    Key {
        path: "server.tls_key",
        env: &["LAZYGATE_TLS_KEY"],
        default: Text(""),
        doc: "PEM files: serve HTTPS",
    },
    Key {
        path: "runtime.backend",
        env: &["LAZYGATE_BACKEND"],
        default: Text("docker"),
        doc: "the container platform runtimes run on: `docker`, or `swarm` (one service per owner, scaled to zero when idle; see Docker Swarm)",
    },
    Key {
        path: "runtime.isolation_mode",
        env: &["BROWSER_USE_ISOLATION_MODE"],
        default: Text("docker-per-principal"),
        doc: "`shared`, `docker-per-principal` (volume kept) or `docker-per-task` (volume removed with the runtime)",
    },
    Key {
        path: "runtime.image",
        env: &["BROWSER_RUNTIME_IMAGE"],
        default: Text("browser-use-browser-runtime:latest"),
        doc: "runtime image",
    },
    Key {
        path: "runtime.network",
        env: &["BROWSER_RUNTIME_NETWORK"],
        default: Text("browser-net"),
        doc: "each runtime gets a network of its own, `<network>-<owner_hash>` (see Isolation)",
    },
    Key {
        path: "runtime.subnet_pool",
        env: &["LAZYGATE_SUBNET_POOL"],
        default: Text("10.213.0.0/16"),
        doc: "where the runtimes' own networks get their subnets",
    },
    Key {
        path: "runtime.subnet_prefix",
        env: &["LAZYGATE_SUBNET_PREFIX"],
        default: Whole(28),
        doc: "prefix length of each runtime's subnet (from the pool's up to 29)",
    },
    Key {
        path: "runtime.gateway_container",
        env: &["LAZYGATE_GATEWAY_CONTAINER"],
        default: Text(""),
        doc: "network mode: the container the gateway runs in, joined to every runtime's network; empty: the one whose hostname is the gateway's",
    },
    Key {
        path: "runtime.fence_image",
        env: &["LAZYGATE_FENCE_IMAGE"],
        default: Text(""),
        doc: "image of the helper that fences each runtime inside its own network namespace (needs iproute2's `ip`); empty: the gateway's own image in a container, else `lazygate:latest`",
    },
    Key {
        path: "runtime.endpoint_mode",
        env: &["LAZYGATE_ENDPOINT_MODE"],
        default: Text("dnsrr"),
        doc: "Swarm: how a runtime's service name resolves on its network, `dnsrr` (the task's address) or `vip` (needs IPVS in the kernel)",
    },
    Key {
        path: "runtime.volume_driver",
        env: &["LAZYGATE_VOLUME_DRIVER"],
        default: Text(""),
        doc: "Swarm: driver of the profile volumes (e.g. `local` with NFS options), so any node mounts a profile; empty: local volumes, each per-principal runtime pinned to its profile's node",
    },
    Key {
        path: "runtime.volume_options",
        env: &["LAZYGATE_VOLUME_OPTIONS"],
        default: List,
        doc: "Swarm: `key=value` options of the volume driver (e.g. `type=nfs`, `o=addr=10.0.0.5,rw`, `device=:/profiles`)",
    },
    Key {
        path: "runtime.node_socket",
        env: &["LAZYGATE_NODE_SOCKET"],
        default: Text("/var/run/docker.sock"),
        doc: "Swarm: the engine's socket on each node, mounted into the one-shot job that removes a per-task profile volume on a node other than the gateway's",
    },
    Key {
        path: "runtime.warm_pool",
        env: &["LAZYGATE_WARM_POOL"],
        default: Whole(0),
        doc: "runtimes kept started and ready for owners not seen yet, each claimed by a new owner's first request (see Warm pool); counted in `limits.max_runtimes`; 0: off",
    },
    Key {
        path: "runtime.ttl_seconds",
        env: &["BROWSER_RUNTIME_TTL_SECONDS"],
        default: Whole(900),
        doc: "idle time before removal (removed within TTL × 1.1 + 1 s)",
    },
    Key {
        path: "runtime.profile_retention_days",
        env: &["LAZYGATE_PROFILE_RETENTION_DAYS"],
        default: Whole(0),
        doc: "per-principal profile volumes of owners not seen this many days are removed; 0: kept forever",
    },
    Key {
        path: "runtime.start_timeout_seconds",
        env: &["BROWSER_RUNTIME_START_TIMEOUT"],
        default: Whole(45),
        doc: "wait for a runtime to start and answer `/health`, then 503",
    },
    Key {
        path: "runtime.enable_ui",
        env: &["BROWSER_RUNTIME_ENABLE_UI"],
        default: Flag(true),
        doc: "passed to runtimes as `BROWSER_ENABLE_UI`",
    },
    Key {
        path: "runtime.upstream",
        env: &["LAZYGATE_UPSTREAM"],
        default: Text("network"),
        doc: "`network`: the gateway runs in a container, joins each runtime's network and dials the runtime's address there; `published`: it runs on the host and runtime ports are published on 127.0.0.1",
    },
    Key {
        path: "runtime.view_port",
        env: &["LAZYGATE_VIEW_PORT"],
        default: Whole(6080),
        doc: "noVNC/websockify port in the runtime",
    },
    Key {
        path: "runtime.rpc_port",
        env: &["LAZYGATE_RPC_PORT"],
        default: Whole(8787),
        doc: "RPC port in the runtime",
    },
    Key {
        path: "runtime.cdp_port",
        env: &["LAZYGATE_CDP_PORT"],
        default: Whole(9222),
        doc: "CDP port in the runtime",
    },
    Key {
        path: "runtime.shm_size_bytes",
        env: &["LAZYGATE_SHM_SIZE_BYTES"],
        default: Whole(2147483648),
        doc: "`--shm-size` of runtimes",
    },
    Key {
        path: "runtime.state_dir",
        env: &["BROWSER_RUNTIME_STATE_DIR"],
        default: Text("/tmp/browser-use-api"),
        doc: "where the registry `docker_runtimes.json` lives",
    },
    Key {
        path: "runtime.scope",
        env: &["LAZYGATE_SCOPE"],
        default: Text(""),
        doc: "extra label `lazygate.scope=<scope>`; only runtimes with it are adopted (several gateways on one engine)",
    },
    Key {
        path: "shared.cdp_url",
        env: &["BROWSER_URL"],
        default: Text("http://browser:9222"),
        doc: "the shared browser, in shared mode",
    },
    Key {
        path: "shared.rpc_url",
        env: &["BROWSER_USE_RPC_URL"],
        default: Text("http://browser:8787/run"),
        doc: "the shared RPC server, in shared mode",
    },
    Key {
        path: "view.base_url",
        env: &["BROWSER_VIEW_BASE_URL", "BROWSER_VIEW_URL"],
        default: Text(""),
        doc: "public base of the live-view URLs; empty: discovered from the tunnel container's logs (cached 60 s, 10 s when none)",
    },
    Key {
        path: "view.tunnel_container",
        env: &["LAZYGATE_TUNNEL_CONTAINER"],
        default: Text("browser-use-tunnel"),
        doc: "container whose logs announce the tunnel URL",
    },
    Key {
        path: "auth.api_tokens",
        env: &["LAZYGATE_API_TOKENS"],
        default: List,
        doc: "bearer tokens for `/rpc`, `/cdp`, `/api` (16+ characters)",
    },
    Key {
        path: "auth.view_secret",
        env: &["LAZYGATE_VIEW_SECRET"],
        default: Text(""),
        doc: "signs view URLs (32+ characters)",
    },
    Key {
        path: "auth.view_secret_previous",
        env: &["LAZYGATE_VIEW_SECRET_PREVIOUS"],
        default: Text(""),
        doc: "the secret before a rotation, still accepted",
    },
    Key {
        path: "auth.view_token_ttl_seconds",
        env: &["LAZYGATE_VIEW_TOKEN_TTL_SECONDS"],
        default: Whole(43200),
        doc: "lifetime of handed-out view URLs",
    },
    Key {
        path: "auth.allowed_origins",
        env: &["LAZYGATE_ALLOWED_ORIGINS"],
        default: List,
        doc: "extra origins allowed to open WebSockets",
    },
    Key {
        path: "auth.insecure_dev",
        env: &["LAZYGATE_INSECURE_DEV"],
        default: Flag(false),
        doc: "auth off (development only)",
    },
    Key {
        path: "limits.max_runtimes",
        env: &["LAZYGATE_MAX_RUNTIMES"],
        default: Whole(20),
        doc: "runtimes at once (LRU eviction, then 429)",
    },
    Key {
        path: "limits.max_concurrent_starts",
        env: &["LAZYGATE_MAX_CONCURRENT_STARTS"],
        default: Whole(4),
        doc: "runtime starts at once",
    },
    Key {
        path: "limits.runtime_memory_bytes",
        env: &["LAZYGATE_RUNTIME_MEMORY_BYTES"],
        default: Whole(4294967296),
        doc: "memory limit of a runtime",
    },
    Key {
        path: "limits.runtime_cpus",
        env: &["LAZYGATE_RUNTIME_CPUS"],
        default: Number(2.0),
        doc: "CPU limit of a runtime",
    },
    Key {
        path: "limits.runtime_pids",
        env: &["LAZYGATE_RUNTIME_PIDS"],
        default: Whole(2048),
        doc: "process limit of a runtime",
    },
    Key {
        path: "limits.max_connections",
        env: &["LAZYGATE_MAX_CONNECTIONS"],
        default: Whole(4096),
        doc: "client connections at once (503 past it)",
    },
    Key {
        path: "limits.max_headers",
        env: &["LAZYGATE_MAX_HEADERS"],
        default: Whole(100),
        doc: "headers per request (431 past it)",
    },
    Key {
        path: "limits.max_header_bytes",
        env: &["LAZYGATE_MAX_HEADER_BYTES"],
        default: Whole(65536),
        doc: "size of a request head (431 past it)",
    },
    Key {
        path: "limits.header_read_timeout_seconds",
        env: &["LAZYGATE_HEADER_READ_TIMEOUT_SECONDS"],
        default: Whole(10),
        doc: "time to send a request head, counted from accept for the first; also how long an idle keep-alive (HTTP/1.1) or request-less (HTTP/2) connection stays open",
    },
    Key {
        path: "limits.max_rpc_body_bytes",
        env: &["LAZYGATE_MAX_RPC_BODY_BYTES"],
        default: Whole(16777216),
        doc: "largest `/rpc` body (413 past it)",
    },
    Key {
        path: "limits.max_async_runs",
        env: &["LAZYGATE_MAX_ASYNC_RUNS"],
        default: Whole(100),
        doc: "asynchronous runs (`Prefer: respond-async`) kept at once, running or done (429 past it)",
    },
    Key {
        path: "limits.max_async_run_bytes",
        env: &["LAZYGATE_MAX_ASYNC_RUN_BYTES"],
        default: Whole(16777216),
        doc: "largest answer of an asynchronous run kept (a larger one is answered 413)",
    },
    Key {
        path: "limits.async_run_seconds",
        env: &["LAZYGATE_ASYNC_RUN_SECONDS"],
        default: Whole(600),
        doc: "how long a finished asynchronous run's answer is kept (then 404)",
    },
    Key {
        path: "limits.max_view_seconds",
        env: &["LAZYGATE_MAX_VIEW_SECONDS"],
        default: Whole(0),
        doc: "longest a live view's WebSocket stays open, then closed (1001; noVNC can reconnect); 0: no limit",
    },
    Key {
        path: "api.answer_urls",
        env: &["LAZYGATE_ANSWER_URLS"],
        default: Text("gateway"),
        doc: "where ensure answers point `cdp_url`/`rpc_url`: `gateway` (through lazygate) or `direct` (the seed's container URLs)",
    },
];

/// The key at `path`; a path that is not a key is a bug in the caller.
pub fn key(path: &str) -> &'static Key {
    KEYS.iter()
        .find(|k| k.path == path)
        .unwrap_or_else(|| panic!("{path} is not a configuration key"))
}

/// How errors name the key at `path`.
pub fn label(path: &str) -> String {
    key(path).label()
}

/// The defaults, then the file's values, then the environment's, as one table with every
/// key. An unknown key or section, or a value of the wrong type, is refused naming it.
pub fn layered(file: Option<Table>, env: &dyn Environment) -> Result<Table, ConfigError> {
    let mut table = Table::new();
    for key in KEYS {
        put(&mut table, key.path, key.default_value());
    }
    for (section, values) in file.unwrap_or_default() {
        let Value::Table(values) = values else {
            return Err(unknown(&section, "section"));
        };
        for (name, value) in values {
            let path = format!("{section}.{name}");
            let Some(key) = KEYS.iter().find(|k| k.path == path) else {
                return Err(unknown(&path, "key"));
            };
            put(&mut table, key.path, key.check(value)?);
        }
    }
    for key in KEYS {
        if let Some((variable, text)) = key.env.iter().find_map(|v| env.var(v).map(|text| (*v, text))) {
            put(&mut table, key.path, key.parse(variable, &text)?);
        }
    }
    Ok(table)
}

fn put(table: &mut Table, path: &str, value: Value) {
    let (section, name) = path.split_once('.').expect("keys are section.name");
    let entry = table.entry(section).or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(values) = entry {
        values.insert(name.to_owned(), value);
    }
}

/// An unknown key or section, with the closest known key when one is near.
fn unknown(path: &str, what: &'static str) -> ConfigError {
    let hint = match closest(path, KEYS.iter().map(|k| k.path)) {
        Some(near) => format!("did you mean {near}?"),
        None => "the README's configuration table lists every key".to_owned(),
    };
    ConfigError::Unknown {
        key: path.to_owned(),
        what,
        hint,
    }
}

/// The candidate nearest to `name` by edit distance, when near enough to be a typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(distance, c)| *distance <= (c.len() / 4).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// Variables that look like the gateway's (`LAZYGATE_*`, `BROWSER_RUNTIME_*`,
/// `BROWSER_USE_*`, `BROWSER_VIEW_*`) but are no key's, each with the nearest known name:
/// a typo would otherwise be ignored without a word.
pub fn unknown_variables<'a>(names: impl Iterator<Item = &'a str>) -> Vec<(String, Option<&'static str>)> {
    const PREFIXES: [&str; 4] = ["LAZYGATE_", "BROWSER_RUNTIME_", "BROWSER_USE_", "BROWSER_VIEW_"];
    // Read outside the table (the config file's path), or the runtimes' own, which the seed
    // passes to runtimes and an environment shared with it may hold.
    const OTHERS: [&str; 5] = [
        "LAZYGATE_CONFIG",
        "LAZYGATE_LOG_FORMAT",
        "LAZYGATE_RUNTIME_KEY",
        "BROWSER_USE_RPC_HOST",
        "BROWSER_USE_RPC_PORT",
    ];
    let known = || KEYS.iter().flat_map(|k| k.env.iter().copied()).chain(OTHERS);
    names
        .filter(|name| PREFIXES.iter().any(|p| name.starts_with(p)))
        .filter(|name| !known().any(|k| k == *name))
        .map(|name| (name.to_owned(), closest(name, known())))
        .collect()
}
