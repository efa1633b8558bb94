//! The real binary, as a process, against testbed's fake API server on
//! loopback, reached through a KUBECONFIG. The process's contract itself
//! (FAIL_OPEN, STAY_RUNNING, signals, each exit code, the Events) is shown in
//! the mock tier, through `cluster::conduct` (process_contract, spawn_api,
//! sweep_api). Kept here is only what needs a real process:
//!
//! - an API server gone from the network: the kube client's own connection
//!   failing, retried and bounded, exit 7;
//! - SIGTERM and SIGINT sent by the kernel reaching `conduct` through the
//!   handlers `cluster::run` installs, exit 143 and 130;
//! - `STAY_RUNNING=true` as a process that stays after its outcome until
//!   SIGTERM, then exits 0;
//! - what a dry run of spawn, and of sweep, prints on stdout, validated
//!   against the Kubernetes OpenAPI schema;
//!
//! and in each, that the process's exit status is the code of its outcome.
//! What a real API server and Job controller make of the Jobs is
//! control_plane's.

mod fixtures;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::CronJob;
use testbed::apiserver::{Behaviour, Controller, FakeApi};
use testbed::process::{self, Signal};
use testbed::validate;

const BIN: &str = env!("CARGO_BIN_EXE_flush-conntrack");
const NS: &str = "flush-conntrack";

/// The node-flush template as jobs/ ships it.
fn template() -> CronJob {
    serde_json::from_value(fixtures::template()).expect("the shipped template is a CronJob")
}

struct Cluster {
    api: FakeApi,
    dir: std::path::PathBuf,
}

