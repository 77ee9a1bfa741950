//! 10,000 pods over 500 TargetGroupBindings in the watcher's pod cache: resident memory once
//! they are all in the store, with gracegate's stripping and without it.
//!
//! Each pod is the large recorded fixture's pod (3 containers, 42 env vars each, probes,
//! volumes, affinity, managed fields) under its own name, UID, IP and gate, and goes the way a
//! watch delivers it: JSON bytes, deserialised, then handed to the store. Each mode runs in a
//! fresh process so that one's heap does not count in another's figure.
//!
//!     cargo bench --bench watcher_memory

#[path = "support/proc_self.rs"]
mod proc_self;
use proc_self::rss_kib;
use std::sync::Arc;

use futures::StreamExt;
use gracegate::watcher::apply_gated_pods;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// Counts the bytes in use on the heap: RSS also holds what the allocator keeps after a free.
struct Counting;

static LIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_mib() -> f64 {
    LIVE.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1048576.0
}

const PODS: usize = 10_000;
const BINDINGS: usize = 500;

fn template() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission/create-deployment-pod-large.json");
    let review: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    review["request"]["object"].clone()
}

/// Pod `i` as the API server would send it once scheduled and running.
fn pod_json(template: &Value, i: usize) -> Vec<u8> {
    let mut pod = template.clone();
    pod["metadata"]["name"] = json!(format!("checkout-{i}"));
    pod["metadata"]["uid"] = json!(format!("00000000-0000-0000-0000-{i:012}"));
    pod["metadata"]["creationTimestamp"] = json!("2026-11-26T12:00:00Z");
    pod["spec"]["nodeName"] = json!(format!("ip-10-0-{}-{}.ec2.internal", i % 50, i % 200));
    pod["spec"]["readinessGates"] =
        json!([{ "conditionType": format!("target-health.elbv2.k8s.aws/tgb-{}", i % BINDINGS) }]);
    pod["status"] = json!({
        "phase": "Running",
        "podIP": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
        "conditions": [
            { "type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T12:00:01Z" },
            { "type": "ContainersReady", "status": "True", "lastTransitionTime": "2026-11-26T12:00:09Z" },
        ],
    });
    serde_json::to_vec(&pod).unwrap()
}

async fn child(mode: &str) {
    let template = template();
    let before = rss_kib();
    let live_before = live_mib();
    let (store, mut writer) = reflector::store::<Pod>();
    let events = futures::stream::iter(
        std::iter::once(Event::Init)
            .chain((0..PODS).map(|i| {
                Event::InitApply(serde_json::from_slice(&pod_json(&template, i)).unwrap())
            }))
            .chain(std::iter::once(Event::InitDone))
            .map(Ok),
    );
    match mode {
        "stripped" => {
            apply_gated_pods(
                events,
                writer,
                "target-health.elbv2.k8s.aws".into(),
                Arc::new(Notify::new()),
                Default::default(),
            )
            .await
        }
        "full" => {
            futures::pin_mut!(events);
            while let Some(Ok(event)) = events.next().await {
                writer.apply_watcher_event(&event);
            }
        }
        "none" => {}
        _ => unreachable!(),
    }
    let rss_after = rss_kib();
    let live = live_mib() - live_before;
    let bytes: usize = store
        .state()
        .iter()
        .map(|p| serde_json::to_vec(p.as_ref()).unwrap().len())
        .sum();
    println!(
        "{mode} {} {} {} {} {live:.1}",
        store.len(),
        before,
        rss_after,
        bytes
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(mode) = args
        .iter()
        .find(|a| ["stripped", "full", "none"].contains(&a.as_str()))
    {
        child(mode).await;
        return;
    }
    let mut rows = Vec::new();
    for mode in ["none", "full", "stripped"] {
        let out = std::process::Command::new(&args[0])
            .arg(mode)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        rows.push((
            f[0].to_string(),
            f[1].parse::<usize>().unwrap(),
            f[3].parse::<u64>().unwrap(),
            f[4].parse::<usize>().unwrap(),
            f[5].parse::<f64>().unwrap(),
        ));
    }
    let base = rows[0].2;
    println!("watcher memory: {PODS} pods over {BINDINGS} bindings");
    println!(
        "| pod cache | pods stored | RSS | RSS over an empty store | heap in use by the store | cached objects as JSON |"
    );
    println!("|---|---|---|---|---|---|");
    for (mode, n, rss, bytes, live) in &rows {
        println!(
            "| {mode} | {n} | {:.1} MiB | {:.1} MiB | {live:.1} MiB | {:.1} MiB |",
            *rss as f64 / 1024.0,
            rss.saturating_sub(base) as f64 / 1024.0,
            *bytes as f64 / 1048576.0
        );
    }
}
