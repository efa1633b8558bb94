//! How long a flood of admitted own-node Jobs from a stolen trigger token
//! delays a genuine trigger's flush: `cargo bench --bench quota_flood` (as
//! root, with what .ci/run installs; several minutes). On the real control
//! plane (the real Job controller and ResourceQuota; the stand-in kubelet
//! finishes each flush pod at once; on a real node a flush pod lives about
//! 3 s), the same genuine flush is timed `FLOOD_SAMPLES` times (default 3)
//! without a flood and behind `FLOOD_JOBS` (default 256) admitted Jobs
//! created with the trigger's own token; every sample is printed beside the
//! median. Whether the quota refused pods is reported, not assumed.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use testbed::command::{ok, text};
use testbed::controlplane::ControlPlane;
use testbed::require;

#[path = "../tests/attacker/mod.rs"]
mod attacker;
use attacker::{create, pod_uid, printed_job, set_env, trigger_env, BIN, NODES, NS};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn main() {
    if !require::tools("bench quota_flood", &["go", "kubectl", "openssl"]) {
        return;
    }
    let samples: usize = std::env::var("FLOOD_SAMPLES").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    let flood: usize = std::env::var("FLOOD_JOBS").ok().and_then(|s| s.parse().ok()).unwrap_or(256);
    let cp = ControlPlane::start(NODES).unwrap_or_else(|e| panic!("control plane: {e}"));
    let overlay = root().join("kustomize/overlays/statsd");
    ok(cp.kubectl(&["apply", "--server-side", "-k", &overlay.to_string_lossy()]), "overlay");
    let attacker = cp.pod_bound_kubeconfig("monitoring", "statsd", "statsd-flood", "node-b").expect("token");
    let attacker_uid = pod_uid(&cp, "monitoring", "statsd-flood");
    let mut job = printed_job(&attacker, &trigger_env("node-b", &attacker_uid));
    set_env(&mut job, "DRY_RUN", "false");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !create(&cp, &attacker, &job, "flood-probe").status.success() {
        assert!(std::time::Instant::now() < deadline, "the attacker's Job was never admitted");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    let genuine_flush = |i: usize, label: &str| -> f64 {
        let pod = format!("statsd-{label}-{i}");
        let token = cp.pod_bound_kubeconfig("monitoring", "statsd", &pod, "node-b").expect("token");
        let uid = pod_uid(&cp, "monitoring", &pod);
        let mut env = trigger_env("node-b", &uid);
        env.push(("WAIT_TIMEOUT", "900"));
        let started = std::time::Instant::now();
        let out = Command::new(BIN).env_clear().env("KUBECONFIG", &token).envs(env.iter().copied()).output();
        let out = out.expect("binary runs");
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("deleted=1"), "{}", text(&out));
        seconds
    };
    let unfinished = || -> usize {
        let out = ok(cp.kubectl(&["-n", NS, "get", "jobs", "-o", "json"]), "jobs");
        let jobs: Value = serde_json::from_slice(&out.stdout).unwrap();
        jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| {
                !j["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Complete"))
            })
            .count()
    };

    let mut quiet = Vec::new();
    for i in 0..samples {
        quiet.push(genuine_flush(i, "quiet"));
    }
    let mut flooded = Vec::new();
    for i in 0..samples {
        let items: Vec<Value> = (0..flood)
            .map(|n| {
                let mut j = job.clone();
                j["metadata"]["name"] = json!(format!("flood-{i}-{n}"));
                j
            })
            .collect();
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
        let file = cp.dir.join(format!("flood-{i}.json"));
        std::fs::write(&file, list.to_string()).unwrap();
        let created = std::time::Instant::now();
        ok(cp.kubectl_as(&attacker, &["create", "-f", &file.to_string_lossy()]), "the flood is admitted");
        eprintln!("flood {i}: {flood} Jobs admitted in {:.1} s", created.elapsed().as_secs_f64());
        flooded.push(genuine_flush(i, "flooded"));
        let events = ok(
            cp.kubectl(&["-n", NS, "get", "events", "--field-selector", "reason=FailedCreate", "-o", "json"]),
            "events",
        );
        let events: Value = serde_json::from_slice(&events.stdout).unwrap();
        let quota = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["message"].as_str().is_some_and(|m| m.contains("exceeded quota")))
            .map(|e| e["count"].as_u64().unwrap_or(1))
            .sum::<u64>();
        // Reported, not asserted: where the Job controller and the kubelet
        // are the bottleneck, the quota may never be reached.
        eprintln!("flood {i}: pod creations refused by the quota so far: {quota}");
        let drained = std::time::Instant::now();
        while unfinished() > 0 {
            assert!(drained.elapsed() < std::time::Duration::from_secs(1200), "the flood never drained");
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
        eprintln!("flood {i}: drained {:.1} s after the genuine flush", drained.elapsed().as_secs_f64());
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let show = |v: &[f64]| v.iter().map(|s| format!("{s:.1}")).collect::<Vec<_>>().join(", ");
    eprintln!("genuine flush without a flood: {} s (median {:.1} s)", show(&quiet), median(&quiet));
    eprintln!(
        "genuine flush behind {flood} flood Jobs: {} s (median {:.1} s)",
        show(&flooded),
        median(&flooded)
    );
}