impl Cluster {
    fn new(behaviour: Behaviour) -> Cluster {
        let api = FakeApi::start(behaviour);
        api.add_cronjob(template());
        let dir = std::env::temp_dir().join(format!("fct-kube-{}-{}", std::process::id(), api.addr.port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Cluster { api, dir }
    }

    fn command(&self, env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear().env("KUBECONFIG", self.api.kubeconfig(&self.dir, NS));
        let defaults = [
            ("MODE", "spawn"),
            ("NODE_NAME", "node-a"),
            ("POD_UID", "2b9e1c4a-uid"),
            ("TARGET_IP", "192.0.2.1"),
            ("TARGET_PORT", "8125"),
            ("KEEP_DNAT_TO", "10.244.1.6"),
            ("WAIT_TIMEOUT", "20"),
        ];
        for (k, v) in defaults {
            if !env.iter().any(|(key, _)| *key == k) {
                cmd.env(k, v);
            }
        }
        cmd.envs(env.iter().copied());
        cmd
    }

    fn run(&self, env: &[(&str, &str)]) -> Output {
        self.command(env).output().expect("binary runs")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The child's output once it has exited, within `limit`: one still running
/// then (a signal that did not reach it) is killed, and the test fails
/// instead of hanging.
fn exited_within(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("the child's status").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("the killed child's output");
            panic!("still running after {limit:?}: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the child's output")
}

#[test]
fn an_unreachable_api_exits_7_after_bounded_retries() {
    let c = Cluster::new(Behaviour::default());
    let dir = c.dir.join("closed");
    std::fs::create_dir_all(&dir).unwrap();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let text = std::fs::read_to_string(c.api.kubeconfig(&dir, NS))
        .unwrap()
        .replace(&c.api.addr.to_string(), &closed.to_string());
    std::fs::write(&kubeconfig, text).unwrap();
    let started = Instant::now();
    let out = c.command(&[]).env("KUBECONFIG", &kubeconfig).output().unwrap();
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert!(stderr(&out).contains("did not serve the call in 3 attempts"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(15), "bounded: {:?}", started.elapsed());
}

/// SIGTERM and SIGINT from the kernel, while the trigger waits for its Job,
/// end the process at once with 143 and 130.
#[test]
fn a_signal_ends_the_wait_promptly() {
    for (signal, code) in [(Signal::SIGTERM, 143), (Signal::SIGINT, 130)] {
        let c = Cluster::new(Behaviour { controller: Controller::Idle, ..Behaviour::default() });
        let child = c.command(&[("WAIT_TIMEOUT", "300")]).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.api.jobs().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        process::signal(child.id() as i32, signal);
        let out = exited_within(child, Duration::from_secs(2));
        assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
        assert_eq!(c.api.jobs().len(), 1, "the Job was created before the signal");
    }
}

#[test]
fn dry_run_prints_a_valid_job_and_creates_nothing() {
    let c = Cluster::new(Behaviour::default());
    let out = c.run(&[("DRY_RUN", "true")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(c.api.jobs().is_empty());
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(yaml.contains("kind: Job") && yaml.contains("metadata.name"), "{yaml}");
    if validate::available("dry_run_prints_a_valid_job_and_creates_nothing") {
        validate::strictly("dry-run", &[yaml]).unwrap_or_else(|e| panic!("invalid Job: {e}"));
    }
}

/// A dry-run sweep prints the Job it would create for each node with an
/// agent, one YAML document per node on stdout, and creates nothing.
#[test]
fn a_dry_run_sweep_prints_one_valid_job_per_node_and_creates_nothing() {
    let c = Cluster::new(Behaviour::default());
    for (name, node, pod_ip) in [("statsd-a", "node-a", "10.244.1.5"), ("statsd-b", "node-b", "10.244.2.5")] {
        let mut pod = fixtures::agent(name, node, "192.0.2.1", pod_ip, "Running");
        pod["metadata"]["labels"] = serde_json::json!({"app": "statsd"});
        c.api.add_pod(serde_json::from_value(pod).expect("an agent pod"));
    }
    let out = Command::new(BIN)
        .env_clear()
        .env("KUBECONFIG", c.api.kubeconfig(&c.dir, NS))
        .envs([("MODE", "sweep"), ("SWEEP_SELECTOR", "app=statsd"), ("SWEEP_NAMESPACE", "monitoring")])
        .envs([("DRY_RUN", "true"), ("WAIT_TIMEOUT", "20")])
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(c.api.jobs().is_empty(), "a dry run creates nothing");
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    let jobs: Vec<serde_json::Value> = serde_saphyr::from_multiple::<serde_json::Value>(&yaml)
        .unwrap_or_else(|e| panic!("stdout is YAML documents: {e}\n{yaml}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let mut nodes: Vec<&str> = jobs
        .iter()
        .map(|j| {
            assert_eq!(j["kind"], "Job", "{j}");
            let env = &j["spec"]["template"]["spec"]["containers"][0]["env"];
            let dry =
                env.as_array().into_iter().flatten().any(|e| e["name"] == "DRY_RUN" && e["value"] == "true");
            assert!(dry, "the printed Job is a dry run too: {env}");
            j["metadata"]["annotations"]["flush-conntrack/node"].as_str().unwrap_or_default()
        })
        .collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["node-a", "node-b"], "one Job per node with an agent:\n{yaml}");
    if validate::available("a_dry_run_sweep_prints_one_valid_job_per_node_and_creates_nothing") {
        validate::strictly("dry-run-sweep", &[yaml]).unwrap_or_else(|e| panic!("invalid Job: {e}"));
    }
}

#[test]
fn a_sidecar_trigger_reports_and_stays_until_terminated() {
    // STAY_RUNNING=true: as a restartPolicy: Always init container, the
    // trigger must not exit once done, or the kubelet would start it (and a
    // flush) again.
    let c = Cluster::new(Behaviour::default());
    let log = c.dir.join("sidecar.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = c.command(&[("STAY_RUNNING", "true")]).stderr(file).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("running until the pod is terminated") {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(&log).unwrap_or_default());
        assert!(matches!(child.try_wait(), Ok(None)), "it exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(matches!(child.try_wait(), Ok(None)), "it stays after the outcome");
    assert_eq!(c.api.jobs().len(), 1, "one Job, not one per restart");
    process::terminate(&child);
    let status = exited_within(child, Duration::from_secs(5)).status;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("flush Job succeeded") && text.contains("deleted=2"), "{text}");
}
