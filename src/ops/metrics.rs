//! The metrics berth exposes on `/metrics` (OpenMetrics text, through `prometheus-client`).
//!
//! Two kinds: those recorded as things happen (requests, pulls, pushes, auth failures,
//! bytes), held in this process; and those read when scraped ([`Snapshot`]: storage and
//! uploads from the database, GC totals that every process adds to, the cache's counters
//! and budgets, the process itself). Label values come from closed sets (the endpoint kind,
//! never the path), so the number of series stays bounded.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::process::ProcessStats;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: &'static str,
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `success` or `failure`.
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// The reasons of `container_registry_auth_failures_total`: no credentials where they are
/// needed, a wrong password or token secret, credentials of the wrong scheme, a bearer token
/// invalid or revoked, a token without the scope, a permission missing, logins throttled,
/// and any other 401.
pub const AUTH_FAILURE_REASONS: [&str; 8] = [
    "missing_credentials",
    "bad_credentials",
    "malformed_credentials",
    "invalid_token",
    "insufficient_scope",
    "denied",
    "throttled",
    "unauthorized",
];

type Durations = Family<RouteLabels, Histogram, fn() -> Histogram>;

fn request_buckets() -> Histogram {
    // 1 ms to ~33 s: manifest GETs sit at the low end, large blob transfers at the top.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// The HTTP method as a label: one of the methods the API uses, else `other`.
pub fn method_label(m: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    KNOWN.into_iter().find(|k| *k == m).unwrap_or("other")
}

/// Figures read when `/metrics` is scraped.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub blobs: u64,
    pub storage_bytes: u64,
    pub uploads_in_progress: u64,
    /// The data dir's filesystem: size and bytes available.
    pub filesystem: Option<(u64, u64)>,
    pub gc: GcTotals,
    pub upstreams: Vec<UpstreamSnapshot>,
    pub process: Option<ProcessStats>,
    /// The readiness checks run at scrape time: backend (`database`, `storage`), whether it
    /// answered, and how long the check took.
    pub backends: Vec<(&'static str, bool, f64)>,
}

/// GC runs by every process on this database, since it was created.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct GcTotals {
    pub runs: u64,
    pub failures: u64,
    pub seconds: f64,
    pub freed_bytes: u64,
    pub blobs: u64,
    /// Seconds since the epoch; 0 when none yet.
    pub last_success: i64,
    pub last_failure: i64,
}

/// One upstream of the pull-through cache, as this process has seen it.
#[derive(Clone, Debug, Default)]
pub struct UpstreamSnapshot {
    pub name: String,
    pub hits: u64,
    pub misses: u64,
    pub stale: u64,
    pub coalesced: u64,
    pub mismatches: u64,
    pub bytes_fetched: u64,
    pub errors: Vec<(&'static str, u64)>,
    /// The last rate-limit budget it reported: limit and remaining.
    pub budget: Option<(u64, u64)>,
}

/// Every metric of one server.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub durations: Durations,
    pub pulls: Family<StatusLabels, Counter>,
    pub pushes: Family<StatusLabels, Counter>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    scraped: Arc<Mutex<Snapshot>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "registry_http_requests",
            "HTTP requests answered, by method, endpoint kind and status",
            requests.clone(),
        );
        let durations: Durations = Family::new_with_constructor(request_buckets);
        registry.register_with_unit(
            "registry_request_duration",
            "Time to answer a request (to its headers; a body streams after), by method and endpoint kind",
            Unit::Seconds,
            durations.clone(),
        );
        let pulls = Family::<StatusLabels, Counter>::default();
        registry.register(
            "container_registry_pulls",
            "Manifest GETs (pulls), by outcome",
            pulls.clone(),
        );
        let pushes = Family::<StatusLabels, Counter>::default();
        registry.register(
            "container_registry_pushes",
            "Manifest PUTs (pushes), by outcome",
            pushes.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "container_registry_auth_failures",
            "Requests refused for their credentials or permissions, by reason",
            auth_failures.clone(),
        );
        let received_bytes = Counter::default();
        registry.register_with_unit(
            "registry_http_received",
            "Request body bytes read",
            Unit::Bytes,
            received_bytes.clone(),
        );
        let sent_bytes = Counter::default();
        registry.register_with_unit(
            "registry_http_sent",
            "Response body bytes sent",
            Unit::Bytes,
            sent_bytes.clone(),
        );
        // Series with a closed set of label values start at zero, so `rate()` and ratios see
        // them before the first event.
        for status in ["success", "failure"] {
            pulls.get_or_create(&StatusLabels { status }).get();
            pushes.get_or_create(&StatusLabels { status }).get();
        }
        for reason in AUTH_FAILURE_REASONS {
            auth_failures.get_or_create(&ReasonLabels { reason }).get();
        }
        let scraped = Arc::new(Mutex::new(Snapshot::default()));
        registry.register_collector(Box::new(Scraped(scraped.clone())));
        Metrics {
            registry,
            requests,
            durations,
            pulls,
            pushes,
            auth_failures,
            received_bytes,
            sent_bytes,
            scraped,
        }
    }

    /// The exposition text, with `snapshot` for the figures read at scrape time.
    pub fn render(&self, snapshot: Snapshot) -> String {
        let mut out = String::new();
        let mut scraped = self.scraped.lock().unwrap_or_else(|e| e.into_inner());
        *scraped = snapshot;
        drop(scraped);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String does not fail");
        out
    }
}

