//! Provisioning: get-or-create an owner's runtime, exactly once, and hand out leases on it.
//!
//! Each owner hash has a [`Slot`]. Its async mutex is the single-flight lock: the lifecycle
//! `Absent → Starting → Ready → Removing → Absent` only changes while it is held — starting
//! and removing happen *under* it — so concurrent first requests for one owner queue behind
//! one start, while different owners, in different slots, start in parallel.
//!
//! A [`Lease`] is a hold: while any lease on a runtime lives (an in-flight request, an open
//! WebSocket), the reaper leaves it alone. Holds are taken under the slot lock and the reaper
//! re-checks them under the same lock, so a request at the TTL boundary either keeps the
//! runtime or waits for its removal and gets a fresh one.
//!
//! (Long because slots, leases, the start, eviction, adoption and the reaper's removal all
//! change one owner's state under the same lock; a quarter of it is their paused-clock tests.)

pub mod backend;
pub mod docker;
mod engine_client;
pub mod instrumented;
pub mod pool;
pub mod readiness;
pub mod reaper;
pub mod retention;
pub mod state_file;
pub mod swarm;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};
use tokio::time::{Instant, timeout_at};

pub use backend::{Backend, BackendError, Endpoints, Ports, RuntimeInfo, RuntimeSpec, TunnelLogs};

use crate::auth::AuthStore;
use crate::config::{BackendKind, IsolationMode, Settings};
use crate::metrics::{GaugeHold, Metrics, Removal, RuntimeCounts};
use crate::owner::OwnerHash;
use crate::view_url::ViewUrls;
use backend::{LABEL_MANAGED_BY, LABEL_OWNER_HASH, LABEL_RUNTIME, LABEL_SCOPE, MANAGED_BY, RUNTIME_KEY_ENV};
use state_file::{Registry, RegistryEntry};

/// The container platform the gateway runs on: where runtimes run, and where the tunnel's
/// logs are read.
#[derive(Clone)]
pub struct Engine {
    pub runtimes: Arc<dyn Backend>,
    pub tunnel_logs: Arc<dyn TunnelLogs>,
}

/// The engine `runtime.backend` names. A new engine is a file beside [`docker`] and a line here.
pub fn engine(settings: &Settings) -> Engine {
    match settings.backend {
        BackendKind::Docker => {
            let docker = Arc::new(docker::DockerBackend::new(docker::DockerOptions::from(settings)));
            Engine {
                runtimes: docker.clone(),
                tunnel_logs: docker,
            }
        }
        BackendKind::Swarm => {
            // The tunnel is a container beside the gateway, on the same engine.
            let docker = Arc::new(docker::DockerBackend::new(docker::DockerOptions::from(settings)));
            Engine {
                runtimes: Arc::new(swarm::SwarmBackend::new(swarm::SwarmOptions::from(settings))),
                tunnel_logs: docker,
            }
        }
    }
}

/// Why a runtime could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Engine(#[from] BackendError),
    #[error("runtime {container} did not become ready within {waited:?}: {last_error}")]
    NotReady {
        container: String,
        waited: Duration,
        last_error: String,
    },
    #[error("runtime for {owner_hash} is still starting after {waited:?}")]
    StartTimeout { owner_hash: OwnerHash, waited: Duration },
    #[error("runtime start was interrupted: {0}")]
    Interrupted(String),
    #[error("all {max} runtimes are in use (each has an open request or view); try again shortly")]
    AtCapacity { max: usize },
    /// The owner's last start failed moments ago; it is not tried again before `retry_in`.
    #[error("{message} (the start failed {failures} time(s) in a row; next try in {}s)", retry_in.as_secs().max(1))]
    BackingOff {
        failures: u32,
        retry_in: Duration,
        /// The failed start's error code and message, so the answer stays the same.
        code: &'static str,
        unavailable: bool,
        message: String,
    },
}

impl ProvisionError {
    /// 503 (try again) rather than 502 (the runtime is broken).
    pub fn is_unavailable(&self) -> bool {
        match self {
            ProvisionError::Engine(e) => e.is_unavailable(),
            ProvisionError::NotReady { .. } | ProvisionError::StartTimeout { .. } => true,
            ProvisionError::Interrupted(_) | ProvisionError::AtCapacity { .. } => false,
            ProvisionError::BackingOff { unavailable, .. } => *unavailable,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ProvisionError::Engine(BackendError::Unplaceable(_)) => "runtime_unplaceable",
            ProvisionError::Engine(e) if e.is_unavailable() => "engine_unavailable",
            ProvisionError::Engine(BackendError::NameTaken { .. }) => "name_taken",
            ProvisionError::Engine(_) | ProvisionError::Interrupted(_) => "runtime_failed",
            ProvisionError::NotReady { .. } | ProvisionError::StartTimeout { .. } => "runtime_not_ready",
            ProvisionError::AtCapacity { .. } => "at_capacity",
            ProvisionError::BackingOff { code, .. } => code,
        }
    }

    /// A failure of the runtime or its image, which starting again at once would repeat;
    /// not the engine being away, nor the requester giving up.
    fn is_start_failure(&self) -> bool {
        match self {
            ProvisionError::Engine(e) => !e.is_unavailable(),
            ProvisionError::NotReady { .. } => true,
            _ => false,
        }
    }
}

/// The first wait after a failed start; it doubles with each failure in a row.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two starts that fail: a fixed image is picked up within it.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// An owner's last failed starts, remembered so that a broken runtime (a missing image, one
/// that never becomes healthy) is not created again on every request, nor every second by
/// a waiting page.
struct StartFailure {
    /// Failures in a row; reset by a start that succeeds.
    failures: u32,
    /// No start before this.
    retry_at: Instant,
    code: &'static str,
    unavailable: bool,
    message: String,
}

impl StartFailure {
    fn after(previous: Option<&StartFailure>, error: &ProvisionError) -> StartFailure {
        let failures = previous.map_or(0, |p| p.failures).saturating_add(1);
        let wait = BACKOFF_FIRST
            .saturating_mul(1 << (failures - 1).min(16))
            .min(BACKOFF_MAX);
        StartFailure {
            failures,
            retry_at: Instant::now() + wait,
            code: error.code(),
            unavailable: error.is_unavailable(),
            message: error.to_string(),
        }
    }

    /// The error to answer with while the wait lasts.
    fn refusal(&self) -> Option<ProvisionError> {
        let now = Instant::now();
        (now < self.retry_at).then(|| ProvisionError::BackingOff {
            failures: self.failures,
            retry_in: self.retry_at - now,
            code: self.code,
            unavailable: self.unavailable,
            message: self.message.clone(),
        })
    }
}

/// One runtime as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuntimeSummary {
    pub owner_hash: OwnerHash,
    pub mode: &'static str,
    /// `ready`, `starting`, or `busy` (being removed or recovered).
    pub state: &'static str,
    pub container: String,
    /// Last use, seconds since the Unix epoch.
    pub last_used: f64,
    /// Seconds since this gateway started or adopted it.
    pub age_seconds: u64,
    /// Seconds since the last use ended; 0 while held.
    pub idle_seconds: u64,
    /// Open WebSockets (views, CDP sessions) and HTTP requests in flight (runs) on it now.
    pub websockets: usize,
    pub requests: usize,
}

/// What a slot's runtime is doing. Starting and Removing are "the lock is held".
enum SlotState {
    Absent,
    Ready(Arc<RuntimeInfo>),
}

/// One owner's place in the registry.
struct Slot {
    /// The single-flight lock and the lifecycle state it guards.
    state: Arc<AsyncMutex<SlotState>>,
    /// Leases alive on this owner's runtime; the reaper never removes a runtime with holds.
    holds: AtomicUsize,
    /// Mirrors "state is Ready" for lock-free reads (the waiting page); written under the lock.
    ready: AtomicBool,
    /// Ports of the current runtime that have answered once ([`RuntimePort`] bits): until
    /// one has, a refused connection to it is a runtime still starting.
    answered: AtomicU8,
    /// Last time a lease was taken or dropped, in ms of [`Provisioner::now_ms`]; may be
    /// negative for runtimes adopted with an older last use.
    last_used_ms: AtomicI64,
    /// The owner's recent failed starts, for the back-off; written under the lock.
    failure: Mutex<Option<StartFailure>>,
    /// Of the holds, the open WebSockets (views, CDP sessions), for the admin API.
    websockets: AtomicUsize,
    /// The last use this gateway recorded on the engine (shared backends), in ms of the
    /// clock: a use is written when it is newer by the refresh interval, not per request.
    recorded_ms: AtomicI64,
    /// When the current runtime became ready here (started or adopted), in ms of the clock.
    ready_since_ms: AtomicI64,
    /// The isolation mode the current runtime was made in, when another than the gateway's
    /// (an adopted runtime the registry file says the seed or an earlier gateway made so):
    /// whether its volume goes with it follows that mode, never this gateway's.
    adopted_mode: Mutex<Option<IsolationMode>>,
}

impl Slot {
    fn new(now_ms: i64) -> Self {
        Slot {
            state: Arc::new(AsyncMutex::new(SlotState::Absent)),
            holds: AtomicUsize::new(0),
            ready: AtomicBool::new(false),
            answered: AtomicU8::new(0),
            last_used_ms: AtomicI64::new(now_ms),
            failure: Mutex::new(None),
            websockets: AtomicUsize::new(0),
            recorded_ms: AtomicI64::new(i64::MIN),
            ready_since_ms: AtomicI64::new(now_ms),
            adopted_mode: Mutex::new(None),
        }
    }
}

