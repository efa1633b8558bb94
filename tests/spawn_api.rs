//! Spawn and sweep against a mocked API server (`tower_test::mock::pair`):
//! each test answers the requests the flow makes, with real status codes
//! and Status bodies, and checks what was asked.

use std::sync::{Arc, Mutex};

use flush_conntrack::config::Settings;
use flush_conntrack::error::{Error, EXIT_CONFIG, EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_TIMED_OUT};
use http::{Method, Request, Response};
use k8s_openapi::api::batch::v1::Job;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

const NS: &str = "flush-conntrack";

fn settings(extra: &[(&str, &str)]) -> Settings {
    let mut vars = vec![
        ("MODE", "spawn"),
        ("NODE_NAME", "node-a"),
        ("POD_UID", "7d3c-uid"),
        ("TARGET_IP", "192.0.2.1"),
        ("TARGET_PORT", "8125"),
        ("KEEP_DNAT_TO", "10.244.1.6"),
        ("WAIT_TIMEOUT", "30"),
    ];
    for (k, v) in extra {
        vars.retain(|(key, _)| key != k);
        vars.push((k, v));
    }
    Settings::from_vars(vars.into_iter().map(|(k, v)| (k.into(), v.into()))).expect("valid settings")
}

fn template() -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "flush-conntrack-node", "namespace": NS, "uid": "cj-uid", "resourceVersion": "1"},
        "spec": {"schedule": "@yearly", "suspend": true, "jobTemplate": {"spec": {"template": {"spec": {
            "hostNetwork": true, "restartPolicy": "Never",
            "containers": [{"name": "flush", "image": "flush-conntrack:test"}]
        }}}}}
    })
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn with_condition(job: &Value, kind: &str) -> Value {
    let mut job = job.clone();
    job["metadata"]["resourceVersion"] = json!("9");
    job["status"] = json!({"conditions": [{"type": kind, "status": "True", "reason": "BackoffLimitExceeded",
                                            "message": "Job has reached the specified backoff limit"}]});
    job
}

fn summary_pod(job: &str) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
        "metadata": {"name": format!("{job}-x"), "namespace": NS, "labels": {"batch.kubernetes.io/job-name": job}},
        "status": {"containerStatuses": [{"name": "flush", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message":
                "{\"dry_run\":false,\"scanned\":3,\"matched\":2,\"deleted\":2,\"already_gone\":0,\"kept\":1,\"failed\":0,\"kernel_flushed\":0,\"elapsed_seconds\":0.01}"}}}]}
    }]})
}

/// What the fake answered, request by request.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    query: String,
    body: Value,
}

type Route = Box<dyn FnMut(&Seen) -> Option<(u16, String)> + Send>;

/// Serves requests with `route` until the client is dropped; a request the
/// route has no answer for is answered 500 and fails the test afterwards.
fn serve(mut route: Route) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes =
                http_body_util::BodyExt::collect(body).await.map(|b| b.to_bytes()).unwrap_or_default();
            let s = Seen {
                method: parts.method,
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            log.lock().unwrap().push(s.clone());
            let (code, text) =
                route(&s).unwrap_or_else(|| (500, status(500, "Unexpected", &format!("{s:?}")).to_string()));
            send.send_response(Response::builder().status(code).body(Body::from(text.into_bytes())).unwrap());
        }
    });
    (Client::new(service, NS), seen)
}

fn ok(v: Value) -> Option<(u16, String)> {
    Some((200, v.to_string()))
}

fn watch_event(kind: &str, object: &Value) -> Option<(u16, String)> {
    Some((200, format!("{}\n", json!({"type": kind, "object": object}))))
}

const CRONJOB: &str = "/apis/batch/v1/namespaces/flush-conntrack/cronjobs/flush-conntrack-node";
const JOBS: &str = "/apis/batch/v1/namespaces/flush-conntrack/jobs";