#[derive(Debug)]
struct Scraped(Arc<Mutex<Snapshot>>);

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: u64,
) -> std::fmt::Result {
    ConstCounter::new(v).encode(e.encode_descriptor(name, help, unit, MetricType::Counter)?)
}

fn gauge<N>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: N,
) -> std::fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    ConstGauge::new(v).encode(e.encode_descriptor(name, help, unit, MetricType::Gauge)?)
}

/// A counter or gauge with one `upstream` label per cached upstream.
fn per_upstream(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    ups: &[UpstreamSnapshot],
    value: impl Fn(&UpstreamSnapshot) -> Option<u64>,
) -> std::fmt::Result {
    // With upstreams the family is declared even while no value is known (no upstream has
    // sent its budget yet), so dashboards and rules find it.
    if ups.is_empty() {
        return Ok(());
    }
    let mut m = e.encode_descriptor(name, help, None, kind)?;
    for u in ups {
        let Some(v) = value(u) else { continue };
        let labels = [("upstream", u.name.as_str())];
        let fam = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(fam)?,
            _ => ConstGauge::new(v as i64).encode(fam)?,
        }
    }
    Ok(())
}

impl Collector for Scraped {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let bytes = Some(&Unit::Bytes);
        let secs = Some(&Unit::Seconds);
        gauge(
            &mut e,
            "registry_storage",
            "Bytes of stored blobs and manifests, each counted once",
            bytes,
            s.storage_bytes as i64,
        )?;
        gauge(
            &mut e,
            "registry_blobs",
            "Stored blobs and manifests",
            None,
            s.blobs as i64,
        )?;
        gauge(
            &mut e,
            "registry_uploads_in_progress",
            "Upload sessions open",
            None,
            s.uploads_in_progress as i64,
        )?;
        if !s.backends.is_empty() {
            let mut up = e.encode_descriptor(
                "registry_backend_up",
                "Whether the backend answered the readiness check (1) or not (0)",
                None,
                MetricType::Gauge,
            )?;
            for (name, ok, _) in &s.backends {
                ConstGauge::new(i64::from(*ok)).encode(up.encode_family(&[("backend", *name)])?)?;
            }
            let mut took = e.encode_descriptor(
                "registry_backend_check_duration",
                "How long the backend's readiness check took",
                secs,
                MetricType::Gauge,
            )?;
            for (name, _, t) in &s.backends {
                ConstGauge::new(*t).encode(took.encode_family(&[("backend", *name)])?)?;
            }
        }
        if let Some((size, avail)) = s.filesystem {
            gauge(
                &mut e,
                "registry_filesystem_size",
                "Size of the filesystem holding the data dir",
                bytes,
                size as i64,
            )?;
            gauge(
                &mut e,
                "registry_filesystem_avail",
                "Bytes available to berth on the filesystem holding the data dir",
                bytes,
                avail as i64,
            )?;
        }
        let gc = &s.gc;
        let mut runs = e.encode_descriptor(
            "registry_gc_runs",
            "Garbage collection runs, by outcome (every process on this database)",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(gc.runs).encode(runs.encode_family(&[("status", "success")])?)?;
        ConstCounter::new(gc.failures).encode(runs.encode_family(&[("status", "failure")])?)?;
        ConstCounter::new(gc.seconds).encode(e.encode_descriptor(
            "registry_gc_duration",
            "Time spent in garbage collection runs",
            secs,
            MetricType::Counter,
        )?)?;
        counter(
            &mut e,
            "registry_gc_freed",
            "Bytes garbage collection removed",
            bytes,
            gc.freed_bytes,
        )?;
        counter(
            &mut e,
            "registry_gc_removed_blobs",
            "Blobs garbage collection removed",
            None,
            gc.blobs,
        )?;
        gauge(
            &mut e,
            "registry_gc_last_success_timestamp",
            "When the last successful GC run ended (0: never)",
            secs,
            gc.last_success,
        )?;
        gauge(
            &mut e,
            "registry_gc_last_failure_timestamp",
            "When the last failed GC run ended (0: never)",
            secs,
            gc.last_failure,
        )?;
        let ups = &s.upstreams;
        let c = MetricType::Counter;
        per_upstream(
            &mut e,
            "registry_proxy_cache_hits",
            "Pulls answered from the cache",
            c,
            ups,
            |u| Some(u.hits),
        )?;
        per_upstream(
            &mut e,
            "registry_proxy_cache_misses",
            "Pulls fetched from the upstream",
            c,
            ups,
            |u| Some(u.misses),
        )?;
        per_upstream(
            &mut e,
            "registry_proxy_cache_stale_serves",
            "Cached manifests served stale because the upstream failed",
            c,
            ups,
            |u| Some(u.stale),
        )?;
        per_upstream(
            &mut e,
            "registry_proxy_coalesced_waiters",
            "Pulls that joined a fetch already under way",
            c,
            ups,
            |u| Some(u.coalesced),
        )?;
        per_upstream(
            &mut e,
            "registry_proxy_digest_mismatches",
            "Upstream content refused for not matching its digest or size",
            c,
            ups,
            |u| Some(u.mismatches),
        )?;
        per_upstream(
            &mut e,
            "registry_proxy_fetched_bytes",
            "Bytes fetched from the upstream",
            c,
            ups,
            |u| Some(u.bytes_fetched),
        )?;
        if !ups.is_empty() {
            let mut m = e.encode_descriptor(
                "registry_proxy_upstream_errors",
                "Failed upstream requests, by upstream and kind",
                None,
                MetricType::Counter,
            )?;
            for u in ups {
                for (kind, n) in &u.errors {
                    let labels = [("upstream", u.name.as_str()), ("kind", kind)];
                    ConstCounter::new(*n).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let g = MetricType::Gauge;
        per_upstream(
            &mut e,
            "upstream_rate_limit_limit",
            "The upstream's pull budget per window, from its RateLimit headers",
            g,
            ups,
            |u| u.budget.map(|b| b.0),
        )?;
        per_upstream(
            &mut e,
            "upstream_rate_limit_remaining",
            "Pulls left in the upstream's window, from its RateLimit headers",
            g,
            ups,
            |u| u.budget.map(|b| b.1),
        )?;
        if let Some(p) = &s.process {
            ConstCounter::new(p.cpu_seconds).encode(e.encode_descriptor(
                "process_cpu",
                "User and system CPU time",
                secs,
                MetricType::Counter,
            )?)?;
            gauge(
                &mut e,
                "process_resident_memory",
                "Resident memory",
                bytes,
                p.resident_bytes as i64,
            )?;
            gauge(
                &mut e,
                "process_virtual_memory",
                "Virtual memory",
                bytes,
                p.virtual_bytes as i64,
            )?;
            gauge(
                &mut e,
                "process_open_fds",
                "Open file descriptors",
                None,
                p.open_fds as i64,
            )?;
            gauge(
                &mut e,
                "process_max_fds",
                "The open file descriptor limit",
                None,
                p.max_fds.min(i64::MAX as u64) as i64,
            )?;
            gauge(
                &mut e,
                "process_threads",
                "OS threads",
                None,
                p.threads as i64,
            )?;
            gauge(
                &mut e,
                "process_start_time",
                "When the process started, since the epoch",
                secs,
                p.start_time_seconds,
            )?;
        }
        Ok(())
    }
}
