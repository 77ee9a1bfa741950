//! The ELBv2 shell: the three Describe calls gracegate makes (target health, target groups and
//! their attributes), behind a client-side token bucket, with the SDK's standard retry
//! (backoff with jitter), and every call counted by outcome.
//!
//! The SDK runs on an `aws-smithy-http-client` with rustls and ring (no hyper 0.14, no
//! aws-lc), and takes credentials from its default chain, so IRSA and EKS Pod Identity work.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::config::retry::RetryPartition;
use aws_sdk_elasticloadbalancingv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticloadbalancingv2::types::TargetDescription;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use tokio::time::Instant;

use crate::elb::{Facts, HealthCheck, LoadBalancerKind, TargetHealth, TargetId, TargetState};
use crate::metrics::Metrics;

#[derive(Debug, Clone, thiserror::Error)]
pub enum AwsError {
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("target group not found: {0}")]
    TargetGroupNotFound(String),
    #[error("{0}")]
    Other(String),
}

impl AwsError {
    fn outcome(&self) -> &'static str {
        match self {
            AwsError::Throttled(_) => "throttled",
            AwsError::TargetGroupNotFound(_) => "not_found",
            AwsError::Other(_) => "error",
        }
    }
}

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    error: SdkError<E, R>,
) -> AwsError {
    let message = match &error {
        SdkError::ServiceError(e) => e
            .err()
            .message()
            .map(String::from)
            .unwrap_or_else(|| format!("{:?}", e.err())),
        other => aws_smithy_types::error::display::DisplayErrorContext(other).to_string(),
    };
    match error.code() {
        Some("Throttling" | "ThrottlingException" | "RequestLimitExceeded") => {
            AwsError::Throttled(message)
        }
        Some("TargetGroupNotFound") => AwsError::TargetGroupNotFound(message),
        Some(code) => AwsError::Other(format!("{code}: {message}")),
        None => AwsError::Other(message),
    }
}

/// How the client talks to ELBv2.
#[derive(Clone, Debug)]
pub struct ElbOptions {
    /// Describe calls per second, on average, across all target groups.
    pub rate_per_second: f64,
    /// Calls that may go out at once after a quiet spell.
    pub burst: u32,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    /// Longest wait before a retry.
    pub max_backoff: Duration,
    pub attempt_timeout: Duration,
    pub operation_timeout: Duration,
}

impl Default for ElbOptions {
    fn default() -> Self {
        ElbOptions {
            rate_per_second: 20.0,
            burst: 40,
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(2),
            attempt_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(15),
        }
    }
}

/// The SDK's HTTP client: rustls with ring.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// SDK configuration from the default chain (environment, profile, web identity, container
/// and instance credentials), with `region` and `endpoint_url` when given.
pub async fn sdk_config(
    region: Option<String>,
    endpoint_url: Option<String>,
    options: &ElbOptions,
) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .retry_config(retry_config(options))
        .timeout_config(timeout_config(options));
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

fn retry_config(options: &ElbOptions) -> RetryConfig {
    // Standard mode: exponential backoff with jitter, and the SDK's retry quota. Not adaptive:
    // its client-side limiter drops a quiet client (a watcher makes a few calls a second) to
    // 0.5 calls/s after one throttle and recovers slowly; measured here, two throttles held a
    // gate back 34 s. gracegate paces itself with its own token bucket instead.
    RetryConfig::standard()
        .with_max_attempts(options.max_attempts)
        .with_initial_backoff(options.initial_backoff)
        .with_max_backoff(options.max_backoff)
}

fn timeout_config(options: &ElbOptions) -> TimeoutConfig {
    TimeoutConfig::builder()
        .operation_attempt_timeout(options.attempt_timeout)
        .operation_timeout(options.operation_timeout)
        .build()
}

/// The ELBv2 client gracegate uses.
#[derive(Clone)]
pub struct Elb {
    client: Client,
    bucket: Arc<TokenBucket>,
    metrics: Arc<Metrics>,
}

impl Elb {
    pub fn new(config: &SdkConfig, options: &ElbOptions, metrics: Arc<Metrics>) -> Elb {
        // The SDK shares its retry quota between every client of a partition in the process.
        // Each Elb gets its own, so one client's failures never use up another's retries (a
        // process normally has one client; tests have many).
        static PARTITIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = PARTITIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sdk = aws_sdk_elasticloadbalancingv2::config::Builder::from(config)
            .retry_partition(RetryPartition::new(format!("gracegate-elbv2-{n}")))
            .retry_config(retry_config(options))
            .timeout_config(timeout_config(options))
            .build();
        Elb {
            client: Client::from_conf(sdk),
            bucket: Arc::new(TokenBucket::new(options.rate_per_second, options.burst)),
            metrics,
        }
    }

