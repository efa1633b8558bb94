//! What the stolen-token tests and the quota-flood benchmark share: the
//! genuine trigger's Job as the binary prints it, and ways to change it.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};
use testbed::command::{ok, text};
use testbed::controlplane::ControlPlane;

pub const BIN: &str = env!("CARGO_BIN_EXE_flush-conntrack");
pub const NS: &str = "flush-conntrack";
pub const NODES: &[(&str, &str)] = &[("node-a", "192.0.2.11"), ("node-b", "192.0.2.12")];

/// The Job the binary would create with this token, printed by a dry run.
pub fn printed_job(kubeconfig: &Path, env: &[(&str, &str)]) -> Value {
    let out = Command::new(BIN)
        .env_clear()
        .env("KUBECONFIG", kubeconfig)
        .envs(env.iter().copied())
        .env("DRY_RUN", "true")
        .output()
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    serde_saphyr::from_str(&String::from_utf8_lossy(&out.stdout)).expect("the printed Job")
}

pub fn trigger_env<'a>(node: &'a str, uid: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MODE", "spawn"),
        ("TARGET_NAMESPACE", NS),
        ("NODE_NAME", node),
        ("POD_UID", uid),
        ("TARGET_IP", "local"),
        ("TARGET_PORT", "8125"),
        ("KEEP_DNAT_TO", "10.244.6.9"),
    ]
}

pub fn container(j: &mut Value) -> &mut Value {
    &mut j["spec"]["template"]["spec"]["containers"][0]
}

pub fn set_env(j: &mut Value, name: &str, value: &str) {
    let env = container(j)["env"].as_array_mut().expect("env");
    env.retain(|e| e["name"] != name);
    env.push(json!({"name": name, "value": value}));
}

pub fn pod_uid(cp: &ControlPlane, namespace: &str, pod: &str) -> String {
    let out = ok(cp.kubectl(&["-n", namespace, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}"]), "uid");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn create(cp: &ControlPlane, kubeconfig: &Path, job: &Value, name: &str) -> Output {
    let mut job = job.clone();
    job["metadata"]["name"] = json!(name);
    cp.create_as(kubeconfig, &job)
}