/// The usual cluster: the template exists, the POST creates, the Job
/// finishes with `final_condition` seen through the watch.
fn cluster(create: (u16, Option<Value>), final_condition: &'static str) -> Route {
    let created: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    Box::new(move |s: &Seen| {
        let job = created.lock().unwrap().clone();
        match (&s.method, s.path.as_str()) {
            (&Method::GET, CRONJOB) => ok(template()),
            (&Method::POST, JOBS) => {
                let mut body = s.body.clone();
                body["metadata"]["resourceVersion"] = json!("5");
                body["metadata"]["uid"] = json!("job-uid");
                *created.lock().unwrap() = Some(create.1.clone().unwrap_or(body.clone()));
                Some((
                    create.0,
                    if create.0 == 201 { body.to_string() } else { status(create.0, "X", "x").to_string() },
                ))
            }
            (&Method::GET, p) if p.starts_with(JOBS) && s.query.contains("watch=true") => {
                watch_event("MODIFIED", &with_condition(job.as_ref()?, final_condition))
            }
            (&Method::GET, p) if p.starts_with(JOBS) => ok(job?),
            (&Method::GET, "/api/v1/namespaces/flush-conntrack/pods") => {
                ok(summary_pod(job?["metadata"]["name"].as_str()?))
            }
            _ => None,
        }
    })
}

async fn spawn(client: &Client, settings: &Settings) -> Result<(), Error> {
    flush_conntrack::cluster::spawn::run(client, NS, settings).await
}

#[tokio::test]
async fn creates_the_pinned_job_waits_for_complete_and_reads_the_summary() {
    let (client, seen) = serve(cluster((201, None), "Complete"));
    spawn(&client, &settings(&[])).await.expect("spawn succeeds");
    let seen = seen.lock().unwrap().clone();
    let posts: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::POST).collect();
    assert_eq!(posts.len(), 1);
    let job: Job = serde_json::from_value(posts[0].body.clone()).expect("a Job was posted");
    let name = job.metadata.name.clone().unwrap();
    assert!(name.starts_with("flush-node-a-") && name.len() <= 63, "{name}");
    let pod = job.spec.unwrap().template.spec.unwrap();
    let affinity = serde_json::to_value(pod.affinity.unwrap()).unwrap();
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]
            ["matchFields"][0],
        json!({"key": "metadata.name", "operator": "In", "values": ["node-a"]})
    );
    // Whatever taints the node carries, the flush pod is let onto it.
    let tolerations = serde_json::to_value(&pod.tolerations).unwrap();
    assert!(tolerations.as_array().unwrap().contains(&json!({"operator": "Exists"})), "{tolerations}");
    let env = serde_json::to_value(&pod.containers[0].env).unwrap();
    for (k, v) in [
        ("MODE", "flush"),
        ("TARGET_IP", "192.0.2.1"),
        ("TARGET_PORT", "8125"),
        ("KEEP_DNAT_TO", "10.244.1.6"),
    ] {
        assert!(env.as_array().unwrap().contains(&json!({"name": k, "value": v})), "{k}: {env}");
    }
    assert!(
        seen.iter().any(|s| s.query.contains("watch=true") && s.query.contains("metadata.name")),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|s| s.path.ends_with("/pods") && s.query.contains("job-name")),
        "summary read back"
    );
}

#[tokio::test]
async fn a_restarted_trigger_adopts_its_job_on_409() {
    // The Job an earlier run of the same pod made: same name, ours.
    let (probe, _) = serve(cluster((201, None), "Complete"));
    spawn(&probe, &settings(&[])).await.unwrap();
    let earlier = {
        let s = settings(&[]);
        let template: k8s_openapi::api::batch::v1::CronJob = serde_json::from_value(template()).unwrap();
        let order = flush_conntrack::cluster::job_template::FlushOrder {
            node: "node-a",
            selection: s.selection.env(),
            dry_run: false,
            run: "7d3c-uid",
        };
        let mut v =
            serde_json::to_value(flush_conntrack::cluster::job::build(&template, &order).unwrap()).unwrap();
        v["metadata"]["resourceVersion"] = json!("5");
        v
    };
    let (client, seen) = serve(cluster((409, Some(earlier.clone())), "Complete"));
    spawn(&client, &settings(&[])).await.expect("adopted and finished");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|s| s.method == Method::POST).count(), 1, "never a second create");
    assert!(seen
        .iter()
        .any(|s| s.method == Method::GET && s.path.ends_with(earlier["metadata"]["name"].as_str().unwrap())));

    // Under the same name, a Job of another run, or of the same run for
    // another node, is not adopted: both halves of "ours" are checked.
    for (annotation, value) in [("flush-conntrack/run", "another-pod"), ("flush-conntrack/node", "node-b")] {
        let mut foreign = earlier.clone();
        foreign["metadata"]["annotations"][annotation] = json!(value);
        let (client, seen) = serve(cluster((409, Some(foreign)), "Complete"));
        let e = spawn(&client, &settings(&[])).await.unwrap_err();
        assert!(matches!(e, Error::NameTaken { .. }), "{annotation}={value}: {e}");
        assert_eq!(e.exit_code(), EXIT_REFUSED);
        let seen = seen.lock().unwrap().clone();
        assert!(
            !seen.iter().any(|s| s.query.contains("watch=true")),
            "{annotation}: a foreign Job is not watched"
        );
    }
}

