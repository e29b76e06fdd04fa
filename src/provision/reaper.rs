//! The reaper: a background task that removes idle runtimes and keeps the registry file
//! current. It is owned by [`crate::run`] and stops when its cancellation token fires.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Provisioner;

/// Runs until `shutdown` is cancelled: every reap interval, adopt running runtimes (until
/// that has worked once), remove idle ones, and write the registry if it changed.
pub async fn run(provisioner: Arc<Provisioner>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(provisioner.settings().reap_interval());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        if !provisioner.is_adopted() {
            match provisioner.adopt().await {
                Ok(count) => tracing::info!(count, "adopted running runtimes"),
                Err(error) => tracing::debug!(%error, "cannot list runtimes yet; will retry"),
            }
        }
        provisioner.reap_idle().await;
        provisioner.persist().await;
    }
    provisioner.persist().await;
}
