//! The `lazygate` binary: command line, logging, configuration, then [`lazygate::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lazygate::config::{ProcessEnv, Settings};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: every forwarded request allocates and frees header
/// maps, buffers and futures across threads, and glibc's arenas showed in the profile. The
/// `system-allocator` feature keeps glibc's, for heap profilers that see only `malloc`.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "lazygate", version, about = "The ingress for per-owner browser runtimes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve: route views and runs to per-owner runtimes, starting them on first use.
    Serve {
        /// TOML configuration file (also LAZYGATE_CONFIG); without one, defaults apply.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Turn authentication off, for local development only (also LAZYGATE_INSECURE_DEV).
        #[arg(long)]
        insecure_dev: bool,
    },
    /// Print a signed, expiring live-view URL for an owner, which connects at once and
    /// reconnects after the gateway closes it (uses the configured or the
    /// generated view secret, so run it with the gateway's configuration).
    ViewUrl {
        /// The owner id (user, session or task), as in /rpc/<owner>; in shared mode any (the
        /// shared browser's view URL is printed).
        owner: String,
        /// Lifetime of the URL in seconds, at least 1 (default: auth.view_token_ttl_seconds).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        ttl: Option<u64>,
        /// Public base URL (default: view.base_url, else http://127.0.0.1:<port>).
        #[arg(long)]
        base: Option<String>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// List or remove the runtimes of a running gateway, through its admin listener and with
    /// its API token (run it with the gateway's configuration, or in its container).
    Runtimes {
        #[command(subcommand)]
        action: RuntimesAction,
        /// The admin listener to reach (default: server.admin_listen).
        #[arg(long, global = true)]
        admin: Option<std::net::SocketAddr>,
        #[arg(long, short, global = true)]
        config: Option<PathBuf>,
    },
    /// Remove a volume on this node's engine (the Swarm backend runs it as a one-shot job on
    /// the node that holds a per-task profile); not for people.
    #[command(hide = true)]
    RemoveVolume { volume: String },
    /// Check a configuration as `serve` would, without serving: exit 0 when it is valid,
    /// 2 naming the key (or the file) when it is not.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RuntimesAction {
    /// Owner hash, mode, state, age, idle time, open views (WebSockets) and runs, container.
    List {
        /// The gateway's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Remove an owner's runtime now (its profile volume stays in per-principal mode).
    Rm {
        /// An owner id, or its 16-hex-character owner hash.
        owner: String,
    },
}

fn main() -> ExitCode {
    // No transparent huge pages for this process: on a host that has them always on, every
    // 2 MiB of address space mimalloc's arenas touch became resident whole (measured with 2 000
    // idle keep-alive connections held: 21.8 MiB resident at rest instead of 16.1, and 22 KiB
    // a connection instead of 15). Allocator pages are touched sparsely here, so huge pages
    // buy the gateway little. Where the kernel lacks the call, nothing changes.
    let _ = rustix::thread::disable_transparent_huge_pages(true);
    let cli = Cli::parse();
    // The log format is read before anything is logged, so from the environment only.
    let json = match std::env::var("LAZYGATE_LOG_FORMAT").as_deref().map(str::trim) {
        Err(_) | Ok("" | "text") => false,
        Ok("json") => true,
        Ok(other) => {
            eprintln!("lazygate: invalid LAZYGATE_LOG_FORMAT {other:?}: expected text or json");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // One JSON object per line, the event's fields at the top level.
        logs.json().flatten_event(true).init();
    } else {
        logs.with_ansi(std::io::stderr().is_terminal()).init();
    }
    match cli.command {
        Command::Serve { config, insecure_dev } => serve(config, insecure_dev),
        Command::ViewUrl {
            owner,
            ttl,
            base,
            config,
        } => view_url(&owner, ttl, base, config),
        Command::Runtimes { action, admin, config } => runtimes(action, admin, config),
        Command::RemoveVolume { volume } => remove_volume(&volume),
        Command::CheckConfig { config } => match load(config) {
            Ok(settings) => {
                let file = settings
                    .config_file
                    .map_or("no file, defaults and environment".to_owned(), |f| {
                        f.display().to_string()
                    });
                println!("configuration is valid ({file})");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

fn runtimes(action: RuntimesAction, admin: Option<std::net::SocketAddr>, config: Option<PathBuf>) -> ExitCode {
    use lazygate::admin_client;
    let settings = match load(config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let prepared = admin_client::admin_address(&settings, admin).and_then(|address| {
        let token = lazygate::auth::client_token(&settings)?;
        Ok((address, token))
    });
    let outcome = prepared.and_then(|(address, token)| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        runtime.block_on(async {
            match action {
                RuntimesAction::List { json } => admin_client::list(address, &token, json).await,
                RuntimesAction::Rm { owner } => admin_client::remove(address, &token, &owner).await,
            }
        })
    });
    match outcome {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lazygate: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

fn remove_volume(volume: &str) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lazygate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(lazygate::provision::swarm::remove_local_volume(volume)) {
        Ok(()) => {
            println!("removed {volume}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("lazygate: {error}");
            ExitCode::FAILURE
        }
    }
}

fn load(config: Option<PathBuf>) -> Result<Settings, ExitCode> {
    // A misspelt variable would otherwise be ignored without a word.
    let names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .collect();
    for (name, nearest) in lazygate::config::unknown_variables(names.iter().map(String::as_str)) {
        let hint = nearest.map_or("the README's configuration table lists them".to_owned(), |n| {
            format!("did you mean {n}?")
        });
        tracing::warn!(variable = %name, "unknown variable, ignored; {hint}");
    }
    Settings::load(config.as_deref(), &ProcessEnv).map_err(|error| {
        eprintln!("lazygate: {error}");
        ExitCode::from(2)
    })
}

fn view_url(owner: &str, ttl: Option<u64>, base: Option<String>, config: Option<PathBuf>) -> ExitCode {
    let settings = match load(config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    let auth = match lazygate::auth::Auth::for_signing(&settings) {
        Ok(auth) => auth,
        Err(error) => {
            eprintln!("lazygate: cannot sign a view URL: {error}");
            return match error {
                lazygate::auth::SecretsError::Unsafe(_)
                | lazygate::auth::SecretsError::Corrupt { .. }
                | lazygate::auth::SecretsError::Missing { .. }
                | lazygate::auth::SecretsError::MissingToken { .. } => ExitCode::from(2),
                lazygate::auth::SecretsError::Io(_) => ExitCode::FAILURE,
            };
        }
    };
    let base = base
        .map(|b| lazygate::config::normalize_view_base_url(&b))
        .or(settings.view_base_url.clone())
        .unwrap_or_else(|| {
            let scheme = if settings.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://127.0.0.1:{}", settings.listen.port())
        });
    let ttl = ttl.map(std::time::Duration::from_secs);
    if settings.isolation_mode == lazygate::config::IsolationMode::Shared {
        // One browser for everyone: its view is the seed's shared URL, whoever asks.
        let token = auth.sign_view(lazygate::auth::ViewSubject::Shared, ttl);
        println!("{base}/vnc.html?path=websockify&autoconnect=1&reconnect=1&token={token}");
        return ExitCode::SUCCESS;
    }
    let hash = lazygate::owner::OwnerHash::of(owner);
    let token = auth.sign_view(hash, ttl);
    println!("{base}/view/{hash}/vnc.html?path=view/{hash}/websockify&autoconnect=1&reconnect=1&token={token}");
    ExitCode::SUCCESS
}

fn serve(config: Option<PathBuf>, insecure_dev: bool) -> ExitCode {
    let mut settings = match load(config) {
        Ok(settings) => settings,
        Err(code) => return code,
    };
    settings.auth.insecure_dev |= insecure_dev;
    // The control plane (signals, adoption, the reaper) needs one thread; connections are
    // served by the worker threads `run` starts.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lazygate: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(settings.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("lazygate: cannot listen on {}: {error}", settings.listen);
                return ExitCode::FAILURE;
            }
        };
        let engine = lazygate::provision::engine(&settings);
        match lazygate::run(listener, settings, engine, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("lazygate: {error}");
                ExitCode::from(error.exit_code())
            }
        }
    })
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