    /// The client a command a person runs (`plan --aws`, `audit --aws`) uses: the default
    /// credential chain and options, its own metrics.
    pub async fn for_command(region: Option<String>, endpoint_url: Option<String>) -> Elb {
        let options = ElbOptions::default();
        let sdk = sdk_config(region, endpoint_url, &options).await;
        Elb::new(&sdk, &options, Default::default())
    }

    fn count<T>(&self, operation: &'static str, result: &Result<T, AwsError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.metrics.aws(operation, outcome);
    }

    /// Health of `targets` in the target group. Targets the ELB does not know come back as
    /// `unused` / `Target.NotRegistered`, as AWS reports them.
    ///
    /// The call takes its place in the token bucket when it is made, not when the returned
    /// future is first polled: calls made in a loop go out in that order, so under the rate
    /// limit every target group is asked once per round, none twice before another once.
    pub fn describe_target_health(
        &self,
        target_group_arn: &str,
        targets: &[TargetId],
    ) -> impl Future<Output = Result<Vec<(TargetId, TargetHealth)>, AwsError>> + Send + 'static
    {
        let at = self.bucket.reserve();
        let this = self.clone();
        let target_group_arn = target_group_arn.to_string();
        let targets = targets.to_vec();
        async move {
            tokio::time::sleep_until(at).await;
            this.send_describe_target_health(&target_group_arn, &targets)
                .await
        }
    }

    async fn send_describe_target_health(
        &self,
        target_group_arn: &str,
        targets: &[TargetId],
    ) -> Result<Vec<(TargetId, TargetHealth)>, AwsError> {
        let mut request = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn);
        for t in targets {
            request = request.targets(TargetDescription::builder().id(&t.id).port(t.port).build());
        }
        let result = request.send().await.map_err(classify).map(|output| {
            output
                .target_health_descriptions()
                .iter()
                .filter_map(|d| {
                    let target = d.target()?;
                    let health = d.target_health()?;
                    Some((
                        TargetId {
                            id: target.id()?.to_string(),
                            port: target.port().unwrap_or_default(),
                        },
                        TargetHealth {
                            state: TargetState::from_wire(
                                health.state().map(|s| s.as_str()).unwrap_or("unavailable"),
                            ),
                            reason: health.reason().map(|r| r.as_str().to_string()),
                            description: health.description().map(String::from),
                        },
                    ))
                })
                .collect()
        });
        self.count("DescribeTargetHealth", &result);
        result
    }

    /// What `DescribeTargetGroups` and `DescribeTargetGroupAttributes` say about a target
    /// group: two calls, each with its turn in the token bucket taken when this is called (as
    /// [`Elb::describe_target_health`]), so facts queue behind the health calls made before.
    pub fn target_group_facts(
        &self,
        target_group_arn: &str,
    ) -> impl Future<Output = Result<Facts, AwsError>> + Send + 'static {
        let turns = (self.bucket.reserve(), self.bucket.reserve());
        let this = self.clone();
        let arn = target_group_arn.to_string();
        async move {
            tokio::time::sleep_until(turns.0).await;
            let described = this
                .client
                .describe_target_groups()
                .target_group_arns(&arn)
                .send()
                .await
                .map_err(classify);
            this.count("DescribeTargetGroups", &described);
            let group = described?
                .target_groups()
                .iter()
                .find(|tg| tg.target_group_arn() == Some(arn.as_str()))
                .cloned()
                .ok_or_else(|| AwsError::TargetGroupNotFound(arn.clone()))?;
            tokio::time::sleep_until(turns.1).await;
            let attributes = this
                .client
                .describe_target_group_attributes()
                .target_group_arn(&arn)
                .send()
                .await
                .map_err(classify);
            this.count("DescribeTargetGroupAttributes", &attributes);
            let attributes: std::collections::HashMap<String, String> = attributes?
                .attributes()
                .iter()
                .filter_map(|a| Some((a.key()?.to_string(), a.value()?.to_string())))
                .collect();
            let number = |key: &str| attributes.get(key).and_then(|v| v.trim().parse().ok());
            let count = |n: Option<i32>| n.and_then(|n| u32::try_from(n).ok());
            let protocol = group.protocol().map(|p| p.as_str().to_string());
            Ok(Facts {
                load_balancer: protocol
                    .as_deref()
                    .and_then(LoadBalancerKind::from_protocol),
                protocol,
                target_type: group.target_type().map(|t| t.as_str().to_string()),
                ip_address_type: group.ip_address_type().map(|t| t.as_str().to_string()),
                health_check: HealthCheck {
                    interval_seconds: count(group.health_check_interval_seconds()),
                    timeout_seconds: count(group.health_check_timeout_seconds()),
                    healthy_threshold: count(group.healthy_threshold_count()),
                    unhealthy_threshold: count(group.unhealthy_threshold_count()),
                },
                deregistration_delay_seconds: number("deregistration_delay.timeout_seconds"),
                slow_start_seconds: number("slow_start.duration_seconds"),
                connection_termination: attributes
                    .get("deregistration_delay.connection_termination.enabled")
                    .and_then(|v| v.trim().parse().ok()),
            })
        }
    }

    /// The ARN of the target group named `name` (for bindings that give a name, not an ARN).
    pub async fn target_group_arn(&self, name: &str) -> Result<Option<String>, AwsError> {
        self.bucket.acquire().await;
        let result = self
            .client
            .describe_target_groups()
            .names(name)
            .send()
            .await
            .map_err(classify)
            .map(|out| {
                out.target_groups()
                    .iter()
                    .find_map(|tg| tg.target_group_arn().map(String::from))
            });
        self.count("DescribeTargetGroups", &result);
        result
    }

    /// The target group's `deregistration_delay.timeout_seconds`.
    pub async fn deregistration_delay(
        &self,
        target_group_arn: &str,
    ) -> Result<Option<u32>, AwsError> {
        self.bucket.acquire().await;
        let result = self
            .client
            .describe_target_group_attributes()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(classify)
            .map(|out| {
                out.attributes().iter().find_map(|a| {
                    (a.key() == Some("deregistration_delay.timeout_seconds"))
                        .then(|| a.value()?.parse().ok())
                        .flatten()
                })
            });
        self.count("DescribeTargetGroupAttributes", &result);
        result
    }
}

