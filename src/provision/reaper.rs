//! The reaper: a background task that removes idle runtimes, keeps the registry file
//! current and applies the profile retention. It is owned by [`crate::run`] and stops when its cancellation token fires.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Provisioner, retention};

/// How often the reaper sweeps leftovers ([`super::backend::Backend::sweep_leftovers`]): one
/// filtered list of the engine's containers.
pub const LEFTOVER_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// A chore of the reaper's that comes round at most once an `interval`, the first time at
/// once.
struct Every {
    interval: Duration,
    last: Option<Instant>,
}

impl Every {
    fn new(interval: Duration) -> Self {
        Every { interval, last: None }
    }

    /// Whether the chore is due now; if so, it counts as done now.
    fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|at| at.elapsed() >= self.interval);
        if due {
            self.last = Some(Instant::now());
        }
        due
    }
}

/// Runs until `shutdown` is cancelled: every reap interval, adopt running runtimes (until
/// that has worked once; every time on a shared backend), record last use on a shared
/// backend, retire idle runtimes, sync the registry file, and remove the
/// runtimes of other writers' expired entries (the seed's cleanup); every
/// [`LEFTOVER_SWEEP_INTERVAL`], remove what killed gateways left (fence helpers); every
/// [`retention::SWEEP_INTERVAL`], remove profiles past the retention (when it is on).
pub async fn run(provisioner: Arc<Provisioner>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(provisioner.settings().reap_interval());
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut leftover_sweep = Every::new(LEFTOVER_SWEEP_INTERVAL);
    let mut profile_sweep = Every::new(retention::SWEEP_INTERVAL);
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
        if provisioner.is_adopted() && leftover_sweep.due() {
            provisioner.sweep_leftovers().await;
        }
        if provisioner.is_adopted() && profile_sweep.due() {
            provisioner.sweep_profiles().await;
        }
    }
    // The sightings since the last pass, then the files, on the way out.
    provisioner.record_sightings();
    provisioner.persist().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_chore_is_due_at_once_then_once_an_interval() {
        let mut chore = Every::new(Duration::from_secs(10));
        assert!(chore.due(), "the first time at once");
        assert!(!chore.due(), "not again right after");
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(!chore.due(), "not before the interval");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(chore.due(), "once the interval has gone by");
        assert!(!chore.due(), "and then not again at once");
    }
}