/// A hold on an owner's runtime: keeps it from being reaped while alive, and records last
/// use when taken and when dropped.
pub struct Lease {
    slot: Arc<Slot>,
    runtime: Arc<RuntimeInfo>,
    clock: Clock,
    cold: bool,
    /// Counts this hold in the metrics while it lives.
    _counted: GaugeHold,
    /// This hold is an open WebSocket ([`Lease::mark_websocket`]).
    websocket: bool,
}

impl Lease {
    pub fn runtime(&self) -> &RuntimeInfo {
        &self.runtime
    }

    /// True when this request had to start the runtime (or wait for its start).
    pub fn cold(&self) -> bool {
        self.cold
    }

    /// Has this port of the runtime answered since the runtime became ready? Until it has,
    /// a refused or reset connection means "still starting" (a runtime's view can come up
    /// after its `/health` answers), not "broken".
    pub fn has_answered(&self, port: RuntimePort) -> bool {
        self.slot.answered.load(Ordering::Acquire) & port.bit() != 0
    }

    /// Records that this port of the runtime answered.
    /// Counts this hold as an open WebSocket (a view or a CDP session) until it is dropped.
    pub fn mark_websocket(&mut self) {
        if !self.websocket {
            self.websocket = true;
            self.slot.websockets.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub fn mark_answered(&self, port: RuntimePort) {
        if !self.has_answered(port) {
            self.slot.answered.fetch_or(port.bit(), Ordering::AcqRel);
        }
    }
}

/// The ports a runtime serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimePort {
    Rpc,
    View,
    Cdp,
}

impl RuntimePort {
    fn bit(self) -> u8 {
        match self {
            RuntimePort::Rpc => 1,
            RuntimePort::View => 2,
            RuntimePort::Cdp => 4,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.websocket {
            self.slot.websockets.fetch_sub(1, Ordering::AcqRel);
        }
        self.slot.last_used_ms.fetch_max(self.clock.now_ms(), Ordering::AcqRel);
        self.slot.holds.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Milliseconds on tokio's clock (pausable in tests), anchored to wall time for the registry.
#[derive(Clone, Copy)]
struct Clock {
    epoch: Instant,
    epoch_wall: SystemTime,
}

impl Clock {
    fn new() -> Self {
        Clock {
            epoch: Instant::now(),
            epoch_wall: SystemTime::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        Instant::now().duration_since(self.epoch).as_millis() as i64
    }

    /// Seconds since the Unix epoch for a clock reading, as the seed writes `last_used`.
    fn to_unix(self, ms: i64) -> f64 {
        let base = self
            .epoch_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        base + ms as f64 / 1000.0
    }

    /// The clock reading for seconds since the Unix epoch.
    fn reading_of_unix(self, seconds: f64) -> i64 {
        let base = self
            .epoch_wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        ((seconds - base) * 1000.0).round() as i64
    }
}

/// What tells one version of a file from the next: its inode (every writer of the registry
/// replaces it by a rename), modification time and length.
fn file_stamp(path: &std::path::Path) -> Option<(u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().unwrap_or(UNIX_EPOCH), m.len()))
}

/// Owns every owner's slot and the backend that makes runtimes.
pub struct Provisioner {
    settings: Arc<Settings>,
    backend: Arc<dyn Backend>,
    views: Arc<ViewUrls>,
    /// One slot per owner hash seen; sharded so that owners never contend with each other.
    /// Hashed with foldhash rather than SipHash (a fifth of the instructions a lookup, once a
    /// request): a key is SHA-256 output that admission let through (a signed view URL, or
    /// an authorised owner), so nobody picks the keys to collide them.
    slots: DashMap<OwnerHash, Arc<Slot>, foldhash::fast::RandomState>,
    clock: Clock,
    probe: readiness::ProbeClient,
    /// The registry file is behind what is in memory and should be rewritten.
    dirty: AtomicBool,
    /// The registry file as last read (at start, then at every sync): last use and mode of
    /// runtimes adopted later, and the other writers' entries the reaper expires.
    on_disk: Mutex<Registry>,
    /// The gateway's own entries as it last wrote them (key → `last_used`): an entry of
    /// the file that is here and has not been used since was this gateway's to remove.
    written: Mutex<HashMap<String, f64>>,
    /// The registry file's [`file_stamp`] at the last sync: unchanged and nothing new in
    /// memory means there is nothing to merge.
    file_seen: Mutex<Option<(u64, SystemTime, u64)>>,
    /// Expired entries of other writers whose runtime the engine says is not ours to
    /// remove (another scope's): tried once, then left alone.
    left_alone: Mutex<std::collections::HashSet<String>>,
    /// Running runtimes have been adopted; retried each reaper tick until the engine answers.
    adopted: AtomicBool,
    /// One permit per runtime start in progress (`limits.max_concurrent_starts`).
    starts: Arc<tokio::sync::Semaphore>,
    /// Serialises the "is there room for one more runtime?" decision of cold starts.
    admission: AsyncMutex<()>,
    /// When owners with a profile were last seen, for the profile retention; `None` when
    /// retention is off or profiles go with their runtime anyway (per-task, shared).
    profiles: Option<retention::Ledger>,
    /// Starts, their phases, holds and removals are counted here.
    metrics: Arc<Metrics>,
    /// Signs the view URL each runtime is told (`BROWSER_VIEW_URL`), so that it opens.
    auth: Arc<AuthStore>,
    /// Runtimes started ahead for new owners (`runtime.warm_pool`), refilled by [`pool::run`].
    pool: pool::WarmPool,
}

impl Provisioner {
    pub fn new(
        settings: Arc<Settings>,
        backend: Arc<dyn Backend>,
        views: Arc<ViewUrls>,
        metrics: Arc<Metrics>,
        auth: Arc<AuthStore>,
    ) -> Arc<Self> {
        let on_disk = Registry::load(&settings.registry_path());
        let provisioner = Arc::new(Provisioner {
            backend,
            views,
            slots: DashMap::default(),
            clock: Clock::new(),
            probe: readiness::probe_client(),
            dirty: AtomicBool::new(false),
            on_disk: Mutex::new(on_disk),
            written: Mutex::new(HashMap::new()),
            file_seen: Mutex::new(None),
            left_alone: Mutex::new(Default::default()),
            adopted: AtomicBool::new(false),
            starts: Arc::new(tokio::sync::Semaphore::new(settings.limits.max_concurrent_starts)),
            admission: AsyncMutex::new(()),
            profiles: (settings.profile_retention.is_some()
                && settings.isolation_mode == IsolationMode::DockerPerPrincipal)
                .then(|| retention::Ledger::load(settings.state_dir.join("lazygate-profiles.json"))),
            pool: pool::WarmPool::new(settings.warm_pool),
            settings,
            metrics,
            auth,
        });
        // The scrape counts runtimes from the slots, for as long as the provisioner lives.
        let weak = Arc::downgrade(&provisioner);
        provisioner.metrics.count_runtimes_with(move || {
            weak.upgrade().map_or_else(RuntimeCounts::default, |p| RuntimeCounts {
                ready: p
                    .slots
                    .iter()
                    .filter(|e| e.value().ready.load(Ordering::Acquire))
                    .count() as i64,
                starting: (p.settings.limits.max_concurrent_starts - p.starts.available_permits()) as i64,
            })
        });
        provisioner
    }

    /// One pass of the profile retention, when it is on: profiles of owners not seen within
    /// it removed (sightings are recorded by every [`Provisioner::reap_idle`]).
    pub async fn sweep_profiles(&self) {
        if let (Some(ledger), Some(retention)) = (&self.profiles, self.settings.profile_retention) {
            retention::sweep(self, ledger, retention).await;
            ledger.persist().await;
        }
    }

    /// Removes what a gateway killed mid-operation left on the engine
    /// ([`Backend::sweep_leftovers`]); an engine that does not answer is tried next time.
    pub async fn sweep_leftovers(&self) {
        if let Err(error) = self.backend.sweep_leftovers().await {
            tracing::debug!(%error, "cannot sweep leftovers yet; will retry");
        }
    }

    /// Records each owner's last use as a sighting, for the profile retention.
    fn record_sightings(&self) {
        if let Some(ledger) = &self.profiles {
            for entry in self.slots.iter() {
                let last_used = entry.value().last_used_ms.load(Ordering::Acquire);
                ledger.saw(*entry.key(), self.clock.to_unix(last_used));
            }
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn slot(&self, owner_hash: OwnerHash) -> Arc<Slot> {
        if let Some(slot) = self.slots.get(&owner_hash) {
            return slot.clone();
        }
        self.slots
            .entry(owner_hash)
            .or_insert_with(|| Arc::new(Slot::new(self.clock.now_ms())))
            .clone()
    }

    fn mark_dirty(&self) {
        if !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Release);
        }
    }

    /// Takes a hold; call only with the slot's lock held.
    fn lease(&self, slot: &Arc<Slot>, runtime: Arc<RuntimeInfo>, cold: bool) -> Lease {
        slot.holds.fetch_add(1, Ordering::AcqRel);
        slot.last_used_ms.fetch_max(self.clock.now_ms(), Ordering::AcqRel);
        // The registry file learns of the use from the reaper's `share_use`, once newer than
        // its last write by the refresh interval: marking it stale here, at every request,
        // had every pass (up to one a second) rewrite the whole file while requests came —
        // its cost grows with the owners, not with the requests.
        Lease {
            slot: slot.clone(),
            runtime,
            clock: self.clock,
            cold,
            _counted: GaugeHold::new(&self.metrics.holds),
            websocket: false,
        }
    }

    /// Gets the owner's runtime, starting it if needed, and returns a lease on it.
    ///
    /// Waits at most the start timeout. The start itself runs in its own task holding the
    /// slot lock, so a client that goes away never leaves a half-made runtime behind.
    pub async fn acquire(self: &Arc<Self>, owner_hash: OwnerHash) -> Result<Lease, ProvisionError> {
        // The warm path: the runtime is ready and nobody holds its slot's lock. Without an
        // await, so that a request's future does not carry the start's (boxed below).
        let slot = self.slot(owner_hash);
        if slot.ready.load(Ordering::Acquire)
            && let Ok(guard) = slot.state.try_lock()
            && let SlotState::Ready(runtime) = &*guard
        {
            let runtime = runtime.clone();
            return Ok(self.lease(&slot, runtime, false));
        }
        Box::pin(self.acquire_waiting(owner_hash)).await
    }

    /// [`Provisioner::acquire`] when the runtime is not ready or its slot is busy.
    async fn acquire_waiting(self: &Arc<Self>, owner_hash: OwnerHash) -> Result<Lease, ProvisionError> {
        let waited = self.settings.start_timeout;
        let deadline = Instant::now() + waited;
        let slot = self.slot(owner_hash);
        let timed_out = || ProvisionError::StartTimeout { owner_hash, waited };
        // A request that finds the runtime starting and waits for it is as cold as the one
        // that started it.
        let was_ready = slot.ready.load(Ordering::Acquire);
        let guard = timeout_at(deadline, slot.state.clone().lock_owned())
            .await
            .map_err(|_| timed_out())?;
        if let SlotState::Ready(runtime) = &*guard {
            let runtime = runtime.clone();
            return Ok(self.lease(&slot, runtime, !was_ready));
        }
        if let Some(refusal) = slot
            .failure
            .lock()
            .expect("failure lock")
            .as_ref()
            .and_then(StartFailure::refusal)
        {
            return Err(refusal);
        }
        // A new owner takes a ready warm-pool runtime: no start, no start permit. In a task
        // of its own, so that a requester going away never strands a runtime mid-claim.
        if self.settings.warm_pool > 0 {
            let this = self.clone();
            let claimed = tokio::spawn(async move { this.claim_pooled(owner_hash).await });
            if let Ok(Some(info)) = claimed.await {
                return Ok(self.install(&slot, guard, info));
            }
        }
        let waiting = GaugeHold::new(&self.metrics.starts_waiting);
        let permit = timeout_at(deadline, self.starts.clone().acquire_owned())
            .await
            .map_err(|_| timed_out())?
            .expect("the start semaphore is never closed");
        drop(waiting);
        let room = timeout_at(deadline, self.make_room(owner_hash))
            .await
            .map_err(|_| timed_out())?;
        if let Err(ProvisionError::AtCapacity { .. }) = &room {
            self.metrics.at_capacity.inc();
        }
        room?;
        let this = self.clone();
        let start = tokio::spawn(async move {
            let _permit = permit;
            let _in_flight = GaugeHold::new(&this.metrics.starts_in_flight);
            this.start_locked(owner_hash, slot, guard).await
        });
        match timeout_at(deadline, start).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(ProvisionError::Interrupted(join_error.to_string())),
            Err(_) => Err(timed_out()),
        }
    }

    async fn start_locked(
        self: Arc<Self>,
        owner_hash: OwnerHash,
        slot: Arc<Slot>,
        guard: OwnedMutexGuard<SlotState>,
    ) -> Result<Lease, ProvisionError> {
        let started = Instant::now();
        let info = match self.start(owner_hash).await {
            Ok(info) => {
                self.metrics.start_outcome("ok");
                self.metrics.start_duration.observe(started.elapsed().as_secs_f64());
                for (phase, took) in &info.phases {
                    self.metrics.phase(phase, *took);
                }
                info
            }
            Err(error) => {
                self.metrics.start_outcome(error.code());
                if error.is_start_failure() {
                    let mut failure = slot.failure.lock().expect("failure lock");
                    *failure = Some(StartFailure::after(failure.as_ref(), &error));
                }
                return Err(error);
            }
        };
        Ok(self.install(&slot, guard, info))
    }

    /// Makes a runtime just started (or claimed from the pool) the slot's; returns the
    /// first lease on it.
    fn install(&self, slot: &Arc<Slot>, mut guard: OwnedMutexGuard<SlotState>, info: RuntimeInfo) -> Lease {
        *slot.failure.lock().expect("failure lock") = None;
        let runtime = Arc::new(info);
        *guard = SlotState::Ready(runtime.clone());
        // A runtime found running (the seed's, or another gateway's) keeps the mode the
        // registry file says it was made in; one this gateway made has the gateway's.
        *slot.adopted_mode.lock().expect("mode lock") = if runtime.adopted {
            self.mode_on_disk(runtime.owner_hash)
        } else {
            None
        };
        slot.ready_since_ms.store(self.clock.now_ms(), Ordering::Release);
        // Readiness is the RPC port's `/health`; the other ports may still be coming up.
        slot.answered.store(RuntimePort::Rpc.bit(), Ordering::Release);
        slot.ready.store(true, Ordering::Release);
        self.lease(slot, runtime, true)
    }

    /// Creates (or finds) the owner's runtime, fences it and waits until it answers; a
    /// runtime that cannot be fenced or never answers is removed again.
    async fn start(&self, owner_hash: OwnerHash) -> Result<RuntimeInfo, ProvisionError> {
        let started = Instant::now();
        let spec = self.spec(owner_hash).await;
        let mut info = match self.backend.ensure(&spec).await {
            Ok(info) => info,
            Err(error) => {
                // Logged here too: the requester may have gone (or timed out) already.
                tracing::warn!(%owner_hash, %error, "runtime start failed");
                return Err(error.into());
            }
        };
        let created_ms = started.elapsed().as_millis() as u64;
        let deadline = started + self.settings.start_timeout;
        // The fence goes up while the runtime's processes start; nothing is forwarded to the
        // runtime before both are done.
        let began = Instant::now();
        let ((fenced, fence_took), (ready, ready_took)) = tokio::join!(
            async {
                let fenced = self.backend.fence(&info).await;
                (fenced, began.elapsed())
            },
            async {
                let ready = readiness::wait_ready(&self.probe, &info.endpoints.rpc, deadline).await;
                (ready, began.elapsed())
            }
        );
        info.phases.extend([("fence", fence_took), ("ready", ready_took)]);
        if let Err(error) = fenced {
            // Fail closed: a runtime that cannot be fenced is not served, nor left running.
            tracing::warn!(%owner_hash, container = %info.name, %error, "cannot fence runtime; removing it (its volume stays)");
            match self.backend.remove(&owner_hash, false).await {
                Ok(()) => self.metrics.removed(Removal::FailedStart),
                Err(error) => tracing::warn!(container = %info.name, %error, "cannot remove unfenced runtime"),
            }
            return Err(error.into());
        }
        if let Err(last_error) = ready {
            // A runtime that never answers is broken: remove it (never its volume) so the
            // next request starts a fresh one instead of finding this one again. Its own
            // last words go into the warning first: its logs go with it.
            let runtime_output = match self.backend.last_output(&info, 20).await {
                Ok(output) => output,
                Err(error) => format!("(cannot read its output: {error})"),
            };
            tracing::warn!(
                %owner_hash,
                container = %info.name,
                %last_error,
                ?runtime_output,
                "runtime did not become ready; removing it (its volume stays)"
            );
            match self.backend.remove(&owner_hash, false).await {
                Ok(()) => self.metrics.removed(Removal::FailedStart),
                Err(error) => tracing::warn!(container = %info.name, %error, "cannot remove unready runtime"),
            }
            return Err(ProvisionError::NotReady {
                container: info.name,
                waited: self.settings.start_timeout,
                last_error,
            });
        }
        tracing::info!(
            owner_hash = %owner_hash,
            container = %info.name,
            adopted = info.adopted,
            created_ms,
            ready_ms = started.elapsed().as_millis() as u64,
            mode = self.settings.isolation_mode.as_str(),
            outcome = "ok",
            "runtime ready"
        );
        Ok(info)
    }

    /// Keeps the number of runtimes within `limits.max_runtimes` before one more starts: at
    /// the cap, the least recently used runtime without holds is removed; when every runtime
    /// has a hold, the start is refused (429).
    async fn make_room(&self, owner_hash: OwnerHash) -> Result<(), ProvisionError> {
        let max = self.settings.limits.max_runtimes;
        let _admission = self.admission.lock().await;
        loop {
            // Ready runtimes and starts in progress (this one included), the pool's too.
            if self.runtimes_counted(Some(owner_hash)) <= max {
                return Ok(());
            }
            // The pool gives way first: its runtimes are nobody's yet.
            if self.shrink_pool().await {
                continue;
            }
            let victim = self
                .slots
                .iter()
                .filter(|e| {
                    let slot = e.value();
                    *e.key() != owner_hash
                        && slot.ready.load(Ordering::Acquire)
                        && slot.holds.load(Ordering::Acquire) == 0
                })
                .min_by_key(|e| e.value().last_used_ms.load(Ordering::Acquire))
                .map(|e| (*e.key(), e.value().clone()));
            let Some((victim_hash, slot)) = victim else {
                return Err(ProvisionError::AtCapacity { max });
            };
            let mut guard = slot.state.lock().await;
            let SlotState::Ready(runtime) = &*guard else { continue };
            if slot.holds.load(Ordering::Acquire) > 0 {
                continue;
            }
            self.backend.remove(&victim_hash, self.removes_volume(&slot)).await?;
            self.metrics.removed(Removal::Evicted);
            tracing::info!(
                owner_hash = %victim_hash,
                container = %runtime.name,
                for_owner = %owner_hash,
                reason = "evicted",
                "evicted the least recently used runtime to make room"
            );
            *guard = SlotState::Absent;
            slot.ready.store(false, Ordering::Release);
            self.mark_dirty();
        }
    }

    /// The seed's runtime for an owner: labels, environment, resources.
    async fn spec(&self, owner_hash: OwnerHash) -> RuntimeSpec {
        let s = &self.settings;
        let view_url = self.views.view_url(s.isolation_mode, Some(owner_hash)).await;
        // Signed like the ensure answer's, so that the URL the runtime hands on opens (for the
        // view token's lifetime); only this owner's view, which is its own.
        let view_url = (!view_url.is_empty()).then(|| {
            let auth = self.auth.current();
            if auth.is_insecure() {
                view_url
            } else {
                format!("{view_url}&token={}", auth.sign_view(owner_hash, None))
            }
        });
        RuntimeSpec {
            owner_hash,
            image: s.image.clone(),
            env: self.runtime_env(view_url),
            labels: self.runtime_labels((LABEL_OWNER_HASH, owner_hash.to_string())),
            shm_size_bytes: s.shm_size_bytes,
            resources: self.runtime_resources(),
        }
    }

    /// A runtime's environment, the seed's variables: with the owner's view URL when it has
    /// one (a pool runtime has no owner yet), the pass-through variables, and a key of its own.
    fn runtime_env(&self, view_url: Option<String>) -> BTreeMap<String, String> {
        let s = &self.settings;
        let mut env = BTreeMap::from([
            (
                "BROWSER_ENABLE_UI".to_owned(),
                if s.enable_ui { "true" } else { "false" }.to_owned(),
            ),
            ("BROWSER_DATA_DIR".to_owned(), "/data".to_owned()),
            ("BROWSER_USE_RPC_HOST".to_owned(), "0.0.0.0".to_owned()),
            ("BROWSER_USE_RPC_PORT".to_owned(), s.rpc_port.to_string()),
        ]);
        if let Some(view_url) = view_url {
            env.insert("BROWSER_VIEW_URL".to_owned(), view_url);
        }
        for (key, value) in &s.passthrough_env {
            env.insert(key.clone(), value.clone());
        }
        // The runtime's own key: only the gateway, which knows it, can drive the runtime.
        // The operating system's generator does not fail where we run; a fixed key would.
        let key = crate::auth::random_secret().expect("the operating system's random generator");
        env.insert(RUNTIME_KEY_ENV.to_owned(), key);
        env
    }

    /// A runtime's labels: the seed's, the scope's when set, and `own` (the owner's hash, or
    /// a pool runtime's pool id).
    fn runtime_labels(&self, own: (&str, String)) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_RUNTIME.to_owned(), "true".to_owned()),
            (LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned()),
            (own.0.to_owned(), own.1),
        ]);
        if let Some(scope) = &self.settings.scope {
            labels.insert(LABEL_SCOPE.to_owned(), scope.clone());
        }
        labels
    }

    fn runtime_resources(&self) -> backend::Resources {
        let limits = &self.settings.limits;
        backend::Resources {
            memory_bytes: limits.runtime_memory_bytes,
            cpus: limits.runtime_cpus,
            pids: limits.runtime_pids,
        }
    }

    /// The mode the registry file says an owner's runtime was made in, when it is another
    /// than the gateway's (and not shared, which makes no runtimes).
    fn mode_on_disk(&self, owner_hash: OwnerHash) -> Option<IsolationMode> {
        self.on_disk
            .lock()
            .expect("registry lock")
            .mode_of(self.settings.isolation_mode.as_str(), owner_hash.as_str())
            .and_then(|m| m.parse::<IsolationMode>().ok())
            .filter(|m| *m != self.settings.isolation_mode && *m != IsolationMode::Shared)
    }

    /// The mode a slot's runtime was made in: the gateway's, unless adopted from another.
    fn mode_of(&self, slot: &Slot) -> IsolationMode {
        slot.adopted_mode
            .lock()
            .expect("mode lock")
            .unwrap_or(self.settings.isolation_mode)
    }

    /// Whether a runtime's volume goes with it: only per-task runtimes lose their profile.
    fn removes_volume(&self, slot: &Slot) -> bool {
        self.mode_of(slot) == IsolationMode::DockerPerTask
    }

    /// True when the owner's runtime is up: neither absent nor still starting.
    pub fn is_ready(&self, owner_hash: OwnerHash) -> bool {
        self.slots
            .get(&owner_hash)
            .is_some_and(|slot| slot.ready.load(Ordering::Acquire))
    }

    /// Starts the owner's runtime without waiting for it (for the waiting page).
    pub fn start_in_background(self: &Arc<Self>, owner_hash: OwnerHash) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(error) = this.acquire(owner_hash).await {
                tracing::warn!(%owner_hash, %error, "background start failed");
            }
        });
    }

    /// Removes the owner's runtime now (the seed's `cleanup_browser_runtime`): its container,
    /// and in per-task mode its volume. Waits for a start or removal in progress first.
    pub async fn release(&self, owner_hash: OwnerHash, reason: Removal) -> Result<bool, ProvisionError> {
        let waited = self.settings.start_timeout;
        let slot = self.slot(owner_hash);
        let mut guard = tokio::time::timeout(waited, slot.state.lock())
            .await
            .map_err(|_| ProvisionError::StartTimeout { owner_hash, waited })?;
        let was_ready = matches!(*guard, SlotState::Ready(_));
        let with_volume = self.removes_volume(&slot);
        self.backend.remove(&owner_hash, with_volume).await?;
        if was_ready {
            self.metrics.removed(reason);
        }
        *guard = SlotState::Absent;
        slot.ready.store(false, Ordering::Release);
        self.mark_dirty();
        tracing::info!(owner_hash = %owner_hash, volume_removed = with_volume, reason = reason.as_str(), "runtime released");
        Ok(was_ready)
    }

    /// Called when a lease's runtime refused a connection: if its container is gone or
    /// stopped, forget it so that the next acquire starts a fresh one. Returns true when the
    /// caller should acquire again.
    pub async fn recover(&self, lease: &Lease) -> Result<bool, ProvisionError> {
        let mut guard = lease.slot.state.lock().await;
        match &*guard {
            SlotState::Ready(current) if current.id == lease.runtime.id => {
                if self.backend.is_running(current).await? {
                    return Ok(false);
                }
                tracing::warn!(container = %current.name, "runtime is gone; it will be started again");
                *guard = SlotState::Absent;
                lease.slot.ready.store(false, Ordering::Release);
                self.mark_dirty();
                Ok(true)
            }
            // Already replaced or removed by someone else.
            _ => Ok(true),
        }
    }

    /// Registers running runtimes that carry the managed labels, with last use from the
    /// registry file, or a full TTL of grace when it has none.
    pub async fn adopt(&self) -> Result<usize, BackendError> {
        let runtimes = self.backend.list().await?;
        let now = self.clock.now_ms();
        let mode = self.settings.isolation_mode.as_str();
        let mut adopted = 0;
        // Fenced before anything is forwarded to them (a runtime the seed started has no
        // fence yet); one that cannot be is left to the owner's next request, which tries
        // again and removes it if that fails too.
        let fences = futures_util::future::join_all(runtimes.iter().map(|info| self.backend.fence(info))).await;
        for (info, fenced) in runtimes.into_iter().zip(fences) {
            if let Err(error) = fenced {
                tracing::warn!(container = %info.name, %error, "cannot fence a running runtime; not adopting it");
                continue;
            }
            let slot = self.slot(info.owner_hash);
            let Ok(mut guard) = slot.state.try_lock() else { continue };
            if let SlotState::Absent = *guard {
                let restored = self
                    .on_disk
                    .lock()
                    .expect("registry lock")
                    .last_used(mode, info.owner_hash.as_str());
                let last_used = info
                    .last_used
                    .or(restored)
                    .map(|t| self.clock.reading_of_unix(t).min(now))
                    .unwrap_or(now);
                *slot.adopted_mode.lock().expect("mode lock") = self.mode_on_disk(info.owner_hash);
                slot.last_used_ms.store(last_used, Ordering::Release);
                tracing::info!(
                    owner_hash = %info.owner_hash,
                    container = %info.name,
                    idle_seconds = (now - last_used) / 1000,
                    "adopted running runtime"
                );
                *guard = SlotState::Ready(Arc::new(info));
                slot.ready_since_ms.store(now, Ordering::Release);
                // A running runtime found at start has been up a while; one another gateway
                // started a moment ago (a shared backend's pass) may still be starting.
                let answered = if self.is_adopted() { 0 } else { u8::MAX };
                slot.answered.store(answered, Ordering::Release);
                slot.ready.store(true, Ordering::Release);
                adopted += 1;
            }
        }
        if adopted > 0 || !self.is_adopted() {
            self.mark_dirty();
        }
        self.adopted.store(true, Ordering::Release);
        Ok(adopted)
    }

    pub fn is_adopted(&self) -> bool {
        self.adopted.load(Ordering::Acquire)
    }

    /// Removes every runtime idle past the TTL with no holds, concurrently.
    pub async fn reap_idle(&self) {
        // Sightings first: this pass forgets the slots of the runtimes it removes.
        self.record_sightings();
        let now = self.clock.now_ms();
        let ttl = self.settings.ttl.as_millis() as i64;
        let idle = |slot: &Slot| {
            slot.holds.load(Ordering::Acquire) == 0 && now - slot.last_used_ms.load(Ordering::Acquire) >= ttl
        };
        let candidates: Vec<(OwnerHash, Arc<Slot>)> = self
            .slots
            .iter()
            .filter(|entry| idle(entry.value()))
            .map(|entry| (*entry.key(), entry.value().clone()))
            .collect();
        let removals = candidates.into_iter().map(|(owner_hash, slot)| async move {
            // Busy means starting or being removed: not idle, or somebody else's job.
            let Ok(mut guard) = slot.state.try_lock() else { return };
            let SlotState::Ready(runtime) = &*guard else { return };
            // Re-check under the lock: a request may have taken a hold since.
            if !idle(&slot) {
                return;
            }
            let with_volume = self.removes_volume(&slot);
            let idle_before = self.clock.to_unix(now - ttl);
            match self.backend.retire(&owner_hash, idle_before, with_volume).await {
                Ok(backend::Retirement::UsedSince(used)) => {
                    // Another gateway served it since: its use counts here too.
                    let used = self.clock.reading_of_unix(used).min(self.clock.now_ms());
                    slot.last_used_ms.fetch_max(used, Ordering::AcqRel);
                    tracing::debug!(owner_hash = %owner_hash, "idle here, but used through another gateway; kept");
                }
                Ok(backend::Retirement::Retired) => {
                    self.metrics.removed(Removal::Idle);
                    // A shared backend keeps a per-principal runtime at rest (Swarm: 0 replicas).
                    let outcome = if self.backend.is_shared() && !with_volume {
                        "scaled idle runtime to zero"
                    } else {
                        "removed idle runtime"
                    };
                    tracing::info!(
                        owner_hash = %owner_hash,
                        container = %runtime.name,
                        volume_removed = with_volume,
                        reason = "idle",
                        "{outcome}"
                    );
                    *guard = SlotState::Absent;
                    slot.ready.store(false, Ordering::Release);
                    self.mark_dirty();
                }
                Err(error) => {
                    tracing::warn!(owner_hash = %owner_hash, %error, "cannot remove idle runtime; will retry")
                }
            }
        });
        futures_util::future::join_all(removals).await;
        // Forget empty slots nobody is using, so state does not grow with every owner seen.
        // A recent failure is kept, so that the back-off keeps growing.
        let recently_failed = |slot: &Slot| {
            slot.failure
                .lock()
                .expect("failure lock")
                .as_ref()
                .is_some_and(|f| f.retry_at + BACKOFF_MAX > Instant::now())
        };
        self.slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || slot.holds.load(Ordering::Acquire) > 0
                || recently_failed(slot)
                || !matches!(slot.state.try_lock().as_deref(), Ok(SlotState::Absent))
        });
    }

    /// Records the last use of every runtime this gateway serves where other gateways see
    /// it — on the engine for a shared backend, in the registry file otherwise — so that
    /// their reapers never take a runtime held here: a held runtime counts as used now.
    /// Written when newer than the last write by the refresh interval (TTL/4), so the engine
    /// (or the file) sees a few writes per runtime per TTL, and only while it is used.
    pub async fn share_use(&self) {
        let now = self.clock.now_ms();
        let refresh = self.settings.use_refresh().as_millis() as i64;
        let due: Vec<(OwnerHash, Arc<Slot>, i64)> = self
            .slots
            .iter()
            .filter(|e| e.value().ready.load(Ordering::Acquire))
            .filter_map(|e| {
                let slot = e.value();
                let used = if slot.holds.load(Ordering::Acquire) > 0 {
                    now
                } else {
                    slot.last_used_ms.load(Ordering::Acquire)
                };
                let recorded = slot.recorded_ms.load(Ordering::Acquire);
                (recorded == i64::MIN || used - recorded >= refresh).then(|| (*e.key(), slot.clone(), used))
            })
            .collect();
        if !self.backend.is_shared() {
            // Last use lives in the registry file, which other gateways sharing the state
            // directory read: a held runtime's entry is rewritten as used now.
            if !due.is_empty() {
                for (_, slot, used) in &due {
                    slot.recorded_ms.fetch_max(*used, Ordering::AcqRel);
                }
                self.mark_dirty();
            }
            return;
        }
        let writes = due.into_iter().map(|(owner_hash, slot, used)| async move {
            match self.backend.record_use(&owner_hash, self.clock.to_unix(used)).await {
                Ok(()) => slot.recorded_ms.fetch_max(used, Ordering::AcqRel),
                Err(error) => {
                    tracing::warn!(%owner_hash, %error, "cannot record last use on the engine; will retry");
                    0
                }
            }
        });
        futures_util::future::join_all(writes).await;
    }

    /// The gateway's own entries of the registry: one per ready runtime.
    fn own_entries(&self) -> BTreeMap<String, RegistryEntry> {
        let mut entries = BTreeMap::new();
        for entry in self.slots.iter() {
            let slot = entry.value();
            let Ok(guard) = slot.state.try_lock() else { continue };
            if let SlotState::Ready(runtime) = &*guard {
                let mode = self.mode_of(slot).as_str();
                let owner_hash = entry.key().to_string();
                entries.insert(
                    format!("{mode}:{owner_hash}"),
                    RegistryEntry {
                        container_name: runtime.name.clone(),
                        // Held: in use now (another gateway's reaper reads this).
                        last_used: self.clock.to_unix(if slot.holds.load(Ordering::Acquire) > 0 {
                            self.clock.now_ms()
                        } else {
                            slot.last_used_ms.load(Ordering::Acquire)
                        }),
                        mode: mode.to_owned(),
                        volume_name: runtime
                            .profile
                            .clone()
                            .unwrap_or_else(|| backend::volume_name(entry.key())),
                        owner_hash,
                        extra: Default::default(),
                    },
                );
            }
        }
        entries
    }

    /// Brings the registry file and memory together (and writes the profile ledger): a
    /// read-modify-write of the file under its lock ([`state_file::sync`]) when memory has
    /// changed or someone else has written the file since the last one. A newer last use
    /// written by the seed keeps the runtime here too; an entry of ours that someone took
    /// out of the file (the seed's cleanup) has its runtime checked, and forgotten if gone.
    /// A sync that cannot happen (locked, unwritable, full) is a warning and is retried.
    pub async fn persist(&self) {
        if let Some(ledger) = &self.profiles {
            ledger.persist().await;
        }
        let path = self.settings.registry_path();
        let stamp = file_stamp(&path);
        let changed_on_disk = stamp != *self.file_seen.lock().expect("stamp lock");
        if !self.dirty.swap(false, Ordering::AcqRel) && !changed_on_disk {
            return;
        }
        let ours = self.own_entries();
        let written = self.written.lock().expect("written lock").clone();
        let synced = {
            let (path, ours) = (path.clone(), ours.clone());
            tokio::task::spawn_blocking(move || state_file::sync(&path, &ours, &written)).await
        };
        let synced = match synced {
            Ok(Ok(synced)) => synced,
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot sync the runtime registry; serving goes on, will retry");
                self.dirty.store(true, Ordering::Release);
                return;
            }
            Err(join_error) => {
                tracing::warn!(error = %join_error, "the registry sync was interrupted; will retry");
                self.dirty.store(true, Ordering::Release);
                return;
            }
        };
        *self.file_seen.lock().expect("stamp lock") = file_stamp(&path);
        let state_file::MergeOutcome { vanished, newer } = synced.outcome;
        {
            let mut written = self.written.lock().expect("written lock");
            written.clear();
            for (key, entry) in &ours {
                if !vanished.contains(key) {
                    let used = newer
                        .iter()
                        .find(|(k, _)| k == key)
                        .map_or(entry.last_used, |(_, t)| *t);
                    written.insert(key.clone(), used);
                }
            }
        }
        for (key, last_used) in newer {
            if let Some(slot) = ours
                .get(&key)
                .and_then(|e| OwnerHash::parse(&e.owner_hash).ok())
                .and_then(|h| self.slots.get(&h).map(|s| s.clone()))
            {
                slot.last_used_ms
                    .fetch_max(self.clock.reading_of_unix(last_used), Ordering::AcqRel);
            }
        }
        *self.on_disk.lock().expect("registry lock") = synced.registry;
        for key in vanished {
            if let Some(owner_hash) = ours.get(&key).and_then(|e| OwnerHash::parse(&e.owner_hash).ok()) {
                self.check_taken_out(owner_hash).await;
            }
        }
    }

    /// Someone took this owner's entry out of the registry file (the seed's cleanup or
    /// expiry removes the container with it): forget the runtime if it is gone, so the next
    /// request starts a fresh one at once; write the entry back if it still runs.
    async fn check_taken_out(&self, owner_hash: OwnerHash) {
        let Some(slot) = self.slots.get(&owner_hash).map(|s| s.clone()) else {
            return;
        };
        let Ok(mut guard) = slot.state.try_lock() else { return };
        let SlotState::Ready(runtime) = &*guard else { return };
        match self.backend.is_running(runtime).await {
            Ok(false) => {
                tracing::info!(%owner_hash, container = %runtime.name, "runtime was removed by another manager (its registry entry went too); forgetting it");
                *guard = SlotState::Absent;
                slot.ready.store(false, Ordering::Release);
            }
            Ok(true) => self.mark_dirty(),
            Err(error) => {
                tracing::debug!(%owner_hash, %error, "cannot check a runtime taken out of the registry; will look again");
                self.mark_dirty();
            }
        }
    }

    /// Removes the runtimes of other writers' registry entries (the seed's, a stopped
    /// container's) idle past the TTL, the way the seed's own cleanup does: the container
    /// whatever its state, the volume only if the entry's mode is per-task. A runtime of
    /// another scope is left alone (the engine says it is not ours). The entry goes at the
    /// next sync.
    pub async fn reap_foreign(&self) {
        let now = self.clock.to_unix(self.clock.now_ms());
        let expired: Vec<(String, RegistryEntry)> = {
            let on_disk = self.on_disk.lock().expect("registry lock");
            on_disk
                .expired_foreign(now, self.settings.ttl, |hash| {
                    OwnerHash::parse(hash).is_ok_and(|h| {
                        self.slots.get(&h).is_some_and(|slot| {
                            slot.holds.load(Ordering::Acquire) > 0
                                || !matches!(slot.state.try_lock().as_deref(), Ok(SlotState::Absent))
                        })
                    })
                })
                .map(|(k, e)| (k.clone(), e.clone()))
                .collect()
        };
        for (key, entry) in expired {
            if self.left_alone.lock().expect("left alone lock").contains(&key) {
                continue;
            }
            let Ok(owner_hash) = OwnerHash::parse(&entry.owner_hash) else {
                tracing::warn!(entry = %key, owner_hash = %entry.owner_hash, "registry entry names no valid owner hash; leaving it");
                continue;
            };
            if entry.container_name != backend::container_name(&owner_hash) {
                tracing::warn!(entry = %key, container = %entry.container_name, "registry entry names a container that is not its owner's; leaving it");
                continue;
            }
            let slot = self.slot(owner_hash);
            let Ok(_guard) = slot.state.try_lock() else { continue };
            let with_volume = entry.mode == IsolationMode::DockerPerTask.as_str();
            match self.backend.remove(&owner_hash, with_volume).await {
                Ok(()) => {
                    tracing::info!(%owner_hash, container = %entry.container_name, entry = %key, volume_removed = with_volume, reason = "expired", "removed an expired runtime of the registry file (the seed's cleanup)");
                    self.written.lock().expect("written lock").insert(key, entry.last_used);
                    self.mark_dirty();
                }
                Err(error) => {
                    // Another scope's runtime stays; anything else is tried again next pass.
                    if let BackendError::NameTaken { .. } = error {
                        self.left_alone.lock().expect("left alone lock").insert(key.clone());
                    }
                    tracing::warn!(%owner_hash, entry = %key, %error, "cannot remove an expired runtime of the registry file");
                }
            }
        }
    }

    /// Every runtime this gateway knows, ready or starting, for the admin API.
    pub fn runtimes(&self) -> Vec<RuntimeSummary> {
        let now = self.clock.now_ms();
        let mut runtimes: Vec<RuntimeSummary> = self
            .slots
            .iter()
            .filter_map(|entry| {
                let slot = entry.value();
                let last_used_ms = slot.last_used_ms.load(Ordering::Acquire);
                let holds = slot.holds.load(Ordering::Acquire);
                let websockets = slot.websockets.load(Ordering::Acquire);
                let (state, container) = match slot.state.try_lock().as_deref() {
                    Ok(SlotState::Ready(runtime)) => ("ready", runtime.name.clone()),
                    Ok(SlotState::Absent) => return None,
                    // The lock is held by a start or a removal.
                    Err(_) if slot.ready.load(Ordering::Acquire) => ("busy", backend::container_name(entry.key())),
                    Err(_) => ("starting", backend::container_name(entry.key())),
                };
                Some(RuntimeSummary {
                    owner_hash: *entry.key(),
                    mode: self.settings.isolation_mode.as_str(),
                    state,
                    container,
                    last_used: self.clock.to_unix(last_used_ms),
                    idle_seconds: if holds > 0 {
                        0
                    } else {
                        ((now - last_used_ms).max(0) / 1000) as u64
                    },
                    age_seconds: ((now - slot.ready_since_ms.load(Ordering::Acquire)).max(0) / 1000) as u64,
                    websockets,
                    requests: holds.saturating_sub(websockets),
                })
            })
            .collect();
        runtimes.sort_by(|a, b| a.owner_hash.as_str().cmp(b.owner_hash.as_str()));
        runtimes
    }

    /// Number of owners with a ready runtime (for logs and tests).
    pub fn ready_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|e| matches!(e.value().state.try_lock().as_deref(), Ok(SlotState::Ready(_))))
            .count()
    }
}

