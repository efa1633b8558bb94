//! Spawn (the trigger) against a mocked API server
//! (`tower_test::mock::pair`): each test answers the requests the flow
//! makes, with real status codes and Status bodies, and checks what was
//! asked.

mod fixtures;

use std::sync::{Arc, Mutex};

use fixtures::*;
use flush_conntrack::cluster::spawn::SpawnPlan;
use flush_conntrack::error::{Error, EXIT_CONFIG, EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_TIMED_OUT};
use http::Method;
use k8s_openapi::api::batch::v1::Job;
use kube::Client;
use serde_json::{json, Value};

async fn spawn(client: &Client, plan: &SpawnPlan) -> Result<(), Error> {
    flush_conntrack::cluster::spawn::run(client, NS, plan).await
}

#[tokio::test]
async fn creates_the_pinned_job_waits_for_complete_and_reads_the_summary() {
    let (client, seen) = serve(cluster((201, None), "Complete"));
    spawn(&client, &spawn_plan(&[])).await.expect("spawn succeeds");
    let seen = seen.lock().unwrap().clone();
    let posts: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::POST).collect();
    assert_eq!(posts.len(), 1);
    validate_jobs(
        "creates_the_pinned_job_waits_for_complete_and_reads_the_summary",
        &[posts[0].body.clone()],
    );
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
    spawn(&probe, &spawn_plan(&[])).await.unwrap();
    let earlier = {
        let plan = spawn_plan(&[]);
        let template: k8s_openapi::api::batch::v1::CronJob = serde_json::from_value(template()).unwrap();
        let order = flush_conntrack::cluster::job_template::FlushOrder {
            node: "node-a",
            env: flush_conntrack::cluster::job_env::flush_job(&plan.selection, plan.dry_run),
            run: "7d3c-uid",
        };
        let mut v =
            serde_json::to_value(flush_conntrack::cluster::job::build(&template, &order).unwrap()).unwrap();
        v["metadata"]["resourceVersion"] = json!("5");
        v
    };
    let (client, seen) = serve(cluster((409, Some(earlier.clone())), "Complete"));
    spawn(&client, &spawn_plan(&[])).await.expect("adopted and finished");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.iter().filter(|s| s.method == Method::POST).count(), 1, "never a second create");
    assert!(seen
        .iter()
        .any(|s| s.method == Method::GET && s.path.ends_with(earlier["metadata"]["name"].as_str().unwrap())));

    // A Job under our name that claims to be ours (same node and run
    // annotations) but runs another flush is not adopted: ours is created
    // beside it under a generated name, waited for, and the squat is told
    // as a Warning Event on the trigger's pod.
    let lies: [(&str, &str); 3] =
        [("DRY_RUN", "true"), ("KEEP_DNAT_TO", "10.244.1.6,10.244.0.0"), ("TARGET_IP", "local")];
    for (variable, value) in lies {
        let mut squatter = earlier.clone();
        for e in squatter["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().unwrap() {
            if e["name"] == variable {
                e["value"] = json!(value);
            }
        }
        let (client, seen) = serve(with_events(squatted(squatter.clone()), 201));
        spawn(&client, &spawn_plan(ON_POD)).await.unwrap_or_else(|e| panic!("{variable}: {e}"));
        let seen = seen.lock().unwrap().clone();
        let posts: Vec<&Seen> = seen.iter().filter(|s| s.method == Method::POST && s.path == JOBS).collect();
        assert_eq!(posts.len(), 2, "{variable}: {posts:?}");
        let squatted_name = squatter["metadata"]["name"].as_str().unwrap();
        assert_eq!(posts[0].body["metadata"]["name"], squatted_name);
        assert_eq!(posts[1].body["metadata"].get("name"), None, "{variable}");
        assert_eq!(posts[1].body["metadata"]["generateName"], format!("{squatted_name}-"), "{variable}");
        assert!(
            seen.iter().any(
                |s| s.query.contains("watch=true") && s.query.contains(&format!("{squatted_name}-gen01"))
            ),
            "{variable}: our own Job is watched, not the squatter"
        );
        let events = events(&Arc::new(Mutex::new(seen)));
        let taken: Vec<&(String, String, String)> =
            events.iter().filter(|e| e.1 == "FlushJobNameTaken").collect();
        assert_eq!(taken.len(), 1, "{variable}: {events:?}");
        assert_eq!(taken[0].0, "Warning");
        assert!(taken[0].2.contains(squatted_name) && taken[0].2.contains("-gen01"), "{:?}", taken[0]);
        assert!(events.iter().any(|e| e.1 == "Flushed"), "{variable}: the flush was done: {events:?}");
    }
}

