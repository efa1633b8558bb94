//! The process's contract around spawn's work (README: `FAIL_OPEN`,
//! `STAY_RUNNING`, the exit codes, SIGTERM and SIGINT), through
//! `cluster::conduct` as `cluster::run` calls it: the mocked API of
//! spawn_api, a stop the test sends in place of the signal, and paused time
//! where there is waiting. What only a real process shows (a signal from
//! the kernel reaching `conduct`, the exit status, a server gone from the
//! network) is left to spawn_binary.

mod fixtures;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fixtures::*;
use flush_conntrack::cluster::{self, spawn};
use flush_conntrack::config::Settings;
use flush_conntrack::error::{
    ConfigError, Error, Signal, EXIT_CONFIG, EXIT_JOB_FAILED, EXIT_REFUSED, EXIT_TIMED_OUT, EXIT_UNREACHABLE,
};
use http::{Method, Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};

type Log = Arc<Mutex<Vec<Seen>>>;

/// Longer than anything here waits (the longest: three unanswered calls,
/// 46.5 s), in paused time: a `conduct` that has not returned by then
/// waits for its stop.
const A_DAY: Duration = Duration::from_secs(24 * 3600);

/// One trigger, on the node and target of [`spawn_plan`] with `extra`,
/// run the way `cluster::run` runs it, until `stop`.
async fn trigger(
    client: &Client,
    extra: &[(&str, &str)],
    stop: impl Future<Output = Signal>,
) -> Result<(), Error> {
    let plan = spawn_plan(extra);
    let run = cluster::conduct(&plan.cluster, spawn::run(client, NS, &plan), stop);
    timeout(A_DAY, run).await.expect("conduct returns without a stop")
}

/// No signal comes.
fn no_signal() -> std::future::Pending<Signal> {
    std::future::pending()
}

/// A cluster where the Job never finishes: the watch sees nothing, and the
/// Job controller says nothing about its pods.
fn idle() -> Route {
    let mut inner = cluster((201, None), "Complete");
    Box::new(move |s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::GET, p) if p.starts_with(JOBS) && s.query.contains("watch=true") => {
            Some((200, String::new()))
        }
        (&Method::GET, "/api/v1/namespaces/flush-conntrack/events") => {
            ok(json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}))
        }
        _ => inner(s),
    })
}

/// A client whose API server is gone: every request fails to be sent.
fn gone() -> (Client, Log) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    drop(handle);
    (Client::new(service, NS), Log::default())
}

/// A client whose API server takes requests and never answers.
fn silent() -> (Client, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some(request) = handle.next_request().await {
            unanswered.push(request);
        }
    });
    (Client::new(service, NS), Log::default())
}

fn template_without_containers() -> Route {
    let mut inner = cluster((201, None), "Complete");
    Box::new(move |s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::GET, CRONJOB) => {
            let mut t = template();
            t["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"] = json!([]);
            ok(t)
        }
        _ => inner(s),
    })
}

fn missing_template() -> Route {
    Box::new(|s: &Seen| match (&s.method, s.path.as_str()) {
        (&Method::GET, CRONJOB) => Some((
            404,
            status(404, "NotFound", "cronjobs.batch \"flush-conntrack-node\" not found").to_string(),
        )),
        _ => None,
    })
}

/// Each failure of the cluster or the Job a trigger can meet, the exit code
/// it has, and a word its message carries.
type Failure = (&'static str, fn() -> (Client, Log), u8, &'static str);

const FAILURES: &[Failure] = &[
    ("a failed Job", || serve(cluster((201, None), "Failed")), EXIT_JOB_FAILED, "BackoffLimitExceeded"),
    ("a Job that never ends", || serve(idle()), EXIT_TIMED_OUT, "WAIT_TIMEOUT=5s"),
    ("403 on create", || serve(cluster((403, None), "Complete")), EXIT_REFUSED, "may not create jobs"),
    ("422 on create", || serve(cluster((422, None), "Complete")), EXIT_REFUSED, "refused to create jobs"),
    ("503 on every create", || serve(cluster((503, None), "Complete")), EXIT_UNREACHABLE, "3 attempts: 503"),
    ("no API server", gone, EXIT_UNREACHABLE, "did not serve the call in 3 attempts"),
    ("an API server that never answers", silent, EXIT_UNREACHABLE, "no answer within 15 s"),
    ("no template", || serve(missing_template()), EXIT_CONFIG, "kubectl apply -k kustomize/base"),
    (
        "a template without containers",
        || serve(template_without_containers()),
        EXIT_CONFIG,
        "not a flush Job template",
    ),
];