#[cfg(test)]
mod tests {
    //! The reaper's rules on tokio's paused clock, with an in-memory backend (the real engine
    //! is exercised by the integration tests).

    use super::*;
    use crate::config::RawConfig;
    use async_trait::async_trait;

    /// Runs nothing; lists one running runtime until it is removed, and records removals;
    /// its creates fail while `failing` is set.
    #[derive(Default)]
    struct FakeBackend {
        removed: Mutex<Vec<(String, Option<String>)>>,
        failing: AtomicBool,
        ensures: AtomicUsize,
        /// Its runtimes are gone (removed behind the gateway's back).
        gone: AtomicBool,
        /// Plays a shared backend (Swarm): last use recorded on the engine, retire judged there.
        shared: AtomicBool,
        /// Last uses recorded (owner, seconds since the epoch), in order.
        recorded: Mutex<Vec<(OwnerHash, f64)>>,
        /// The engine's record of last use, as another gateway may have written it.
        engine_last_used: Mutex<Option<f64>>,
        /// Warm-pool starts tried; every one fails, as with a missing image.
        pool_starts: AtomicUsize,
    }

    fn info(owner_hash: OwnerHash) -> RuntimeInfo {
        let name = backend::container_name(&owner_hash);
        let endpoints = Endpoints {
            rpc: format!("{name}:8787"),
            view: format!("{name}:6080"),
            cdp: format!("{name}:9222"),
        };
        RuntimeInfo {
            id: format!("id-{owner_hash}"),
            name,
            owner_hash,
            direct: endpoints.clone(),
            endpoints,
            adopted: true,
            key: None,
            phases: Vec::new(),
            last_used: None,
            profile: None,
        }
    }

