//! Prometheus metrics: requests and latency per service and operation.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    operation: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    service: &'static str,
    operation: &'static str,
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("stratus");
        let requests = Family::<RequestLabels, Counter>::default();
        // 25 µs to ~26 s: from an in-memory hit to a long poll.
        let latency: Family<OperationLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_025, 2.0, 21)));
        registry.register("requests", "Requests served, by service, operation and HTTP status", requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time from request head to response, by service and operation",
            latency.clone(),
        );
        Metrics { registry, requests, latency }
    }

    pub fn record(&self, service: &'static str, operation: &'static str, status: u16, seconds: f64) {
        self.requests.get_or_create(&RequestLabels { service, operation, status }).inc();
        self.latency.get_or_create(&OperationLabels { service, operation }).observe(seconds);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
