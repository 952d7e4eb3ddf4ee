//! Prometheus metrics of the gateway, registered in one registry that the admin
//! listener serves.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Request duration buckets in seconds: from a fast local hop to a slow upstream.
const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

pub struct Metrics {
    registry: Registry,
    /// By `route` (`namespace/name`, or `none` when nothing matched), `method` and
    /// `status_class` (`2xx` ...).
    pub requests: IntCounterVec,
    /// From the request's arrival to the end of the response body, by `route`.
    pub request_duration: HistogramVec,
    /// Failed connection attempts to a backend, by `backend`.
    pub upstream_connect_errors: IntCounterVec,
    /// Tries sent again, by `route` and `reason` (`connect_failure`, `reset`,
    /// `per_try_timeout`, `status`), and retries refused by the budget
    /// (`reason="budget_exhausted"`).
    pub upstream_retries: IntCounterVec,
    /// Endpoints taken out of rotation, by `backend` and `check` (`passive` or `active`).
    pub upstream_ejections: IntCounterVec,
    /// Requests answered 503 because a backend's connections and queue were full, by
    /// `backend`.
    pub upstream_overflow: IntCounterVec,
    /// Configuration reloads by `result`: `accepted` or `refused`.
    pub config_reloads: IntCounterVec,
    /// Objects that do not serve as written, by `kind`.
    pub config_rejected_objects: IntGaugeVec,
    /// Client connections open now.
    pub open_connections: IntGauge,
    /// Status writes to the cluster by `result`: `ok` or `error`.
    pub status_writes: IntCounterVec,
    /// TLS handshakes by `result`: `ok`, `unknown_name` (no certificate for the name
    /// asked), `failed` (including a missing or refused client certificate) or
    /// `timeout`.
    pub tls_handshakes: IntCounterVec,
    /// `notAfter` of each certificate in use, as Unix seconds, by `secret`.
    pub tls_certificate_not_after: IntGaugeVec,
    /// Rate limit decisions by `result` (`allowed` or `limited`) and `store`: `local`
    /// (counted per replica), `redis` (shared) or `fallback` (shared, but Redis was
    /// unreachable).
    pub rate_limit_decisions: IntCounterVec,
    /// 1 while Redis answers for shared rate limits; 0 while it does not, or when no
    /// `--redis-url` is set.
    pub rate_limit_redis_up: IntGauge,
    /// Requests a Policy refused, by `route` and `code` (`ip_denied`,
    /// `invalid_api_key`, ...).
    pub policy_denials: IntCounterVec,
    /// Requests admitted with an API key, by `route` and `consumer` (the names in the
    /// keys' Secret, so the label set stays as small as the configuration).
    pub consumer_requests: IntCounterVec,
    /// Requests answered by BFF endpoints, by `bff` (`bff:namespace/name`), `client`
    /// and `status_class`.
    pub bff_requests: IntCounterVec,
    /// Calls made by BFF aggregates, by `bff`, `client`, `part` and `result` (`ok`,
    /// `failed`, `timeout`, `refused`).
    pub bff_part_calls: IntCounterVec,
    /// Cache lookups of Routes with a `cache` section, by `route` and `result`: `hit`,
    /// `miss`, `stale` (sent to the backend to revalidate) or `bypass` (not cacheable:
    /// a method other than GET and HEAD, or credentials the key does not include).
    pub cache_lookups: IntCounterVec,
    /// Responses stored in a cache, by `route`.
    pub cache_stores: IntCounterVec,
    /// Bytes held by each `cache` section, by `policy` (`namespace/name`).
    pub cache_bytes: IntGaugeVec,
    /// Responses compressed, by `route` and `encoding` (`gzip`, `br`, `zstd`).
    pub compressed_responses: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new_custom(Some("portcullis".into()), None)
            .expect("the prefix is a valid metric name");
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Requests answered, by route, method and status class",
            ),
            &["route", "method", "status_class"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Time from request arrival to the end of the response body",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let upstream_connect_errors = IntCounterVec::new(
            Opts::new(
                "upstream_connect_errors_total",
                "Failed connection attempts to backends",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let upstream_retries = IntCounterVec::new(
            Opts::new(
                "upstream_retries_total",
                "Retries sent or refused by the budget",
            ),
            &["route", "reason"],
        )
        .expect("valid metric");
        let upstream_ejections = IntCounterVec::new(
            Opts::new(
                "upstream_ejections_total",
                "Endpoints taken out of rotation by a health check",
            ),
            &["backend", "check"],
        )
        .expect("valid metric");
        let upstream_overflow = IntCounterVec::new(
            Opts::new(
                "upstream_overflow_total",
                "Requests refused because a backend's connections and queue were full",
            ),
            &["backend"],
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new("config_reloads_total", "Configuration reloads by result"),
            &["result"],
        )
        .expect("valid metric");
        let config_rejected_objects = IntGaugeVec::new(
            Opts::new(
                "config_rejected_objects",
                "Objects that do not serve as written",
            ),
            &["kind"],
        )
        .expect("valid metric");
        let open_connections =
            IntGauge::new("open_connections", "Client connections open now").expect("valid metric");

        let status_writes = IntCounterVec::new(
            Opts::new(
                "status_writes_total",
                "Status writes to the cluster by result",
            ),
            &["result"],
        )
        .expect("valid metric");

        let tls_handshakes = IntCounterVec::new(
            Opts::new("tls_handshakes_total", "TLS handshakes by result"),
            &["result"],
        )
        .expect("valid metric");
        let tls_certificate_not_after = IntGaugeVec::new(
            Opts::new(
                "tls_certificate_not_after_seconds",
                "Expiry of each certificate in use, as Unix time",
            ),
            &["secret"],
        )
        .expect("valid metric");

        let rate_limit_decisions = IntCounterVec::new(
            Opts::new(
                "rate_limit_decisions_total",
                "Rate limit decisions by result and by the store that decided",
            ),
            &["result", "store"],
        )
        .expect("valid metric");
        let rate_limit_redis_up = IntGauge::new(
            "rate_limit_redis_up",
            "Whether Redis answers for shared rate limits",
        )
        .expect("valid metric");
        let consumer_requests = IntCounterVec::new(
            Opts::new(
                "consumer_requests_total",
                "Requests admitted with an API key, by route and consumer",
            ),
            &["route", "consumer"],
        )
        .expect("valid metric");
        let policy_denials = IntCounterVec::new(
            Opts::new(
                "policy_denials_total",
                "Requests refused by a Policy, by route and code",
            ),
            &["route", "code"],
        )
        .expect("valid metric");
        let bff_requests = IntCounterVec::new(
            Opts::new(
                "bff_requests_total",
                "Requests answered by BFF endpoints, by BFF, client and status class",
            ),
            &["bff", "client", "status_class"],
        )
        .expect("valid metric");
        let bff_part_calls = IntCounterVec::new(
            Opts::new(
                "bff_part_calls_total",
                "Calls made by BFF aggregates, by BFF, client, part and result",
            ),
            &["bff", "client", "part", "result"],
        )
        .expect("valid metric");
        let cache_lookups = IntCounterVec::new(
            Opts::new("cache_lookups_total", "Cache lookups by route and result"),
            &["route", "result"],
        )
        .expect("valid metric");
        let cache_stores = IntCounterVec::new(
            Opts::new(
                "cache_stores_total",
                "Responses stored in a cache, by route",
            ),
            &["route"],
        )
        .expect("valid metric");
        let cache_bytes = IntGaugeVec::new(
            Opts::new("cache_bytes", "Bytes held by each cache, by policy"),
            &["policy"],
        )
        .expect("valid metric");
        let compressed_responses = IntCounterVec::new(
            Opts::new(
                "compressed_responses_total",
                "Responses compressed, by route and encoding",
            ),
            &["route", "encoding"],
        )
        .expect("valid metric");

        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(upstream_connect_errors.clone()),
            Box::new(upstream_retries.clone()),
            Box::new(upstream_ejections.clone()),
            Box::new(upstream_overflow.clone()),
            Box::new(config_reloads.clone()),
            Box::new(config_rejected_objects.clone()),
            Box::new(open_connections.clone()),
            Box::new(status_writes.clone()),
            Box::new(tls_handshakes.clone()),
            Box::new(tls_certificate_not_after.clone()),
            Box::new(rate_limit_decisions.clone()),
            Box::new(rate_limit_redis_up.clone()),
            Box::new(policy_denials.clone()),
            Box::new(consumer_requests.clone()),
            Box::new(bff_requests.clone()),
            Box::new(bff_part_calls.clone()),
            Box::new(cache_lookups.clone()),
            Box::new(cache_stores.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(compressed_responses.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            request_duration,
            upstream_connect_errors,
            upstream_retries,
            upstream_ejections,
            upstream_overflow,
            config_reloads,
            config_rejected_objects,
            open_connections,
            status_writes,
            tls_handshakes,
            tls_certificate_not_after,
            rate_limit_decisions,
            rate_limit_redis_up,
            policy_denials,
            consumer_requests,
            bff_requests,
            bff_part_calls,
            cache_lookups,
            cache_stores,
            cache_bytes,
            compressed_responses,
        }
    }

    /// Sets the count of objects not serving as written, by kind.
    pub fn observe_rejections(&self, snapshot: &crate::compile::Snapshot) {
        for kind in ["Route", "Policy", "BFF"] {
            self.config_rejected_objects
                .with_label_values(&[kind])
                .set(snapshot.rejected_count(kind) as i64);
        }
    }

    /// Replaces the expiry gauges with those of the certificates `table` serves.
    pub fn observe_tls(&self, table: &crate::tls::TlsTable) {
        self.tls_certificate_not_after.reset();
        for cert in table.certificates() {
            let secret = match cert.secret.namespace.as_str() {
                "" => cert.secret.name.clone(),
                _ => cert.secret.to_string(),
            };
            self.tls_certificate_not_after
                .with_label_values(&[secret.as_str()])
                .set(cert.not_after);
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("encoding into memory cannot fail");
        String::from_utf8(buf).expect("the text format is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Method label with a bounded set of values, so a client inventing methods cannot grow
/// the metric without limit.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method as M;
    match *method {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::DELETE => "DELETE",
        M::PATCH => "PATCH",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "OTHER",
    }
}

pub fn status_class(status: http::StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