/// The cluster where our Job's name is taken by `squatter`: the first POST
/// is answered 409, the GET returns the squatter, a POST with
/// `generateName` is named `<generateName>gen01`, and that Job completes.
fn squatted(squatter: Value) -> Route {
    let created: Arc<Mutex<Option<Value>>> = Arc::new(Mutex::new(None));
    let squatted_name = squatter["metadata"]["name"].as_str().unwrap().to_owned();
    Box::new(move |s: &Seen| {
        let job = created.lock().unwrap().clone();
        match (&s.method, s.path.as_str()) {
            (&Method::GET, CRONJOB) => ok(template()),
            (&Method::POST, JOBS) => match s.body["metadata"]["generateName"].as_str() {
                Some(prefix) => {
                    let mut body = s.body.clone();
                    body["metadata"]["name"] = json!(format!("{prefix}gen01"));
                    body["metadata"]["resourceVersion"] = json!("5");
                    *created.lock().unwrap() = Some(body.clone());
                    Some((201, body.to_string()))
                }
                None => Some((409, status(409, "AlreadyExists", "jobs.batch already exists").to_string())),
            },
            (&Method::GET, p) if p == format!("{JOBS}/{squatted_name}") => ok(squatter.clone()),
            (&Method::GET, p) if p.starts_with(JOBS) && s.query.contains("watch=true") => {
                watch_event("MODIFIED", &with_condition(job.as_ref()?, "Complete"))
            }
            (&Method::GET, p) if p.starts_with(JOBS) => ok(job?),
            (&Method::GET, "/api/v1/namespaces/flush-conntrack/pods") => {
                ok(summary_pod(job?["metadata"]["name"].as_str()?))
            }
            _ => None,
        }
    })
}

#[tokio::test]
async fn a_by_hand_flush_flushes_every_time_it_runs() {
    // No POD_UID: each run is its own, so a second run within the TTL
    // creates a Job of its own instead of adopting the first one's.
    let mut names = Vec::new();
    for _ in 0..2 {
        let (client, seen) = serve(cluster((201, None), "Complete"));
        let plan = spawn_plan(&[("POD_UID", "")]);
        assert_eq!(plan.cluster.run, None);
        spawn(&client, &plan).await.expect("flushed");
        let seen = seen.lock().unwrap().clone();
        let post = seen.iter().find(|s| s.method == Method::POST && s.path == JOBS).expect("a Job created");
        let run = post.body["metadata"]["annotations"]["flush-conntrack/run"].as_str().unwrap().to_owned();
        assert!(run.starts_with("manual-"), "{run}");
        names.push(post.body["metadata"]["name"].as_str().unwrap().to_owned());
    }
    assert_ne!(names[0], names[1], "two runs by hand, two Jobs");
}

#[tokio::test]
async fn a_failed_job_fails_the_run() {
    let (client, _) = serve(cluster((201, None), "Failed"));
    let e = spawn(&client, &spawn_plan(&[])).await.unwrap_err();
    assert_eq!(e.exit_code(), EXIT_JOB_FAILED);
    assert!(e.to_string().contains("BackoffLimitExceeded"), "{e}");
    assert!(e.to_string().contains("kubectl -n flush-conntrack logs job/flush-node-a-"), "{e}");

    let (client, _) = serve(cluster((201, None), "FailureTarget"));
    assert_eq!(spawn(&client, &spawn_plan(&[])).await.unwrap_err().exit_code(), EXIT_JOB_FAILED);
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
    let e = spawn(&client, &spawn_plan(&[("WAIT_TIMEOUT", "3")])).await.unwrap_err();
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
    let e = spawn(&client, &spawn_plan(&[])).await.unwrap_err();
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
    let e = spawn(&client, &spawn_plan(&[])).await.unwrap_err();
    assert_eq!(e.exit_code(), EXIT_CONFIG);
    assert!(e.to_string().contains("kubectl apply -k kustomize/base"), "{e}");
    assert_eq!(seen.lock().unwrap().len(), 1, "nothing created");
}

#[tokio::test]
async fn wait_timeout_zero_creates_and_returns() {
    let (client, seen) = serve(cluster((201, None), "Complete"));
    spawn(&client, &spawn_plan(&[("WAIT_TIMEOUT", "0")])).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "get template, create: {seen:?}");
}

#[tokio::test]
async fn dry_run_creates_nothing() {
    let (client, seen) = serve(cluster((201, None), "Complete"));
    spawn(&client, &spawn_plan(&[("DRY_RUN", "true")])).await.unwrap();
    assert!(seen.lock().unwrap().iter().all(|s| s.method == Method::GET));
}