    #[async_trait]
    impl Backend for FakeBackend {
        async fn ping(&self) -> Result<(), BackendError> {
            Ok(())
        }
        async fn list_profiles(&self) -> Result<Vec<OwnerHash>, BackendError> {
            Ok(Vec::new())
        }
        async fn remove_profile(&self, _: &OwnerHash) -> Result<bool, BackendError> {
            Ok(true)
        }
        async fn missing_images(&self, _: &str) -> Result<Vec<String>, BackendError> {
            Ok(Vec::new())
        }
        async fn ensure(&self, spec: &RuntimeSpec) -> Result<RuntimeInfo, BackendError> {
            self.ensures.fetch_add(1, Ordering::SeqCst);
            if self.failing.load(Ordering::SeqCst) {
                return Err(BackendError::Operation {
                    operation: backend::Operation::CreateContainer,
                    unavailable: false,
                    message: "No such image: nowhere:never".into(),
                });
            }
            Ok(info(spec.owner_hash))
        }
        async fn fence(&self, _: &RuntimeInfo) -> Result<(), BackendError> {
            Ok(())
        }
        async fn last_output(&self, _: &RuntimeInfo, _: usize) -> Result<String, BackendError> {
            Ok(String::new())
        }
        async fn is_running(&self, _: &RuntimeInfo) -> Result<bool, BackendError> {
            Ok(!self.gone.load(Ordering::SeqCst))
        }
        async fn remove(&self, owner_hash: &OwnerHash, with_volume: bool) -> Result<(), BackendError> {
            let entry = (
                backend::container_name(owner_hash),
                with_volume.then(|| backend::volume_name(owner_hash)),
            );
            self.removed.lock().unwrap().push(entry);
            Ok(())
        }
        async fn list(&self) -> Result<Vec<RuntimeInfo>, BackendError> {
            Ok(vec![info(OwnerHash::of("alice"))])
        }
        fn is_shared(&self) -> bool {
            self.shared.load(Ordering::SeqCst)
        }
        async fn start_pooled(&self, _: &backend::PoolSpec) -> Result<backend::PooledRuntime, BackendError> {
            self.pool_starts.fetch_add(1, Ordering::SeqCst);
            Err(BackendError::Operation {
                operation: backend::Operation::CreateContainer,
                unavailable: false,
                message: "No such image: nowhere:never".into(),
            })
        }
        async fn record_use(&self, owner_hash: &OwnerHash, last_used: f64) -> Result<(), BackendError> {
            self.recorded.lock().unwrap().push((*owner_hash, last_used));
            let mut engine = self.engine_last_used.lock().unwrap();
            *engine = Some(engine.map_or(last_used, |t| t.max(last_used)));
            Ok(())
        }
        async fn retire(
            &self,
            owner_hash: &OwnerHash,
            idle_before: f64,
            with_volume: bool,
        ) -> Result<backend::Retirement, BackendError> {
            if let Some(used) = self.engine_last_used.lock().unwrap().filter(|t| *t > idle_before) {
                return Ok(backend::Retirement::UsedSince(used));
            }
            self.remove(owner_hash, with_volume).await?;
            Ok(backend::Retirement::Retired)
        }
    }

