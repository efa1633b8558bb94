//! The ValidatingAdmissionPolicy's CEL, evaluated with a CEL library: the
//! Job spawn really builds from the real template passes, and each way of
//! turning a flush Job into something else is refused with its message.

use std::path::Path;

use cel::{Context, Program, Value as Cel};
use flush_conntrack::cluster::job_template::{flush_job, FlushOrder};
use k8s_openapi::api::batch::v1::CronJob;
use serde_json::{json, Value};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join(path)).expect("file");
    serde_saphyr::from_multiple::<Value>(&text).expect("YAML")
}

struct Policy {
    conditions: Vec<Program>,
    variables: Vec<(String, Program)>,
    validations: Vec<(String, Program)>,
}

fn compile(expression: &str) -> Program {
    Program::compile(expression).unwrap_or_else(|e| panic!("CEL does not compile: {expression}: {e:?}"))
}

fn policy() -> Policy {
    let docs = yaml_docs("kustomize/components/admission-policy/policy.yaml");
    let spec = &docs.iter().find(|d| d["kind"] == "ValidatingAdmissionPolicy").expect("policy")["spec"];
    let list = |key: &str| spec[key].as_array().cloned().unwrap_or_default();
    Policy {
        conditions: list("matchConditions")
            .iter()
            .map(|c| compile(c["expression"].as_str().unwrap()))
            .collect(),
        variables: list("variables")
            .iter()
            .map(|v| (v["name"].as_str().unwrap().to_owned(), compile(v["expression"].as_str().unwrap())))
            .collect(),
        validations: list("validations")
            .iter()
            .map(|v| (v["message"].as_str().unwrap().to_owned(), compile(v["expression"].as_str().unwrap())))
            .collect(),
    }
}

fn template() -> Value {
    yaml_docs("jobs/flush-conntrack-node.yaml").remove(0)
}

/// The Job spawn creates for a trigger on node-a: the real builder's output.
fn genuine() -> Value {
    let cronjob: CronJob = serde_json::from_value(template()).unwrap();
    let order = FlushOrder {
        node: "node-a",
        env: vec![
            ("MODE", "flush".to_owned()),
            ("TARGET_IP", "192.0.2.1".to_owned()),
            ("TARGET_PORT", "8125".to_owned()),
            ("TARGET_PROTOCOL", "udp".to_owned()),
            ("KEEP_DNAT_TO", "10.244.1.6".to_owned()),
            ("DRY_RUN", "false".to_owned()),
        ],
        run: "uid",
    };
    serde_json::to_value(flush_job(&cronjob, "flush-node-a-0123456789", &order).unwrap()).unwrap()
}

fn truthy(program: &Program, context: &Context) -> bool {
    match program.execute(context) {
        Ok(Cel::Bool(b)) => b,
        other => panic!("not a boolean: {other:?}"),
    }
}

/// The messages of the validations the Job fails.
fn refusals(job: &Value) -> Vec<String> {
    let p = policy();
    let mut context = Context::default();
    context.add_variable("object", job.clone()).unwrap();
    context.add_variable("params", template()).unwrap();
    let mut variables = serde_json::Map::new();
    for (name, program) in &p.variables {
        let value = program.execute(&context).expect("variable evaluates");
        variables.insert(name.clone(), value.json().expect("variable as JSON"));
        context.add_variable("variables", Value::Object(variables.clone())).unwrap();
    }
    p.validations.iter().filter(|(_, program)| !truthy(program, &context)).map(|(m, _)| m.clone()).collect()
}

fn applies_to(username: &str) -> bool {
    let p = policy();
    let mut context = Context::default();
    context.add_variable("request", json!({"userInfo": {"username": username}})).unwrap();
    p.conditions.iter().all(|c| truthy(c, &context))
}

fn container(job: &mut Value) -> &mut Value {
    &mut job["spec"]["template"]["spec"]["containers"][0]
}

#[test]
fn the_genuine_flush_job_is_admitted() {
    assert_eq!(refusals(&genuine()), Vec::<String>::new());
}

/// A change to a genuine Job that must make the policy refuse it.
type Mutation = Box<dyn Fn(&mut Value)>;

#[test]
fn each_way_out_of_the_template_is_refused() {
    let cases: Vec<(&str, Mutation, &str)> = vec![
        (
            "another image",
            Box::new(|j| container(j)["image"] = json!("attacker/shell:latest")),
            "the template's image only",
        ),
        (
            "an extra env variable",
            Box::new(|j| {
                container(j)["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "LD_PRELOAD", "value": "/x.so"}))
            }),
            "only flush-conntrack's own variables",
        ),
        (
            "a secret through valueFrom",
            Box::new(|j| {
                container(j)["env"].as_array_mut().unwrap().push(
                    json!({"name": "RUST_LOG", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}),
                )
            }),
            "as plain values",
        ),
        (
            "a hostPath volume",
            Box::new(|j| {
                j["spec"]["template"]["spec"]["volumes"] =
                    json!([{"name": "root", "hostPath": {"path": "/"}}]);
                container(j)["volumeMounts"] = json!([{"name": "root", "mountPath": "/host"}]);
            }),
            "no volumes",
        ),
        (
            "privileged: true",
            Box::new(|j| container(j)["securityContext"]["privileged"] = json!(true)),
            "never privileged",
        ),
        (
            "more capabilities",
            Box::new(|j| {
                container(j)["securityContext"]["capabilities"]["add"] = json!(["NET_ADMIN", "SYS_ADMIN"])
            }),
            "keeps the template's security context",
        ),
        (
            "a second container",
            Box::new(|j| {
                let extra = json!({"name": "sidecar", "image": "busybox"});
                j["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap().push(extra)
            }),
            "exactly one container",
        ),
        (
            "an init container",
            Box::new(|j| {
                j["spec"]["template"]["spec"]["initContainers"] = json!([{"name": "i", "image": "busybox"}])
            }),
            "no init containers",
        ),
        (
            "another command",
            Box::new(|j| container(j)["command"] = json!(["/bin/sh", "-c", "id"])),
            "own entrypoint",
        ),
        (
            "another mode",
            Box::new(|j| {
                for e in container(j)["env"].as_array_mut().unwrap() {
                    if e["name"] == "MODE" {
                        e["value"] = json!("sweep");
                    }
                }
            }),
            "runs MODE=flush",
        ),
        (
            "the host PID namespace",
            Box::new(|j| j["spec"]["template"]["spec"]["hostPID"] = json!(true)),
            "no other host namespace",
        ),
        (
            "a token-bearing account",
            Box::new(|j| j["spec"]["template"]["spec"]["serviceAccountName"] = json!("default")),
            "the template's service account",
        ),
    ];
    for (what, mutate, message) in cases {
        let mut job = genuine();
        mutate(&mut job);
        let refused = refusals(&job);
        assert!(
            refused.iter().any(|m| m.contains(message)),
            "{what}: expected a refusal containing {message:?}, got {refused:?}"
        );
    }
}

#[test]
fn it_binds_service_accounts_but_not_people_or_the_cronjob_controller() {
    assert!(applies_to("system:serviceaccount:monitoring:statsd"), "the trigger");
    assert!(applies_to("system:serviceaccount:flush-conntrack:flush-conntrack-sweeper"), "the sweeper");
    assert!(!applies_to("system:serviceaccount:kube-system:cronjob-controller"), "runs the sweep CronJob");
    assert!(!applies_to("kubernetes-admin"), "people keep their own RBAC");
}
