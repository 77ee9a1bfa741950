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
            let s = &reviewed.summary;
            // What gracegate changed (or could not) is worth a line; the many reviews it has
            // nothing to do with are not, unless debugging.
            macro_rules! log_review {
                ($level:ident) => {
                    $level!(
                        uid = %s.uid, kind = %s.kind, namespace = %s.namespace, pod = %s.pod,
                        dry_run = s.dry_run, outcome = reviewed.outcome.as_str(),
                        skip = s.skip.unwrap_or(""), gates = s.gates, prestops = s.prestops,
                        grace = s.grace, prestop_seconds = s.prestop_seconds,
                        prestop_source = s.prestop_source.unwrap_or(""), warnings = s.warnings,
                        answered_warnings = ?reviewed.review.response.warnings,
                        "review"
                    )
                };
            }
            match reviewed.outcome {
                Outcome::Unchanged => log_review!(debug),
                _ => log_review!(info),
            }
            json_response(reviewed.review.to_json())
        }
        Err(bad) => {
            context.metrics.admission(Outcome::Rejected, seconds);
            warn!(error = %bad, "unreadable admission review");
            (StatusCode::BAD_REQUEST, format!("gracegate: {bad}\n")).into_response()
        }
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