    #[async_trait]
    impl TunnelLogs for FakeBackend {
        async fn tail(&self, _: &str, _: usize) -> Result<String, BackendError> {
            Ok(String::new())
        }
    }

    fn provisioner(mode: IsolationMode, backend: Arc<FakeBackend>, state_dir: &std::path::Path) -> Arc<Provisioner> {
        let mut settings = Settings::try_from(RawConfig::default()).unwrap();
        settings.ttl = Duration::from_secs(10);
        settings.isolation_mode = mode;
        settings.state_dir = state_dir.to_path_buf();
        let views = Arc::new(ViewUrls::new(None, "tunnel".into(), backend.clone()));
        let metrics = Arc::new(Metrics::new(mode.as_str(), true));
        let auth = Arc::new(AuthStore::new(crate::auth::Auth::from_settings(&settings).unwrap()));
        Provisioner::new(Arc::new(settings), backend, views, metrics, auth)
    }

    /// Writes a registry file with one per-principal entry for `owner_hash`, last used
    /// `ago` seconds before now (as the seed or an earlier gateway leaves it).
    fn write_registry(dir: &std::path::Path, owner_hash: OwnerHash, ago: f64) {
        let mut registry = Registry::default();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
        registry.runtimes.insert(
            format!("docker-per-principal:{owner_hash}"),
            RegistryEntry {
                container_name: backend::container_name(&owner_hash),
                last_used: now - ago,
                mode: "docker-per-principal".into(),
                owner_hash: owner_hash.to_string(),
                volume_name: backend::volume_name(&owner_hash),
                extra: Default::default(),
            },
        );
        std::fs::write(dir.join("docker_runtimes.json"), registry.to_bytes()).unwrap();
    }

