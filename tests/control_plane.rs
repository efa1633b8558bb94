//! Against a real kube-apiserver and Job controller (controlplane/): the
//! manifests apply with server-side validation, Pod Security admits the
//! flush pod only where the namespace allows it, spawn and sweep work with
//! their service accounts' real tokens and RBAC (tests/stolen_token.rs tries
//! those tokens as an attacker would). One control plane, the scenarios in
//! order, so that no process outlives the test.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testbed::command::{ok, text};
use testbed::controlplane::ControlPlane;
use testbed::require;
use testbed::story::{by_hand, Visits};

const BIN: &str = env!("CARGO_BIN_EXE_flush-conntrack");
const NS: &str = "flush-conntrack";
const NODES: &[(&str, &str)] =
    &[("node-a", "192.0.2.11"), ("node-b", "192.0.2.12"), ("node-c", "192.0.2.13")];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run_binary(kubeconfig: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .envs(env.iter().copied())
        .output()
        .expect("binary runs")
}

fn jobs(cp: &ControlPlane, selector: &str) -> Vec<Value> {
    let out = ok(cp.kubectl(&["-n", NS, "get", "jobs", "-l", selector, "-o", "json"]), "list jobs");
    serde_json::from_slice::<Value>(&out.stdout).expect("JSON")["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn create_as(cp: &ControlPlane, kubeconfig: &Path, object: &Value) -> Output {
    cp.create_as(kubeconfig, object)
}

#[test]
fn against_a_real_control_plane() {
    if !require::tools("against_a_real_control_plane", &["go", "kubectl", "openssl"]) {
        return;
    }
    let started = Instant::now();
    let cp = ControlPlane::start(NODES).unwrap_or_else(|e| panic!("control plane: {e}"));
    eprintln!("control plane ready in {:?}", started.elapsed());

    manifests_apply_and_kubectl_create_job_from_works(&cp);
    pod_security_admits_the_flush_pod_only_in_its_namespace(&cp);
    spawn_runs_as_the_trigger_account(&cp);
    sweep_runs_as_the_sweeper_account(&cp);
    the_trigger_token_lasts_the_hour_it_asks_for(&cp);
    the_trigger_reads_only_the_template(&cp);
    eprintln!("all scenarios passed in {:?}", started.elapsed());
}

fn manifests_apply_and_kubectl_create_job_from_works(cp: &ControlPlane) {
    for k in ["kustomize/base", "kustomize/overlays/statsd"] {
        let dir = root().join(k);
        ok(cp.kubectl(&["apply", "--server-side", "--validate=strict", "-k", dir.to_str().unwrap()]), k);
    }
    for (job, cronjob) in [("probe-node", "flush-conntrack-node"), ("probe-sweep", "flush-conntrack-sweep")] {
        ok(cp.kubectl(&["-n", NS, "create", "job", job, &format!("--from=cronjob/{cronjob}")]), job);
        let created = ok(cp.kubectl(&["-n", NS, "get", "job", job, "-o", "json"]), job);
        let v: Value = serde_json::from_slice(&created.stdout).unwrap();
        assert_eq!(v["metadata"]["ownerReferences"][0]["name"], cronjob);
        ok(cp.kubectl(&["-n", NS, "delete", "job", job, "--cascade=foreground", "--wait=false"]), job);
    }
    // The README's sweep of every node: the overlay's sweep Job, with
    // FULL_SWEEP set and nothing else changed.
    by_hand::create(cp, Visits::Every, "probe-sweep-all")
        .unwrap_or_else(|e| panic!("{}: {e}", by_hand::SWEEP_ALL));
    let job = |name: &str| -> Value {
        serde_json::from_slice(&ok(cp.kubectl(&["-n", NS, "get", "job", name, "-o", "json"]), name).stdout)
            .unwrap()
    };
    let cronjob: Value = serde_json::from_slice(
        &ok(cp.kubectl(&["-n", NS, "get", "cronjob", "flush-conntrack-sweep", "-o", "json"]), "the sweep")
            .stdout,
    )
    .unwrap();
    let all = job("probe-sweep-all");
    assert_eq!(all["metadata"]["ownerReferences"][0]["name"], "flush-conntrack-sweep");
    let mut env = all["spec"]["template"]["spec"]["containers"][0]["env"].as_array().unwrap().clone();
    let full = env.pop().unwrap();
    assert_eq!(full, json!({"name": "FULL_SWEEP", "value": "true"}));
    let scheduled = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(json!(env), scheduled["env"], "the overlay's selector, namespace and the rest, unchanged");
    assert_eq!(all["spec"]["template"]["spec"]["containers"][0]["image"], scheduled["image"]);
    ok(
        cp.kubectl(&["-n", NS, "delete", "job", "probe-sweep-all", "--cascade=foreground", "--wait=false"]),
        "probe",
    );
}

/// The flush pod exactly as the template defines it.
fn flush_pod(name: &str, namespace: &str) -> Value {
    let text = std::fs::read_to_string(root().join("jobs/flush-conntrack-node.yaml")).unwrap();
    let cronjob: Value = serde_saphyr::from_str(&text).unwrap();
    let mut spec = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"].clone();
    spec["serviceAccountName"] = json!("default");
    spec["priorityClassName"] = Value::Null;
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec})
}

