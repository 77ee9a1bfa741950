//! Prometheus metrics (design §5), served as text on the admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// How a review ended, as the `outcome` label of `gracegate_admission_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A patch was returned.
    Patched,
    /// Allowed unchanged: not a pod CREATE, not opted in, nothing missing.
    Unchanged,
    /// Allowed unchanged because the review could not be acted on (odd object, unknown namespace).
    FailedOpen,
    /// Answered 4xx: the body was not an AdmissionReview.
    Rejected,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::FailedOpen => "failed_open",
            Outcome::Rejected => "rejected",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub admission_requests: Family<OutcomeLabels, Counter>,
    pub admission_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("gracegate");
        let admission_requests = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "Admission reviews answered, by outcome",
            admission_requests.clone(),
        );
        // 10 µs … ~1.3 s: a review is normally tens of microseconds.
        let admission_duration = Histogram::new(exponential_buckets(1e-5, 4.0, 9));
        registry.register(
            "admission_duration_seconds",
            "Time to answer an admission review, body read to response built",
            admission_duration.clone(),
        );
        Metrics {
            registry,
            admission_requests,
            admission_duration,
        }
    }
}

impl Metrics {
    pub fn admission(&self, outcome: Outcome, seconds: f64) {
        self.admission_requests
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
        self.admission_duration.observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