/// FAIL_OPEN=false: each failure is the run's, with its exit code.
/// FAIL_OPEN=true: the same work, the same requests, and the run succeeds
/// (a missing or unusable template included, as the README's FAIL_OPEN row
/// says, though its exit code is 2).
#[tokio::test(start_paused = true)]
async fn fail_open_lets_every_failure_of_the_cluster_or_the_job_pass() {
    for (what, cluster, code, says) in FAILURES {
        let (client, failing_closed) = cluster();
        let e = trigger(&client, &[("WAIT_TIMEOUT", "5")], no_signal()).await.expect_err(what);
        assert_eq!(e.exit_code(), *code, "{what}: {e}");
        let text = flush_conntrack::error::report(&e);
        assert!(text.contains(says), "{what}: {text}");
        let asked = requests(&failing_closed);

        let (client, failing_open) = cluster();
        let started = Instant::now();
        let result = trigger(&client, &[("WAIT_TIMEOUT", "5"), ("FAIL_OPEN", "true")], no_signal()).await;
        assert!(result.is_ok(), "{what}: {result:?}");
        assert!(started.elapsed() < Duration::from_secs(60), "{what}: as bounded as without FAIL_OPEN");
        assert_eq!(requests(&failing_open), asked, "{what}: FAIL_OPEN changes the outcome, not the work");
    }
}

/// The requests a run made, as `METHOD path`.
fn requests(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().map(|s| format!("{} {}", s.method, s.path)).collect()
}

/// A broken manifest stops the rollout at its first pod: a refused
/// variable is an error under FAIL_OPEN (and under STAY_RUNNING), and so is
/// a signal: a stopped run did not fail, it did not finish.
#[tokio::test(start_paused = true)]
async fn configuration_errors_and_signals_stay_errors_under_fail_open() {
    // Read before any work: the variables themselves are refused.
    for (name, value) in [("TARGET_PORT", "81250"), ("WAIT_TIMEOUT", "soon"), ("DRY_RUN", "maybe")] {
        let vars =
            [("MODE", "spawn"), ("NODE_NAME", "node-a"), ("TARGET_PORT", "8125"), ("FAIL_OPEN", "true")];
        let vars = vars.into_iter().filter(|(k, _)| *k != name).chain([(name, value)]);
        let e = Settings::from_vars(vars.map(|(k, v)| (k.into(), v.into()))).expect_err(name);
        assert_eq!(e.variable, name);
        assert_eq!(Error::Config(e).exit_code(), EXIT_CONFIG);
    }
    for extra in [&[("FAIL_OPEN", "true")][..], &[("FAIL_OPEN", "true"), ("STAY_RUNNING", "true")]] {
        let options = spawn_plan(extra).cluster;
        let refused = async { Err(Error::Config(ConfigError::new("TARGET_PORT", "81250", "out of range"))) };
        let run = cluster::conduct(&options, refused, no_signal());
        let e = timeout(A_DAY, run).await.expect("returns at once, without a stop").expect_err("refused");
        assert!(matches!(e, Error::Config(_)), "{extra:?}: {e}");
        assert_eq!(e.exit_code(), EXIT_CONFIG);

        for (signal, code) in [(Signal::Term, 143), (Signal::Int, 130)] {
            let run = cluster::conduct(&options, std::future::pending(), async { signal });
            let e = timeout(A_DAY, run).await.expect("returns at once").expect_err("stopped");
            assert!(matches!(e, Error::Interrupted(s) if s == signal), "{extra:?}: {e}");
            assert_eq!(e.exit_code(), code);
        }
    }
}

