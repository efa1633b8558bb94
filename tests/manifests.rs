//! The manifests as a cluster receives them: every kustomization rendered
//! with `kubectl kustomize`, every object validated against the Kubernetes
//! OpenAPI schemas, the Dockerfile linted, and the security properties that
//! make installing this safe read from the rendered YAML, so that a later
//! edit adding a wildcard verb or `privileged: true` fails here.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use testbed::command::ok;
use testbed::{require, validate};

const KUSTOMIZATIONS: &[&str] = &["jobs", "kustomize/base", "kustomize/overlays/statsd"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn render(kustomization: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(root().join(kustomization))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize {kustomization}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    documents(&String::from_utf8_lossy(&out.stdout))
}

fn documents(text: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text).expect("YAML").into_iter().filter(|d| !d.is_null()).collect()
}

/// Everything a cluster could receive from this repository.
fn everything() -> Vec<Value> {
    KUSTOMIZATIONS.iter().flat_map(|k| render(k)).collect()
}

fn name(doc: &Value) -> String {
    format!("{}/{}", doc["kind"].as_str().unwrap_or("?"), doc["metadata"]["name"].as_str().unwrap_or("?"))
}

/// The pod specs inside a workload, wherever its kind keeps them.
fn pod_spec(doc: &Value) -> Option<&Value> {
    match doc["kind"].as_str()? {
        "CronJob" => Some(&doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]),
        "Job" | "DaemonSet" | "Deployment" => Some(&doc["spec"]["template"]["spec"]),
        _ => None,
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind}/{name}"))
}

fn tools_ok(test: &str) -> bool {
    require::tools(test, &["kubectl"])
}

#[test]
fn every_kustomization_renders_and_every_object_validates() {
    if !tools_ok("every_kustomization_renders_and_every_object_validates")
        || !validate::available("every_kustomization_renders_and_every_object_validates")
    {
        return;
    }
    for k in KUSTOMIZATIONS {
        let docs: Vec<String> = render(k).iter().map(Value::to_string).collect();
        assert!(!docs.is_empty(), "{k} renders nothing");
        validate::strictly(&k.replace('/', "-"), &docs).unwrap_or_else(|e| panic!("{k}: {e}"));
    }
    let mut files = 0;
    for file in std::fs::read_dir(root().join("jobs")).unwrap().flatten() {
        let path = file.path();
        if path.file_name().is_some_and(|n| n == "kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        validate::strictly("jobs-file", &[text]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        files += 1;
    }
    assert_eq!(files, 2, "the node template and the sweep, each on its own");
}

/// What the README tells a reader without kustomize to apply: the namespace
/// first, then these with `kubectl -n flush-conntrack apply -f`, one by one.
const WITHOUT_KUSTOMIZE: &[&str] = &[
    "kustomize/base/namespace.yaml",
    "kustomize/base/serviceaccounts.yaml",
    "kustomize/base/rbac.yaml",
    "kustomize/base/limits.yaml",
    "kustomize/base/admission-policy.yaml",
    "jobs/flush-conntrack-node.yaml",
    "jobs/flush-conntrack-sweep.yaml",
];

/// Kinds with no namespace: `kubectl -n` leaves them alone, and the API
/// server drops the one kustomize writes on them.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "PriorityClass",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
];

/// `kind/name` and the object as the API server would store it from `doc`
/// applied with `-n flush-conntrack`, the base's own label taken off.
fn as_applied(mut doc: Value) -> (String, Value) {
    let cluster_scoped = CLUSTER_SCOPED.contains(&doc["kind"].as_str().unwrap_or_default());
    let meta = doc["metadata"].as_object_mut().expect("metadata");
    if cluster_scoped {
        meta.remove("namespace");
    } else {
        let ns = meta.entry("namespace").or_insert(json!("flush-conntrack"));
        assert_eq!(ns, "flush-conntrack", "a file names another namespace, which `kubectl -n` refuses");
    }
    if let Some(labels) = meta.get_mut("labels").and_then(Value::as_object_mut) {
        labels.remove("app.kubernetes.io/part-of");
        if labels.is_empty() {
            meta.remove("labels");
        }
    }
    (name(&doc), doc)
}