    async fn advance(seconds: u64) {
        tokio::time::advance(Duration::from_secs(seconds)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_backend_sees_held_runtimes_as_used_and_loses_to_another_gateways_use() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FakeBackend::default());
        backend.shared.store(true, Ordering::SeqCst);
        let provisioner = provisioner(IsolationMode::DockerPerPrincipal, backend.clone(), dir.path());
        let alice = OwnerHash::of("alice");
        provisioner.adopt().await.unwrap();

        // Held for 30 s (three TTLs): its use is recorded at once and then every TTL/4
        // (2.5 s), never more often, each time as "now".
        let lease = provisioner.acquire(alice).await.unwrap();
        let start = provisioner.clock.to_unix(provisioner.clock.now_ms());
        for _ in 0..60 {
            provisioner.share_use().await;
            advance_ms(500).await;
        }
        let recorded = backend.recorded.lock().unwrap().clone();
        assert_eq!(recorded.len(), 12, "one write per 2.5 s while held: {recorded:?}");
        assert!(recorded.windows(2).all(|w| w[1].1 - w[0].1 >= 2.5));
        assert!(recorded.last().unwrap().1 >= start + 27.0, "written as used now");
        drop(lease);

        // Idle here past the TTL, but another gateway recorded a use 5 s ago: kept, and that
        // use counts here (it goes 10 s after it, not before).
        advance(11).await;
        let elsewhere = provisioner.clock.to_unix(provisioner.clock.now_ms()) - 5.0;
        *backend.engine_last_used.lock().unwrap() = Some(elsewhere);
        provisioner.reap_idle().await;
        assert!(
            backend.removed.lock().unwrap().is_empty(),
            "used through another gateway"
        );
        assert!(provisioner.is_ready(alice));
        advance(4).await;
        provisioner.reap_idle().await;
        assert!(
            backend.removed.lock().unwrap().is_empty(),
            "9 s after the other gateway's use"
        );
        advance(1).await;
        provisioner.reap_idle().await;
        assert_eq!(backend.removed.lock().unwrap().len(), 1, "10 s after it: at rest");
    }