/// A signal while the trigger waits for its Job ends the run at once with
/// 143 (SIGTERM) or 130 (SIGINT), under FAIL_OPEN and STAY_RUNNING too. The
/// work is dropped where it stands: the Job is left to finish on its own
/// (nothing deleted or changed), and nothing more is asked or told.
#[tokio::test(start_paused = true)]
async fn a_signal_during_the_wait_ends_the_run_at_once_and_leaves_the_job() {
    type Case = (&'static [(&'static str, &'static str)], Signal, u8);
    let cases: &[Case] = &[
        (&[], Signal::Term, 143),
        (&[], Signal::Int, 130),
        (&[("FAIL_OPEN", "true")], Signal::Term, 143),
        (&[("FAIL_OPEN", "true")], Signal::Int, 130),
        (&[("FAIL_OPEN", "true"), ("STAY_RUNNING", "true")], Signal::Term, 143),
        (&[("STAY_RUNNING", "true")], Signal::Int, 130),
    ];
    for (extra, signal, code) in cases {
        let (client, seen) = serve(with_events(idle(), 201));
        let mut env = vec![("WAIT_TIMEOUT", "300")];
        env.extend(ON_POD.iter().copied().chain(extra.iter().copied()));
        let asked_by_then = Arc::new(Mutex::new(0));
        let (watching, asked) = (seen.clone(), asked_by_then.clone());
        let stop = async move {
            while !watching.lock().unwrap().iter().any(|s| s.query.contains("watch=true")) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // Well into the wait, between two watches.
            tokio::time::sleep(Duration::from_millis(10_100)).await;
            *asked.lock().unwrap() = watching.lock().unwrap().len();
            *signal
        };
        let started = Instant::now();
        let e = trigger(&client, &env, stop).await.expect_err("stopped");
        let took = started.elapsed();
        assert!(matches!(e, Error::Interrupted(s) if s == *signal), "{extra:?}: {e}");
        assert_eq!(e.exit_code(), *code, "{extra:?}");
        assert!(took < Duration::from_secs(11), "{extra:?}: at once, not at WAIT_TIMEOUT: {took:?}");

        tokio::time::sleep(Duration::from_secs(60)).await;
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), *asked_by_then.lock().unwrap(), "{extra:?}: nothing asked after the signal");
        let changes: Vec<String> = seen
            .iter()
            .filter(|s| s.method != Method::GET)
            .map(|s| format!("{} {}", s.method, s.path))
            .collect();
        assert_eq!(changes, [format!("POST {JOBS}"), format!("POST {EVENTS}")], "{extra:?}");
        let told: Vec<String> = events(&Arc::new(Mutex::new(seen))).into_iter().map(|e| e.1).collect();
        assert_eq!(told, ["FlushJobCreated"], "{extra:?}: no outcome to tell");
    }
}

/// STAY_RUNNING=true: the trigger reports its outcome, success or failure,
/// as Events on its pod, and then keeps running (a day later it still has
/// not returned) until the stop comes; then it ends with success, the
/// normal end of its pod, even after a failure.
#[tokio::test(start_paused = true)]
async fn stay_running_reports_then_runs_until_the_stop() {
    let cases = [
        ("Complete", Signal::Term, ["FlushJobCreated", "Flushed"]),
        ("Failed", Signal::Int, ["FlushJobCreated", "FlushFailed"]),
    ];
    for (ending, signal, told) in cases {
        let (client, seen) = serve(with_events(cluster((201, None), ending), 201));
        let plan = spawn_plan(&[ON_POD, &[("STAY_RUNNING", "true")]].concat());
        let (send, stop) = oneshot::channel::<Signal>();
        let stop = async { stop.await.expect("the test sends the stop") };
        let run = cluster::conduct(&plan.cluster, spawn::run(&client, NS, &plan), stop);
        tokio::pin!(run);
        assert!(timeout(A_DAY, &mut run).await.is_err(), "{ending}: returned before the stop");
        let events = events(&seen);
        let reasons: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
        assert_eq!(reasons, told, "{ending}: {events:?}");
        if ending == "Complete" {
            assert!(
                events[1].2.starts_with("deleted 2 stale conntrack entries on node node-a"),
                "{events:?}"
            );
        } else {
            assert_eq!(events[1].0, "Warning");
            assert!(events[1].2.contains("BackoffLimitExceeded"), "{events:?}");
        }
        let asked = seen.lock().unwrap().len();

        send.send(signal).expect("conduct waits for the stop");
        let result = timeout(Duration::from_secs(1), run).await.expect("the stop ends it at once");
        assert!(result.is_ok(), "{ending}: {result:?}");
        assert_eq!(seen.lock().unwrap().len(), asked, "{ending}: nothing asked while staying");
    }
}
