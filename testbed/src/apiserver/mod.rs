//! A fake Kubernetes API server on loopback, for running the real binary
//! through a KUBECONFIG as a pod would reach a cluster. It speaks the HTTP
//! API the binary uses (get, list, create with 201 or 409, watch streams
//! from a resourceVersion), stores objects built from k8s-openapi types, and
//! plays the Job controller: a created Job gets a pod that terminates with a
//! flush summary, then Complete. Kept for what needs a real process (a
//! signal, a server that is gone) and the sweep's scale benchmark; every
//! other answer of an API server is the mock tier's (tests/fixtures).

mod controller;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::batch::v1::{CronJob, Job, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};
use tokio::sync::broadcast;

/// What the fake Job controller does with a created Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Controller {
    /// The pod ends with exit 0 and this summary; the Job completes.
    Complete(String),
    /// Nothing happens.
    Idle,
}

#[derive(Debug, Clone)]
pub struct Behaviour {
    pub controller: Controller,
    /// From a Job's creation to its pod's end: scheduling, image, start,
    /// the flush, the report (about 3 s on a real node).
    pub job_latency: Duration,
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            controller: Controller::Complete(
                r#"{"dry_run":false,"scanned":3,"matched":2,"deleted":2,"already_gone":0,"kept":1,"failed":0,"kernel_flushed":0,"elapsed_seconds":0.004}"#
                    .to_owned(),
            ),
            job_latency: Duration::from_millis(150),
        }
    }
}

#[derive(Default)]
struct State {
    version: u64,
    cronjobs: BTreeMap<(String, String), CronJob>,
    jobs: BTreeMap<(String, String), Job>,
    pods: Vec<Pod>,
    /// Every Job change, for watches that start from an older version.
    history: Vec<(u64, String, Value)>,
    /// Requests as `METHOD path?query` and their status, for assertions.
    requests: Vec<(String, u16)>,
    behaviour: Behaviour,
}

impl State {
    fn bump(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }
}

pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type Body = BoxBody<Bytes, Infallible>;

