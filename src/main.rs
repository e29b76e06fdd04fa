//! The `lazygate` binary: command line, logging, configuration, then [`lazygate::run`].

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use lazygate::config::{ProcessEnv, Settings};
use lazygate::provision::docker::DockerBackend;
use tracing_subscriber::EnvFilter;

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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { config } => serve(config),
    }
}

fn serve(config: Option<PathBuf>) -> ExitCode {
    let settings = match Settings::load(config.as_deref(), &ProcessEnv) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("lazygate: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
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
        let backend = Arc::new(DockerBackend::new(settings.scope.clone()));
        lazygate::run(listener, settings, backend, shutdown_signal()).await;
        ExitCode::SUCCESS
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
