//! The review path on the recorded reviews, whole and step by step, with the heap
//! allocations each step makes (counted by this bench's global allocator, printed first).
//!
//! Each group carries its own baselines measured in the same run, so results read as ratios:
//! * `floor`: what any webhook must do (parse the body as JSON, answer allowed with its uid);
//! * `parse_typed_pod`: reading the review into kube's `AdmissionReview<Pod>` alone, which is
//!   what gracegate did before it read only the fields it needs (`inject::PodView`);
//! * the steps of a review: `body` (the body out of an HTTP body of 16 KiB frames, as
//!   TLS records deliver it), `parse`, `lookup` (the namespace's objects), `plan`, `patch`
//!   (the JSONPatch written as JSON), `answer` (the AdmissionReview written out), and what
//!   four of them were: `body_copied` (each frame copied onto a growing `Vec`),
//!   `parse_serde` (the same types read by serde_json's derive), `patch_serde` (the
//!   JSONPatch built as `serde_json` values, then serialised) and `answer_serde`;
//! * `review`: gracegate's whole answer (parse, lookup, plan, patch, answer written);
//! * `handler`: `POST /mutate` through the router with the HTTPS port's limits, everything
//!   but TLS and HTTP;
//! * `log`: the `info` line of the patched 4 KB review (`webhook::log_review`) through the
//!   subscriber `--log-format` installs, written to a sink (the `write` to stderr is not in
//!   it), against what the line was (`*_before`), without the timer, with a plain level
//!   filter instead of `EnvFilter`, and filtered out.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gracegate::cluster::{Cluster, Objects};
use gracegate::inject::Settings;
use gracegate::logging::{LogFormat, PlainFields, PlainLine, UtcTime, dispatch};
use gracegate::metrics::Metrics;
use gracegate::webhook::conn::{BodyLimit, InFlight};
use gracegate::webhook::review::{PATCH_CAPACITY, Reviewed, parse, parse_serde, review};
use gracegate::webhook::{Context, Health, MAX_BODY_BYTES, ReviewLimits, log_review, read_body};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};
use tower::ServiceExt;
use tracing_subscriber::EnvFilter;

/// The system allocator, counting calls and bytes.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations (and reallocations) and bytes asked for by `f`.
fn allocations<R>(f: impl FnOnce() -> R) -> (usize, usize) {
    let (calls, bytes) = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    black_box(f());
    (
        ALLOCATIONS.load(Ordering::Relaxed) - calls,
        BYTES.load(Ordering::Relaxed) - bytes,
    )
}

fn compact(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    let value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    // The API server sends compact JSON.
    serde_json::to_vec(&value).unwrap()
}

/// An HTTP body delivering `bytes` in frames of at most 16 KiB (a TLS record's payload).
fn framed(bytes: &[u8]) -> Body {
    let frames: Vec<Result<axum::body::Bytes, std::io::Error>> = bytes
        .chunks(16 * 1024)
        .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
        .collect();
    Body::from_stream(futures::stream::iter(frames))
}

fn context(cluster: &Cluster) -> Context {
    let health = Health::default();
    health
        .tls_loaded
        .store(true, std::sync::atomic::Ordering::Release);
    let metrics = Arc::new(Metrics::default());
    Context {
        settings: Arc::new(Settings::default()),
        cluster: cluster.clone(),
        waits: Arc::new(gracegate::waits::Board::new(
            gracegate::waits::DEFAULT_MAX_WAITS,
            metrics.clone(),
        )),
        metrics,
        health: Arc::new(health),
    }
}

