//! The warm pool: runtimes started ahead for owners not seen yet (`runtime.warm_pool`), so
//! that a new owner's first request is answered by a runtime that is up already instead of
//! waiting for a browser to start.
//!
//! A pool runtime belongs to nobody: it carries the pool label and no owner, on a network and
//! with a fresh profile volume of its own, fenced like any runtime; no route reaches it,
//! since routes find runtimes by owner. A new owner's first request claims the oldest ready
//! one ([`Provisioner::claim_pooled`]): the backend binds it to the owner (Docker: renamed
//! to the seed's container name; Swarm: the owner in its service's labels, compare-and-swap)
//! and from then on it is that owner's runtime like any other. An owner with a profile
//! already gets its profile, never a pool runtime.
//!
//! The refill task ([`run`]) keeps the pool at its size, each start taking one of the
//! `limits.max_concurrent_starts` permits, none while an owner's start runs or waits, and
//! never past `limits.max_runtimes`: pool runtimes count there, and an owner that needs the
//! room takes it from the pool first ([`Provisioner::shrink_pool`]). A round of pool starts
//! that fails backs off (1 s doubling to 30 s, one warning per step) while new owners get
//! cold starts as without a pool.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backend::{Claim, LABEL_POOL, PoolSpec, PooledRuntime, RuntimeInfo};
use super::{BACKOFF_FIRST, BACKOFF_MAX, Provisioner, readiness};
use crate::owner::OwnerHash;

/// How long a pool runtime may take to answer its health check when it is claimed: a ready
/// one answers in about a millisecond (more while a burst of starts has the CPU); a dead
/// one refuses at once; one that does not answer is not handed out.
const CLAIM_PROBE: Duration = Duration::from_secs(2);

/// While the pool is short and no start permit is free (owners are starting), how often
/// the refill task looks again.
const RECHECK: Duration = Duration::from_millis(250);

/// The pool's runtimes and what the refill task needs to know about them.
pub struct WarmPool {
    /// The size to keep (`runtime.warm_pool`); 0: no pool.
    target: usize,
    /// Ready, unclaimed runtimes, oldest first: claims take the front.
    ready: Mutex<VecDeque<PooledRuntime>>,
    /// Pool runtimes being started now (each holds a start permit).
    starting: AtomicUsize,
    /// Runtimes taken out to be claimed or discarded, not gone yet: still the pool's, so
    /// the refill task does not replace one that may come back.
    taken: AtomicUsize,
    /// Wakes the refill task when a runtime left the pool (claimed, discarded).
    wake: Notify,
}

impl WarmPool {
    pub fn new(target: usize) -> Self {
        WarmPool {
            target,
            ready: Mutex::new(VecDeque::new()),
            starting: AtomicUsize::new(0),
            taken: AtomicUsize::new(0),
            wake: Notify::new(),
        }
    }

    /// Ready pool runtimes now.
    pub fn ready_count(&self) -> usize {
        self.ready.lock().expect("pool lock").len()
    }

    /// Takes the oldest ready runtime out to be claimed or discarded; it counts as the
    /// pool's until [`WarmPool::give_back`] or [`WarmPool::let_go`].
    fn take(&self) -> Option<PooledRuntime> {
        let taken = self.ready.lock().expect("pool lock").pop_front();
        if taken.is_some() {
            self.taken.fetch_add(1, Ordering::AcqRel);
        }
        taken
    }

    /// A taken runtime stays in the pool (its claim did not happen).
    fn give_back(&self, pooled: PooledRuntime) {
        self.ready.lock().expect("pool lock").push_front(pooled);
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }

    /// A taken runtime has left the pool (claimed, discarded): the refill task replaces it.
    fn let_go(&self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
        self.wake.notify_one();
    }

    fn put(&self, pooled: PooledRuntime) {
        self.ready.lock().expect("pool lock").push_back(pooled);
    }

    /// Pool runtimes to start now to reach the target.
    fn missing(&self) -> usize {
        let taken = self.taken.load(Ordering::Acquire);
        self.target
            .saturating_sub(self.ready_count() + self.starting.load(Ordering::Acquire) + taken)
    }
}