    async fn advance_ms(ms: u64) {
        tokio::time::advance(Duration::from_millis(ms)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn idle_runtimes_go_after_the_ttl_and_holds_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FakeBackend::default());
        let provisioner = provisioner(IsolationMode::DockerPerPrincipal, backend.clone(), dir.path());
        let alice = OwnerHash::of("alice");
        assert_eq!(
            provisioner.adopt().await.unwrap(),
            1,
            "adopted with a full TTL of grace"
        );
        assert!(provisioner.is_ready(alice));

        advance(9).await;
        provisioner.reap_idle().await;
        assert!(backend.removed.lock().unwrap().is_empty(), "9 s idle < 10 s TTL");

        // A lease (an in-flight request or an open WebSocket) holds it however long it lasts.
        let lease = provisioner.acquire(alice).await.unwrap();
        assert!(!lease.cold(), "a ready runtime is a warm hit");
        advance(60).await;
        provisioner.reap_idle().await;
        assert!(
            backend.removed.lock().unwrap().is_empty(),
            "held runtimes are never reaped"
        );

        // Last use is when the hold ended, not when it began.
        drop(lease);
        advance(9).await;
        provisioner.reap_idle().await;
        assert!(backend.removed.lock().unwrap().is_empty());
        advance(1).await;
        provisioner.reap_idle().await;
        let removed = backend.removed.lock().unwrap().clone();
        assert_eq!(
            removed,
            vec![(backend::container_name(&alice), None)],
            "per-principal keeps the volume"
        );
        assert!(!provisioner.is_ready(alice));

        // The registry file follows.
        provisioner.persist().await;
        let registry = Registry::load(&dir.path().join("docker_runtimes.json"));
        assert!(registry.runtimes.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn per_task_runtimes_go_with_their_volume() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FakeBackend::default());
        let provisioner = provisioner(IsolationMode::DockerPerTask, backend.clone(), dir.path());
        let alice = OwnerHash::of("alice");
        provisioner.adopt().await.unwrap();
        provisioner.persist().await;
        let registry = Registry::load(&dir.path().join("docker_runtimes.json"));
        let key = format!("docker-per-task:{alice}");
        assert_eq!(registry.runtimes[&key].container_name, backend::container_name(&alice));
        advance(10).await;
        provisioner.reap_idle().await;
        let removed = backend.removed.lock().unwrap().clone();
        assert_eq!(
            removed,
            vec![(backend::container_name(&alice), Some(backend::volume_name(&alice)))]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn adoption_takes_last_use_from_the_registry_file() {
        let dir = tempfile::tempdir().unwrap();
        let alice = OwnerHash::of("alice");
        // The seed (or an earlier gateway) last used alice's runtime 8 s ago.
        write_registry(dir.path(), alice, 8.0);
        let backend = Arc::new(FakeBackend::default());
        let provisioner = provisioner(IsolationMode::DockerPerPrincipal, backend.clone(), dir.path());
        provisioner.adopt().await.unwrap();
        advance(1).await;
        provisioner.reap_idle().await;
        assert!(backend.removed.lock().unwrap().is_empty(), "9 s idle");
        advance(1).await;
        provisioner.reap_idle().await;
        assert_eq!(
            backend.removed.lock().unwrap().len(),
            1,
            "10 s idle counting the time before the restart"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn failed_starts_back_off_per_owner() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FakeBackend::default());
        backend.failing.store(true, Ordering::SeqCst);
        let provisioner = provisioner(IsolationMode::DockerPerPrincipal, backend.clone(), dir.path());
        let (bob, carol) = (OwnerHash::of("bob"), OwnerHash::of("carol"));
        let ensures = || backend.ensures.load(Ordering::SeqCst);

        let first = provisioner.acquire(bob).await.err().unwrap();
        assert_eq!(first.code(), "runtime_failed");
        assert_eq!(ensures(), 1);
        // Within the back-off the same answer comes back, without touching the engine.
        let again = provisioner.acquire(bob).await.err().unwrap();
        let ProvisionError::BackingOff {
            failures,
            retry_in,
            code,
            ..
        } = &again
        else {
            panic!("{again:?}")
        };
        assert_eq!((*failures, *code), (1, "runtime_failed"));
        assert_eq!(*retry_in, Duration::from_secs(1));
        assert!(again.to_string().contains("nowhere:never"), "{again}");
        assert_eq!(ensures(), 1);
        // Another owner is not held back by bob's failures.
        provisioner.acquire(carol).await.err().unwrap();
        assert_eq!(ensures(), 2);

        // The wait doubles with each failure in a row, and a reaper pass forgets none of it.
        advance(1).await;
        provisioner.acquire(bob).await.err().unwrap();
        assert_eq!(ensures(), 3);
        provisioner.reap_idle().await;
        let Err(ProvisionError::BackingOff {
            failures: 2, retry_in, ..
        }) = provisioner.acquire(bob).await
        else {
            panic!("backing off after the second failure")
        };
        assert_eq!(retry_in, Duration::from_secs(2));
        for _ in 0..10 {
            advance(60).await;
            provisioner.acquire(bob).await.err().unwrap();
        }
        let Err(ProvisionError::BackingOff { retry_in, .. }) = provisioner.acquire(bob).await else {
            panic!("still backing off")
        };
        assert_eq!(retry_in, BACKOFF_MAX, "capped");

        // Once the wait is over, the engine is asked again.
        advance(30).await;
        provisioner.acquire(bob).await.err().unwrap();
        assert_eq!(ensures(), 14);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pool_that_cannot_start_backs_off_and_leaves_the_start_permits_to_owners() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FakeBackend::default());
        let mut settings = Settings::try_from(RawConfig::default()).unwrap();
        settings.warm_pool = 2;
        settings.state_dir = dir.path().to_path_buf();
        let views = Arc::new(ViewUrls::new(None, "tunnel".into(), backend.clone()));
        let metrics = Arc::new(Metrics::new("docker-per-principal", true));
        let auth = Arc::new(AuthStore::new(crate::auth::Auth::from_settings(&settings).unwrap()));
        let provisioner = Provisioner::new(Arc::new(settings), backend.clone(), views, metrics, auth);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let refill = tokio::spawn(pool::run(provisioner.clone(), shutdown.clone()));
        // A round of two starts at 0 s, then one round per back-off step: 1, 2, 4, 8, 16,
        // then 30 s (the longest) after the round before; every start permit stays free for
        // owners in between.
        let started = tokio::time::Instant::now();
        let mut seen = Vec::new();
        for at_ms in [100, 1_100, 3_100, 7_100, 15_100, 31_100, 60_000, 61_100] {
            tokio::time::sleep_until(started + Duration::from_millis(at_ms)).await;
            seen.push(backend.pool_starts.load(Ordering::SeqCst));
            assert_eq!(
                provisioner.starts.available_permits(),
                provisioner.settings.limits.max_concurrent_starts
            );
        }
        assert_eq!(seen, vec![2, 4, 6, 8, 10, 12, 12, 14], "pool starts tried by each time");
        assert_eq!(provisioner.pool.ready_count(), 0);
        shutdown.cancel();
        refill.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_waited_for_a_start_is_cold() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FakeBackend::default());
        let provisioner = provisioner(IsolationMode::DockerPerPrincipal, backend.clone(), dir.path());
        let dave = OwnerHash::of("dave");
        // The readiness probe of the fake runtime never answers, so the start is in progress
        // for as long as the test likes; hold the slot's lock as the start does.
        let slot = provisioner.slot(dave);
        let guard = slot.state.clone().lock_owned().await;
        let waiting = tokio::spawn({
            let provisioner = provisioner.clone();
            async move { provisioner.acquire(dave).await.map(|lease| lease.cold()) }
        });
        tokio::task::yield_now().await;
        let runtime = Arc::new(info(dave));
        let mut guard = guard;
        *guard = SlotState::Ready(runtime);
        slot.ready.store(true, Ordering::Release);
        drop(guard);
        assert!(waiting.await.unwrap().unwrap(), "waited for the start: cold");
        assert!(!provisioner.acquire(dave).await.unwrap().cold(), "then warm");
    }