fn bench(c: &mut Criterion) {
    let cluster = Cluster::from_objects(
        Objects::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster"))
            .unwrap(),
    );
    let settings = Settings::default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let context = context(&cluster);
    let limits = ReviewLimits {
        in_flight: InFlight::new(256, Some(context.metrics.clone())),
        body: BodyLimit {
            timeout: Duration::from_secs(10),
            metrics: Some(context.metrics.clone()),
        },
    };
    let router =
        gracegate::webhook::router_with_limits(context.clone(), MAX_BODY_BYTES, Some(limits));
    let post = |body: &[u8]| {
        axum::http::Request::post("/mutate")
            .header("content-type", "application/json")
            .header("content-length", body.len())
            .body(Body::from(body.to_vec()))
            .unwrap()
    };

    println!("heap allocations per review step (count, bytes):");
    for (label, fixture) in [
        ("small", "create-deployment-pod.json"),
        ("large", "create-deployment-pod-large.json"),
    ] {
        let body = compact(fixture);
        let pod: gracegate::inject::PodView = serde_json::from_value(
            serde_json::from_slice::<Value>(&body).unwrap()["request"]["object"].clone(),
        )
        .unwrap();
        let objects = cluster.objects("game-2048");
        let plan = gracegate::inject::plan(&pod, &objects, &settings);
        let reviewed = review(&body, &settings, |ns| cluster.objects(ns)).unwrap();
        let patch = |plan: &gracegate::inject::Plan| {
            let mut out = Vec::with_capacity(PATCH_CAPACITY);
            plan.write_patch(&mut out);
            out
        };
        let steps: [(&str, (usize, usize)); 9] = [
            (
                "body",
                allocations(|| runtime.block_on(read_body(framed(&body), MAX_BODY_BYTES, None))),
            ),
            ("parse", allocations(|| parse(&body).unwrap())),
            ("parse_serde", allocations(|| parse_serde(&body).unwrap())),
            ("lookup", allocations(|| cluster.objects("game-2048"))),
            (
                "plan",
                allocations(|| gracegate::inject::plan(&pod, &objects, &settings)),
            ),
            ("patch", allocations(|| patch(&plan))),
            (
                "patch_serde",
                allocations(|| serde_json::to_vec(&plan.patch()).unwrap()),
            ),
            ("answer", allocations(|| reviewed.review.to_json())),
            (
                "review",
                allocations(|| {
                    review(&body, &settings, |ns| cluster.objects(ns))
                        .unwrap()
                        .review
                        .to_json()
                }),
            ),
        ];
        for (step, (count, bytes)) in steps {
            println!("  {label:5} {step:11} {count:4} {bytes:7}");
        }
        // The body built outside, as hyper hands it over.
        let request = post(&body);
        let (count, bytes) = allocations(|| {
            runtime.block_on(async {
                let response = router.clone().oneshot(request).await.unwrap();
                assert_eq!(response.status(), 200);
                response
            })
        });
        println!("  {label:5} handler     {count:4} {bytes:7}");
        if label == "small" {
            let plain = dispatch(
                LogFormat::Plain,
                false,
                EnvFilter::new("info"),
                std::io::sink,
            );
            tracing::dispatcher::with_default(&plain, || {
                for (step, log) in [
                    ("log", log_review as fn(&Reviewed)),
                    ("log_before", log_before),
                ] {
                    // The first line sets up the formatter's thread-local buffer.
                    log(&reviewed);
                    let (count, bytes) = allocations(|| log(&reviewed));
                    println!("  {label:5} {step:11} {count:4} {bytes:7}");
                }
            });
        }

        let mut group = c.benchmark_group(label);
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_function("floor", |b| {
            b.iter(|| {
                let v: Value = serde_json::from_slice(black_box(&body)).unwrap();
                let uid = v["request"]["uid"].as_str().unwrap_or_default();
                serde_json::to_vec(&json!({
                    "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "response": { "uid": uid, "allowed": true },
                }))
                .unwrap()
            })
        });
        group.bench_function("parse_typed_pod", |b| {
            b.iter(|| serde_json::from_slice::<AdmissionReview<Pod>>(black_box(&body)).unwrap())
        });
        group.bench_function("body", |b| {
            b.iter_batched(
                || framed(&body),
                |framed| runtime.block_on(read_body(framed, MAX_BODY_BYTES, None)),
                criterion::BatchSize::SmallInput,
            )
        });
        // Before: each frame copied onto the end of a growing `Vec`.
        group.bench_function("body_copied", |b| {
            b.iter_batched(
                || framed(&body),
                |framed| {
                    runtime.block_on(async {
                        use futures::StreamExt;
                        let mut stream = framed.into_data_stream();
                        let mut buf = Vec::new();
                        while let Some(chunk) = stream.next().await {
                            buf.extend_from_slice(&chunk.unwrap());
                        }
                        axum::body::Bytes::from(buf)
                    })
                },
                criterion::BatchSize::SmallInput,
            )
        });
        group.bench_function("parse", |b| b.iter(|| parse(black_box(&body)).unwrap()));
        group.bench_function("parse_serde", |b| {
            b.iter(|| parse_serde(black_box(&body)).unwrap())
        });
        group.bench_function("lookup", |b| {
            b.iter(|| cluster.objects(black_box("game-2048")))
        });
        group.bench_function("plan", |b| {
            b.iter(|| gracegate::inject::plan(black_box(&pod), &objects, &settings))
        });
        group.bench_function("patch", |b| b.iter(|| patch(black_box(&plan))));
        // Before: `serde_json::Value`s in a `json_patch::Patch`, then serialised.
        group.bench_function("patch_serde", |b| {
            b.iter(|| serde_json::to_vec(&black_box(&plan).patch()).unwrap())
        });
        group.bench_function("answer", |b| {
            b.iter(|| black_box(&reviewed).review.to_json())
        });
        // Before: serde, through `axum::Json`'s buffer.
        group.bench_function("answer_serde", |b| {
            b.iter(|| serde_json::to_vec(&black_box(&reviewed).review).unwrap())
        });
        group.bench_function("review", |b| {
            b.iter(|| {
                review(black_box(&body), &settings, |ns| cluster.objects(ns))
                    .unwrap()
                    .review
                    .to_json()
            })
        });
        group.bench_function("handler", |b| {
            b.iter_batched(
                || post(&body),
                |request| runtime.block_on(router.clone().oneshot(request)).unwrap(),
                criterion::BatchSize::SmallInput,
            )
        });
        group.finish();
        if label == "small" {
            log_line(c, &reviewed);
        }
    }
}

