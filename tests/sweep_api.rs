//! Sweep against a mocked API server: which nodes get a flush Job, what
//! each Job targets, how the pods are listed and what the sweep's pod is
//! told.

mod fixtures;

use std::sync::{Arc, Mutex};

use fixtures::*;
use http::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn sweep_spawns_one_job_per_node_with_its_targets() {
    let pods = vec![
        agent("statsd-a", "node-a", "192.0.2.1", "10.244.1.5", "Running"),
        agent("statsd-b", "node-b", "192.0.2.2", "10.244.2.5", "Running"),
        agent("statsd-c", "node-c", "192.0.2.3", "10.244.3.5", "Running"),
        agent("statsd-d", "node-d", "192.0.2.4", "10.244.4.5", "Pending"),
    ];
    // No sweep has succeeded yet: every node is visited.
    let (route, jobs) = sweep_cluster(pods, &[], None, 500);
    let (client, seen) = serve(route);
    let s = sweep_plan(&[("POD_NAME", "sweep-29871234-x"), ("POD_NAMESPACE", "flush-conntrack")]);
    flush_conntrack::cluster::sweep::run(&client, NS, &s).await.expect("sweep succeeds");
    let jobs = jobs.lock().unwrap().clone();
    assert_eq!(jobs.len(), 3, "one per node with a running agent");
    validate_jobs("sweep_spawns_one_job_per_node_with_its_targets", &jobs);
    // Every local address of each node, as portmap translates the hostPort.
    for (node, pod_ip) in [("node-a", "10.244.1.5"), ("node-b", "10.244.2.5"), ("node-c", "10.244.3.5")] {
        let job = jobs.iter().find(|j| j["metadata"]["labels"]["flush-conntrack/node"] == node).expect(node);
        let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
        for (k, v) in [
            ("TARGET_IP", "local"),
            ("TARGET_PORT", "8125"),
            ("KEEP_DNAT_TO", pod_ip),
            ("TARGET_PROTOCOL", "udp"),
        ] {
            assert!(env.as_array().unwrap().contains(&json!({"name": k, "value": v})), "{node} {k}: {env}");
        }
    }
    assert!(seen.lock().unwrap().iter().all(|s| !s.path.contains("node-d")));
    // Each node's outcome, and the total, as Events on the sweep's pod.
    let notes: Vec<(String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == Method::POST && s.path.ends_with("/events"))
        .map(|s| {
            assert_eq!(s.body["regarding"]["name"], "sweep-29871234-x", "{}", s.body);
            (s.body["reason"].as_str().unwrap().to_owned(), s.body["note"].as_str().unwrap().to_owned())
        })
        .collect();
    assert_eq!(notes.len(), 4, "{notes:?}");
    for node in ["node-a", "node-b", "node-c"] {
        assert!(
            notes.iter().any(|(r, n)| r == "Flushed" && n.starts_with(&format!("node {node}: deleted 2"))),
            "{node}: {notes:?}"
        );
    }
    assert_eq!(
        notes[3],
        (
            "SweepDone".into(),
            "3 nodes with agents: 0 unchanged since the last sweep, 3 flushed, 0 failed; 6 stale entries deleted, 3 kept"
                .into()
        )
    );
}

const SWEEP_CRONJOB: &str = "/apis/batch/v1/namespaces/flush-conntrack/cronjobs/flush-conntrack-sweep";

fn started(pod: Value, at: &str) -> Value {
    let mut pod = pod;
    pod["status"]["startTime"] = json!(at);
    pod["status"]["containerStatuses"] = json!([{"name": "agent", "image": "i", "imageID": "", "ready": true,
        "restartCount": 0, "state": {"running": {"startedAt": at}}}]);
    pod
}