#[tokio::test]
async fn a_failed_job_fails_the_run() {
    let (client, _) = serve(cluster((201, None), "Failed"));
    let e = spawn(&client, &settings(&[])).await.unwrap_err();
    assert_eq!(e.exit_code(), EXIT_JOB_FAILED);
    assert!(e.to_string().contains("BackoffLimitExceeded"), "{e}");
    assert!(e.to_string().contains("kubectl -n flush-conntrack logs job/flush-node-a-"), "{e}");

    let (client, _) = serve(cluster((201, None), "FailureTarget"));
    assert_eq!(spawn(&client, &settings(&[])).await.unwrap_err().exit_code(), EXIT_JOB_FAILED);
}

#[tokio::test(start_paused = true)]
async fn a_job_whose_pods_are_refused_times_out_quoting_the_reason() {
    let created: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let route: Route = Box::new(move |s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::GET, CRONJOB) => ok(template()),
        (&Method::POST, JOBS) => {
            let mut body = s.body.clone();
            body["metadata"]["resourceVersion"] = json!("5");
            *created.lock().unwrap() = Some(body.clone());
            Some((201, body.to_string()))
        }
        // The watch sees nothing happen: the stream just ends.
        (&Method::GET, p) if p.starts_with(JOBS) && s.query.contains("watch=true") => {
            Some((200, String::new()))
        }
        (&Method::GET, p) if p.starts_with(JOBS) => ok(created.lock().unwrap().clone()?),
        (&Method::GET, "/api/v1/namespaces/flush-conntrack/events") => ok(json!({
            "kind": "EventList", "apiVersion": "v1", "metadata": {},
            "items": [{"metadata": {"name": "e1"}, "involvedObject": {"kind": "Job"}, "reason": "FailedCreate",
                       "message": "Error creating: pods \"flush-x\" is forbidden: violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)"}]
        })),
        _ => None,
    });
    let (client, seen) = serve(route);
    let e = spawn(&client, &settings(&[("WAIT_TIMEOUT", "3")])).await.unwrap_err();
    assert_eq!(e.exit_code(), EXIT_TIMED_OUT, "{e}");
    let text = e.to_string();
    assert!(text.contains("WAIT_TIMEOUT=3s") && text.contains("violates PodSecurity"), "{text}");
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.query.contains("reason%3DFailedCreate") || s.query.contains("reason=FailedCreate")));
}

