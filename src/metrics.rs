//! Prometheus metrics (design §5), served as text on the admin port.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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
    /// Every outcome, in the order of the enum (`ALL[o as usize] == o`).
    pub const ALL: [Outcome; 4] = [
        Outcome::Patched,
        Outcome::Unchanged,
        Outcome::FailedOpen,
        Outcome::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Patched => "patched",
            Outcome::Unchanged => "unchanged",
            Outcome::FailedOpen => "failed_open",
            Outcome::Rejected => "rejected",
        }
    }
}

/// Which cap refused a client on the HTTPS port, as `gracegate_webhook_refused_total{limit}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub limit: &'static str,
}

impl RefusedLabels {
    /// `--max-connections`: the connection was reset right after accept.
    pub const CONNECTIONS: RefusedLabels = RefusedLabels {
        limit: "connections",
    };
    /// `--max-in-flight`: the request was answered 503.
    pub const IN_FLIGHT: RefusedLabels = RefusedLabels { limit: "in_flight" };
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AwsLabels {
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetGroupLabels {
    /// The target group's name (from its ARN), not the ARN: shorter, and what the console shows.
    pub target_group: String,
}

/// `gracegate_drain_waits_total`'s outcomes: a drain wait ends released by the leader, or by
/// the waiter's own deadline (inferred: see `waits`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WaitOutcomeLabels {
    pub outcome: &'static str,
}

impl WaitOutcomeLabels {
    pub const RELEASED: WaitOutcomeLabels = WaitOutcomeLabels {
        outcome: "released",
    };
    pub const DEADLINE: WaitOutcomeLabels = WaitOutcomeLabels {
        outcome: "deadline",
    };
}

/// Every ELBv2 operation gracegate calls, and every outcome it counts, in
/// `gracegate_aws_requests_total`. Their series exist from the start (at 0), so that `rate()`
/// and `increase()` in the alert rules see the first throttle or error, not only the second.
pub const AWS_OPERATIONS: [&str; 3] = [
    "DescribeTargetHealth",
    "DescribeTargetGroups",
    "DescribeTargetGroupAttributes",
];
pub const AWS_OUTCOMES: [&str; 4] = ["ok", "throttled", "not_found", "error"];
/// Families whose label values are only known at run time (one series per target group), so
/// they appear in `/metrics` only after their first observation.
pub const RUNTIME_LABELLED_FAMILIES: [&str; 1] = ["gracegate_drain_seconds"];

/// 1 s … ~34 min: drains run from seconds (ALB, short delay) to the 300 s default and beyond.
fn drain_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

pub struct Metrics {
    pub registry: Registry,
    pub admission_requests: Family<OutcomeLabels, Counter>,
    /// The series of `admission_requests`, one per [`Outcome`] (indexed by `Outcome as
    /// usize`), resolved once: counting a review is then one atomic add, not a label lookup.
    admission_by_outcome: [Counter; 4],
    pub admission_duration: Histogram,
    pub gate_ready: Histogram,
    pub gates_pending: Gauge,
    pub aws_requests: Family<AwsLabels, Counter>,
    pub deregistration: Histogram,
    pub terminated_before_deregistered: Counter,
    pub terminated_while_draining: Counter,
    pub gate_timeouts: Counter,
    pub drain: Family<TargetGroupLabels, Histogram, fn() -> Histogram>,
    pub deregistration_lag: Histogram,
    pub leader: Gauge,
    pub webhook_connections: Gauge,
    pub webhook_refused: Family<RefusedLabels, Counter>,
    pub drain_waits_open: Gauge,
    pub drain_waits: Family<WaitOutcomeLabels, Counter>,
    pub drain_wait: Histogram,
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
        // 1 s … ~17 min: from a pod's creation to its target turning healthy.
        let gate_ready = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "gate_ready_seconds",
            "Time from pod creation to its readiness gate turning True",
            gate_ready.clone(),
        );
        let gates_pending = Gauge::default();
        registry.register(
            "gates_pending",
            "Readiness gates waiting for the load balancer to report the target healthy",
            gates_pending.clone(),
        );
        let aws_requests = Family::<AwsLabels, Counter>::default();
        registry.register(
            "aws_requests",
            "ELBv2 API calls by operation and final outcome (after the SDK's retries)",
            aws_requests.clone(),
        );
        let deregistration = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "deregistration_seconds",
            "Time from a pod's deletion to its target leaving the target group",
            deregistration.clone(),
        );
        let terminated_before_deregistered = Counter::default();
        registry.register(
            "terminated_before_deregistered",
            "Pods whose preStop sleep ended while the load balancer still sent them traffic",
            terminated_before_deregistered.clone(),
        );
        let terminated_while_draining = Counter::default();
        registry.register(
            "terminated_while_draining",
            "Pods whose preStop sleep ended while their target was still draining (the load balancer may still route new requests to it)",
            terminated_while_draining.clone(),
        );
        let gate_timeouts = Counter::default();
        registry.register(
            "gate_timeouts",
            "Readiness gates set True by --gate-timeout without a healthy report from the load balancer",
            gate_timeouts.clone(),
        );
        let drain: Family<TargetGroupLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(drain_histogram);
        registry.register(
            "drain_seconds",
            "Time from a pod's deletion to its target no longer listed, per target group",
            drain.clone(),
        );
        let deregistration_lag = Histogram::new(exponential_buckets(0.25, 2.0, 12));
        registry.register(
            "deregistration_lag_seconds",
            "Time from a pod's deletion to the load balancer's first draining answer for its target (the controller's lag)",
            deregistration_lag.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 on the replica that holds the Lease and runs the watcher, else 0",
            leader.clone(),
        );
        let webhook_connections = Gauge::default();
        registry.register(
            "webhook_connections",
            "Open connections on the webhook's HTTPS port, TLS handshakes included",
            webhook_connections.clone(),
        );
        let webhook_refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "webhook_refused",
            "Connections reset (limit=connections) and requests answered 503 (limit=in_flight) by the webhook's caps",
            webhook_refused.clone(),
        );
        for limit in [RefusedLabels::CONNECTIONS, RefusedLabels::IN_FLIGHT] {
            let _ = webhook_refused.get_or_create(&limit);
        }
        let drain_waits_open = Gauge::default();
        registry.register(
            "drain_waits_open",
            "Drain-wait long polls parked on this replica, waiting for the leader's answer",
            drain_waits_open.clone(),
        );
        let drain_waits = Family::<WaitOutcomeLabels, Counter>::default();
        registry.register(
            "drain_waits",
            "Pods whose drain wait ended: released by the leader, or deadline (the pod stopped asking without a release: its waiter reached its deadline or the pod died)",
            drain_waits.clone(),
        );
        for outcome in [WaitOutcomeLabels::RELEASED, WaitOutcomeLabels::DEADLINE] {
            let _ = drain_waits.get_or_create(&outcome);
        }
        let drain_wait = drain_histogram();
        registry.register(
            "drain_wait_seconds",
            "Time from a pod's deletion to its drain-wait release",
            drain_wait.clone(),
        );
        // Known label values start at 0 (see AWS_OPERATIONS).
        let admission_by_outcome = Outcome::ALL.map(|outcome| {
            admission_requests
                .get_or_create(&OutcomeLabels {
                    outcome: outcome.as_str(),
                })
                .clone()
        });
        for operation in AWS_OPERATIONS {
            for outcome in AWS_OUTCOMES {
                let _ = aws_requests.get_or_create(&AwsLabels { operation, outcome });
            }
        }
        Metrics {
            registry,
            admission_requests,
            admission_by_outcome,
            admission_duration,
            gate_ready,
            gates_pending,
            aws_requests,
            deregistration,
            terminated_before_deregistered,
            terminated_while_draining,
            gate_timeouts,
            drain,
            deregistration_lag,
            leader,
            webhook_connections,
            webhook_refused,
            drain_waits_open,
            drain_waits,
            drain_wait,
        }
    }
}

impl Metrics {
    pub fn admission(&self, outcome: Outcome, seconds: f64) {
        self.admission_by_outcome[outcome as usize].inc();
        self.admission_duration.observe(seconds);
    }

    pub fn refused(&self, limit: RefusedLabels) {
        self.webhook_refused.get_or_create(&limit).inc();
    }

    pub fn aws(&self, operation: &'static str, outcome: &'static str) {
        self.aws_requests
            .get_or_create(&AwsLabels { operation, outcome })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each outcome counts in its own series of `gracegate_admission_requests_total`.
    #[test]
    fn each_outcome_counts_in_its_own_series() {
        let metrics = Metrics::default();
        for (n, outcome) in Outcome::ALL.into_iter().enumerate() {
            for _ in 0..=n {
                metrics.admission(outcome, 1e-5);
            }
        }
        let text = metrics.encode();
        for (n, outcome) in Outcome::ALL.into_iter().enumerate() {
            let line = format!(
                "gracegate_admission_requests_total{{outcome=\"{}\"}} {}",
                outcome.as_str(),
                n + 1
            );
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(
            text.contains("gracegate_admission_duration_seconds_count 10"),
            "{text}"
        );
    }
}