impl Provisioner {
    /// Hands a ready pool runtime to a new owner; `None` when the pool is off or empty, or
    /// the owner has a runtime or profile already (then it starts as without a pool). A pool
    /// runtime that does not answer its health check is discarded, never handed out.
    pub(super) async fn claim_pooled(&self, owner_hash: OwnerHash) -> Option<RuntimeInfo> {
        if self.pool.target == 0 {
            return None;
        }
        loop {
            let Some(pooled) = self.pool.take() else {
                self.metrics.pool_misses.inc();
                tracing::info!(%owner_hash, "warm pool empty; starting a runtime");
                return None;
            };
            self.metrics.pool_ready.set(self.pool.ready_count() as i64);
            if let Err(last_error) = readiness::answers(&self.probe, &pooled.endpoints.rpc, CLAIM_PROBE).await {
                tracing::warn!(container = %pooled.name, %last_error, "a warm-pool runtime stopped answering; discarding it");
                self.discard_pooled(pooled).await;
                self.pool.let_go();
                continue;
            }
            match self.backend.claim(&pooled, &owner_hash).await {
                Ok(Claim::Claimed(info)) => {
                    self.pool.let_go();
                    self.metrics.pool_claims.inc();
                    tracing::info!(
                        %owner_hash,
                        container = %info.name,
                        pool_runtime = %pooled.name,
                        profile = info.profile.as_deref().unwrap_or_default(),
                        "claimed a warm-pool runtime"
                    );
                    return Some(*info);
                }
                Ok(Claim::Gone) => {
                    tracing::info!(pool_runtime = %pooled.name, "a warm-pool runtime was taken elsewhere; forgetting it");
                    self.pool.let_go();
                }
                Ok(Claim::OwnerHasOne) => {
                    // The owner has a runtime or a profile of its own: it keeps those.
                    self.pool.give_back(pooled);
                    self.metrics.pool_ready.set(self.pool.ready_count() as i64);
                    return None;
                }
                Err(error) => {
                    tracing::warn!(container = %pooled.name, %error, "cannot claim a warm-pool runtime; discarding it");
                    self.discard_pooled(pooled).await;
                    self.pool.let_go();
                }
            }
        }
    }

    /// Removes one ready pool runtime to make room for an owner's; false when the pool has none.
    pub(super) async fn shrink_pool(&self) -> bool {
        let Some(pooled) = self.pool.take() else {
            return false;
        };
        tracing::info!(container = %pooled.name, "removing a warm-pool runtime to make room for an owner's");
        self.discard_pooled(pooled).await;
        self.pool.let_go();
        true
    }

    async fn discard_pooled(&self, pooled: PooledRuntime) {
        self.metrics.pool_ready.set(self.pool.ready_count() as i64);
        if let Err(error) = self.backend.discard_pooled(&pooled).await {
            tracing::warn!(container = %pooled.name, %error, "cannot remove a warm-pool runtime");
        }
    }

    /// Runtimes that count against `limits.max_runtimes`, but `except`'s: ready owners',
    /// starts in progress (owners' and the pool's), and ready pool runtimes.
    pub(super) fn runtimes_counted(&self, except: Option<OwnerHash>) -> usize {
        let ready = self
            .slots
            .iter()
            .filter(|e| Some(*e.key()) != except && e.value().ready.load(Ordering::Acquire))
            .count();
        let starting = self.settings.limits.max_concurrent_starts - self.starts.available_permits();
        ready + starting + self.pool.ready_count()
    }

    /// Takes the pool runtimes found running on the engine (a restart) as the pool; more
    /// than the pool's size are removed.
    async fn adopt_pool(&self) -> Result<usize, super::BackendError> {
        let found = self.backend.list_pooled().await?;
        let mut adopted = 0;
        for pooled in found {
            if self.pool.ready_count() >= self.pool.target {
                // On a shared backend the rest may be other gateways' pools.
                if !self.backend.is_shared() {
                    tracing::info!(container = %pooled.name, "removing a warm-pool runtime beyond runtime.warm_pool");
                    self.discard_pooled(pooled).await;
                }
                continue;
            }
            tracing::info!(container = %pooled.name, "adopted a warm-pool runtime");
            self.pool.put(pooled);
            adopted += 1;
        }
        self.metrics.pool_ready.set(self.pool.ready_count() as i64);
        Ok(adopted)
    }

    /// A pool runtime's spec: the seed's environment and resources with no owner (so no
    /// view URL), the pool label instead of the owner's, a key of its own.
    fn pool_spec(&self) -> PoolSpec {
        let pool_id = new_pool_id();
        PoolSpec {
            labels: self.runtime_labels((LABEL_POOL, pool_id.clone())),
            pool_id,
            image: self.settings.image.clone(),
            env: self.runtime_env(None),
            shm_size_bytes: self.settings.shm_size_bytes,
            resources: self.runtime_resources(),
        }
    }