#[tokio::test]
async fn forbidden_names_what_to_grant() {
    let route = || -> Route {
        Box::new(|s: &Seen| {
            match (&s.method, s.path.as_str()) {
            (&Method::GET, CRONJOB) => ok(template()),
            (&Method::POST, JOBS) => Some((
                403,
                status(403, "Forbidden", "jobs.batch is forbidden: User \"system:serviceaccount:monitoring:statsd\" cannot create resource \"jobs\"").to_string(),
            )),
            _ => None,
        }
        })
    };
    let (client, _) = serve(route());
    let e = spawn(&client, &settings(&[])).await.unwrap_err();
    assert_eq!(e.exit_code(), EXIT_REFUSED);
    let text = e.to_string();
    assert!(
        text.contains("may not create jobs in namespace flush-conntrack")
            && text.contains("cannot create resource"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_template_says_which_kustomization_creates_it() {
    let route: Route = Box::new(|s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::GET, CRONJOB) => Some((
            404,
            status(404, "NotFound", "cronjobs.batch \"flush-conntrack-node\" not found").to_string(),
        )),
        _ => None,
    });
    let (client, seen) = serve(route);
    let e = spawn(&client, &settings(&[])).await.unwrap_err();
    assert_eq!(e.exit_code(), EXIT_CONFIG);
    assert!(e.to_string().contains("kubectl apply -k kustomize/base"), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing created");
}

#[tokio::test]
async fn wait_timeout_zero_creates_and_returns() {
    let (client, seen) = serve(cluster((201, None), "Complete"));
    spawn(&client, &settings(&[("WAIT_TIMEOUT", "0")])).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "get template, create: {seen:?}");
}

#[tokio::test]
async fn dry_run_creates_nothing() {
    let (client, seen) = serve(cluster((201, None), "Complete"));
    spawn(&client, &settings(&[("DRY_RUN", "true")])).await.unwrap();
    assert!(seen.lock().unwrap().iter().all(|s| s.method == Method::GET));
}

fn agent(name: &str, node: &str, host_ip: &str, pod_ip: &str, phase: &str) -> Value {
    json!({
        "metadata": {"name": name, "namespace": "monitoring"},
        "spec": {"nodeName": node, "containers": [{"name": "agent", "ports": [
            {"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}]}]},
        "status": {"phase": phase, "hostIP": host_ip, "podIP": pod_ip}
    })
}

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
    let s = settings(&[
        ("MODE", "sweep"),
        ("SWEEP_SELECTOR", "app=statsd"),
        ("SWEEP_NAMESPACE", "monitoring"),
        ("POD_NAME", "sweep-29871234-x"),
        ("POD_NAMESPACE", "flush-conntrack"),
    ]);
    flush_conntrack::cluster::sweep::run(&client, NS, &s).await.expect("sweep succeeds");
    let jobs = jobs.lock().unwrap().clone();
    assert_eq!(jobs.len(), 3, "one per node with a running agent");
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

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/monitoring/events";

/// The usual cluster, where Events on the trigger pod are answered `code`.
fn with_events(mut inner: Route, code: u16) -> Route {
    Box::new(move |s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::POST, EVENTS) if code == 201 => Some((201, s.body.to_string())),
        (&Method::POST, EVENTS) => {
            Some((code, status(code, "Forbidden", "events.events.k8s.io is forbidden").to_string()))
        }
        _ => inner(s),
    })
}

fn events(seen: &Arc<Mutex<Vec<Seen>>>) -> Vec<(String, String, String)> {
    let seen = seen.lock().unwrap().clone();
    seen.iter()
        .filter(|s| s.method == Method::POST && s.path == EVENTS)
        .map(|s| {
            assert_eq!(s.body["regarding"]["name"], "statsd-x", "{}", s.body);
            assert_eq!(s.body["regarding"]["uid"], "7d3c-uid", "{}", s.body);
            assert_eq!(s.body["reportingController"], "flush-conntrack");
            let text = |k: &str| s.body[k].as_str().unwrap_or_default().to_owned();
            (text("type"), text("reason"), text("note"))
        })
        .collect()
}

const ON_POD: &[(&str, &str)] = &[("POD_NAME", "statsd-x"), ("POD_NAMESPACE", "monitoring")];

#[tokio::test]
async fn the_outcome_shows_on_the_trigger_pod_as_events() {
    let (client, seen) = serve(with_events(cluster((201, None), "Complete"), 201));
    spawn(&client, &settings(ON_POD)).await.expect("spawn succeeds");
    let written = events(&seen);
    assert_eq!(written.len(), 2, "{written:?}");
    assert_eq!((written[0].0.as_str(), written[0].1.as_str()), ("Normal", "FlushJobCreated"));
    assert!(written[0].2.contains("node node-a"), "{written:?}");
    assert_eq!((written[1].0.as_str(), written[1].1.as_str()), ("Normal", "Flushed"));
    assert!(
        written[1].2.starts_with("deleted 2 stale conntrack entries on node node-a, kept 1"),
        "{written:?}"
    );

    let (client, seen) = serve(with_events(cluster((201, None), "Failed"), 201));
    let e = spawn(&client, &settings(ON_POD)).await.unwrap_err();
    let written = events(&seen);
    let last = written.last().expect("a warning");
    assert_eq!((last.0.as_str(), last.1.as_str()), ("Warning", "FlushFailed"), "{written:?}");
    assert!(last.2.contains("BackoffLimitExceeded") && last.2 == e.to_string(), "{last:?}");

    // Without the pod's name there is nothing to write on.
    let (client, seen) = serve(with_events(cluster((201, None), "Complete"), 201));
    spawn(&client, &settings(&[])).await.unwrap();
    assert!(events(&seen).is_empty());
}

#[tokio::test]
async fn an_event_that_cannot_be_written_does_not_affect_the_flush() {
    let (client, seen) = serve(with_events(cluster((201, None), "Complete"), 403));
    spawn(&client, &settings(ON_POD)).await.expect("the flush succeeds without its events");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|s| s.path == EVENTS).count(), 2, "both tried once, not retried on 403");
    assert!(seen.iter().any(|s| s.path.ends_with("/pods")), "the summary was still read");
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_job_is_a_warning_on_the_pod() {
    let created: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let inner: Route = Box::new(move |s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::GET, CRONJOB) => ok(template()),
        (&Method::POST, JOBS) => {
            *created.lock().unwrap() = Some(s.body.clone());
            Some((201, s.body.to_string()))
        }
        (&Method::GET, p) if p.starts_with(JOBS) && s.query.contains("watch=true") => {
            Some((200, String::new()))
        }
        (&Method::GET, p) if p.starts_with(JOBS) => ok(created.lock().unwrap().clone()?),
        (&Method::GET, "/api/v1/namespaces/flush-conntrack/events") => {
            ok(json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}))
        }
        _ => None,
    });
    let (client, seen) = serve(with_events(inner, 201));
    let e = spawn(
        &client,
        &settings(&[("POD_NAME", "statsd-x"), ("POD_NAMESPACE", "monitoring"), ("WAIT_TIMEOUT", "5")]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), EXIT_TIMED_OUT);
    let written = events(&seen);
    let last = written.last().expect("a warning");
    assert_eq!((last.0.as_str(), last.1.as_str()), ("Warning", "FlushTimedOut"), "{written:?}");
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