/// A client-side token bucket: `rate` calls a second, at most `burst` at once after a quiet
/// spell. Kept as the equivalent virtual schedule (GCRA): each caller reserves the next slot
/// under the lock and sleeps until it, so waiting callers go in arrival order, with no herd
/// of sleepers racing for each new token (which starved unlucky target groups for several
/// rounds). Hand-written, a dozen lines, rather than a rate-limiting crate: it is the only
/// limiter gracegate needs.
pub struct TokenBucket {
    interval: Duration,
    tolerance: Duration,
    /// When the next call would be due at the steady rate.
    next: std::sync::Mutex<Instant>,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: u32) -> TokenBucket {
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        TokenBucket {
            interval,
            tolerance: interval * burst.max(1).saturating_sub(1),
            next: std::sync::Mutex::new(Instant::now()),
        }
    }

    /// Take the next slot: the caller may go at the returned instant.
    pub fn reserve(&self) -> Instant {
        // Held for a few instructions, never across an await; a poisoned lock still holds
        // a valid instant.
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let due = (*next).max(now);
        *next = due + self.interval;
        due.checked_sub(self.tolerance).unwrap_or(now).max(now)
    }

    /// Wait for a token.
    pub async fn acquire(&self) {
        tokio::time::sleep_until(self.reserve()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_the_rate() {
        let bucket = TokenBucket::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            bucket.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..10 {
            bucket.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.99..1.01).contains(&elapsed),
            "10 more at 10/s take 1 s, took {elapsed}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_callers_go_in_arrival_order() {
        let bucket = Arc::new(TokenBucket::new(10.0, 1));
        bucket.acquire().await;
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 0..5 {
            let (bucket, order) = (bucket.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                bucket.acquire().await;
                order.lock().unwrap().push((n, Instant::now()));
            }));
            tokio::task::yield_now().await;
        }
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().unwrap();
        assert_eq!(
            order.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        for pair in order.windows(2) {
            assert_eq!(pair[1].1 - pair[0].1, Duration::from_millis(100));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn bucket_refills_only_up_to_the_burst() {
        let bucket = TokenBucket::new(100.0, 2);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let start = Instant::now();
        for _ in 0..4 {
            bucket.acquire().await;
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!(
            (0.019..0.021).contains(&elapsed),
            "2 free, 2 at 100/s: {elapsed}"
        );
    }
}
