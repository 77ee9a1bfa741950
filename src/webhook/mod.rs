//! `gracegate webhook`: the mutating admission webhook.
//!
//! * [`review`]: AdmissionReview in → AdmissionReview out (the decision itself is [`crate::inject`]).
//! * [`tls`]: the serving certificate, reloaded when its files change.
//! * [`server`]: the HTTPS and admin listeners, readiness and graceful shutdown.
//! * [`conn`]: what both listeners do with a connection (dual-stack bind, `TCP_NODELAY`, timeouts).
//! * [`drain_wait`]: the drain-wait answer `gracegate-wait` long-polls for, from [`crate::waits`].
//!
//! [`router`] and [`admin_router`] are plain axum routers so tests drive them with
//! `tower::ServiceExt::oneshot`.

pub mod conn;
pub mod drain_wait;
pub mod review;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::inject::Settings;
use crate::metrics::{Metrics, Outcome};

/// Largest AdmissionReview accepted by default (`--max-body-bytes`). The API server's own
/// request limit is 3 MiB, so a larger body cannot be a real review.
///
/// An oversized body is never read whole: a `Content-Length` over the limit is answered 413
/// before any of the body is read, and a chunked or HTTP/2 body as soon as it passes the
/// limit. The HTTP/1.1 connection is then closed (its unread rest cannot be skipped) and the
/// HTTP/2 stream reset; a client still sending may see that instead of the 413. Only a client
/// that is not the API server can send such a body.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the webhook's handlers share.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub cluster: Cluster,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The open drain waits; leading only while this process runs the watcher and holds
    /// the Lease.
    pub waits: Arc<crate::waits::Board>,
}

/// Readiness beyond the caches: the certificate is loaded, the watcher's own caches (when it
/// runs alone) are synced, and no shutdown has begun.
#[derive(Debug, Default)]
pub struct Health {
    pub tls_loaded: AtomicBool,
    pub pods_syncing: AtomicBool,
    pub shutting_down: AtomicBool,
}

impl Context {
    pub fn is_ready(&self) -> bool {
        self.cluster.is_synced()
            && self.health.tls_loaded.load(Ordering::Acquire)
            && !self.health.pods_syncing.load(Ordering::Acquire)
            && !self.health.shutting_down.load(Ordering::Acquire)
    }
}

/// `POST /mutate`, bodies up to [`MAX_BODY_BYTES`].
pub fn router(context: Context) -> Router {
    router_with_body_limit(context, MAX_BODY_BYTES)
}

/// `POST /mutate`, bodies up to `max_body_bytes` (`--max-body-bytes`).
pub fn router_with_body_limit(context: Context, max_body_bytes: usize) -> Router {
    router_with_limits(context, max_body_bytes, None)
}

/// The limits a review runs under on the HTTPS port: the in-flight cap, then the body
/// timeout (see [`conn`]). They are applied in `/mutate`'s handler, not as router-wide
/// middleware, where each would box the request's future and clone its state per request.
#[derive(Clone)]
pub struct ReviewLimits {
    pub in_flight: conn::InFlight,
    pub body: conn::BodyLimit,
}

/// `POST /mutate`, bodies up to `max_body_bytes`, under `limits` when given.
pub fn router_with_limits(
    context: Context,
    max_body_bytes: usize,
    limits: Option<ReviewLimits>,
) -> Router {
    // One `Arc` for everything a review reads: each request clones it once, not the
    // context's dozen handles.
    let shared = Arc::new(Mutate {
        context,
        max_body_bytes,
        limits,
    });
    Router::new().route(
        "/mutate",
        post(move |request: Request| {
            let shared = shared.clone();
            async move { shared.serve(request).await }
        }),
    )
}

/// `/livez`, `/readyz`, `/metrics`, served in plain HTTP on the admin port.
pub fn admin_router(context: Context) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(context)
}

/// What `/mutate`'s handler shares across requests.
struct Mutate {
    context: Context,
    max_body_bytes: usize,
    limits: Option<ReviewLimits>,
}

impl Mutate {
    async fn serve(&self, mut request: Request) -> Response {
        let Some(limits) = &self.limits else {
            return mutate(&self.context, self.max_body_bytes, request).await;
        };
        let Some(_permit) = limits.in_flight.admit(request.uri().path()) else {
            return conn::in_flight_refusal(&limits.in_flight);
        };
        // Taken, not cloned: nothing after this handler reads it.
        let shutdown = request
            .extensions_mut()
            .remove::<axum_server::ConnectionShutdown>();
        conn::within_body_timeout(
            &limits.body,
            "/mutate",
            shutdown,
            mutate(&self.context, self.max_body_bytes, request),
        )
        .await
    }
}

