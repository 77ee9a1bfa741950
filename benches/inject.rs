//! The pure admission path on the recorded reviews: parse → decide → patch → serialise.
//!
//! Each group carries its own baseline measured in the same run, so results read as ratios:
//! * `floor`: what any webhook must do (parse the body as JSON, answer allowed with its uid);
//! * `parse_typed_pod`: reading the review into kube's `AdmissionReview<Pod>` alone, which is
//!   what gracegate did before it read only the fields it needs (`inject::PodView`);
//! * `decide_and_patch`: the cache lookup, the decision and the JSONPatch, on a parsed pod;
//! * `review`: gracegate's whole answer, including the cache lookup and serialising it.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gracegate::cluster::{Cluster, Objects};
use gracegate::inject::Settings;
use gracegate::webhook::review::review;
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionReview;
use serde_json::{Value, json};

fn compact(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission")
        .join(name);
    let value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    // The API server sends compact JSON.
    serde_json::to_vec(&value).unwrap()
}

fn bench(c: &mut Criterion) {
    let cluster = Cluster::from_objects(
        Objects::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster"))
            .unwrap(),
    );
    let settings = Settings::default();
    for (label, fixture) in [
        ("small", "create-deployment-pod.json"),
        ("large", "create-deployment-pod-large.json"),
    ] {
        let body = compact(fixture);
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
        let pod: gracegate::inject::PodView = serde_json::from_value(
            serde_json::from_slice::<Value>(&body).unwrap()["request"]["object"].clone(),
        )
        .unwrap();
        group.bench_function("decide_and_patch", |b| {
            b.iter(|| {
                let plan = gracegate::inject::plan(
                    black_box(&pod),
                    &cluster.objects("game-2048"),
                    &settings,
                );
                serde_json::to_vec(&plan.patch()).unwrap()
            })
        });
        group.bench_function("review", |b| {
            b.iter(|| {
                let reviewed =
                    review(black_box(&body), &settings, |ns| cluster.objects(ns)).unwrap();
                serde_json::to_vec(&reviewed.review).unwrap()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