#[tokio::test]
async fn the_outcome_shows_on_the_trigger_pod_as_events() {
    let (client, seen) = serve(with_events(cluster((201, None), "Complete"), 201));
    spawn(&client, &spawn_plan(ON_POD)).await.expect("spawn succeeds");
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
    let e = spawn(&client, &spawn_plan(ON_POD)).await.unwrap_err();
    let written = events(&seen);
    let last = written.last().expect("a warning");
    assert_eq!((last.0.as_str(), last.1.as_str()), ("Warning", "FlushFailed"), "{written:?}");
    assert!(last.2.contains("BackoffLimitExceeded") && last.2 == e.to_string(), "{last:?}");

    // Without the pod's name there is nothing to write on.
    let (client, seen) = serve(with_events(cluster((201, None), "Complete"), 201));
    spawn(&client, &spawn_plan(&[])).await.unwrap();
    assert!(events(&seen).is_empty());
}

/// Every figure of the flush, from the Job's termination message to the
/// `Flushed` Event the operator reads. The figures all differ, so that each
/// is seen in its own place.
#[tokio::test]
async fn every_figure_of_the_summary_reaches_the_flushed_event() {
    for (dry_run, verb) in [(false, "deleted 23"), (true, "would delete 34")] {
        let message = json!({"dry_run": dry_run, "scanned": 97, "matched": 34, "deleted": 23,
                             "already_gone": 11, "kept": 7, "failed": 5, "kernel_flushed": 19,
                             "elapsed_seconds": 0.25})
        .to_string();
        let mut inner = with_events(cluster((201, None), "Complete"), 201);
        let route: Route = Box::new(move |s: &Seen| match (&s.method, s.path.as_str()) {
            (&Method::GET, "/api/v1/namespaces/flush-conntrack/pods") => {
                ok(summary_pod_with("flush-node-a", &message))
            }
            _ => inner(s),
        });
        let (client, seen) = serve(route);
        spawn(&client, &spawn_plan(ON_POD)).await.expect("spawn succeeds");
        let job = seen
            .lock()
            .unwrap()
            .iter()
            .find(|s| s.method == Method::POST && s.path == JOBS)
            .map(|s| s.body["metadata"]["name"].as_str().unwrap_or_default().to_owned());
        let job = job.expect("a Job was created");
        let written = events(&seen);
        let flushed = written.iter().find(|e| e.1 == "Flushed").expect("a Flushed Event");
        assert_eq!(
            flushed.2,
            format!(
                "{verb} stale conntrack entries on node node-a, kept 7 that reach a live pod, 5 failed; \
                 11 already gone, 19 by the kernel's filtered flush, 34 matched of 97 scanned \
                 (flush Job flush-conntrack/{job})"
            )
        );
    }
}

#[tokio::test]
async fn an_event_that_cannot_be_written_does_not_affect_the_flush() {
    let (client, seen) = serve(with_events(cluster((201, None), "Complete"), 403));
    spawn(&client, &spawn_plan(ON_POD)).await.expect("the flush succeeds without its events");
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
        &spawn_plan(&[("POD_NAME", "statsd-x"), ("POD_NAMESPACE", "monitoring"), ("WAIT_TIMEOUT", "5")]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.exit_code(), EXIT_TIMED_OUT);
    let written = events(&seen);
    let last = written.last().expect("a warning");
    assert_eq!((last.0.as_str(), last.1.as_str()), ("Warning", "FlushTimedOut"), "{written:?}");
}

#[tokio::test]
async fn a_succeeded_job_whose_summary_cannot_be_read_is_still_a_success() {
    for message in ["not a summary", ""] {
        let mut inner = with_events(cluster((201, None), "Complete"), 201);
        let route: Route = Box::new(move |s: &Seen| {
            let mut answer = inner(s);
            if s.method == Method::GET && s.path.ends_with("/pods") {
                let mut pods: Value = serde_json::from_str(&answer.as_ref()?.1).ok()?;
                let state = &mut pods["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"];
                match message.is_empty() {
                    true => state.as_object_mut()?.remove("message").map(drop)?,
                    false => state["message"] = json!(message),
                }
                answer = Some((200, pods.to_string()));
            }
            answer
        });
        let (client, seen) = serve(route);
        spawn(&client, &spawn_plan(ON_POD)).await.expect("the flush succeeded");
        let written = events(&seen);
        let reasons: Vec<&str> = written.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(reasons, ["FlushJobCreated"], "no figures to report: {written:?}");
    }
}
