//! The tokens of flush-conntrack's accounts, tried as an attacker would try
//! them, against a real kube-apiserver running the statsd overlay with the
//! base's ValidatingAdmissionPolicy. Each attack is a `kubectl create` with
//! the stolen token, and each must be refused with the policy's own message;
//! the genuine Jobs of spawn and sweep must be admitted. A last check fails
//! when the release's JobSpec, PodSpec or Container has a field the policy
//! does not name, so that an upgrade cannot open a hole unseen.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use testbed::command::{ok, text};
use testbed::controlplane::ControlPlane;
use testbed::require;

mod attacker;
use attacker::{container, create, pod_uid, printed_job, set_env, trigger_env, BIN, NODES, NS};

const POLICY: &str = "kustomize/base/admission-policy.yaml";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A genuine Job turned into an attack.
type Attack = (&'static str, Box<dyn Fn(&mut Value)>, &'static str);

fn pod(j: &mut Value) -> &mut Value {
    &mut j["spec"]["template"]["spec"]
}

fn pin(j: &mut Value, node: &str) {
    pod(j)["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        ["nodeSelectorTerms"][0]["matchFields"][0]["values"] = json!([node]);
    j["metadata"]["annotations"]["flush-conntrack/node"] = json!(node);
    j["metadata"]["labels"]["flush-conntrack/node"] = json!(node);
    j["spec"]["template"]["metadata"]["labels"]["flush-conntrack/node"] = json!(node);
}

fn remove_env(j: &mut Value, name: &str) {
    container(j)["env"].as_array_mut().expect("env").retain(|e| e["name"] != name);
}

const DESTINATION: &str = "only local or addresses the template declares";

/// What issue 20 found admitted: flushes of any destination, and Jobs whose
/// node label or run annotation lie about what they are.
fn destination_and_identity_attacks() -> Vec<Attack> {
    vec![
        ("an empty TARGET_IP (any destination)", Box::new(|j| set_env(j, "TARGET_IP", "")), DESTINATION),
        ("no TARGET_IP", Box::new(|j| remove_env(j, "TARGET_IP")), DESTINATION),
        ("TARGET_IP of empty items", Box::new(|j| set_env(j, "TARGET_IP", " , ")), DESTINATION),
        ("local and a Service IP", Box::new(|j| set_env(j, "TARGET_IP", "local,10.96.0.10")), DESTINATION),
        ("a remote collector", Box::new(|j| set_env(j, "TARGET_IP", "198.51.100.77")), DESTINATION),
        ("a remote IPv6 collector", Box::new(|j| set_env(j, "TARGET_IP", "2001:db8::77")), DESTINATION),
        ("the unspecified IPv6 address", Box::new(|j| set_env(j, "TARGET_IP", "::")), DESTINATION),
        (
            "local spelled with an address",
            Box::new(|j| set_env(j, "TARGET_IP", "local 10.0.0.1")),
            DESTINATION,
        ),
        (
            "a node label naming another node",
            Box::new(|j| j["metadata"]["labels"]["flush-conntrack/node"] = json!("node-c")),
            "flush-conntrack/node label names the node its affinity pins it to",
        ),
        (
            "a pod node label naming another node",
            Box::new(|j| {
                j["spec"]["template"]["metadata"]["labels"]["flush-conntrack/node"] = json!("node-c")
            }),
            "same flush-conntrack/node label as the Job",
        ),
        (
            "another pod's run",
            Box::new(|j| j["metadata"]["annotations"]["flush-conntrack/run"] = json!("uid-of-another-pod")),
            "names its own pod in flush-conntrack/run",
        ),
        (
            "no run",
            Box::new(|j| {
                j["metadata"]["annotations"].as_object_mut().unwrap().remove("flush-conntrack/run");
            }),
            "names its own pod in flush-conntrack/run",
        ),
    ]
}

/// What the issue found admitted, and what was already refused: each with
/// the words of the policy's message that must refuse it.
fn attacks() -> Vec<Attack> {
    let mut attacks = earlier_attacks();
    attacks.extend(destination_and_identity_attacks());
    attacks
}

fn earlier_attacks() -> Vec<Attack> {
    vec![
        (
            "every port",
            Box::new(|j| set_env(j, "TARGET_PORT", "1-65535")),
            "only ports the template declares",
        ),
        ("no port", Box::new(|j| set_env(j, "TARGET_PORT", "")), "only ports the template declares"),
        ("another port", Box::new(|j| set_env(j, "TARGET_PORT", "53")), "only ports the template declares"),
        (
            "every protocol",
            Box::new(|j| set_env(j, "TARGET_PROTOCOL", "udp,tcp,sctp")),
            "only the protocols the template declares",
        ),
        ("another node by affinity", Box::new(|j| pin(j, "node-a")), "a trigger may flush only its own node"),
        (
            "a tainted node by nodeName",
            Box::new(|j| {
                pod(j)["nodeName"] = json!("control-plane");
                pod(j).as_object_mut().unwrap().remove("affinity");
            }),
            "pinned to one node",
        ),
        ("nodeName beside the affinity", Box::new(|j| pod(j)["nodeName"] = json!("node-b")), "pod nodeName"),
        (
            "a second affinity term",
            Box::new(|j| {
                let terms = &mut pod(j)["affinity"]["nodeAffinity"]
                    ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
                let extra = terms[0].clone();
                terms.as_array_mut().unwrap().push(extra);
            }),
            "pinned to one node",
        ),
        (
            "pod seccomp unconfined",
            Box::new(|j| pod(j)["securityContext"] = json!({"seccompProfile": {"type": "Unconfined"}})),
            "pod securityContext",
        ),
        (
            "pod AppArmor and SELinux unconfined",
            Box::new(|j| {
                pod(j)["securityContext"] = json!({"appArmorProfile": {"type": "Unconfined"},
                    "seLinuxOptions": {"type": "spc_t"}, "seccompProfile": {"type": "RuntimeDefault"}})
            }),
            "pod securityContext",
        ),
        ("parallelism", Box::new(|j| j["spec"]["parallelism"] = json!(50)), "spec.parallelism"),
        ("completions", Box::new(|j| j["spec"]["completions"] = json!(1_000_000)), "spec.completions"),
        (
            "no deadline",
            Box::new(|j| {
                j["spec"].as_object_mut().unwrap().remove("activeDeadlineSeconds");
            }),
            "spec.activeDeadlineSeconds",
        ),
        (
            "no TTL",
            Box::new(|j| {
                j["spec"].as_object_mut().unwrap().remove("ttlSecondsAfterFinished");
            }),
            "spec.ttlSecondsAfterFinished",
        ),
        ("more retries", Box::new(|j| j["spec"]["backoffLimit"] = json!(10_000)), "spec.backoffLimit"),
        (
            "no pod failure policy",
            Box::new(|j| {
                j["spec"].as_object_mut().unwrap().remove("podFailurePolicy");
            }),
            "spec.podFailurePolicy",
        ),
        ("suspended", Box::new(|j| j["spec"]["suspend"] = json!(true)), "spec.suspend"),
        (
            "64 CPU",
            Box::new(|j| {
                container(j)["resources"] = json!({"requests": {"cpu": "64", "memory": "256Gi"},
                                                    "limits": {"cpu": "64", "memory": "256Gi"}})
            }),
            "container resources",
        ),
        (
            "a preempting priority",
            Box::new(|j| pod(j)["priorityClassName"] = json!("system-node-critical")),
            "pod priorityClassName",
        ),
        (
            "squatting the agent's hostPort",
            Box::new(|j| {
                container(j)["ports"] = json!([{"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"}])
            }),
            "container ports",
        ),
        (
            "envFrom a secret",
            Box::new(|j| container(j)["envFrom"] = json!([{"secretRef": {"name": "db"}}])),
            "container envFrom",
        ),
        (
            "MODE twice",
            Box::new(|j| {
                container(j)["env"].as_array_mut().unwrap().push(json!({"name": "MODE", "value": "spawn"}))
            }),
            "each variable once",
        ),
        (
            "a probe that calls any address from the node",
            Box::new(|j| {
                container(j)["livenessProbe"] =
                    json!({"httpGet": {"host": "169.254.169.254", "path": "/latest/meta-data", "port": 80}})
            }),
            "container livenessProbe",
        ),
        (
            "a lifecycle hook",
            Box::new(|j| {
                container(j)["lifecycle"] =
                    json!({"preStop": {"httpGet": {"host": "10.0.0.1", "path": "/", "port": 80}}})
            }),
            "container lifecycle",
        ),
        (
            "a runtime class",
            Box::new(|j| pod(j)["runtimeClassName"] = json!("runc-debug")),
            "pod runtimeClassName",
        ),
        (
            "a finalizer",
            Box::new(|j| j["metadata"]["finalizers"] = json!(["example.com/never"])),
            "carries no finalizers",
        ),
        (
            "the agents' labels",
            Box::new(|j| {
                j["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] = json!("statsd")
            }),
            "pod carries the template's labels",
        ),
        (
            "an extra Job label",
            Box::new(|j| j["metadata"]["labels"]["app.kubernetes.io/name"] = json!("statsd")),
            "carries the template's labels",
        ),
        ("another image", Box::new(|j| container(j)["image"] = json!("busybox:1.36")), "container image"),
        (
            "a command",
            Box::new(|j| container(j)["command"] = json!(["/bin/sh", "-c", "id"])),
            "container command",
        ),
        ("LD_PRELOAD", Box::new(|j| set_env(j, "LD_PRELOAD", "/x.so")), "only the flush variables"),
        ("KERNEL_FLUSH", Box::new(|j| set_env(j, "KERNEL_FLUSH", "false")), "only the flush variables"),
        ("another MODE", Box::new(|j| set_env(j, "MODE", "sweep")), "runs MODE=flush"),
        (
            "a variable from a secret",
            Box::new(|j| {
                container(j)["env"].as_array_mut().unwrap().push(
                    json!({"name": "TARGET_IP", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}),
                )
            }),
            "as a plain value",
        ),
        (
            "a hostPath volume",
            Box::new(|j| pod(j)["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}])),
            "pod volumes",
        ),
        ("host PID", Box::new(|j| pod(j)["hostPID"] = json!(true)), "pod hostPID"),
        ("host IPC", Box::new(|j| pod(j)["hostIPC"] = json!(true)), "pod hostIPC"),
        (
            "privileged",
            Box::new(|j| {
                let sc = &mut container(j)["securityContext"];
                sc["privileged"] = json!(true);
                sc["allowPrivilegeEscalation"] = json!(true);
            }),
            "container securityContext",
        ),
        (
            "SYS_ADMIN",
            Box::new(|j| {
                container(j)["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN", "SYS_ADMIN"])
            }),
            "container securityContext",
        ),
        (
            "a second container",
            Box::new(|j| {
                let mut extra = container(j).clone();
                extra["name"] = json!("second");
                pod(j)["containers"].as_array_mut().unwrap().push(extra);
            }),
            "exactly one container",
        ),
        (
            "an init container",
            Box::new(|j| {
                let mut extra = container(j).clone();
                extra["name"] = json!("init");
                pod(j)["initContainers"] = json!([extra]);
            }),
            "pod initContainers",
        ),
        (
            "another service account",
            Box::new(|j| pod(j)["serviceAccountName"] = json!("flush-conntrack-sweeper")),
            "pod serviceAccount",
        ),
        (
            "the token mounted",
            Box::new(|j| pod(j)["automountServiceAccountToken"] = json!(true)),
            "pod automountServiceAccountToken",
        ),
        (
            "no owner",
            Box::new(|j| {
                j["metadata"].as_object_mut().unwrap().remove("ownerReferences");
            }),
            "owned, not controlled",
        ),
        (
            "a toleration of its own",
            Box::new(|j| {
                pod(j)["tolerations"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"key": "x", "operator": "Equal", "value": "y", "effect": "NoSchedule"}))
            }),
            "adds only one that tolerates every taint",
        ),
    ]
}

fn denied_with(out: &Output, what: &str, message: &str) {
    let said = text(out);
    assert!(!out.status.success(), "{what}: admitted");
    assert!(
        said.contains("ValidatingAdmissionPolicy 'flush-conntrack-jobs'") && said.contains(message),
        "{what}: refused, but not with \"{message}\": {said}"
    );
}

#[test]
fn a_stolen_token_flushes_only_its_own_nodes_declared_ports() {
    if !require::tools(
        "a_stolen_token_flushes_only_its_own_nodes_declared_ports",
        &["go", "kubectl", "openssl"],
    ) {
        return;
    }
    let cp = ControlPlane::start(NODES).unwrap_or_else(|e| panic!("control plane: {e}"));
    let overlay = root().join("kustomize/overlays/statsd");
    ok(cp.kubectl(&["apply", "--server-side", "-k", &overlay.to_string_lossy()]), "overlay");
    // The policy is read by the API server asynchronously; wait for it to bite.
    let unbound = cp.service_account_kubeconfig("monitoring", "statsd").expect("token");
    let trigger = cp.pod_bound_kubeconfig("monitoring", "statsd", "statsd-b", "node-b").expect("bound token");
    let uid = pod_uid(&cp, "monitoring", "statsd-b");
    let genuine = printed_job(&trigger, &trigger_env("node-b", &uid));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let probe = create(&cp, &unbound, &genuine, "probe-unbound");
        if !probe.status.success() && text(&probe).contains("flush-conntrack-jobs") {
            denied_with(&probe, "a token bound to no pod", "this token is bound to no node");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the policy never applied: {}", text(&probe));
        if probe.status.success() {
            ok(cp.kubectl(&["-n", NS, "delete", "job", "probe-unbound"]), "delete probe");
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    ok(create(&cp, &trigger, &genuine, "genuine-trigger"), "the genuine trigger Job");
    let elsewhere = printed_job(&trigger, &trigger_env("node-a", &uid));
    denied_with(
        &create(&cp, &trigger, &elsewhere, "node-a-from-b"),
        "node A from a token of node B",
        "bound to node node-b, the Job names node node-a",
    );

    let mut refused = 0;
    for (what, attack, message) in attacks() {
        let mut job = genuine.clone();
        attack(&mut job);
        let name = format!("attack-{refused}");
        let out = create(&cp, &trigger, &job, &name);
        denied_with(&out, what, message);
        refused += 1;
    }
    eprintln!("{refused} attacks refused with the trigger's token");

    // The sweeper may flush any node, within the declared ports.
    let sweeper = cp.service_account_kubeconfig(NS, "flush-conntrack-sweeper").expect("sweeper token");
    let mut swept = genuine.clone();
    pin(&mut swept, "node-a");
    ok(create(&cp, &sweeper, &swept, "genuine-sweep"), "the sweeper's Job for any node");
    let mut wide = swept.clone();
    set_env(&mut wide, "TARGET_PORT", "1-65535");
    denied_with(
        &create(&cp, &sweeper, &wide, "sweep-wide"),
        "the sweeper, every port",
        "only ports the template declares",
    );
    let mut sweeper_refused = 0;
    for (what, attack, message) in destination_and_identity_attacks() {
        // The sweeper's run is not bound to a pod: only its presence is checked.
        let message = if what == "another pod's run" { continue } else { message };
        let message = if what == "no run" { "names the run that made it" } else { message };
        let mut job = swept.clone();
        attack(&mut job);
        denied_with(&create(&cp, &sweeper, &job, &format!("sweep-attack-{sweeper_refused}")), what, message);
        sweeper_refused += 1;
    }
    eprintln!("{sweeper_refused} attacks refused with the sweeper's token");
    refused += sweeper_refused;
    // The sweeper reads pods only where the agents are.
    let listed = cp.kubectl_as(&sweeper, &["-n", "kube-system", "get", "pods"]);
    assert!(!listed.status.success() && text(&listed).contains("forbidden"), "{}", text(&listed));
    ok(cp.kubectl_as(&sweeper, &["-n", "monitoring", "get", "pods"]), "the agents' pods");

    // kube-system is not exempt: only the CronJob controller is, by name.
    ok(cp.kubectl(&["-n", "kube-system", "create", "serviceaccount", "helper"]), "account");
    ok(
        cp.kubectl(&[
            "-n",
            NS,
            "create",
            "rolebinding",
            "helper",
            "--role=flush-conntrack-spawner",
            "--serviceaccount=kube-system:helper",
        ]),
        "binding",
    );
    let helper = cp.service_account_kubeconfig("kube-system", "helper").expect("helper token");
    let mut root_job = genuine.clone();
    pod(&mut root_job)["hostPID"] = json!(true);
    pod(&mut root_job)["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}]);
    container(&mut root_job)["securityContext"] = json!({"privileged": true});
    denied_with(&create(&cp, &helper, &root_job, "kube-system-root"), "a kube-system account", "");

    // The sweep CronJob's own Job, as the CronJob controller creates it
    // (impersonated: admission sees the controller's name), is admitted;
    // the same Job from any other kube-system account is not.
    let sweep = ok(cp.kubectl(&["-n", NS, "get", "cronjob", "flush-conntrack-sweep", "-o", "json"]), "sweep");
    let sweep: Value = serde_json::from_slice(&sweep.stdout).unwrap();
    let sweep_job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "sweep-by-controller", "namespace": NS},
        "spec": sweep["spec"]["jobTemplate"]["spec"]});
    let file = cp.dir.join("sweep-job.json");
    std::fs::write(&file, sweep_job.to_string()).unwrap();
    let as_user = |user: &str| cp.kubectl(&["--as", user, "create", "-f", &file.to_string_lossy()]);
    denied_with(&as_user("system:serviceaccount:kube-system:helper"), "another kube-system account", "");
    ok(as_user("system:serviceaccount:kube-system:cronjob-controller"), "the CronJob controller's sweep Job");

    // The namespace holds no more than its quota, whatever is admitted.
    let quota = ok(cp.kubectl(&["-n", NS, "get", "resourcequota", "flush-conntrack", "-o", "json"]), "quota");
    let quota: Value = serde_json::from_slice(&quota.stdout).unwrap();
    assert_eq!(quota["spec"]["hard"]["pods"], "64");
    let class = ok(cp.kubectl(&["get", "priorityclass", "flush-conntrack", "-o", "json"]), "class");
    let class: Value = serde_json::from_slice(&class.stdout).unwrap();
    assert_eq!(class["preemptionPolicy"], "Never");

    refused += declared_addresses_bound_target_ip(&cp, &trigger, &genuine);
    a_squatted_name_does_not_stop_the_trigger(&cp, &trigger, &uid);
    a_flush_by_hand_flushes_every_time(&cp);
    eprintln!("{refused} attacks refused in all");

    every_field_of_the_release_is_named_by_the_policy(&cp);
}

/// With addresses declared on the template, those (as spawn writes them) are
/// admitted beside `local`, and no other spelling or address is.
fn declared_addresses_bound_target_ip(cp: &ControlPlane, trigger: &Path, genuine: &Value) -> usize {
    ok(
        cp.kubectl(&[
            "-n",
            NS,
            "annotate",
            "cronjob",
            "flush-conntrack-node",
            "flush-conntrack/addresses=192.0.2.12, 2001:db8::12",
        ]),
        "declare addresses",
    );
    let admitted = ["192.0.2.12", "local,2001:db8::12", "LOCAL", " 2001:DB8::12 ,local"];
    let refused = ["2001:db8:0::12", "::ffff:192.0.2.12", "192.0.2.12,10.96.0.10", "192.0.2.13"];
    // The policy reads its parameter from a cache: wait for the annotation.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut first = genuine.clone();
    set_env(&mut first, "TARGET_IP", admitted[0]);
    while !create(cp, trigger, &first, "declared-0").status.success() {
        assert!(std::time::Instant::now() < deadline, "a declared address never admitted");
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for (i, target) in admitted.iter().enumerate().skip(1) {
        let mut job = genuine.clone();
        set_env(&mut job, "TARGET_IP", target);
        ok(create(cp, trigger, &job, &format!("declared-{i}")), target);
    }
    for (i, target) in refused.iter().enumerate() {
        let mut job = genuine.clone();
        set_env(&mut job, "TARGET_IP", target);
        denied_with(&create(cp, trigger, &job, &format!("undeclared-{i}")), target, DESTINATION);
    }
    ok(
        cp.kubectl(&["-n", NS, "annotate", "cronjob", "flush-conntrack-node", "flush-conntrack/addresses-"]),
        "undeclare",
    );
    refused.len()
}

/// The attacker holds the trigger's own token and knows everything the
/// trigger's Job name is made of (node, target, pod UID): it creates a Job
/// under that name that deletes nothing (`DRY_RUN=true`) and keeps a
/// guessed address. The policy admits it (it is this node's, this pod's);
/// the trigger must still flush, under another name, and say so.
fn a_squatted_name_does_not_stop_the_trigger(cp: &ControlPlane, trigger: &Path, uid: &str) {
    use flush_conntrack::cluster::job_template::FlushOrder;
    let template = ok(cp.kubectl(&["-n", NS, "get", "cronjob", "flush-conntrack-node", "-o", "json"]), "t");
    let template: k8s_openapi::api::batch::v1::CronJob = serde_json::from_slice(&template.stdout).unwrap();
    let env = [
        ("MODE", "flush"),
        ("TARGET_IP", "local"),
        ("TARGET_PORT", "8125"),
        ("TARGET_PROTOCOL", "udp"),
        ("KEEP_DNAT_TO", "10.244.6.9"),
        ("DRY_RUN", "false"),
    ];
    let order = FlushOrder {
        node: "node-b",
        env: env.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
        run: uid,
    };
    let mut squatter =
        serde_json::to_value(flush_conntrack::cluster::job::build(&template, &order).unwrap()).unwrap();
    let name = squatter["metadata"]["name"].as_str().unwrap().to_owned();
    set_env(&mut squatter, "DRY_RUN", "true");
    set_env(&mut squatter, "KEEP_DNAT_TO", "10.244.6.9,10.244.0.1");
    ok(cp.create_as(trigger, &squatter), "the squatter is admitted: it is this pod's own node and run");

    let mut env = trigger_env("node-b", uid);
    env.extend([("POD_NAME", "statsd-b"), ("POD_NAMESPACE", "monitoring"), ("WAIT_TIMEOUT", "90")]);
    let out = Command::new(BIN)
        .env_clear()
        .env("KUBECONFIG", trigger)
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(said.contains(&format!("a Job named {name} exists and is not this flush")), "{said}");
    assert!(said.contains("flush Job succeeded") && said.contains("deleted=1"), "{said}");

    let jobs =
        ok(cp.kubectl(&["-n", NS, "get", "jobs", "-l", "flush-conntrack/node=node-b", "-o", "json"]), "jobs");
    let jobs: Value = serde_json::from_slice(&jobs.stdout).unwrap();
    let ours: Vec<&Value> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(&format!("{name}-")))
                && j["spec"]["template"]["spec"]["containers"][0]["env"]
                    .as_array()
                    .is_some_and(|e| e.contains(&json!({"name": "DRY_RUN", "value": "false"})))
        })
        .collect();
    assert_eq!(ours.len(), 1, "the genuine flush, under a generated name: {said}");
    let ours_name = ours[0]["metadata"]["name"].as_str().unwrap();
    assert_eq!(cp.node_of(NS, ours_name).as_deref(), Some("node-b"), "its pod ran on the node");
    assert!(
        ours[0]["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Complete")),
        "{}",
        ours[0]
    );

    let events = ok(cp.kubectl(&["-n", "monitoring", "get", "events.events.k8s.io", "-o", "json"]), "events");
    let events: Value = serde_json::from_slice(&events.stdout).unwrap();
    let taken: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "FlushJobNameTaken" && e["regarding"]["name"] == "statsd-b")
        .collect();
    assert_eq!(taken.len(), 1, "{said}");
    assert_eq!(taken[0]["type"], "Warning");
    let note = taken[0]["note"].as_str().unwrap();
    assert!(note.contains(&name) && note.contains(ours_name), "{note}");
    eprintln!("squatted {name}: the trigger flushed as {ours_name} and said so");
}