fn pod_security_admits_the_flush_pod_only_in_its_namespace(cp: &ControlPlane) {
    ok(cp.kubectl(&["create", "namespace", "pss-baseline"]), "namespace");
    ok(
        cp.kubectl(&["label", "namespace", "pss-baseline", "pod-security.kubernetes.io/enforce=baseline"]),
        "label",
    );
    let refused = create_as(cp, &cp.admin, &flush_pod("flush-probe", "pss-baseline"));
    assert!(!refused.status.success(), "a baseline namespace admitted the host-network pod");
    assert!(
        text(&refused).contains("violates PodSecurity") && text(&refused).contains("hostNetwork"),
        "{}",
        text(&refused)
    );
    let admitted = create_as(cp, &cp.admin, &flush_pod("flush-probe", NS));
    assert!(admitted.status.success(), "the privileged namespace refused the flush pod: {}", text(&admitted));
    ok(cp.kubectl(&["-n", NS, "delete", "pod", "flush-probe", "--wait=false"]), "delete");
}

fn spawn_env<'a>(node: &'a str, address: &'a str, uid: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MODE", "spawn"),
        ("TARGET_NAMESPACE", NS),
        ("NODE_NAME", node),
        ("POD_UID", uid),
        ("TARGET_IP", address),
        ("TARGET_PORT", "8125"),
        ("KEEP_DNAT_TO", "10.244.6.6"),
        ("WAIT_TIMEOUT", "90"),
    ]
}

fn spawn_runs_as_the_trigger_account(cp: &ControlPlane) {
    // The token a trigger's pod on node-b holds: bound to the pod, and so
    // to its node, which the admission policy checks.
    let trigger =
        cp.pod_bound_kubeconfig("monitoring", "statsd", "statsd-trigger-b", "node-b").expect("trigger token");
    let uid = ok(
        cp.kubectl(&["-n", "monitoring", "get", "pod", "statsd-trigger-b", "-o", "jsonpath={.metadata.uid}"]),
        "uid",
    );
    let uid = String::from_utf8_lossy(&uid.stdout).trim().to_owned();
    let out = run_binary(&trigger, &spawn_env("node-b", "local", &uid));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("flush Job succeeded") && text(&out).contains("deleted=1"), "{}", text(&out));
    let made = jobs(cp, "flush-conntrack/node=node-b");
    assert_eq!(made.len(), 1);
    let name = made[0]["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(cp.node_of(NS, &name).as_deref(), Some("node-b"), "its pod ran on the node it names");

    let again = run_binary(&trigger, &spawn_env("node-b", "local", &uid));
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    assert!(text(&again).contains("adopted"), "{}", text(&again));
    assert_eq!(jobs(cp, "flush-conntrack/node=node-b").len(), 1, "a restarted trigger makes no second Job");

    ok(cp.kubectl(&["-n", NS, "delete", "rolebinding", "flush-conntrack-trigger"]), "unbind");
    let denied = run_binary(&trigger, &spawn_env("node-b", "local", &uid));
    assert_eq!(denied.status.code(), Some(6), "{}", text(&denied));
    assert!(text(&denied).contains("may not get cronjobs in namespace flush-conntrack"), "{}", text(&denied));
    let dir = root().join("kustomize/overlays/statsd");
    ok(cp.kubectl(&["apply", "--server-side", "-k", dir.to_str().unwrap()]), "rebind");
}