async fn mutate(context: &Context, max_body_bytes: usize, request: Request) -> Response {
    let start = Instant::now();
    let http1 = request.version() < Version::HTTP_2;
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match announced {
        Some(length) if length > max_body_bytes as u64 => Err(BodyError::TooLarge {
            received: 0,
            announced: Some(length),
        }),
        _ => read_body(request.into_body(), max_body_bytes, announced).await,
    };
    let body = match body {
        Ok(body) => body,
        Err(BodyError::TooLarge {
            received,
            announced,
        }) => {
            context
                .metrics
                .admission(Outcome::Rejected, start.elapsed().as_secs_f64());
            warn!(
                received_bytes = received,
                announced_bytes = announced,
                limit_bytes = max_body_bytes,
                "admission review over the size limit; answered 413 without reading the rest"
            );
            let message = format!(
                "gracegate: the body is over {max_body_bytes} bytes (--max-body-bytes; the API server's own limit is {MAX_BODY_BYTES})\n"
            );
            let mut response = (StatusCode::PAYLOAD_TOO_LARGE, message).into_response();
            if http1 {
                // The unread rest of the body cannot be skipped: the connection ends here.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return response;
        }
        Err(BodyError::Read(error)) => {
            context
                .metrics
                .admission(Outcome::Rejected, start.elapsed().as_secs_f64());
            let error = crate::report(&error);
            warn!(%error, "cannot read the admission review body");
            return (StatusCode::BAD_REQUEST, format!("gracegate: {error}\n")).into_response();
        }
    };
    let result = review::review(&body, &context.settings, |namespace| {
        context.cluster.objects(namespace)
    });
    let seconds = start.elapsed().as_secs_f64();
    match result {
        Ok(reviewed) => {
            context.metrics.admission(reviewed.outcome, seconds);
            log_review(&reviewed);
            json_response(reviewed.review.to_json())
        }
        Err(bad) => {
            context.metrics.admission(Outcome::Rejected, seconds);
            warn!(error = %bad, "unreadable admission review");
            (StatusCode::BAD_REQUEST, format!("gracegate: {bad}\n")).into_response()
        }
    }
}

/// The line a review is logged with. What gracegate changed (or could not) is worth an
/// `info` line; the many reviews it has nothing to do with are not, unless debugging.
pub fn log_review(reviewed: &review::Reviewed) {
    use tracing::field::{DisplayValue, display};
    let s = &reviewed.summary;
    let warnings = &reviewed.review.response.warnings;
    let shown = |text: &'static str| -> DisplayValue<&'static str> { display(text) };
    // One line per patched or failed-open review, so it is kept cheap: `uid`, `namespace`,
    // `pod` and `outcome` always; every other field only when it says something (an absent
    // `Option` is not recorded at all): `kind` when not a Pod, `dry_run` when true, `skip`,
    // `gates` and `prestops` when not 0, `grace`, `prestop_seconds`, `prestop_source` when
    // set, `warnings` (the count) and `answered_warnings` (the texts, `; `-joined) when there
    // are any. Strings are `Display`ed `&str`s. The line used to carry all 14 fields, the
    // warnings as `Debug`; this one costs 7-20 % less plain, 11-17 % less JSON (two runs of
    // benches/inject.rs `log`; BENCHMARKS.md).
    macro_rules! line {
        ($level:ident) => {
            $level!(
                uid = %s.uid.as_ref(),
                namespace = %s.namespace.as_ref(),
                pod = %s.pod.as_ref(),
                outcome = %reviewed.outcome.as_str(),
                kind = (!s.kind.is_empty() && s.kind != "Pod").then(|| display(s.kind.as_ref())),
                dry_run = s.dry_run.then_some(true),
                skip = s.skip.map(shown),
                gates = (s.gates > 0).then_some(s.gates),
                prestops = (s.prestops > 0).then_some(s.prestops),
                grace = s.grace,
                prestop_seconds = s.prestop_seconds,
                prestop_source = s.prestop_source.map(shown),
                warnings = (s.warnings > 0).then_some(s.warnings),
                answered_warnings = (!warnings.is_empty()).then(|| display(Joined(warnings))),
                "review"
            )
        };
    }
    match reviewed.outcome {
        Outcome::Unchanged => line!(debug),
        _ => line!(info),
    }
}

/// Texts joined by `; `, written as they are formatted.
struct Joined<'a>(&'a [String]);

impl std::fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, text) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            f.write_str(text)?;
        }
        Ok(())
    }
}

/// A 200 with a JSON body, as `axum::Json` answers.
fn json_response(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Why a body was not read.
pub enum BodyError {
    /// Over the limit: `received` bytes when reading stopped, or the `Content-Length`.
    TooLarge {
        received: usize,
        announced: Option<u64>,
    },
    Read(axum::Error),
}

/// The whole body, up to `limit` bytes; reading stops at the chunk that passes the limit.
///
/// A body that arrives as one frame (a review of a few KiB over HTTP/1.1 usually does) is
/// kept as that frame, uncopied. Otherwise the frames go into one buffer, sized up front
/// from `announced` (already checked against `limit`) when the client said it.
pub async fn read_body(
    body: Body,
    limit: usize,
    announced: Option<u64>,
) -> Result<Bytes, BodyError> {
    use axum::body::HttpBody;
    let mut body = body;
    let mut first: Option<Bytes> = None;
    let mut rest: Option<Vec<u8>> = None;
    let mut received = 0usize;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        let Ok(chunk) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        if received + chunk.len() > limit {
            return Err(BodyError::TooLarge {
                received: received + chunk.len(),
                announced: None,
            });
        }
        received += chunk.len();
        if let Some(buf) = &mut rest {
            buf.extend_from_slice(&chunk);
        } else if let Some(head) = first.take() {
            let expected = announced.map_or(0, |n| n as usize);
            let mut buf = Vec::with_capacity(expected.max(received));
            buf.extend_from_slice(&head);
            buf.extend_from_slice(&chunk);
            rest = Some(buf);
        } else {
            first = Some(chunk);
        }
    }
    Ok(match (rest, first) {
        (Some(buf), _) => Bytes::from(buf),
        (None, Some(only)) => only,
        (None, None) => Bytes::new(),
    })
}

