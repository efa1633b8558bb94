//! The sweep at cluster scale: `cargo bench --bench sweep_scale`. The real
//! binary sweeps simulated clusters served by testbed's fake API server,
//! where a flush Job takes `BENCH_JOB_SECONDS` (default 3, as on the real
//! node) from creation to its pod's end. For 100, 1,000 and 5,000 nodes and
//! 0 %, 1 % and 100 % of their agents changed since the last successful
//! sweep, it prints the API requests, the Jobs created and the wall time of
//! one sweep at the default parallelism. 100 % of 5,000 nodes is not run
//! unless `BENCH_FULL=1`: at 16 Jobs at a time it takes about 16 minutes.

use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use testbed::apiserver::{Behaviour, FakeApi};

const BIN: &str = env!("CARGO_BIN_EXE_flush-conntrack");
const NS: &str = "flush-conntrack";
const LAST_SUCCESS: &str = "2026-11-26T12:15:00Z";

/// A CronJob as jobs/ ships it.
fn shipped(text: &str, name: &str) -> serde_json::Value {
    let documents = serde_saphyr::from_multiple::<serde_json::Value>(text).expect("jobs/ is YAML");
    documents
        .into_iter()
        .find(|d| d["kind"] == "CronJob" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("jobs/ ships the CronJob {name}"))
}

fn template() -> CronJob {
    serde_json::from_value(shipped(include_str!("../jobs/flush-conntrack-node.yaml"), "flush-conntrack-node"))
        .expect("template")
}

/// The sweep's CronJob, with the last success its incremental sweeps start
/// from.
fn sweep_cronjob() -> CronJob {
    let mut cronjob = shipped(include_str!("../jobs/flush-conntrack-sweep.yaml"), "flush-conntrack-sweep");
    cronjob["status"] = json!({"lastSuccessfulTime": LAST_SUCCESS});
    serde_json::from_value(cronjob).expect("sweep cronjob")
}

fn agent(i: usize, changed: bool) -> Pod {
    let started = if changed { "2026-11-26T12:30:00Z" } else { "2026-11-26T09:00:00Z" };
    serde_json::from_value(json!({
        "metadata": {"name": format!("statsd-{i}"), "namespace": "monitoring", "labels": {"app": "statsd"}},
        "spec": {"nodeName": format!("node-{i}"), "containers": [{"name": "agent", "ports": [
            {"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}]}]},
        "status": {"phase": "Running", "hostIP": "192.0.2.1", "podIP": format!("10.{}.{}.5", i / 250, i % 250),
                   "startTime": started, "containerStatuses": [{"name": "agent", "image": "i", "imageID": "",
                   "ready": true, "restartCount": 0, "state": {"running": {"startedAt": started}}}]}
    }))
    .expect("pod")
}

struct Run {
    requests: usize,
    jobs: usize,
    wall: Duration,
}

fn sweep(nodes: usize, changed_percent: usize, job_latency: Duration) -> Run {
    let api = FakeApi::start(Behaviour { job_latency, ..Behaviour::default() });
    api.add_cronjob(template());
    api.add_cronjob(sweep_cronjob());
    let changed = nodes * changed_percent / 100;
    for i in 0..nodes {
        api.add_pod(agent(i, i < changed));
    }
    let dir =
        std::env::temp_dir().join(format!("fct-scale-{}-{nodes}-{changed_percent}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let started = Instant::now();
    let out = Command::new(BIN)
        .env_clear()
        .env("KUBECONFIG", api.kubeconfig(&dir, NS))
        .envs([
            ("MODE", "sweep"),
            ("SWEEP_SELECTOR", "app=statsd"),
            ("SWEEP_NAMESPACE", "monitoring"),
            ("WAIT_TIMEOUT", "1800"),
            ("LOG_FORMAT", "json"),
        ])
        .output()
        .expect("the binary runs");
    let wall = started.elapsed();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Run { requests: api.requests().len(), jobs: api.jobs().len(), wall }
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_JOB_SECONDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let latency = Duration::from_secs_f64(seconds);
    let full = std::env::var("BENCH_FULL").is_ok_and(|v| v == "1");
    println!("\nA flush Job takes {seconds} s from creation to its pod's end; the default parallelism.\n");
    println!("| nodes | changed | API requests | Jobs created | wall time |");
    println!("|---|---|---|---|---|");
    for nodes in [100, 1000, 5000] {
        for percent in [0, 1, 100] {
            if nodes == 5000 && percent == 100 && !full {
                println!("| {nodes} | {percent} % | not run (BENCH_FULL=1) | | |");
                continue;
            }
            let run = sweep(nodes, percent, latency);
            println!(
                "| {nodes} | {percent} % | {} | {} | {:.1} s |",
                run.requests,
                run.jobs,
                run.wall.as_secs_f64()
            );
        }
    }
}