/// A person's flush by hand (no POD_UID) flushes each time it runs: the
/// second run neither adopts the first's finished Job nor collides with it.
fn a_flush_by_hand_flushes_every_time(cp: &ControlPlane) {
    let env = [
        ("MODE", "spawn"),
        ("TARGET_NAMESPACE", NS),
        ("NODE_NAME", "node-a"),
        ("TARGET_IP", "local"),
        ("TARGET_PORT", "8125"),
        ("WAIT_TIMEOUT", "90"),
    ];
    for _ in 0..2 {
        let out = Command::new(BIN)
            .env_clear()
            .env("KUBECONFIG", &cp.admin)
            .envs(env.iter().copied())
            .output()
            .expect("binary runs");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(
            text(&out).contains("created the flush Job") && text(&out).contains("deleted=1"),
            "{}",
            text(&out)
        );
    }
    let jobs =
        ok(cp.kubectl(&["-n", NS, "get", "jobs", "-l", "flush-conntrack/node=node-a", "-o", "json"]), "jobs");
    let jobs: Value = serde_json::from_slice(&jobs.stdout).unwrap();
    let by_hand = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["metadata"]["annotations"]["flush-conntrack/run"]
                .as_str()
                .is_some_and(|r| r.starts_with("manual-"))
        })
        .count();
    assert_eq!(by_hand, 2, "two runs by hand, two flushes");
}