    #[tokio::test(start_paused = true)]
    async fn an_adopted_runtime_keeps_the_mode_it_was_made_in() {
        let dir = tempfile::tempdir().unwrap();
        let alice = OwnerHash::of("alice");
        // The seed (per principal) made alice's runtime; this gateway runs per task.
        write_registry(dir.path(), alice, 0.0);
        let backend = Arc::new(FakeBackend::default());
        let provisioner = provisioner(IsolationMode::DockerPerTask, backend.clone(), dir.path());
        provisioner.adopt().await.unwrap();
        provisioner.persist().await;
        let written = Registry::load(&dir.path().join("docker_runtimes.json"));
        assert!(
            written.runtimes.contains_key(&format!("docker-per-principal:{alice}")),
            "its registry entry keeps its mode: {written:?}"
        );
        advance(10).await;
        provisioner.reap_idle().await;
        assert_eq!(
            backend.removed.lock().unwrap().clone(),
            vec![(backend::container_name(&alice), None)],
            "a per-principal profile is never removed by a per-task gateway"
        );
    }

    /// The registry file as the test reads it, and written back after `change`.
    fn edit_registry(dir: &std::path::Path, change: impl FnOnce(&mut Registry)) {
        let path = dir.join("docker_runtimes.json");
        let mut registry = Registry::load(&path);
        change(&mut registry);
        std::fs::write(path, registry.to_bytes()).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_last_use_written_by_the_seed_keeps_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let alice = OwnerHash::of("alice");
        write_registry(dir.path(), alice, 0.0);
        let backend = Arc::new(FakeBackend::default());
        let provisioner = provisioner(IsolationMode::DockerPerPrincipal, backend.clone(), dir.path());
        provisioner.adopt().await.unwrap();
        provisioner.persist().await;
        advance(8).await;
        // The seed's ensure_browser_runtime reuses the runtime now: it rewrites the file.
        let now = provisioner.clock.to_unix(provisioner.clock.now_ms());
        edit_registry(dir.path(), |r| {
            r.runtimes
                .get_mut(&format!("docker-per-principal:{alice}"))
                .unwrap()
                .last_used = now;
        });
        provisioner.persist().await;
        advance(5).await;
        provisioner.reap_idle().await;
        assert!(
            backend.removed.lock().unwrap().is_empty(),
            "13 s after the gateway's last use, 5 s after the seed's"
        );
        advance(5).await;
        provisioner.reap_idle().await;
        assert_eq!(backend.removed.lock().unwrap().len(), 1, "10 s after the seed's");
        provisioner.persist().await;
        assert!(
            Registry::load(&dir.path().join("docker_runtimes.json"))
                .runtimes
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn expired_entries_of_other_writers_are_removed_as_the_seed_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let backend = Arc::new(FakeBackend::default());
        let provisioner = provisioner(IsolationMode::DockerPerPrincipal, backend.clone(), dir.path());
        let now = provisioner.clock.to_unix(provisioner.clock.now_ms());
        let (bob, carol, dave) = (OwnerHash::of("bob"), OwnerHash::of("carol"), OwnerHash::of("dave"));
        let entry = |hash: OwnerHash, mode: &str, ago: f64| RegistryEntry {
            container_name: backend::container_name(&hash),
            last_used: now - ago,
            mode: mode.into(),
            owner_hash: hash.to_string(),
            volume_name: backend::volume_name(&hash),
            extra: Default::default(),
        };
        edit_registry(dir.path(), |r| {
            // Stopped or running, made by the seed: bob per task, carol per principal, both
            // idle past the TTL of 10 s; dave per task, used 5 s ago.
            r.runtimes
                .insert(format!("docker-per-task:{bob}"), entry(bob, "docker-per-task", 20.0));
            r.runtimes.insert(
                format!("docker-per-principal:{carol}"),
                entry(carol, "docker-per-principal", 20.0),
            );
            r.runtimes
                .insert(format!("docker-per-task:{dave}"), entry(dave, "docker-per-task", 5.0));
        });
        provisioner.adopt().await.unwrap();
        provisioner.persist().await;
        provisioner.reap_foreign().await;
        let mut removed = backend.removed.lock().unwrap().clone();
        removed.sort();
        let mut expected = vec![
            (backend::container_name(&bob), Some(backend::volume_name(&bob))),
            (backend::container_name(&carol), None),
        ];
        expected.sort();
        assert_eq!(
            removed, expected,
            "a per-task entry's volume goes, a per-principal profile stays"
        );
        provisioner.persist().await;
        let written = Registry::load(&dir.path().join("docker_runtimes.json"));
        let mut keys: Vec<_> = written.runtimes.keys().cloned().collect();
        keys.sort();
        let mut want = vec![
            format!("docker-per-principal:{}", OwnerHash::of("alice")),
            format!("docker-per-task:{dave}"),
        ];
        want.sort();
        assert_eq!(keys, want, "the removed entries go, the others stay");
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_taken_out_by_the_seeds_cleanup_forgets_a_runtime_that_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let alice = OwnerHash::of("alice");
        let backend = Arc::new(FakeBackend::default());
        let provisioner = provisioner(IsolationMode::DockerPerPrincipal, backend.clone(), dir.path());
        provisioner.adopt().await.unwrap();
        provisioner.persist().await;
        let key = format!("docker-per-principal:{alice}");
        // Taken out while the runtime still runs: the gateway writes it back.
        edit_registry(dir.path(), |r| {
            r.runtimes.remove(&key);
        });
        provisioner.persist().await;
        assert!(provisioner.is_ready(alice));
        provisioner.persist().await;
        assert!(
            Registry::load(&dir.path().join("docker_runtimes.json"))
                .runtimes
                .contains_key(&key)
        );
        // The seed's cleanup_browser_runtime: container and entry gone.
        backend.gone.store(true, Ordering::SeqCst);
        edit_registry(dir.path(), |r| {
            r.runtimes.remove(&key);
        });
        provisioner.persist().await;
        assert!(!provisioner.is_ready(alice), "the next request starts a fresh runtime");
        provisioner.persist().await;
        assert!(
            Registry::load(&dir.path().join("docker_runtimes.json"))
                .runtimes
                .is_empty()
        );
    }
}
