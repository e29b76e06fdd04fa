//! The reaper: a background task that removes idle runtimes, keeps the registry file
//! current and applies the profile retention. It is owned by [`crate::run`] and stops when its cancellation token fires.

use std::sync::Arc;

use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::backend::LEFTOVER_SWEEP_INTERVAL;
use super::{Provisioner, retention};

/// Runs until `shutdown` is cancelled: every reap interval, adopt running runtimes (until
/// that has worked once; every time on a shared backend), record last use on a shared
/// backend, retire idle runtimes, sync the registry file, and remove the
/// runtimes of other writers' expired entries (the seed's cleanup); every
/// [`LEFTOVER_SWEEP_INTERVAL`], remove what killed gateways left (fence helpers); every
/// [`retention::SWEEP_INTERVAL`], remove profiles past the retention (when it is on).
pub async fn run(provisioner: Arc<Provisioner>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(provisioner.settings().reap_interval());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut last_leftover_sweep: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        // A shared backend's runtimes may be started by other gateways at any time: each
        // pass adopts what is new (one list of the engine).
        if !provisioner.is_adopted() || provisioner.backend().is_shared() {
            match provisioner.adopt().await {
                Ok(0) if provisioner.is_adopted() => {}
                Ok(count) => tracing::info!(count, "adopted running runtimes"),
                Err(error) => tracing::debug!(%error, "cannot list runtimes yet; will retry"),
            }
        }
        provisioner.share_use().await;
        provisioner.reap_idle().await;
        provisioner.persist().await;
        // Other writers' entries only once ours are known: a running runtime not adopted
        // yet is not anybody else's.
        if provisioner.is_adopted() {
            provisioner.reap_foreign().await;
        }
        if provisioner.is_adopted() && last_leftover_sweep.is_none_or(|at| at.elapsed() >= LEFTOVER_SWEEP_INTERVAL) {
            last_leftover_sweep = Some(tokio::time::Instant::now());
            provisioner.sweep_leftovers().await;
        }
        if provisioner.is_adopted() && last_sweep.is_none_or(|at| at.elapsed() >= retention::SWEEP_INTERVAL) {
            last_sweep = Some(tokio::time::Instant::now());
            provisioner.sweep_profiles().await;
        }
    }
    // The sightings since the last pass, then the files, on the way out.
    provisioner.record_sightings();
    provisioner.persist().await;
}