/// A cluster of `nodes` nodes, each with a running agent started before
/// `last_success` except those in `changed` (started after it).
fn churned_cluster(
    nodes: usize,
    changed: &'static [usize],
    failed: &'static [usize],
    last_success: Option<&'static str>,
    page: usize,
) -> (Route, Arc<Mutex<Vec<Value>>>) {
    let pods: Vec<Value> = (0..nodes)
        .map(|i| {
            let at = if changed.contains(&i) { "2026-11-26T12:30:00Z" } else { "2026-11-26T09:00:00Z" };
            started(
                agent(&format!("statsd-{i}"), &format!("node-{i}"), "192.0.2.1", "10.244.1.5", "Running"),
                at,
            )
        })
        .collect();
    sweep_cluster(pods, failed, last_success, page)
}

/// A cluster with these agent pods, where the last sweep succeeded at
/// `last_success` and the last flush of the nodes in `failed` failed. Pods
/// come in pages of `page`.
fn sweep_cluster(
    pods: Vec<Value>,
    failed: &'static [usize],
    last_success: Option<&'static str>,
    page: usize,
) -> (Route, Arc<Mutex<Vec<Value>>>) {
    let jobs: Arc<Mutex<Vec<Value>>> = Arc::new(Mutex::new(Vec::new()));
    let store = jobs.clone();
    let old_jobs: Vec<Value> = failed
        .iter()
        .map(|i| {
            json!({"metadata": {"name": format!("flush-node-{i}-old"), "namespace": NS,
                                "creationTimestamp": "2026-11-26T12:00:00Z",
                                "annotations": {"flush-conntrack/node": format!("node-{i}")}},
                   "status": {"conditions": [{"type": "Failed", "status": "True"}]}})
        })
        .collect();
    let route: Route = Box::new(move |s: &Seen| {
        let find = |name: &str| store.lock().unwrap().iter().find(|j| j["metadata"]["name"] == name).cloned();
        match (&s.method, s.path.as_str()) {
            (&Method::GET, "/api/v1/namespaces/monitoring/pods") => {
                assert!(s.query.contains("labelSelector=app%3Dstatsd"), "{}", s.query);
                assert!(s.query.contains("fieldSelector=status.phase%3DRunning"), "{}", s.query);
                assert!(s.query.contains("limit=500"), "{}", s.query);
                let from: usize = s
                    .query
                    .split("continue=")
                    .nth(1)
                    .and_then(|t| t.split('&').next()?.parse().ok())
                    .unwrap_or(0);
                let to = (from + page).min(pods.len());
                let next = if to < pods.len() { to.to_string() } else { String::new() };
                ok(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"continue": next},
                          "items": pods[from..to]}))
            }
            (&Method::GET, SWEEP_CRONJOB) => match last_success {
                Some(t) => ok(json!({"apiVersion": "batch/v1", "kind": "CronJob",
                    "metadata": {"name": "flush-conntrack-sweep", "namespace": NS},
                    "spec": {"schedule": "*/15 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
                    "status": {"lastSuccessfulTime": t}})),
                None => Some((404, status(404, "NotFound", "not found").to_string())),
            },
            (&Method::GET, JOBS) if !s.query.contains("watch=true") => {
                assert!(s.query.contains("labelSelector=flush-conntrack%2Fnode"), "{}", s.query);
                ok(json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": old_jobs}))
            }
            (&Method::GET, CRONJOB) => ok(template()),
            (&Method::POST, JOBS) => {
                let mut body = s.body.clone();
                body["metadata"]["resourceVersion"] = json!("5");
                store.lock().unwrap().push(body.clone());
                Some((201, body.to_string()))
            }
            (&Method::GET, p) if p.starts_with(JOBS) && s.query.contains("watch=true") => {
                let name = s.query.split("metadata.name%3D").nth(1)?.split('&').next()?.to_owned();
                watch_event("MODIFIED", &with_condition(&find(&name)?, "Complete"))
            }
            (&Method::GET, p) if p.starts_with(JOBS) => ok(find(p.rsplit('/').next()?)?),
            (&Method::GET, "/api/v1/namespaces/flush-conntrack/pods") => {
                let name = s.query.split("job-name%3D").nth(1)?.split('&').next()?.to_owned();
                ok(summary_pod(&name))
            }
            (&Method::POST, "/apis/events.k8s.io/v1/namespaces/flush-conntrack/events") => {
                Some((201, s.body.to_string()))
            }
            _ => None,
        }
    });
    (route, jobs)
}