fn sweep_settings(extra: &[(&str, &str)]) -> Settings {
    let mut vars =
        vec![("MODE", "sweep"), ("SWEEP_SELECTOR", "app=statsd"), ("SWEEP_NAMESPACE", "monitoring")];
    vars.extend_from_slice(extra);
    settings(&vars)
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
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_settings(&[])).await.expect("sweep succeeds");
    assert_eq!(nodes_of(&jobs), ["node-1", "node-2", "node-4"], "changed 1 and 4, failed 2");

    // Started 10 minutes before the last success: inside the margin, visited.
    let (route, jobs) = churned_cluster(3, &[], &[], Some("2026-11-26T09:05:00Z"), 500);
    let (client, _) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_settings(&[])).await.unwrap();
    assert_eq!(nodes_of(&jobs).len(), 3, "a change near the last success is not skipped");
}

#[tokio::test]
async fn nothing_changed_creates_no_job_and_asks_little() {
    let (route, jobs) = churned_cluster(1000, &[], &[], Some("2026-11-26T12:15:00Z"), 500);
    let (client, seen) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_settings(&[])).await.unwrap();
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
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_settings(&[("FULL_SWEEP", "true")]))
        .await
        .unwrap();
    assert_eq!(nodes_of(&jobs).len(), 7, "every node, from three pages of pods");
    let pages =
        seen.lock().unwrap().iter().filter(|s| s.path == "/api/v1/namespaces/monitoring/pods").count();
    assert_eq!(pages, 3);

    let (route, jobs) = churned_cluster(5, &[], &[], None, 500);
    let (client, _) = serve(route);
    flush_conntrack::cluster::sweep::run(&client, NS, &sweep_settings(&[])).await.unwrap();
    assert_eq!(nodes_of(&jobs).len(), 5, "never succeeded: every node");
}