#[test]
fn without_kustomize_the_files_make_the_base_but_for_its_label() {
    if !tools_ok("without_kustomize_the_files_make_the_base_but_for_its_label") {
        return;
    }
    let mut by_hand: Vec<(String, Value)> = WITHOUT_KUSTOMIZE
        .iter()
        .flat_map(|f| {
            documents(&std::fs::read_to_string(root().join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
        })
        .map(as_applied)
        .collect();
    let mut base: Vec<(String, Value)> = render("kustomize/base").into_iter().map(as_applied).collect();
    by_hand.sort_by(|a, b| a.0.cmp(&b.0));
    base.sort_by(|a, b| a.0.cmp(&b.0));
    let names = |v: &[(String, Value)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&by_hand), names(&base), "the files and the base make different objects");
    for ((n, hand), (_, kustomized)) in by_hand.iter().zip(&base) {
        assert_eq!(hand, kustomized, "{n}: the file and the base differ");
    }
    let namespaced: Vec<String> = by_hand
        .iter()
        .filter(|(_, d)| d["metadata"]["namespace"].is_string())
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(by_hand.len(), 15, "the README counts the base's objects");
    assert_eq!(
        namespaced.len(),
        10,
        "the namespaced objects, which need `-n flush-conntrack`: {namespaced:?}"
    );
}

#[test]
fn the_dockerfile_passes_hadolint() {
    if !require::tools("the_dockerfile_passes_hadolint", &["hadolint"]) {
        return;
    }
    ok(Command::new("hadolint").arg(root().join("Dockerfile")).output().unwrap(), "hadolint Dockerfile");
}

#[test]
fn the_release_workflow_passes_actionlint() {
    if !require::tools("the_release_workflow_passes_actionlint", &["actionlint"]) {
        return;
    }
    let workflow = root().join(".github/workflows/release.yml");
    ok(Command::new("actionlint").arg(&workflow).output().unwrap(), "actionlint release.yml");
}

/// What the README says the release does, as the workflow says it (it runs
/// only on GitHub; this reads what it would do).
#[test]
fn the_release_builds_both_platforms_signs_and_attaches_sbom_and_provenance() {
    let text = std::fs::read_to_string(root().join(".github/workflows/release.yml")).unwrap();
    let workflow: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    assert_eq!(workflow["on"]["push"]["tags"], serde_json::json!(["v*"]));
    let job = &workflow["jobs"]["image"];
    assert_eq!(job["permissions"]["id-token"], "write", "keyless signing needs the OIDC token");
    let steps = job["steps"].as_array().unwrap();
    let uses = |name: &str| steps.iter().find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with(name)));
    let build = uses("docker/build-push-action@").expect("a build-push step");
    assert_eq!(build["with"]["platforms"], "linux/amd64,linux/arm64");
    assert_eq!(build["with"]["sbom"], true);
    assert_eq!(build["with"]["provenance"], "mode=max");
    assert!(build["with"]["outputs"].as_str().unwrap().contains("rewrite-timestamp=true"));
    assert!(build["env"]["SOURCE_DATE_EPOCH"].is_string());
    assert!(uses("sigstore/cosign-installer@").is_some());
    assert!(
        steps.iter().any(|s| s["run"]
            .as_str()
            .is_some_and(|r| r.contains("cosign sign --yes") && r.contains("@${DIGEST}"))),
        "the pushed digest is signed"
    );
}

#[test]
fn no_wildcard_rbac_and_nothing_privileged_anywhere() {
    if !tools_ok("no_wildcard_rbac_and_nothing_privileged_anywhere") {
        return;
    }
    let all = everything();
    for doc in &all {
        if matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
            for rule in doc["rules"].as_array().expect("rules") {
                for field in ["verbs", "resources", "apiGroups", "resourceNames", "nonResourceURLs"] {
                    for v in rule[field].as_array().into_iter().flatten() {
                        assert_ne!(v, "*", "{} grants a wildcard in {field}", name(doc));
                    }
                }
                let verbs: Vec<&str> =
                    rule["verbs"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
                for risky in
                    ["escalate", "bind", "impersonate", "delete", "deletecollection", "patch", "update"]
                {
                    assert!(!verbs.contains(&risky), "{} grants {risky}", name(doc));
                }
            }
        }
        assert_no_privileged(doc, &name(doc));
    }
    // The flush pod's service account is bound to nothing.
    for doc in all.iter().filter(|d| matches!(d["kind"].as_str(), Some("RoleBinding" | "ClusterRoleBinding")))
    {
        for s in doc["subjects"].as_array().into_iter().flatten() {
            assert_ne!(s["name"], "flush-conntrack-node", "{} binds the flush pod's account", name(doc));
        }
    }
}

fn assert_no_privileged(v: &Value, at: &str) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                assert!(!(k == "privileged" && child == &json!(true)), "{at} sets privileged: true");
                assert!(!(k == "hostPID" && child == &json!(true)), "{at} sets hostPID");
                assert_ne!(k, "hostPath", "{at} mounts a hostPath");
                assert_no_privileged(child, at);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| assert_no_privileged(i, at)),
        _ => {}
    }
}