fn nodes_of(jobs: &Arc<Mutex<Vec<Value>>>) -> Vec<String> {
    let mut nodes: Vec<String> = jobs
        .lock()
        .unwrap()
        .iter()
        .map(|j| j["metadata"]["annotations"]["flush-conntrack/node"].as_str().unwrap().to_owned())
        .collect();
    nodes.sort();
    nodes
}

#[tokio::test]
async fn a_sweep_visits_only_nodes_that_changed_or_failed_since_the_last_success() {
    let (route, jobs) = churned_cluster(6, &[1, 4], &[2], Some("2026-11-26T12:15:00Z"), 500);
    let (client, _) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_plan(&[])).await.expect("sweep succeeds");
    assert_eq!(nodes_of(&jobs), ["node-1", "node-2", "node-4"], "changed 1 and 4, failed 2");

    // Started 10 minutes before the last success: inside the margin, visited.
    let (route, jobs) = churned_cluster(3, &[], &[], Some("2026-11-26T09:05:00Z"), 500);
    let (client, _) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_plan(&[])).await.unwrap();
    assert_eq!(nodes_of(&jobs).len(), 3, "a change near the last success is not skipped");
}

#[tokio::test]
async fn nothing_changed_creates_no_job_and_asks_little() {
    let (route, jobs) = churned_cluster(1000, &[], &[], Some("2026-11-26T12:15:00Z"), 500);
    let (client, seen) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_plan(&[])).await.unwrap();
    assert!(jobs.lock().unwrap().is_empty());
    let seen = seen.lock().unwrap().clone();
    // Two pages of pods, the CronJob's status, the Jobs: nothing else.
    assert_eq!(
        seen.len(),
        4,
        "{:?}",
        seen.iter().map(|s| format!("{} {}?{}", s.method, s.path, s.query)).collect::<Vec<_>>()
    );
    assert!(seen.iter().all(|s| s.method == Method::GET));
}

#[tokio::test]
async fn a_full_sweep_or_no_recorded_success_visits_every_node_across_pages() {
    let (route, jobs) = churned_cluster(7, &[], &[], Some("2026-11-26T12:15:00Z"), 3);
    let (client, seen) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_plan(&[("FULL_SWEEP", "true")])).await.unwrap();
    assert_eq!(nodes_of(&jobs).len(), 7, "every node, from three pages of pods");
    let pages =
        seen.lock().unwrap().iter().filter(|s| s.path == "/api/v1/namespaces/monitoring/pods").count();
    assert_eq!(pages, 3);

    let (route, jobs) = churned_cluster(5, &[], &[], None, 500);
    let (client, _) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_plan(&[])).await.unwrap();
    assert_eq!(nodes_of(&jobs).len(), 5, "never succeeded: every node");
}

#[tokio::test]
async fn a_host_ip_is_named_only_when_the_template_declares_it() {
    let with_host_ip = |name: &str, node: &str, host_ip: &str, pod_ip: &str| {
        let mut pod = agent(name, node, host_ip, pod_ip, "Running");
        pod["spec"]["containers"][0]["ports"][0]["hostIP"] = json!(host_ip);
        pod
    };
    let pods = vec![
        with_host_ip("statsd-a", "node-a", "192.0.2.1", "10.244.1.5"),
        with_host_ip("statsd-b", "node-b", "192.0.2.2", "10.244.2.5"),
    ];
    let (mut inner, jobs) = sweep_cluster(pods, &[], None, 500);
    // The template declares node-b's address only: the policy admits no
    // other beside `local`.
    let route: Route = Box::new(move |s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::GET, CRONJOB) => {
            let mut t = template();
            t["metadata"]["annotations"] = json!({"flush-conntrack/addresses": "192.0.2.2"});
            ok(t)
        }
        _ => inner(s),
    });
    let (client, _) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_plan(&[])).await.expect("sweep succeeds");
    let jobs = jobs.lock().unwrap().clone();
    for (node, target) in [("node-a", "local"), ("node-b", "192.0.2.2")] {
        let job = jobs.iter().find(|j| j["metadata"]["labels"]["flush-conntrack/node"] == node).expect(node);
        let env = &job["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            env.as_array().unwrap().contains(&json!({"name": "TARGET_IP", "value": target})),
            "{node}: {env}"
        );
    }
}