async fn readyz(State(context): State<Context>) -> Response {
    if context.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let health = &context.health;
        let reason = if health.shutting_down.load(Ordering::Acquire) {
            "shutting down"
        } else if !health.tls_loaded.load(Ordering::Acquire) {
            "certificate not loaded"
        } else if health.pods_syncing.load(Ordering::Acquire) {
            "pod cache not synced"
        } else {
            "caches not synced"
        };
        (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response()
    }
}

async fn metrics(State(context): State<Context>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        context.metrics.encode(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {

    use serde_json::Value;

    use super::*;
    use crate::cluster::Objects;
    use crate::logging::captured::Captured;
    use crate::logging::{LogFormat, dispatch};

    /// The JSON lines `log_review` writes for the recorded review, changed by `edit`.
    fn logged(edit: impl FnOnce(&mut Value)) -> Vec<Value> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let cluster = Cluster::from_objects(Objects::load_dir(&dir.join("cluster")).unwrap());
        let mut request: Value = serde_json::from_slice(
            &std::fs::read(dir.join("admission/create-deployment-pod.json")).unwrap(),
        )
        .unwrap();
        edit(&mut request);
        let body = serde_json::to_vec(&request).unwrap();
        let reviewed =
            review::review(&body, &Settings::default(), |ns| cluster.objects(ns)).unwrap();

        let out = Captured::default();
        let sink = out.clone();
        let writer = move || sink.clone();
        let filter = tracing_subscriber::EnvFilter::new("info");
        let subscriber = dispatch(LogFormat::Json, false, filter, writer);
        tracing::dispatcher::with_default(&subscriber, || log_review(&reviewed));
        let text = out.text();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Field names of the review's line, recorded only when they say something.
    fn fields(line: &Value) -> Vec<&str> {
        let mut names: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        names.retain(|n| !["timestamp", "level", "target", "message"].contains(n));
        names.sort_unstable();
        names
    }

    #[test]
    fn a_patched_review_logs_what_it_changed_and_nothing_empty() {
        let lines = logged(|_| {});
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["message"], "review");
        assert_eq!(line["level"], "INFO");
        assert_eq!(
            fields(line),
            [
                "answered_warnings",
                "gates",
                "grace",
                "namespace",
                "outcome",
                "pod",
                "prestop_seconds",
                "prestop_source",
                "prestops",
                "uid",
                "warnings",
            ]
        );
        assert_eq!(line["outcome"], "patched");
        assert_eq!(line["namespace"], "game-2048");
        assert_eq!(line["gates"], 1);
        assert_eq!(line["prestops"], 2);
        assert_eq!(line["grace"], 70);
        assert_eq!(line["warnings"], 1);
        let text = line["answered_warnings"].as_str().unwrap();
        assert!(
            text.contains("terminationGracePeriodSeconds raised"),
            "{text}"
        );
    }

    #[test]
    fn a_review_that_failed_open_says_why() {
        // Derived from the recorded review: another kind, a dry run.
        let lines = logged(|r| {
            r["request"]["kind"]["kind"] = "ConfigMap".into();
            r["request"]["dryRun"] = true.into();
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["outcome"], "failed_open");
        assert_eq!(line["kind"], "ConfigMap");
        assert_eq!(line["dry_run"], true);
        assert_eq!(line["warnings"], 1);
        assert!(line.get("gates").is_none() && line.get("prestop_source").is_none());

        let lines = logged(|r| r["request"]["namespace"] = "elsewhere".into());
        let line = &lines[0];
        assert_eq!(line["skip"], "namespace-unknown", "{line}");
        assert!(line.get("kind").is_none() && line.get("dry_run").is_none());
    }

    #[test]
    fn the_warnings_texts_are_joined() {
        // Derived from the recorded review: a containers annotation that names no container.
        let lines = logged(|r| {
            r["request"]["object"]["metadata"]["annotations"] =
                serde_json::json!({ "gracegate.io/containers": "nope" });
        });
        let line = &lines[0];
        let count = line["warnings"].as_u64().unwrap();
        assert!(count >= 2, "{line}");
        let text = line["answered_warnings"].as_str().unwrap();
        assert_eq!(
            text.matches("; gracegate: ").count() as u64,
            count - 1,
            "{text}"
        );
    }

    #[test]
    fn an_unchanged_review_is_not_an_info_line() {
        let lines = logged(|r| {
            r["request"]["operation"] = "UPDATE".into();
        });
        assert!(lines.is_empty(), "{lines:?}");
    }
}
