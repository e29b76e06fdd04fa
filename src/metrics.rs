//! Metrics: what an operator watches, in the Prometheus text format, served on the admin
//! listener ([`crate::admin`]) and never on the main one, so the tunnel does not expose them.
//!
//! One [`Metrics`] per gateway, shared by every stage that records something: requests (the
//! service), starts and their phases, holds and removals (provisioning), engine calls (an
//! instrumented backend, [`crate::provision::instrumented`]). Names follow Prometheus
//! conventions: `lazygate_` prefix, base units (`_seconds`), counters end in `_total`. No
//! label carries an owner: their number is unbounded.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Labels of a request: its route kind, status class (`2xx`…) and whether it was cold.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub status: &'static str,
    pub cold: &'static str,
}

/// A label set of one name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EngineLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

/// Why a runtime was removed.
#[derive(Clone, Copy, Debug)]
pub enum Removal {
    /// Idle past the TTL.
    Idle,
    /// The least recently used, to make room at `limits.max_runtimes`.
    Evicted,
    /// `DELETE /rpc/<owner>` or the admin CLI.
    Released,
    /// The seed's cleanup API.
    Cleanup,
    /// It could not be fenced or never became ready.
    FailedStart,
}

impl Removal {
    pub fn as_str(self) -> &'static str {
        match self {
            Removal::Idle => "idle",
            Removal::Evicted => "evicted",
            Removal::Released => "released",
            Removal::Cleanup => "cleanup",
            Removal::FailedStart => "failed_start",
        }
    }
}

/// Runtimes by state, counted at each scrape (from the owners' slots).
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeCounts {
    pub ready: i64,
    pub starting: i64,
}

type CountRuntimes = Box<dyn Fn() -> RuntimeCounts + Send + Sync>;

/// Histogram buckets for request and engine call durations: 0.5 ms to ~65 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Buckets for start phases: 5 ms to ~80 s.
fn start_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// Every metric the gateway keeps; cheap to record from any thread.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// From the request reaching the proxy to the runtime's response head.
    pub upstream_head: Histogram,
    /// Connections dialled to runtimes for HTTP requests: every request that found no kept
    /// connection to reuse dialled one.
    pub upstream_connections: Counter,
    /// Requests a kept connection closed under before any answer (a runtime's keep-alive
    /// timeout, or its death): the GETs and HEADs among them went again, so only this
    /// tells an operator it happens.
    pub upstream_dropped: Counter,
    pub starts: Family<OutcomeLabels, Counter>,
    pub start_phase: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    /// Whole starts that succeeded, from the first engine call to ready and fenced.
    pub start_duration: Histogram,
    /// Starts running now, and requests waiting for a start permit.
    pub starts_in_flight: Gauge,
    pub starts_waiting: Gauge,
    /// Holds: open WebSocket tunnels, and every lease alive (those tunnels and the
    /// requests in flight to runtimes).
    pub websockets_open: Gauge,
    /// Idle HTTP/1.1 client connections kept without hyper's buffers (`server::parking`).
    pub connections_parked: Gauge,
    pub connection_parks: Counter,
    /// Pings the gateway sent to live views' clients, and tunnels it closed itself (1001),
    /// by reason (`client_gone`, `max_age`, `drained`).
    pub websocket_pings: Counter,
    pub websocket_closes: Family<ReasonLabels, Counter>,
    pub holds: Gauge,
    pub removals: Family<ReasonLabels, Counter>,
    pub at_capacity: Counter,
    /// The warm pool: ready runtimes in it, first requests of new owners that claimed one
    /// and that found it empty, and how long one took from the first engine call to ready.
    pub pool_ready: Gauge,
    pub pool_claims: Counter,
    pub pool_misses: Counter,
    pub pool_refill_duration: Histogram,
    pub engine_calls: Family<EngineLabels, Counter>,
    pub engine_call_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Set once the provisioner exists: counts runtimes at each scrape.
    runtimes: Arc<OnceLock<CountRuntimes>>,
    /// Whether per-request metrics are kept: not when nobody can read them (the admin
    /// listener is off), so the warm path pays nothing for them.
    per_request: bool,
    /// The request counter and duration histogram of each kind of request, once looked up
    /// in their families: a family lookup hashes the labels (SipHash) under a lock, about 800
    /// instructions a request (callgrind), where this is an index. They are the families'
    /// own series (shared), so a scrape sees every count.
    request_series: Box<[OnceLock<(Counter, Histogram)>]>,
}