#[tokio::test]
async fn a_squatted_name_does_not_stop_the_sweep() {
    let pods = vec![agent("statsd-a", "node-a", "192.0.2.1", "10.244.1.5", "Running")];
    let (mut inner, jobs) = sweep_cluster(pods, &[], None, 500);
    // The name the sweep computes for node-a is held by a dry run that
    // claims to be this run's.
    let squatter: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let route: Route = Box::new(move |s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::POST, JOBS) => match s.body["metadata"]["generateName"].as_str() {
            Some(prefix) => {
                let mut renamed = s.clone();
                renamed.body["metadata"]["name"] = json!(format!("{prefix}gen01"));
                inner(&renamed)
            }
            None => {
                let mut taken = s.body.clone();
                for e in taken["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut()? {
                    if e["name"] == "DRY_RUN" {
                        e["value"] = json!("true");
                    }
                }
                *squatter.lock().unwrap() = Some(taken);
                Some((409, status(409, "AlreadyExists", "jobs.batch already exists").to_string()))
            }
        },
        (&Method::GET, p) if p.starts_with(&format!("{JOBS}/flush-node-a-")) && !p.ends_with("gen01") => {
            ok(squatter.lock().unwrap().clone()?)
        }
        _ => inner(s),
    });
    let (client, seen) = serve(route);
    let s = sweep_plan(&[("POD_NAME", "sweep-x"), ("POD_NAMESPACE", "flush-conntrack")]);
    flush_conntrack::cluster::sweep::run(&client, NS, &s).await.expect("the sweep flushed node-a");
    let jobs = jobs.lock().unwrap().clone();
    assert_eq!(jobs.len(), 1);
    let name = jobs[0]["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("flush-node-a-") && name.ends_with("-gen01"), "{name}");
    let env = &jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(env.as_array().unwrap().contains(&json!({"name": "DRY_RUN", "value": "false"})), "{env}");
    let reasons: Vec<(String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == Method::POST && s.path.ends_with("/events"))
        .map(|s| (s.body["reason"].as_str().unwrap().to_owned(), s.body["type"].as_str().unwrap().to_owned()))
        .collect();
    assert!(reasons.contains(&("FlushJobNameTaken".into(), "Warning".into())), "{reasons:?}");
    assert!(reasons.contains(&("Flushed".into(), "Normal".into())), "{reasons:?}");
}

/// `inner`, except that each flush Job's watch reports what `outcome` says
/// of its node: a condition (`Complete`, `Failed`), or nothing (it runs on).
fn finishing(
    mut inner: Route,
    jobs: Arc<Mutex<Vec<Value>>>,
    outcome: impl Fn(&str) -> Option<&'static str> + Send + 'static,
) -> Route {
    Box::new(move |s: &Seen| {
        if s.method == Method::GET && s.path.starts_with(JOBS) && s.query.contains("watch=true") {
            let name = s.query.split("metadata.name%3D").nth(1)?.split('&').next()?.to_owned();
            let job = jobs.lock().unwrap().iter().find(|j| j["metadata"]["name"] == name).cloned()?;
            let node = job["metadata"]["annotations"]["flush-conntrack/node"].as_str()?.to_owned();
            return match outcome(&node) {
                Some(condition) => watch_event("MODIFIED", &with_condition(&job, condition)),
                None => watch_event("MODIFIED", &job),
            };
        }
        // Why a Job that timed out has no pod: no FailedCreate here.
        if s.method == Method::GET && s.path == "/api/v1/namespaces/flush-conntrack/events" {
            return ok(json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}));
        }
        inner(s)
    })
}