fn sweep_runs_as_the_sweeper_account(cp: &ControlPlane) {
    for (node, _) in NODES {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("statsd-{node}"), "namespace": "monitoring", "labels": {"app.kubernetes.io/name": "statsd"}},
            "spec": {"nodeName": node, "serviceAccountName": "statsd", "containers": [{"name": "statsd", "image": "prom/statsd-exporter:v0.28.0",
                "ports": [{"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}]}]}});
        ok(create_as(cp, &cp.admin, &pod), "agent pod");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = ok(
            cp.kubectl(&[
                "-n",
                "monitoring",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=statsd",
                "-o",
                "jsonpath={.items[*].status.phase}",
            ]),
            "phases",
        );
        if String::from_utf8_lossy(&out.stdout).split_whitespace().filter(|p| *p == "Running").count()
            == NODES.len()
        {
            break;
        }
        assert!(Instant::now() < deadline, "agent pods never ran");
        std::thread::sleep(Duration::from_millis(300));
    }
    let sweeper = cp.service_account_kubeconfig(NS, "flush-conntrack-sweeper").expect("sweeper token");
    let env = [
        ("MODE", "sweep"),
        ("SWEEP_SELECTOR", "app.kubernetes.io/name=statsd"),
        ("SWEEP_NAMESPACE", "monitoring"),
        ("POD_UID", "sweep-run-1"),
        ("POD_NAME", "sweep-run-1-pod"),
        ("POD_NAMESPACE", NS),
        ("WAIT_TIMEOUT", "120"),
    ];
    let out = run_binary(&sweeper, &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The sweeper's own rights let it put each node's outcome on its pod.
    let told = events_on(cp, "sweep-run-1-pod");
    let reasons: Vec<&str> = told.iter().map(|(_, reason, _)| reason.as_str()).collect();
    assert_eq!(
        reasons.iter().filter(|r| **r == "Flushed").count(),
        NODES.len(),
        "{reasons:?}: {}",
        text(&out)
    );
    assert_eq!(reasons.iter().filter(|r| **r == "SweepDone").count(), 1, "{reasons:?}");
    sweep_visits_only_what_changed_since_its_last_success(cp, &sweeper);
    a_failed_node_is_told_and_retried_by_the_next_sweep(cp, &sweeper);
}

/// The sweep's failure path end to end: node-c's flush pod fails (exit 3,
/// as without NET_ADMIN), the Job controller fails its Job, the sweep puts
/// a Warning on its pod and exits 4; the next sweep, with a success
/// recorded after it and nothing changed, visits node-c alone.
fn a_failed_node_is_told_and_retried_by_the_next_sweep(cp: &ControlPlane, sweeper: &Path) {
    cp.failing.lock().unwrap().push("node-c".to_owned());
    let env = |run: &'static str| {
        vec![
            ("MODE", "sweep"),
            ("SWEEP_SELECTOR", "app.kubernetes.io/name=statsd"),
            ("SWEEP_NAMESPACE", "monitoring"),
            ("FULL_SWEEP", "true"),
            ("POD_UID", run),
            ("POD_NAME", run),
            ("POD_NAMESPACE", NS),
            ("WAIT_TIMEOUT", "120"),
        ]
    };
    let out = run_binary(sweeper, &env("sweep-fails-1"));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let warnings = events_on(cp, "sweep-fails-1");
    let failed: Vec<&(String, String, String)> =
        warnings.iter().filter(|(_, r, _)| r == "FlushFailed").collect();
    assert_eq!(failed.len(), 1, "{warnings:?}");
    assert_eq!(failed[0].0, "Warning");
    assert!(failed[0].2.contains("node-c"), "{warnings:?}");
    cp.failing.lock().unwrap().clear();

    // Covered up to now (less the sweep's margin), nothing changed since.
    record_a_sweep_success(cp, 600);
    let mut next = env("sweep-fails-2");
    next.retain(|(k, _)| *k != "FULL_SWEEP");
    let out = run_binary(sweeper, &next);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        nodes_of_run(cp, "sweep-fails-2"),
        ["node-c"],
        "only the node whose last flush failed: {}",
        text(&out)
    );
}

/// Records a success of the sweep CronJob `ahead` seconds from now: the
/// sweep looks 10 minutes back from it, so 600 covers everything until now.
fn record_a_sweep_success(cp: &ControlPlane, ahead: i64) {
    let last = k8s_openapi::jiff::Timestamp::now()
        .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(ahead))
        .expect("a time");
    let status = json!({"status": {"lastSuccessfulTime": last.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()}});
    let patch = status.to_string();
    let args = [
        "-n",
        NS,
        "patch",
        "cronjob",
        "flush-conntrack-sweep",
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch,
    ];
    ok(cp.kubectl(&args), "record a success");
}

/// The nodes of the flush Jobs a run made.
fn nodes_of_run(cp: &ControlPlane, run: &str) -> Vec<String> {
    jobs(cp, "flush-conntrack/node")
        .into_iter()
        .filter(|j| j["metadata"]["annotations"]["flush-conntrack/run"] == run)
        .filter_map(|j| j["metadata"]["annotations"]["flush-conntrack/node"].as_str().map(str::to_owned))
        .collect()
}

/// flush-conntrack's Events on a pod of the flush namespace, as (type,
/// reason, note).
fn events_on(cp: &ControlPlane, pod: &str) -> Vec<(String, String, String)> {
    let listed = ok(cp.kubectl(&["-n", NS, "get", "events.events.k8s.io", "-o", "json"]), "events");
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["regarding"]["name"] == pod && e["reportingController"] == "flush-conntrack")
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("type"), text("reason"), text("note"))
        })
        .collect()
}

