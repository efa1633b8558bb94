//! The middle tier: the real binary, as a process, against a fake API
//! server on loopback reached through a KUBECONFIG. It is kept only for what
//! neither other tier shows: the process's own contract (exit codes 0, 4, 6
//! and 7, FAIL_OPEN, SIGTERM during a wait, a sidecar that stays until
//! terminated, what a dry run prints) under faults the real control plane
//! cannot be made to produce on demand (an API server that is gone, a 422, a
//! Job controller reporting FailedCreate). What a flow asks of the API is
//! shown by the mock tier (spawn_api, sweep_api); what a real API server and
//! Job controller make of it, by control_plane. Every Job it creates or
//! prints is validated against the Kubernetes OpenAPI schema.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::CronJob;
use serde_json::json;
use testbed::apiserver::{Behaviour, Controller, Create, FakeApi};
use testbed::process::{self, Signal};
use testbed::validate;

const BIN: &str = env!("CARGO_BIN_EXE_flush-conntrack");
const NS: &str = "flush-conntrack";

/// The node-flush template as jobs/ ships it, in essence.
fn template() -> CronJob {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "CronJob",
        "metadata": {"name": "flush-conntrack-node", "namespace": NS},
        "spec": {"schedule": "0 0 1 1 *", "suspend": true, "jobTemplate": {
            "metadata": {"labels": {"app.kubernetes.io/name": "flush-conntrack"}},
            "spec": {"backoffLimit": 1, "ttlSecondsAfterFinished": 600, "activeDeadlineSeconds": 120,
            "template": {"metadata": {"labels": {"app.kubernetes.io/name": "flush-conntrack"}},
            "spec": {
                "hostNetwork": true, "restartPolicy": "Never", "serviceAccountName": "flush-conntrack-node",
                "automountServiceAccountToken": false,
                "containers": [{"name": "flush", "image": "ghcr.io/flush-conntrack/flush-conntrack:0.1.0",
                    "env": [{"name": "LOG_FORMAT", "value": "json"}],
                    "securityContext": {"runAsUser": 0, "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                        "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}}]
            }}}}}
    }))
    .expect("template")
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

    fn validate_jobs(&self, test: &str) {
        let jobs: Vec<String> = self.api.jobs().iter().map(|j| json!(j).to_string()).collect();
        assert!(!jobs.is_empty());
        if validate::available(test) {
            validate::strictly(test, &jobs).unwrap_or_else(|e| panic!("{test}: invalid Job: {e}"));
        }
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

#[test]
fn spawn_creates_a_valid_pinned_job_and_reports_its_summary() {
    let c = Cluster::new(Behaviour::default());
    let out = c.run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("flush Job succeeded") && log.contains("deleted=2") && log.contains("kept=1"),
        "{log}"
    );
    assert_eq!(c.api.jobs().len(), 1);
    c.validate_jobs("spawn_creates_a_valid_pinned_job_and_reports_its_summary");
}

#[test]
fn a_failed_job_exits_4_and_fail_open_exits_0() {
    let c = Cluster::new(Behaviour { controller: Controller::Fail, ..Behaviour::default() });
    let out = c.run(&[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("BackoffLimitExceeded"), "{}", stderr(&out));
    let out = c.run(&[("FAIL_OPEN", "true"), ("POD_UID", "other")]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("FAIL_OPEN=true"), "{}", stderr(&out));
}

/// A broken manifest stops the rollout at its first pod, FAIL_OPEN or not:
/// a variable that does not parse exits 2 before anything is contacted.
#[test]
fn refused_variables_exit_2_under_fail_open() {
    let c = Cluster::new(Behaviour::default());
    for (name, value) in [("TARGET_PORT", "81250"), ("WAIT_TIMEOUT", "soon"), ("DRY_RUN", "maybe")] {
        let out = c.run(&[("FAIL_OPEN", "true"), (name, value)]);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {}", stderr(&out));
        assert!(stderr(&out).contains(&format!("{name}=\"{value}\"")), "{}", stderr(&out));
    }
    assert!(c.api.jobs().is_empty(), "nothing was created");
}

#[test]
fn forbidden_exits_6_naming_the_verb_and_resource() {
    let c = Cluster::new(Behaviour { create: Create::Forbidden, ..Behaviour::default() });
    let out = c.run(&[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("may not create jobs in namespace flush-conntrack") && log.contains("RoleBinding"),
        "{log}"
    );
}

#[test]
fn an_invalid_job_exits_6_quoting_the_server() {
    let reason =
        "ValidatingAdmissionPolicy 'flush-conntrack-jobs' denied request: only the flush image may run";
    let c = Cluster::new(Behaviour { create: Create::Invalid(reason.to_owned()), ..Behaviour::default() });
    let out = c.run(&[]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert!(stderr(&out).contains(reason) && stderr(&out).contains("422"), "{}", stderr(&out));
}

#[test]
fn refused_pods_time_out_with_the_pod_security_reason() {
    let refusal = "violates PodSecurity \"baseline:latest\": host namespaces (hostNetwork=true)";
    let c = Cluster::new(Behaviour {
        controller: Controller::RefusePods(refusal.to_owned()),
        ..Behaviour::default()
    });
    let out = c.run(&[("WAIT_TIMEOUT", "2")]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains(refusal), "{}", stderr(&out));
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
    assert!(stderr(&out).contains("did not answer after 3 attempts"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(15), "bounded: {:?}", started.elapsed());
}

/// A signal during the wait ends the run promptly with 143 or 130, under
/// FAIL_OPEN too and as a STAY_RUNNING trigger: a stopped run did not fail,
/// it did not finish, and whoever stopped it reads that in its status.
#[test]
fn a_signal_ends_the_wait_promptly_whatever_fail_open_says() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Signal, i32);
    let cases: &[Case] = &[
        (&[], Signal::SIGTERM, 143),
        (&[("FAIL_OPEN", "true")], Signal::SIGTERM, 143),
        (&[("FAIL_OPEN", "true")], Signal::SIGINT, 130),
        (&[("FAIL_OPEN", "true"), ("STAY_RUNNING", "true")], Signal::SIGTERM, 143),
    ];
    for (i, (env, signal, code)) in cases.iter().enumerate() {
        let c = Cluster::new(Behaviour { controller: Controller::Idle, ..Behaviour::default() });
        let uid = format!("signal-{i}");
        let mut env = env.to_vec();
        env.extend([("WAIT_TIMEOUT", "300"), ("POD_UID", uid.as_str())]);
        let child = c.command(&env).stderr(Stdio::piped()).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.api.jobs().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        process::signal(child.id() as i32, *signal);
        let sent = Instant::now();
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(*code), "{env:?}: {}", stderr(&out));
        assert!(sent.elapsed() < Duration::from_secs(2), "{env:?}: {:?}", sent.elapsed());
        assert!(!stderr(&out).contains("exiting 0 despite"), "{env:?}: {}", stderr(&out));
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
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("flush Job succeeded") && text.contains("deleted=2"), "{text}");
}