/// The fields of JobSpec, PodSpec and Container in the release's own
/// OpenAPI, each of which the policy must compare (or, for the two the API
/// server makes, say why not).
fn every_field_of_the_release_is_named_by_the_policy(cp: &ControlPlane) {
    let out = ok(cp.kubectl(&["get", "--raw", "/openapi/v3/apis/batch/v1"]), "openapi");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("OpenAPI JSON");
    let policy = std::fs::read_to_string(root().join(POLICY)).expect("policy");
    let named = |prefix: &str| -> BTreeSet<String> {
        let needle = format!("variables.{prefix}.");
        policy
            .match_indices(&needle)
            .map(|(i, _)| {
                policy[i + needle.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect::<String>()
            })
            .collect()
    };
    // The selector is generated (manualSelector is refused) and the template
    // is the pod, compared field by field below.
    let made_by_the_server = ["selector", "template"];
    for (schema, prefix, exempt) in [
        ("io.k8s.api.batch.v1.JobSpec", "job", &made_by_the_server[..]),
        ("io.k8s.api.core.v1.PodSpec", "pod", &[][..]),
        ("io.k8s.api.core.v1.Container", "container", &[][..]),
    ] {
        let properties = doc["components"]["schemas"][schema]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{schema} is not in the release's OpenAPI"));
        let named = named(prefix);
        let missing: Vec<&String> =
            properties.keys().filter(|f| !named.contains(*f) && !exempt.contains(&f.as_str())).collect();
        assert!(missing.is_empty(), "{schema} has fields {POLICY} does not compare: {missing:?}");
        eprintln!("{schema}: all {} fields named by the policy", properties.len());
    }
}