fn full(status: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())).boxed())
        .expect("response")
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn lock(state: &Arc<Mutex<State>>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeApi {
    pub fn start(behaviour: Behaviour) -> FakeApi {
        let state = Arc::new(Mutex::new(State { behaviour, ..State::default() }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
                let _ = addr_tx.send(listener.local_addr().expect("address"));
                let (events, _) = broadcast::channel::<(u64, String, Value)>(1024);
                let mut stop_rx = stop_rx;
                loop {
                    tokio::select! {
                        _ = &mut stop_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = shared.clone();
                            let events = events.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req| {
                                    let state = state.clone();
                                    let events = events.clone();
                                    async move { Ok::<_, Infallible>(handle(req, state, events).await) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("fake API server started");
        FakeApi { addr, state, _stop: stop_tx }
    }

    /// A kubeconfig pointing at this server, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path, namespace: &str) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    pub fn add_cronjob(&self, cronjob: CronJob) {
        let mut s = lock(&self.state);
        let mut cronjob = cronjob;
        cronjob.metadata.uid = Some("cronjob-uid".to_owned());
        cronjob.metadata.resource_version = Some(s.bump());
        let key = (
            cronjob.metadata.namespace.clone().unwrap_or_default(),
            cronjob.metadata.name.clone().unwrap_or_default(),
        );
        s.cronjobs.insert(key, cronjob);
    }

    pub fn add_pod(&self, pod: Pod) {
        lock(&self.state).pods.push(pod);
    }

    pub fn jobs(&self) -> Vec<Job> {
        lock(&self.state).jobs.values().cloned().collect()
    }

    pub fn requests(&self) -> Vec<(String, u16)> {
        lock(&self.state).requests.clone()
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v,k2=v2` equality selectors, as the binary sends them.
fn selector_matches(selector: &str, labels: &BTreeMap<String, String>) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => {
            labels.get(k.trim_end_matches('=')).map(String::as_str) == Some(v.trim_start_matches('='))
        }
        None => labels.contains_key(term),
    })
}

async fn handle(
    req: Request<Incoming>,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<(u64, String, Value)>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let response = route(&method, &parts, &query, &body, &state, &events);
    lock(&state).requests.push((format!("{method} {path}?{query}"), response.status().as_u16()));
    response
}

fn route(
    method: &Method,
    parts: &[&str],
    query: &str,
    body: &[u8],
    state: &Arc<Mutex<State>>,
    events: &broadcast::Sender<(u64, String, Value)>,
) -> Response<Body> {
    match (method, parts) {
        (&Method::GET, ["apis", "batch", "v1", "namespaces", ns, "cronjobs", name]) => {
            let s = lock(state);
            match s.cronjobs.get(&(ns.to_string(), name.to_string())) {
                Some(c) => full(StatusCode::OK, &json!(c)),
                None => not_found("cronjobs.batch", name),
            }
        }
        (&Method::POST, ["apis", "batch", "v1", "namespaces", ns, "jobs"]) => {
            create_job(ns, body, state, events)
        }
        (&Method::GET, ["apis", "batch", "v1", "namespaces", ns, "jobs"])
            if query_param(query, "watch").is_some() =>
        {
            watch_jobs(ns, query, state, events)
        }
        (&Method::GET, ["apis", "batch", "v1", "namespaces", ns, "jobs"]) => list_jobs(ns, query, state),
        (&Method::GET, ["apis", "batch", "v1", "namespaces", ns, "jobs", name]) => {
            let s = lock(state);
            match s.jobs.get(&(ns.to_string(), name.to_string())) {
                Some(j) => full(StatusCode::OK, &json!(j)),
                None => not_found("jobs.batch", name),
            }
        }
        (&Method::GET, ["api", "v1", "namespaces", ns, "pods"]) => list_pods(Some(ns), query, state),
        (&Method::GET, ["api", "v1", "pods"]) => list_pods(None, query, state),
        _ => full(
            StatusCode::NOT_FOUND,
            &status_body(404, "NotFound", "the server could not find the requested resource"),
        ),
    }
}

fn list_jobs(ns: &str, query: &str, state: &Arc<Mutex<State>>) -> Response<Body> {
    let selector = query_param(query, "labelSelector").unwrap_or_default();
    let s = lock(state);
    let items: Vec<&Job> = s
        .jobs
        .iter()
        .filter(|((n, _), j)| {
            n == ns && selector_matches(&selector, j.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
        })
        .map(|(_, j)| j)
        .collect();
    full(
        StatusCode::OK,
        &json!({"kind": "JobList", "apiVersion": "batch/v1", "metadata": {}, "items": items}),
    )
}

fn not_found(resource: &str, name: &str) -> Response<Body> {
    full(StatusCode::NOT_FOUND, &status_body(404, "NotFound", &format!("{resource} \"{name}\" not found")))
}

fn create_job(
    ns: &str,
    body: &[u8],
    state: &Arc<Mutex<State>>,
    events: &broadcast::Sender<(u64, String, Value)>,
) -> Response<Body> {
    let Ok(mut job) = serde_json::from_slice::<Job>(body) else {
        return full(StatusCode::BAD_REQUEST, &status_body(400, "BadRequest", "the body is not a Job"));
    };
    let name = job.metadata.name.clone().unwrap_or_default();
    let mut s = lock(state);
    let key = (ns.to_owned(), name.clone());
    if s.jobs.contains_key(&key) {
        return full(
            StatusCode::CONFLICT,
            &status_body(409, "AlreadyExists", &format!("jobs.batch \"{name}\" already exists")),
        );
    }
    job.metadata.namespace = Some(ns.to_owned());
    job.metadata.uid = Some(format!("uid-{name}"));
    job.metadata.resource_version = Some(s.bump());
    job.status = Some(JobStatus::default());
    s.jobs.insert(key, job.clone());
    let controller = s.behaviour.controller.clone();
    let latency = s.behaviour.job_latency;
    drop(s);
    let (state, events, ns2) = (state.clone(), events.clone(), ns.to_owned());
    tokio::spawn(async move {
        tokio::time::sleep(latency).await;
        controller::play(&state, &events, &ns2, &name, controller);
    });
    full(StatusCode::CREATED, &json!(job))
}

fn watch_jobs(
    ns: &str,
    query: &str,
    state: &Arc<Mutex<State>>,
    events: &broadcast::Sender<(u64, String, Value)>,
) -> Response<Body> {
    let since: u64 = query_param(query, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
    let name = query_param(query, "fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name=").map(str::to_owned))
        .unwrap_or_default();
    let window = query_param(query, "timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(290u64);
    let receiver = events.subscribe();
    let ns = ns.to_owned();
    let wanted = move |event_ns: &str, event: &Value| {
        event_ns == ns && (name.is_empty() || event["object"]["metadata"]["name"] == name.as_str())
    };
    let backlog: Vec<Value> = lock(state)
        .history
        .iter()
        .filter(|(v, n, e)| *v > since && wanted(n, e))
        .map(|(_, _, e)| e.clone())
        .collect();
    let line = |v: &Value| Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{v}\n"))));
    let backlog = futures_util::stream::iter(backlog.into_iter().map(move |e| line(&e)));
    let live = futures_util::stream::unfold(receiver, move |mut rx| {
        let wanted = wanted.clone();
        async move {
            loop {
                match rx.recv().await {
                    Ok((v, n, e)) if v > since && wanted(&n, &e) => return Some((line(&e), rx)),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    let deadline = tokio::time::sleep(Duration::from_secs(window));
    let stream = backlog.chain(live).take_until(deadline);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .expect("response")
}

/// Pods by namespace, label selector and `status.phase=` field selector,
/// in pages when asked (`limit`, and `continue` as an offset).
fn list_pods(ns: Option<&str>, query: &str, state: &Arc<Mutex<State>>) -> Response<Body> {
    let selector = query_param(query, "labelSelector").unwrap_or_default();
    let phase = query_param(query, "fieldSelector")
        .and_then(|f| f.split(',').find_map(|t| t.strip_prefix("status.phase=").map(str::to_owned)));
    let s = lock(state);
    let items: Vec<&Pod> = s
        .pods
        .iter()
        .filter(|p| ns.is_none() || p.metadata.namespace.as_deref() == ns)
        .filter(|p| selector_matches(&selector, p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
        .filter(|p| phase.is_none() || p.status.as_ref().and_then(|s| s.phase.as_deref()) == phase.as_deref())
        .collect();
    let from: usize = query_param(query, "continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    let limit: usize = query_param(query, "limit").and_then(|l| l.parse().ok()).unwrap_or(usize::MAX);
    let to = from.saturating_add(limit).min(items.len());
    let next = if to < items.len() { to.to_string() } else { String::new() };
    full(
        StatusCode::OK,
        &json!({"kind": "PodList", "apiVersion": "v1",
                "metadata": {"resourceVersion": s.version.to_string(), "continue": next},
                "items": items.get(from.min(to)..to).unwrap_or_default()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_selectors() {
        assert_eq!(percent_decode("app%3Dstatsd%2Ctier%3Dx"), "app=statsd,tier=x");
        assert_eq!(
            query_param("watch=true&fieldSelector=metadata.name%3Dj1", "fieldSelector").as_deref(),
            Some("metadata.name=j1")
        );
        let labels = BTreeMap::from([("app".to_owned(), "statsd".to_owned())]);
        assert!(selector_matches("app=statsd", &labels));
        assert!(selector_matches("app==statsd", &labels));
        assert!(!selector_matches("app=other", &labels));
    }
}
