//! `gracegate webhook`: the mutating admission webhook.
//!
//! * [`review`]: AdmissionReview in → AdmissionReview out (the decision itself is [`crate::inject`]).
//! * [`tls`]: the serving certificate, reloaded when its files change.
//! * [`server`]: the HTTPS and admin listeners, readiness and graceful shutdown.
//!
//! [`router`] and [`admin_router`] are plain axum routers so tests drive them with
//! `tower::ServiceExt::oneshot`.

pub mod review;
pub mod server;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tracing::{debug, info, warn};

use crate::cluster::Cluster;
use crate::inject::Settings;
use crate::metrics::{Metrics, Outcome};

/// Largest AdmissionReview accepted. The API server's own request limit is 3 MiB, so a
/// larger body cannot be a real review.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the webhook's handlers share.
#[derive(Clone)]
pub struct Context {
    pub settings: Arc<Settings>,
    pub cluster: Cluster,
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
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

/// `POST /mutate`.
pub fn router(context: Context) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(context)
}

/// `/livez`, `/readyz`, `/metrics`, served in plain HTTP on the admin port.
pub fn admin_router(context: Context) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(context)
}

async fn mutate(State(context): State<Context>, body: Bytes) -> Response {
    let start = Instant::now();
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
                        uid = %s.uid, namespace = %s.namespace, pod = %s.pod, dry_run = s.dry_run,
                        outcome = reviewed.outcome.as_str(), skip = s.skip.unwrap_or(""),
                        gates = s.gates, prestops = s.prestops, grace = s.grace, warnings = s.warnings,
                        "review"
                    )
                };
            }
            match reviewed.outcome {
                Outcome::Unchanged => log_review!(debug),
                _ => log_review!(info),
            }
            axum::Json(reviewed.review).into_response()
        }
        Err(bad) => {
            context.metrics.admission(Outcome::Rejected, seconds);
            warn!(error = %bad, "unreadable admission review");
            (StatusCode::BAD_REQUEST, format!("gracegate: {bad}\n")).into_response()
        }
    }
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