#[test]
fn the_flush_pod_holds_net_admin_and_nothing_more() {
    if !tools_ok("the_flush_pod_holds_net_admin_and_nothing_more") {
        return;
    }
    let docs = render("kustomize/base");
    let ns = find(&docs, "Namespace", "flush-conntrack");
    assert_eq!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"], "privileged");
    let template = find(&docs, "CronJob", "flush-conntrack-node");
    assert_eq!(template["spec"]["suspend"], true);
    let job = &template["spec"]["jobTemplate"]["spec"];
    for field in ["ttlSecondsAfterFinished", "activeDeadlineSeconds", "backoffLimit"] {
        assert!(job[field].as_u64().is_some(), "jobTemplate.spec.{field}");
    }
    let rule = &job["podFailurePolicy"]["rules"][0];
    assert_eq!(rule["action"], "FailJob");
    assert!(
        rule["onExitCodes"]["values"].as_array().unwrap().contains(&json!(2)),
        "fails at once on the configuration exit code"
    );
    let pod = pod_spec(template).unwrap();
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["serviceAccountName"], "flush-conntrack-node");
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    assert!(pod["volumes"].is_null() && pod["initContainers"].is_null());
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"], json!({"drop": ["ALL"], "add": ["NET_ADMIN"]}));
    for kind in ["requests", "limits"] {
        assert!(c["resources"][kind]["memory"].is_string(), "resources.{kind}.memory");
    }
    let sa = find(&docs, "ServiceAccount", "flush-conntrack-node");
    assert_eq!(sa["automountServiceAccountToken"], false);
}

#[test]
fn spawners_run_as_non_root_without_capabilities() {
    if !tools_ok("spawners_run_as_non_root_without_capabilities") {
        return;
    }
    let docs = render("kustomize/overlays/statsd");
    let sweep = find(&docs, "CronJob", "flush-conntrack-sweep");
    let daemonset = find(&docs, "DaemonSet", "statsd");
    let trigger = &pod_spec(daemonset).unwrap()["containers"][1];
    assert_eq!(trigger["name"], "flush-conntrack");
    let mut checked = 0;
    for (pod, container) in [
        (pod_spec(sweep).unwrap(), &pod_spec(sweep).unwrap()["containers"][0]),
        (pod_spec(daemonset).unwrap(), trigger),
    ] {
        let non_root = pod["securityContext"]["runAsNonRoot"] == true
            || container["securityContext"]["runAsNonRoot"] == true;
        assert!(non_root, "{container}");
        assert_ne!(pod["hostNetwork"], true);
        let sc = &container["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{container}");
        assert_eq!(sc["capabilities"], json!({"drop": ["ALL"]}), "{container}");
        checked += 1;
    }
    assert_eq!(checked, 2);
    // The trigger's account may spawn in the flush namespace, nothing more.
    let binding = find(&docs, "RoleBinding", "flush-conntrack-trigger");
    assert_eq!(binding["metadata"]["namespace"], "flush-conntrack");
    assert_eq!(binding["roleRef"]["name"], "flush-conntrack-spawner");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": "statsd", "namespace": "monitoring"})
    );
    let env = trigger["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "TARGET_IP" && e["value"] == "local"), "every local address");
    for var in ["NODE_NAME", "POD_UID", "KEEP_DNAT_TO"] {
        assert!(
            env.iter().any(|e| e["name"] == var && e["valueFrom"]["fieldRef"].is_object()),
            "{var} from the downward API"
        );
    }
}