#[tokio::test]
async fn a_dry_run_sweep_creates_nothing_and_tells_nobody() {
    let (route, jobs) = churned_cluster(3, &[], &[], None, 500);
    let (client, seen) = serve(route);
    let plan = sweep_plan(&[("DRY_RUN", "true"), ("POD_NAME", "sweep-x"), ("POD_NAMESPACE", NS)]);
    flush_conntrack::cluster::sweep::run(&client, NS, &plan).await.expect("a dry run succeeds");
    assert!(jobs.lock().unwrap().is_empty());
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| s.method == Method::GET), "reads only: {seen:?}");
}

/// One WAIT_TIMEOUT bounds the whole sweep, not each node: with one Job
/// at a time and none finishing, three nodes take one timeout, not three.
#[tokio::test(start_paused = true)]
async fn one_wait_timeout_bounds_the_whole_sweep() {
    let (route, jobs) = churned_cluster(3, &[], &[], None, 500);
    let route = finishing(route, jobs.clone(), |_| None);
    let (client, _) = serve(route);
    let plan = sweep_plan(&[("WAIT_TIMEOUT", "10"), ("SWEEP_PARALLELISM", "1")]);
    let started = tokio::time::Instant::now();
    let result = flush_conntrack::cluster::sweep::run(&client, NS, &plan).await;
    let took = started.elapsed();
    let error = result.expect_err("no node finished");
    assert!(matches!(error, flush_conntrack::error::Error::SweepFailed { failed: 3, total: 3 }), "{error:?}");
    assert!(took >= std::time::Duration::from_secs(10), "{took:?}");
    assert!(took < std::time::Duration::from_secs(12), "one timeout for the whole sweep: {took:?}");
    assert_eq!(nodes_of(&jobs).len(), 3);
}

/// A node whose flush fails: a Warning on the sweep's pod naming it, the
/// others still flushed, and the sweep exits non-zero (4).
#[tokio::test]
async fn a_failed_node_is_a_warning_on_the_sweep_pod_and_fails_the_sweep() {
    let (route, jobs) = churned_cluster(3, &[], &[], None, 500);
    let route = finishing(route, jobs, |node| Some(if node == "node-1" { "Failed" } else { "Complete" }));
    let (client, seen) = serve(route);
    let plan = sweep_plan(&[("POD_NAME", "sweep-x"), ("POD_NAMESPACE", NS)]);
    let error = flush_conntrack::cluster::sweep::run(&client, NS, &plan).await.expect_err("node-1 failed");
    assert!(matches!(error, flush_conntrack::error::Error::SweepFailed { failed: 1, total: 3 }), "{error:?}");
    assert_eq!(error.exit_code(), 4);
    let told: Vec<(String, String, String)> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.method == Method::POST && s.path.ends_with("/events"))
        .map(|s| {
            let text = |k: &str| s.body[k].as_str().unwrap_or_default().to_owned();
            (text("type"), text("reason"), text("note"))
        })
        .collect();
    let failed: Vec<_> = told.iter().filter(|(_, reason, _)| reason == "FlushFailed").collect();
    assert_eq!(failed.len(), 1, "{told:?}");
    assert_eq!(failed[0].0, "Warning");
    assert!(failed[0].2.contains("node-1"), "{told:?}");
    assert_eq!(told.iter().filter(|(_, reason, _)| reason == "Flushed").count(), 2, "{told:?}");
    let done = told.iter().find(|(_, reason, _)| reason == "SweepDone").expect("SweepDone");
    assert!(done.2.contains("2 flushed, 1 failed"), "{done:?}");
}