/// The review's log line as it was before it recorded only the fields that say something:
/// all 14, strings through `Cow`'s `Display`, the warnings as `Debug`.
fn log_before(reviewed: &Reviewed) {
    let s = &reviewed.summary;
    tracing::info!(
        uid = %s.uid, kind = %s.kind, namespace = %s.namespace, pod = %s.pod,
        dry_run = s.dry_run, outcome = reviewed.outcome.as_str(),
        skip = s.skip.unwrap_or(""), gates = s.gates, prestops = s.prestops,
        grace = s.grace, prestop_seconds = s.prestop_seconds,
        prestop_source = s.prestop_source.unwrap_or(""), warnings = s.warnings,
        answered_warnings = ?reviewed.review.response.warnings,
        "review"
    );
}

/// The log line of a patched review under each subscriber. Each subscriber is made only
/// for its own benchmark: tracing caches a call site's interest over all live ones.
/// `plain_no_timer` and `plain_level_filter` are `plain` (gracegate's `PlainLine`,
/// `PlainFields` and `UtcTime`) with one thing changed: a timer that writes nothing, a level
/// filter for `EnvFilter`;
/// `json_tracing` is `json` as tracing-subscriber writes it.
fn log_line(c: &mut Criterion, reviewed: &Reviewed) {
    type Variant = (&'static str, fn() -> tracing::Dispatch, fn(&Reviewed));
    fn plain() -> tracing::Dispatch {
        dispatch(
            LogFormat::Plain,
            false,
            EnvFilter::new("info"),
            std::io::sink,
        )
    }
    fn json() -> tracing::Dispatch {
        dispatch(
            LogFormat::Json,
            false,
            EnvFilter::new("info"),
            std::io::sink,
        )
    }
    let variants: [Variant; 8] = [
        ("plain", plain, log_review),
        ("plain_before", plain, log_before),
        ("json", json, log_review),
        ("json_before", json, log_before),
        // tracing-subscriber's own JSON format, which `JsonLine` writes by hand.
        (
            "json_tracing",
            || {
                tracing_subscriber::fmt()
                    .with_env_filter(EnvFilter::new("info"))
                    .with_timer(UtcTime)
                    .with_writer(std::io::sink)
                    .json()
                    .flatten_event(true)
                    .finish()
                    .into()
            },
            log_review,
        ),
        (
            "plain_no_timer",
            || {
                tracing_subscriber::fmt()
                    .with_env_filter(EnvFilter::new("info"))
                    .with_ansi(false)
                    .fmt_fields(PlainFields)
                    .event_format(PlainLine::new(()))
                    .with_writer(std::io::sink)
                    .finish()
                    .into()
            },
            log_review,
        ),
        (
            "plain_level_filter",
            || {
                tracing_subscriber::fmt()
                    .with_max_level(tracing::Level::INFO)
                    .with_ansi(false)
                    .fmt_fields(PlainFields)
                    .event_format(PlainLine::new(UtcTime))
                    .with_writer(std::io::sink)
                    .finish()
                    .into()
            },
            log_review,
        ),
        (
            "filtered_out",
            || {
                dispatch(
                    LogFormat::Plain,
                    false,
                    EnvFilter::new("warn"),
                    std::io::sink,
                )
            },
            log_review,
        ),
    ];
    let mut group = c.benchmark_group("log");
    for (name, subscriber, log) in variants {
        tracing::dispatcher::with_default(&subscriber(), || {
            group.bench_function(name, |b| b.iter(|| log(black_box(reviewed))));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