/// Renders the base with these components, as a user's kustomization would.
fn base_with(components: &[&str]) -> Vec<Value> {
    // kustomize takes relative paths only.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("components-{}", components.join("-")));
    std::fs::create_dir_all(&dir).unwrap();
    let from = dir.canonicalize().unwrap();
    let relative = |to: &Path| {
        let to = to.canonicalize().unwrap();
        let common = from.components().zip(to.components()).take_while(|(a, b)| a == b).count();
        let up = "../".repeat(from.components().count() - common);
        let down: Vec<String> =
            to.components().skip(common).map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
        format!("{up}{}", down.join("/"))
    };
    let base = relative(&root().join("kustomize/base"));
    let listed: Vec<String> =
        components.iter().map(|c| relative(&root().join("kustomize/components").join(c))).collect();
    let text = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{}]\ncomponents: [{}]\n",
        base,
        listed.join(", ")
    );
    std::fs::write(dir.join("kustomization.yaml"), text).unwrap();
    let out = Command::new("kubectl").arg("kustomize").arg(&dir).output().expect("kubectl runs");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "{components:?}: {}", String::from_utf8_lossy(&out.stderr));
    documents(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn the_base_ships_the_policy_and_grants_no_cluster_wide_read() {
    if !tools_ok("the_base_ships_the_policy_and_grants_no_cluster_wide_read") {
        return;
    }
    let kinds = |docs: &[Value]| docs.iter().map(name).collect::<Vec<_>>();
    let base = render("kustomize/base");
    for wanted in [
        "ValidatingAdmissionPolicy/flush-conntrack-jobs",
        "ValidatingAdmissionPolicyBinding/flush-conntrack-jobs",
        "PriorityClass/flush-conntrack",
        "ResourceQuota/flush-conntrack",
        "LimitRange/flush-conntrack",
    ] {
        assert!(kinds(&base).contains(&wanted.to_owned()), "{wanted} not in the base: {:?}", kinds(&base));
    }
    assert!(!base.iter().any(|d| d["kind"] == "ClusterRoleBinding"), "the base binds nothing cluster-wide");
    let namespace = find(&base, "Namespace", "flush-conntrack");
    for mode in ["enforce", "warn", "audit"] {
        assert!(
            namespace["metadata"]["labels"][format!("pod-security.kubernetes.io/{mode}")].is_string(),
            "{mode}"
        );
    }
    // The base's sweep may list pods nowhere: it waits, suspended, for
    // what binds that right to run on its schedule.
    assert_eq!(find(&base, "CronJob", "flush-conntrack-sweep")["spec"]["suspend"], true);
    let template = find(&base, "CronJob", "flush-conntrack-node");
    assert_eq!(pod_spec(template).unwrap()["priorityClassName"], "flush-conntrack");
    assert_eq!(template["metadata"]["annotations"]["flush-conntrack/protocols"], "udp");

    let opted_out = base_with(&["without-admission-policy"]);
    assert!(!opted_out
        .iter()
        .any(|d| d["kind"].as_str().is_some_and(|k| k.starts_with("ValidatingAdmission"))));
    assert_eq!(opted_out.len(), base.len() - 2, "only the policy and its binding go");
    let wide = base_with(&["sweep-all-namespaces"]);
    let binding = find(&wide, "ClusterRoleBinding", "flush-conntrack-sweep-pods");
    assert_eq!(binding["roleRef"]["name"], "flush-conntrack-sweep-pods");
    assert_eq!(find(&wide, "CronJob", "flush-conntrack-sweep")["spec"]["suspend"], false);
    let overlay = render("kustomize/overlays/statsd");
    assert_eq!(find(&overlay, "CronJob", "flush-conntrack-sweep")["spec"]["suspend"], false);
    let role = find(&wide, "ClusterRole", "flush-conntrack-sweep-pods");
    assert_eq!(role["rules"], json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]));
}

#[test]
fn in_the_overlay_only_the_trigger_holds_a_token() {
    if !tools_ok("in_the_overlay_only_the_trigger_holds_a_token") {
        return;
    }
    let docs = render("kustomize/overlays/statsd");
    let pod = pod_spec(find(&docs, "DaemonSet", "statsd")).unwrap();
    // The trigger is an ordinary container after the agent, which the
    // kubelet therefore starts first; no init container holds the agent back.
    assert!(pod["initContainers"].is_null(), "{}", pod["initContainers"]);
    assert_eq!(pod["containers"][0]["name"], "statsd");
    assert_eq!(pod["containers"][1]["env"][0], json!({"name": "MODE", "value": "spawn"}));
    assert_eq!(pod["automountServiceAccountToken"], false, "no token mounted by default");
    let token_volumes: Vec<String> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| {
            v["projected"]["sources"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["serviceAccountToken"].is_object()))
        })
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(token_volumes.len(), 1);
    let mounts = |c: &Value| -> Vec<String> {
        c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["name"].as_str().map(str::to_owned))
            .collect()
    };
    let containers = pod["containers"].as_array().unwrap();
    let trigger = &containers[1];
    assert_eq!(trigger["name"], "flush-conntrack");
    assert!(mounts(trigger).contains(&token_volumes[0]), "the trigger holds the token");
    for agent in containers.iter().filter(|c| c["name"] != "flush-conntrack") {
        assert!(!mounts(agent).contains(&token_volumes[0]), "the agent {} holds no token", agent["name"]);
    }
    // An hour: the API server extends a token asked for exactly 3607 s
    // (kubelet's own default) to a year.
    let token = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == token_volumes[0].as_str());
    let sources = token.unwrap()["projected"]["sources"].as_array().unwrap();
    let asked = sources.iter().find_map(|s| s["serviceAccountToken"]["expirationSeconds"].as_i64());
    assert_eq!(asked, Some(3600));
    // The agent's port is what the template lets a flush Job name; the
    // sweep reads pods in the agent's namespace only.
    let template = find(&docs, "CronJob", "flush-conntrack-node");
    assert_eq!(template["metadata"]["annotations"]["flush-conntrack/ports"], "8125");
    let read = find(&docs, "RoleBinding", "flush-conntrack-sweep-pods");
    assert_eq!(read["metadata"]["namespace"], "monitoring");
    assert!(!docs.iter().any(|d| d["kind"] == "ClusterRoleBinding"));
}