/// With a success recorded on the sweep CronJob, the next sweep flushes
/// only the node whose agent started since (by the pods' start times).
fn sweep_visits_only_what_changed_since_its_last_success(cp: &ControlPlane, sweeper: &Path) {
    // "Succeeded" so that changes from two seconds on are not covered yet
    // (the sweep looks 10 minutes back from its last success).
    record_a_sweep_success(cp, 602);
    std::thread::sleep(Duration::from_secs(3));
    ok(
        cp.kubectl(&[
            "-n",
            "monitoring",
            "delete",
            "pod",
            "statsd-node-b",
            "--wait=false",
            "--grace-period=0",
            "--force",
        ]),
        "delete",
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "statsd-node-b-2", "namespace": "monitoring", "labels": {"app.kubernetes.io/name": "statsd"}},
        "spec": {"nodeName": "node-b", "serviceAccountName": "statsd", "containers": [{"name": "statsd", "image": "prom/statsd-exporter:v0.28.0",
            "ports": [{"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}]}]}});
    ok(create_as(cp, &cp.admin, &pod), "the replaced agent");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(
        &cp.kubectl(&[
            "-n",
            "monitoring",
            "get",
            "pod",
            "statsd-node-b-2",
            "-o",
            "jsonpath={.status.startTime}",
        ])
        .stdout,
    )
    .contains('T')
    {
        assert!(Instant::now() < deadline, "the replaced agent never ran");
        std::thread::sleep(Duration::from_millis(300));
    }
    let env = [
        ("MODE", "sweep"),
        ("SWEEP_SELECTOR", "app.kubernetes.io/name=statsd"),
        ("SWEEP_NAMESPACE", "monitoring"),
        ("POD_UID", "sweep-run-2"),
        ("WAIT_TIMEOUT", "120"),
    ];
    let out = run_binary(sweeper, &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        nodes_of_run(cp, "sweep-run-2"),
        ["node-b"],
        "only the node whose agent changed: {}",
        text(&out)
    );
    for (node, _) in NODES {
        let made: Vec<Value> = jobs(cp, &format!("flush-conntrack/node={node}"))
            .into_iter()
            .filter(|j| j["metadata"]["annotations"]["flush-conntrack/run"] == "sweep-run-1")
            .collect();
        assert_eq!(made.len(), 1, "{node}: {}", text(&out));
        let env = &made[0]["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            env.as_array().unwrap().contains(&json!({"name": "TARGET_IP", "value": "local"})),
            "{node}: {env}"
        );
        assert!(
            env.as_array().unwrap().contains(&json!({"name": "TARGET_PORT", "value": "8125"})),
            "{node}: {env}"
        );
        // The agents are dual-stack: flows to either of their addresses are kept.
        assert!(
            env.as_array()
                .unwrap()
                .contains(&json!({"name": "KEEP_DNAT_TO", "value": "10.244.6.9,fd00:10:244:6::9"})),
            "{node}: {env}"
        );
    }
}

/// Seconds from a JWT's `iat` to its `exp`, read from its payload.
fn lifetime(token: &str) -> i64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).expect("base64url");
    let claims: Value = serde_json::from_slice(&bytes).expect("JSON claims");
    claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap()
}

/// The trigger's projected token is asked for with the overlay's
/// `expirationSeconds`; the API server (with its default
/// --service-account-extend-token-expiration) extends a pod-bound token
/// asked for exactly 3607 s to a year. The same request as the kubelet's,
/// bound to a pod of the agent: the overlay's lasts what it asks for.
fn the_trigger_token_lasts_the_hour_it_asks_for(cp: &ControlPlane) {
    let ds = ok(cp.kubectl(&["-n", "monitoring", "get", "daemonset", "statsd", "-o", "json"]), "ds");
    let ds: Value = serde_json::from_slice(&ds.stdout).unwrap();
    let asked = ds["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|v| v["projected"]["sources"].as_array().into_iter().flatten())
        .find_map(|s| s["serviceAccountToken"]["expirationSeconds"].as_i64())
        .expect("the trigger's projected token");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "statsd-token-probe", "namespace": "monitoring"},
        "spec": {"nodeName": "node-a", "serviceAccountName": "statsd", "automountServiceAccountToken": false,
                 "containers": [{"name": "agent", "image": "agent"}]}});
    ok(cp.create_as(&cp.admin, &pod), "probe pod");
    let uid = ok(
        cp.kubectl(&[
            "-n",
            "monitoring",
            "get",
            "pod",
            "statsd-token-probe",
            "-o",
            "jsonpath={.metadata.uid}",
        ]),
        "uid",
    );
    let uid = format!("--bound-object-uid={}", String::from_utf8_lossy(&uid.stdout).trim());
    let token_for = |seconds: i64| -> i64 {
        let duration = format!("--duration={seconds}s");
        let args = [
            "-n",
            "monitoring",
            "create",
            "token",
            "statsd",
            "--bound-object-kind=Pod",
            "--bound-object-name=statsd-token-probe",
            uid.as_str(),
            duration.as_str(),
        ];
        let out = ok(cp.kubectl(&args), "create token");
        lifetime(String::from_utf8_lossy(&out.stdout).trim())
    };
    assert_eq!(token_for(asked), asked, "the overlay's token lasts what it asks for");
    assert_eq!(asked, 3600);
    // What 3607 would have given: the check above can fail.
    assert!(token_for(3607) > 30 * 24 * 3600, "the API server extends 3607 s");
}

/// The spawner's `get` on CronJobs names one: the template. The trigger's
/// own token, as the API server judges it.
fn the_trigger_reads_only_the_template(cp: &ControlPlane) {
    let trigger =
        cp.pod_bound_kubeconfig("monitoring", "statsd", "statsd-reader-a", "node-a").expect("trigger token");
    ok(cp.kubectl_as(&trigger, &["-n", NS, "get", "cronjob", "flush-conntrack-node"]), "the template");
    for denied in [
        vec!["-n", NS, "get", "cronjob", "flush-conntrack-sweep"],
        vec!["-n", NS, "get", "cronjobs"],
        vec!["-n", NS, "get", "jobs"],
        vec!["-n", NS, "get", "secrets"],
    ] {
        let out = cp.kubectl_as(&trigger, &denied);
        assert!(!out.status.success(), "{denied:?} was allowed");
        assert!(
            text(&out).contains("Forbidden") || text(&out).contains("forbidden"),
            "{denied:?}: {}",
            text(&out)
        );
    }
}