    /// Starts one pool runtime and waits until it answers; it joins the pool only then.
    async fn fill_one(self: Arc<Self>, _permit: OwnedSemaphorePermit) -> Result<(), String> {
        let started = Instant::now();
        let spec = self.pool_spec();
        let pooled = self.backend.start_pooled(&spec).await.map_err(|e| e.to_string())?;
        let deadline = started + self.settings.start_timeout;
        if let Err(last_error) = readiness::wait_ready(&self.probe, &pooled.endpoints.rpc, deadline).await {
            let name = pooled.name.clone();
            self.discard_pooled(pooled).await;
            return Err(format!("{name} did not become ready: {last_error}"));
        }
        let took = started.elapsed();
        self.metrics.pool_refill_duration.observe(took.as_secs_f64());
        tracing::info!(container = %pooled.name, ms = took.as_millis() as u64, "warm-pool runtime ready");
        self.pool.put(pooled);
        self.metrics.pool_ready.set(self.pool.ready_count() as i64);
        Ok(())
    }

    /// Whether an owner's runtime is starting or waiting for a start permit.
    fn owners_starting(&self) -> bool {
        let in_use = self.settings.limits.max_concurrent_starts - self.starts.available_permits();
        in_use > self.pool.starting.load(Ordering::Acquire) || self.metrics.starts_waiting.get() > 0
    }

    /// Whether one more pool runtime fits within `limits.max_runtimes` without evicting anyone.
    fn pool_has_room(&self) -> bool {
        self.runtimes_counted(None) < self.settings.limits.max_runtimes
    }
}

/// A random pool id: 12 hex digits, in the pool runtime's names and label.
fn new_pool_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the operating system's random generator");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Keeps the warm pool at its size until `shutdown` is cancelled: first the pool runtimes
/// found on the engine are taken (retried until the engine answers), then every runtime
/// that leaves the pool is replaced. Owned by [`crate::run`] beside the reaper; starts in
/// progress are aborted with it (a half-made pool runtime is removed at the next start).
pub async fn run(provisioner: Arc<Provisioner>, shutdown: CancellationToken) {
    if provisioner.pool.target == 0 {
        return;
    }
    loop {
        match provisioner.adopt_pool().await {
            Ok(count) => {
                if count > 0 {
                    tracing::info!(count, "adopted warm-pool runtimes");
                }
                break;
            }
            Err(error) => tracing::debug!(%error, "cannot list warm-pool runtimes yet; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    let mut starts: JoinSet<Result<(), String>> = JoinSet::new();
    let mut failures: u32 = 0;
    let mut retry_at: Option<Instant> = None;
    loop {
        if retry_at.is_none_or(|at| Instant::now() >= at) {
            retry_at = None;
            for _ in 0..provisioner.pool.missing() {
                // Owners first: no pool start while an owner's start runs or waits, so a
                // burst of new owners larger than the pool is never slower than without one.
                if !provisioner.pool_has_room() || provisioner.owners_starting() {
                    break;
                }
                let Ok(permit) = provisioner.starts.clone().try_acquire_owned() else {
                    break;
                };
                // Counted as starting from here, so the next turn does not start it twice.
                provisioner.pool.starting.fetch_add(1, Ordering::AcqRel);
                let this = provisioner.clone();
                starts.spawn(async move {
                    let result = this.clone().fill_one(permit).await;
                    this.pool.starting.fetch_sub(1, Ordering::AcqRel);
                    result
                });
            }
        }
        let short = provisioner.pool.missing() > 0;
        let wake_at =
            retry_at.unwrap_or_else(|| Instant::now() + if short { RECHECK } else { Duration::from_secs(3600) });
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = provisioner.pool.wake.notified() => {}
            _ = tokio::time::sleep_until(wake_at) => {}
            Some(done) = starts.join_next() => match done {
                Ok(Ok(())) => failures = 0,
                // The starts of one round fail together (a missing image): one back-off
                // step, and one warning, for the round.
                Ok(Err(_)) if retry_at.is_some() => {}
                Ok(Err(error)) => {
                    failures = failures.saturating_add(1);
                    let wait = BACKOFF_FIRST.saturating_mul(1 << (failures - 1).min(16)).min(BACKOFF_MAX);
                    tracing::warn!(
                        %error,
                        failures,
                        retry_in_seconds = wait.as_secs(),
                        "cannot start a warm-pool runtime; new owners wait for a start meanwhile"
                    );
                    retry_at = Some(Instant::now() + wait);
                }
                Err(join_error) => tracing::warn!(%join_error, "a warm-pool start was interrupted"),
            },
        }
    }
    starts.abort_all();
}
