//! SIGHUP: what changes without a restart.
//!
//! The secrets — API tokens, view secrets (current and previous), the view URL lifetime and
//! the allowed origins — are read again from where they came from (the configuration file,
//! the environment, the generated secrets file) and swapped in whole ([`AuthStore`]); open
//! connections, views and runs stay as they are. TLS certificates reload on the same signal
//! ([`crate::tls`]). Any other setting takes effect at the next restart, and the log says so.
//! A configuration that no longer loads changes nothing: the secrets in force stay.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, AuthStore};
use crate::config::{ProcessEnv, Settings};

/// Reloads the secrets on every SIGHUP until `stop` fires; `running` are the settings the
/// gateway started with (its file, and whether auth was turned off on the command line).
pub async fn watch(store: Arc<AuthStore>, running: Arc<Settings>, stop: CancellationToken) {
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => signal,
        Err(error) => {
            tracing::warn!(%error, "no SIGHUP handler; secrets change only with a restart");
            return;
        }
    };
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = hangup.recv() => {}
        }
        match reload(&running) {
            Ok(auth) => {
                auth.log_in_use("secrets reloaded; other settings take effect at the next restart");
                store.replace(auth);
            }
            Err(error) => tracing::warn!(%error, "cannot reload the secrets; the ones in force stay"),
        }
    }
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Secrets(#[from] crate::auth::SecretsError),
}

fn reload(running: &Settings) -> Result<Auth, ReloadError> {
    let mut settings = Settings::load(running.config_file.as_deref(), &ProcessEnv)?;
    // Auth turned off on the command line stays off: the command line is not read again.
    settings.auth.insecure_dev |= running.auth.insecure_dev;
    Ok(Auth::from_settings(&settings)?)
}