/// The route labels requests are counted under ([`crate::route::Route::kind`], and the
/// request log's own); another label is counted the slow way.
const REQUEST_ROUTES: [&str; 13] = [
    "-",
    "healthz",
    "readyz",
    "view",
    "rpc",
    "cdp",
    "release",
    "run_result",
    "api_ensure",
    "api_cleanup",
    "shared_view",
    "other",
    "rpc_async",
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The scrape-time part: runtimes by state, and the process's own numbers.
struct ScrapeCollector {
    mode: &'static str,
    runtimes: Arc<OnceLock<CountRuntimes>>,
}

impl std::fmt::Debug for ScrapeCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScrapeCollector")
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeLabels {
    mode: &'static str,
    state: &'static str,
}

/// Resident memory in bytes and open file descriptors, from `/proc/self` (`VmRSS` is in
/// KiB whatever the page size).
fn process_numbers() -> (Option<i64>, Option<i64>) {
    let rss = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64);
    (rss, fds)
}

impl Collector for ScrapeCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(count) = self.runtimes.get() {
            let counts = count();
            let mut family = encoder.encode_descriptor(
                "lazygate_runtimes",
                "Runtimes known to this gateway, by isolation mode and state",
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (state, value) in [("ready", counts.ready), ("starting", counts.starting)] {
                let labels = RuntimeLabels { mode: self.mode, state };
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        let (rss, fds) = process_numbers();
        if let Some(rss) = rss {
            let gauge = ConstGauge::new(rss);
            gauge.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Some(fds) = fds {
            let gauge = ConstGauge::new(fds);
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// All metrics, registered; `mode` labels the runtime gauge; `per_request` turns the
    /// per-request histograms and counters on.
    pub fn new(mode: &'static str, per_request: bool) -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let request_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_buckets);
        let upstream_head = latency_buckets();
        let upstream_connections = Counter::default();
        let upstream_dropped = Counter::default();
        let starts = Family::<OutcomeLabels, Counter>::default();
        let start_phase: Family<PhaseLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(start_buckets);
        let start_duration = start_buckets();
        let starts_in_flight = Gauge::default();
        let starts_waiting = Gauge::default();
        let websockets_open = Gauge::default();
        let connections_parked = Gauge::default();
        let connection_parks = Counter::default();
        let websocket_pings = Counter::default();
        let websocket_closes = Family::<ReasonLabels, Counter>::default();
        let holds = Gauge::default();
        let removals = Family::<ReasonLabels, Counter>::default();
        let at_capacity = Counter::default();
        let pool_ready = Gauge::default();
        let pool_claims = Counter::default();
        let pool_misses = Counter::default();
        let pool_refill_duration = start_buckets();
        let engine_calls = Family::<EngineLabels, Counter>::default();
        let engine_call_duration: Family<RouteLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_buckets);
        let runtimes = Arc::new(OnceLock::new());

        let r = &mut registry;
        r.register(
            "lazygate_requests",
            "Requests by route kind, status class and whether they started or waited for a runtime",
            requests.clone(),
        );
        r.register(
            "lazygate_request_duration_seconds",
            "Time from a request's arrival to its response head, by route kind",
            request_duration.clone(),
        );
        r.register(
            "lazygate_upstream_response_head_seconds",
            "Time from sending a request to a runtime to its response head",
            upstream_head.clone(),
        );
        r.register(
            "lazygate_upstream_connections",
            "HTTP connections dialled to runtimes (requests that found a kept connection dialled none)",
            upstream_connections.clone(),
        );
        r.register(
            "lazygate_upstream_dropped",
            "Requests a kept connection closed under before any answer (GET and HEAD among them were sent again)",
            upstream_dropped.clone(),
        );
        r.register("lazygate_starts", "Runtime starts by outcome", starts.clone());
        r.register(
            "lazygate_start_phase_seconds",
            "Time of each phase of a runtime start (volume, network, create, start, join, fence, ready)",
            start_phase.clone(),
        );
        r.register(
            "lazygate_start_duration_seconds",
            "Time of a successful runtime start, from the first engine call to ready and fenced",
            start_duration.clone(),
        );
        r.register(
            "lazygate_starts_in_flight",
            "Runtime starts running now",
            starts_in_flight.clone(),
        );
        r.register(
            "lazygate_starts_waiting",
            "Requests waiting for a start permit (limits.max_concurrent_starts)",
            starts_waiting.clone(),
        );
        r.register(
            "lazygate_websockets_open",
            "WebSocket tunnels open to runtimes (each holds its runtime)",
            websockets_open.clone(),
        );
        r.register(
            "lazygate_connections_parked",
            "Idle HTTP/1.1 client connections parked: kept open without their buffers until the client's next request",
            connections_parked.clone(),
        );
        r.register(
            "lazygate_connection_parks",
            "Times an idle HTTP/1.1 client connection was parked",
            connection_parks.clone(),
        );
        r.register(
            "lazygate_websocket_pings",
            "Pings sent to live views' clients (to find those that are gone)",
            websocket_pings.clone(),
        );
        r.register(
            "lazygate_websocket_closes",
            "WebSocket tunnels the gateway closed itself (1001), by reason",
            websocket_closes.clone(),
        );
        r.register(
            "lazygate_holds",
            "Holds on runtimes: requests in flight to them and open WebSockets",
            holds.clone(),
        );
        r.register("lazygate_removals", "Runtimes removed, by reason", removals.clone());
        r.register(
            "lazygate_at_capacity",
            "Starts refused with 429 because every runtime was in use",
            at_capacity.clone(),
        );
        r.register(
            "lazygate_pool_ready",
            "Warm-pool runtimes started and ready, not claimed yet",
            pool_ready.clone(),
        );
        r.register(
            "lazygate_pool_claims",
            "New owners answered by a warm-pool runtime",
            pool_claims.clone(),
        );
        r.register(
            "lazygate_pool_misses",
            "New owners that found the warm pool empty and waited for a start",
            pool_misses.clone(),
        );
        r.register(
            "lazygate_pool_refill_seconds",
            "Time to start one warm-pool runtime, from the first engine call to ready and fenced",
            pool_refill_duration.clone(),
        );
        r.register(
            "lazygate_engine_calls",
            "Calls to the container engine by operation and outcome",
            engine_calls.clone(),
        );
        r.register(
            "lazygate_engine_call_duration_seconds",
            "Time of calls to the container engine by operation",
            engine_call_duration.clone(),
        );
        r.register(
            "lazygate_build",
            "The gateway's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        r.register_collector(Box::new(ScrapeCollector {
            mode,
            runtimes: runtimes.clone(),
        }));
        // Known label values start at zero, so that rates and alerts see them from the start.
        for reason in [
            Removal::Idle,
            Removal::Evicted,
            Removal::Released,
            Removal::Cleanup,
            Removal::FailedStart,
        ] {
            let _ = removals.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            });
        }
        for outcome in [
            "ok",
            "runtime_failed",
            "runtime_not_ready",
            "name_taken",
            "engine_unavailable",
        ] {
            let _ = starts.get_or_create(&OutcomeLabels { outcome });
        }
        for phase in ["volume", "network", "create", "start", "join", "fence", "ready"] {
            let _ = start_phase.get_or_create(&PhaseLabels { phase });
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_head,
            upstream_connections,
            upstream_dropped,
            starts,
            start_phase,
            start_duration,
            starts_in_flight,
            starts_waiting,
            websockets_open,
            connections_parked,
            connection_parks,
            websocket_pings,
            websocket_closes,
            holds,
            removals,
            at_capacity,
            pool_ready,
            pool_claims,
            pool_misses,
            pool_refill_duration,
            engine_calls,
            engine_call_duration,
            runtimes,
            per_request,
            request_series: (0..REQUEST_ROUTES.len() * STATUS_CLASSES.len() * 2)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// Gives the scrape a way to count runtimes (once; later calls are ignored).
    pub fn count_runtimes_with(&self, count: impl Fn() -> RuntimeCounts + Send + Sync + 'static) {
        let _ = self.runtimes.set(Box::new(count));
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("writing to a String");
        text
    }

    pub fn removed(&self, reason: Removal) {
        self.removals
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn phase(&self, phase: &'static str, took: Duration) {
        self.start_phase
            .get_or_create(&PhaseLabels { phase })
            .observe(took.as_secs_f64());
    }

    pub fn start_outcome(&self, outcome: &'static str) {
        self.starts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Time from sending a request to a runtime to its response head.
    pub fn upstream_answered(&self, took: Duration) {
        if self.per_request {
            self.upstream_head.observe(took.as_secs_f64());
        }
    }

    /// A request a kept connection closed under before any answer (counted always: rare).
    pub fn upstream_dropped(&self) {
        self.upstream_dropped.inc();
    }

    /// A new HTTP connection to a runtime (counted always: it is rare, and it tells whether
    /// connections are reused).
    pub fn upstream_dialled(&self) {
        self.upstream_connections.inc();
    }

    pub fn engine_call(&self, operation: &'static str, ok: bool, took: Duration) {
        let outcome = if ok { "ok" } else { "error" };
        self.engine_calls
            .get_or_create(&EngineLabels { operation, outcome })
            .inc();
        self.engine_call_duration
            .get_or_create(&RouteLabels { route: operation })
            .observe(took.as_secs_f64());
    }

    pub fn request(&self, route: &'static str, status: u16, cold: bool, took: Duration) {
        if !self.per_request {
            return;
        }
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        let series = || {
            let labels = RequestLabels {
                route,
                status: STATUS_CLASSES[class],
                cold: if cold { "true" } else { "false" },
            };
            let counter = self.requests.get_or_create(&labels).clone();
            let histogram = self.request_duration.get_or_create(&RouteLabels { route }).clone();
            (counter, histogram)
        };
        let (counter, histogram) = match REQUEST_ROUTES.iter().position(|r| *r == route) {
            Some(index) => {
                let slot = (index * STATUS_CLASSES.len() + class) * 2 + usize::from(cold);
                self.request_series[slot].get_or_init(series)
            }
            None => &series(),
        };
        counter.inc();
        histogram.observe(took.as_secs_f64());
    }
}

pub const SERVER_TIMING: http::HeaderName = http::HeaderName::from_static("server-timing");

/// `Server-Timing` for a request that waited for its runtime's start: the whole wait
/// (`provision`) and each phase of the start, in milliseconds. Nothing secret.
pub fn server_timing(provision: Duration, phases: &[(&'static str, Duration)]) -> Option<http::HeaderValue> {
    let millis = |d: Duration| d.as_secs_f64() * 1000.0;
    let mut value = format!("provision;dur={:.1}", millis(provision));
    for (phase, took) in phases {
        value.push_str(&format!(", {phase};dur={:.1}", millis(*took)));
    }
    http::HeaderValue::from_str(&value).ok()
}

/// Keeps a gauge one higher while alive.
pub struct GaugeHold(Gauge);

impl GaugeHold {
    pub fn new(gauge: &Gauge) -> GaugeHold {
        gauge.inc();
        GaugeHold(gauge.clone())
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_names_every_family_with_prometheus_conventions() {
        let metrics = Metrics::new("docker-per-principal", true);
        metrics.request("rpc", 200, true, Duration::from_millis(3));
        metrics.removed(Removal::Idle);
        metrics.engine_call("ensure", true, Duration::from_millis(40));
        metrics.count_runtimes_with(|| RuntimeCounts { ready: 2, starting: 1 });
        let text = metrics.encode();
        for expected in [
            "lazygate_requests_total{route=\"rpc\",status=\"2xx\",cold=\"true\"} 1",
            "lazygate_removals_total{reason=\"idle\"} 1",
            "lazygate_engine_calls_total{operation=\"ensure\",outcome=\"ok\"} 1",
            "lazygate_runtimes{mode=\"docker-per-principal\",state=\"ready\"} 2",
            "lazygate_runtimes{mode=\"docker-per-principal\",state=\"starting\"} 1",
            "lazygate_build_info{version=",
            "process_open_fds ",
            "process_resident_memory_bytes ",
            "lazygate_request_duration_seconds_bucket{",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }

    #[test]
    fn requests_counted_through_the_kept_series_reach_the_scrape() {
        let metrics = Metrics::new("docker-per-principal", true);
        for _ in 0..3 {
            metrics.request("rpc", 200, false, Duration::from_millis(1));
        }
        metrics.request("rpc", 503, false, Duration::from_millis(1));
        metrics.request("rpc", 200, true, Duration::from_millis(1));
        metrics.request("unlisted", 404, false, Duration::from_millis(1));
        metrics.request("unlisted", 404, false, Duration::from_millis(1));
        let text = metrics.encode();
        for expected in [
            "lazygate_requests_total{route=\"rpc\",status=\"2xx\",cold=\"false\"} 3",
            "lazygate_requests_total{route=\"rpc\",status=\"5xx\",cold=\"false\"} 1",
            "lazygate_requests_total{route=\"rpc\",status=\"2xx\",cold=\"true\"} 1",
            "lazygate_requests_total{route=\"unlisted\",status=\"4xx\",cold=\"false\"} 2",
            "lazygate_request_duration_seconds_count{route=\"rpc\"} 5",
            "lazygate_request_duration_seconds_count{route=\"unlisted\"} 2",
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