/// One right, as the README's table writes it: account, namespace, verbs,
/// `group/resource` (core: the resource alone), resource names.
type Right = (String, String, String, String, String);

/// Every right the rendered overlay grants to a service account, one row
/// per (role rule, resource), through RoleBindings and ClusterRoleBindings.
fn granted(docs: &[Value]) -> std::collections::BTreeSet<Right> {
    let words = |v: &Value| -> Vec<String> {
        let mut w: Vec<String> =
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect();
        w.sort();
        w
    };
    let mut rights = std::collections::BTreeSet::new();
    for binding in docs.iter().filter(|d| d["kind"] == "RoleBinding" || d["kind"] == "ClusterRoleBinding") {
        let where_ = binding["metadata"]["namespace"].as_str().unwrap_or("(cluster)").to_owned();
        let role_namespace = binding["metadata"]["namespace"].as_str();
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == binding["roleRef"]["kind"]
                    && d["metadata"]["name"] == binding["roleRef"]["name"]
                    && (d["kind"] == "ClusterRole" || d["metadata"]["namespace"].as_str() == role_namespace)
            })
            .unwrap_or_else(|| panic!("{} binds a role that is not shipped", name(binding)));
        for subject in binding["subjects"].as_array().into_iter().flatten() {
            assert_eq!(subject["kind"], "ServiceAccount", "{}", name(binding));
            let account = format!(
                "{}/{}",
                subject["namespace"].as_str().unwrap_or_default(),
                subject["name"].as_str().unwrap_or_default()
            );
            for rule in role["rules"].as_array().into_iter().flatten() {
                for group in words(&rule["apiGroups"]) {
                    for resource in words(&rule["resources"]) {
                        let resource =
                            if group.is_empty() { resource } else { format!("{group}/{resource}") };
                        rights.insert((
                            account.clone(),
                            where_.clone(),
                            words(&rule["verbs"]).join(", "),
                            resource,
                            words(&rule["resourceNames"]).join(", "),
                        ));
                    }
                }
            }
        }
    }
    rights
}

/// The README's table of rights, between its markers.
fn documented() -> std::collections::BTreeSet<Right> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let table = readme
        .split("<!-- rights: begin")
        .nth(1)
        .and_then(|t| t.split("<!-- rights: end -->").next())
        .expect("the README's rights table, between <!-- rights: begin ... --> and <!-- rights: end -->");
    // The code spans of a cell: words around them are for the reader.
    let cell = |c: &str| c.split('`').skip(1).step_by(2).collect::<Vec<_>>().join(", ");
    table
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<String> = l.trim_matches('|').split('|').map(cell).collect();
            assert_eq!(cells.len(), 5, "{l}");
            (cells[0].clone(), cells[1].clone(), cells[2].clone(), cells[3].clone(), cells[4].clone())
        })
        .collect()
}

/// What the README says each account may do is what the manifests grant:
/// RBAC written from the README is the RBAC the code needs.
#[test]
fn the_readme_lists_exactly_the_rights_the_overlay_grants() {
    if !tools_ok("the_readme_lists_exactly_the_rights_the_overlay_grants") {
        return;
    }
    let granted = granted(&render("kustomize/overlays/statsd"));
    let documented = documented();
    let missing: Vec<&Right> = granted.difference(&documented).collect();
    let extra: Vec<&Right> = documented.difference(&granted).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "granted but not in the README: {missing:#?}\nin the README but not granted: {extra:#?}"
    );
}

/// A 403 names the shipped object that grants the missing right: each one
/// it can name is shipped.
#[test]
fn every_grant_a_refusal_names_is_shipped() {
    if !tools_ok("every_grant_a_refusal_names_is_shipped") {
        return;
    }
    let docs = render("kustomize/overlays/statsd");
    for grant in flush_conntrack::error::Grant::ALL {
        let (kind, name) = grant.object();
        let object = find(&docs, kind, name);
        assert!(object["rules"].as_array().is_some_and(|r| !r.is_empty()), "{kind}/{name} grants nothing");
    }
}
