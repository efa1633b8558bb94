//! The flush Job, built from the template CronJob the way
//! `kubectl create job --from=cronjob/NAME` builds it (but owned, not
//! controlled, by the CronJob), then made this node's: pinned, tolerant of
//! every taint, told what to flush. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PodSpec, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::error::TemplateError;

/// Label on every Job and pod we create, naming the node (label-safe).
pub const NODE_LABEL: &str = "flush-conntrack/node";
/// The full node name, which a label value may be too short to hold.
pub const NODE_ANNOTATION: &str = "flush-conntrack/node";
/// Which run made the Job: the trigger pod's UID, or the sweep's run.
pub const RUN_ANNOTATION: &str = "flush-conntrack/run";
/// On the template: the addresses besides `local` that a flush Job may name
/// in `TARGET_IP` (comma-separated); the admission policy reads the same.
pub const ADDRESSES_ANNOTATION: &str = "flush-conntrack/addresses";
/// What kubectl writes on a Job made from a CronJob by hand.
const INSTANTIATE_ANNOTATION: &str = "cronjob.kubernetes.io/instantiate";

/// What makes a flush Job this node's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushOrder<'a> {
    pub node: &'a str,
    /// The flush's variables, as the contract writes them
    /// ([`super::job_env`]).
    pub env: Vec<(&'static str, String)>,
    /// What tells this Job from an earlier one for the same node and target:
    /// the trigger pod's UID, or the sweep's run.
    pub run: &'a str,
}

/// A DNS-1123 name of at most 63 characters (a Job's name becomes a label
/// value of its pods), stable for the same template, node, target and run.
pub fn job_name(template: &str, order: &FlushOrder) -> String {
    let mut hash = Fnv::default();
    for part in [template, order.node, order.run] {
        hash.write(part);
    }
    for (k, v) in &order.env {
        hash.write(k);
        hash.write(v);
    }
    let suffix = format!("{:010x}", hash.0 & 0xff_ffff_ffff);
    let base = dns_safe(&format!("flush-{}", order.node));
    let room = 63 - suffix.len() - 1;
    let base = base[..base.len().min(room)].trim_end_matches('-');
    format!("{base}-{suffix}")
}

/// The same Job under a name the API server generates from ours: one that
/// nobody can take before it is made.
pub fn renamed(job: &Job) -> Job {
    let mut job = job.clone();
    let name = job.metadata.name.take().unwrap_or_default();
    // The server appends 5 characters to at most 58: the Job's name must
    // stay a label value (63).
    let head = name.get(..57).unwrap_or(&name).trim_end_matches('-');
    job.metadata.generate_name = Some(format!("{head}-"));
    job
}

/// A label value naming the node: the name itself when it fits.
pub fn node_label_value(node: &str) -> String {
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if node.len() <= 63 && node.bytes().all(ok) {
        return node.to_owned();
    }
    let mut hash = Fnv::default();
    hash.write(node);
    let safe = dns_safe(node);
    let head = safe[..safe.len().min(52)].trim_end_matches('-');
    format!("{head}-{:010x}", hash.0 & 0xff_ffff_ffff)
}

fn dns_safe(s: &str) -> String {
    let mapped: String =
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    mapped.trim_matches('-').to_owned()
}

/// FNV-1a: a name must not change between releases, as `DefaultHasher` may.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, s: &str) {
        for b in s.bytes().chain([0xff]) {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// The addresses the template declares in [`ADDRESSES_ANNOTATION`]; items
/// that are not addresses are skipped (the policy then refuses any Job
/// naming them, and so does the flush).
pub fn declared_addresses(template: &CronJob) -> Vec<IpAddr> {
    let annotations = template.metadata.annotations.as_ref();
    let value = annotations.and_then(|a| a.get(ADDRESSES_ANNOTATION)).map(String::as_str).unwrap_or_default();
    value.split(',').filter_map(|item| item.trim().parse::<IpAddr>().ok()).collect()
}

/// The one node a Job's required node affinity pins it to.
fn pinned_node(job: &Job) -> Option<&str> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    let required = pod.affinity.as_ref()?.node_affinity.as_ref()?;
    let terms = &required.required_during_scheduling_ignored_during_execution.as_ref()?.node_selector_terms;
    let [term] = terms.as_slice() else { return None };
    if term.match_expressions.as_ref().is_some_and(|e| !e.is_empty()) {
        return None;
    }
    let [field] = term.match_fields.as_deref()? else { return None };
    let [node] = field.values.as_deref()? else { return None };
    (field.key == "metadata.name" && field.operator == "In").then_some(node.as_str())
}

fn only_container(job: &Job) -> Option<&Container> {
    let [container] = job.spec.as_ref()?.template.spec.as_ref()?.containers.as_slice() else { return None };
    Some(container)
}

/// The container's variables by name; `None` when one is not a plain value
/// or is set twice. The API server stores an empty value as no value.
fn plain_env(container: &Container) -> Option<BTreeMap<&str, &str>> {
    let mut env = BTreeMap::new();
    for var in container.env.iter().flatten() {
        if var.value_from.is_some() {
            return None;
        }
        if env.insert(var.name.as_str(), var.value.as_deref().unwrap_or_default()).is_some() {
            return None;
        }
    }
    Some(env)
}

/// Whether an existing Job runs the flush `wanted` describes: the same
/// node (affinity and annotation), image and variables (the selection,
/// `KEEP_DNAT_TO`, `DRY_RUN` and the template's own). Its name, labels and
/// run annotation prove nothing: anyone who may create Jobs can write
/// them, and a Job squatting our name must not stand in for our flush.
pub fn same_flush(existing: &Job, wanted: &Job) -> bool {
    let node_annotation =
        |job: &Job| job.metadata.annotations.as_ref().and_then(|a| a.get(NODE_ANNOTATION)).cloned();
    let (Some(node), Some(mine), Some(theirs)) =
        (pinned_node(wanted), only_container(wanted), only_container(existing))
    else {
        return false;
    };
    let env = plain_env(theirs);
    pinned_node(existing) == Some(node)
        && node_annotation(existing).as_deref() == Some(node)
        && mine.image.is_some()
        && theirs.image == mine.image
        && env.is_some()
        && env == plain_env(mine)
}

/// The Job `kubectl create job NAME --from=cronjob/TEMPLATE` would create,
/// made into this node's flush.
pub fn flush_job(template: &CronJob, name: &str, order: &FlushOrder) -> Result<Job, TemplateError> {
    let template_name = template.metadata.name.clone().unwrap_or_default();
    let job_template = template.spec.as_ref().map(|s| &s.job_template);
    let mut spec = job_template.and_then(|t| t.spec.clone()).unwrap_or_default();
    let template_meta = job_template.and_then(|t| t.metadata.clone()).unwrap_or_default();

    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(INSTANTIATE_ANNOTATION.to_owned(), "manual".to_owned());
    annotations.insert(NODE_ANNOTATION.to_owned(), order.node.to_owned());
    annotations.insert(RUN_ANNOTATION.to_owned(), order.run.to_owned());
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(NODE_LABEL.to_owned(), node_label_value(order.node));

    let pod_meta = spec.template.metadata.get_or_insert_with(ObjectMeta::default);
    pod_meta
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(NODE_LABEL.to_owned(), node_label_value(order.node));
    let pod = spec.template.spec.as_mut().filter(|p| !p.containers.is_empty());
    let Some(pod) = pod else {
        return Err(TemplateError::NoContainers(template_name));
    };

    pin(pod, order.node);
    set_env(&mut pod.containers, &order.env);

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: template.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            // Owned, so that deleting the template deletes its Jobs, but not
            // controlled as kubectl's copies are: the CronJob controller prunes
            // the Jobs it controls to its history limits the moment they
            // finish, before we can read their summary (seen on a real control
            // plane). ttlSecondsAfterFinished cleans them up instead.
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".to_owned(),
                kind: "CronJob".to_owned(),
                name: template_name,
                uid: template.metadata.uid.clone().unwrap_or_default(),
                controller: None,
                block_owner_deletion: None,
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    })
}

/// Required node affinity on the node's name, as DaemonSets pin pods
/// (unlike nodeName, it still goes through the scheduler and admission),
/// and a toleration of every taint: the stale entries are on this node
/// whatever its taints say.
fn pin(pod: &mut PodSpec, node: &str) {
    let affinity = pod.affinity.get_or_insert_with(Affinity::default);
    let node_affinity = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    node_affinity.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![node.to_owned()]),
            }]),
            ..NodeSelectorTerm::default()
        }],
    });
    let tolerate_all = Toleration { operator: Some("Exists".to_owned()), ..Toleration::default() };
    let tolerations = pod.tolerations.get_or_insert_with(Vec::new);
    if !tolerations.iter().any(|t| t.key.is_none() && t.operator.as_deref() == Some("Exists")) {
        tolerations.push(tolerate_all);
    }
}

/// The flush's variables replace the template's of the same name, in every
/// container.
fn set_env(containers: &mut [Container], env: &[(&'static str, String)]) {
    for container in containers {
        let vars = container.env.get_or_insert_with(Vec::new);
        vars.retain(|v| !env.iter().any(|(k, _)| *k == v.name));
        vars.extend(env.iter().map(|(k, v)| EnvVar {
            name: (*k).to_owned(),
            value: Some(v.clone()),
            value_from: None,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template() -> CronJob {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "metadata": {"name": "flush-conntrack-node", "namespace": "flush-conntrack", "uid": "cj-uid"},
            "spec": {
                "schedule": "@yearly",
                "suspend": true,
                "jobTemplate": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "flush-conntrack"}, "annotations": {"team": "net"}},
                    "spec": {
                        "backoffLimit": 2,
                        "template": {
                            "metadata": {"labels": {"app.kubernetes.io/name": "flush-conntrack"}},
                            "spec": {
                                "hostNetwork": true,
                                "restartPolicy": "Never",
                                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra"}],
                                "containers": [{
                                    "name": "flush",
                                    "image": "ghcr.io/example/flush-conntrack:1.0.0",
                                    "env": [{"name": "LOG_FORMAT", "value": "json"}, {"name": "TARGET_PORT", "value": "1"}]
                                }]
                            }
                        }
                    }
                }
            }
        }))
        .unwrap()
    }

    fn order(run: &str) -> FlushOrder<'_> {
        FlushOrder {
            node: "node-a",
            env: vec![
                ("MODE", "flush".to_owned()),
                ("TARGET_IP", "192.0.2.1".to_owned()),
                ("TARGET_PORT", "8125".to_owned()),
                ("TARGET_PROTOCOL", "udp".to_owned()),
                ("KEEP_DNAT_TO", "198.51.100.6".to_owned()),
                ("DRY_RUN", "false".to_owned()),
            ],
            run,
        }
    }

    #[test]
    fn names_are_stable_dns_1123_and_tell_runs_apart() {
        let a = job_name("flush-conntrack-node", &order("uid-1"));
        assert_eq!(a, job_name("flush-conntrack-node", &order("uid-1")));
        assert_ne!(a, job_name("flush-conntrack-node", &order("uid-2")));
        assert!(a.starts_with("flush-node-a-"), "{a}");
        let long = "ip-10-0-1-7.eu-west-1.compute.internal.with.a.very.long.suffix.example";
        let o = FlushOrder { node: long, ..order("uid-1") };
        let name = job_name("t", &o);
        assert!(name.len() <= 63, "{name}");
        assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'), "{name}");
        assert!(!name.starts_with('-') && !name.ends_with('-'));
        let mut other_target = order("uid-1");
        other_target.env[2].1 = "8126".to_owned();
        assert_ne!(a, job_name("flush-conntrack-node", &other_target));
    }

    #[test]
    fn node_label_values_fit() {
        assert_eq!(node_label_value("node-a"), "node-a");
        let v = node_label_value(&"n".repeat(100));
        assert!(v.len() <= 63, "{v}");
    }

    #[test]
    fn job_copies_the_template_like_kubectl_create_job_from() {
        let job = flush_job(&template(), "flush-node-a-0123456789", &order("uid-1")).unwrap();
        let meta = &job.metadata;
        assert_eq!(meta.name.as_deref(), Some("flush-node-a-0123456789"));
        assert_eq!(meta.namespace.as_deref(), Some("flush-conntrack"));
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("CronJob", "flush-conntrack-node", "cj-uid")
        );
        assert_eq!(owner.controller, None, "not controlled: the CronJob controller would prune it");
        let annotations = meta.annotations.as_ref().unwrap();
        assert_eq!(annotations["cronjob.kubernetes.io/instantiate"], "manual");
        assert_eq!(annotations["team"], "net");
        assert_eq!(annotations[NODE_ANNOTATION], "node-a");
        assert_eq!(annotations[RUN_ANNOTATION], "uid-1");
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!(labels["app.kubernetes.io/name"], "flush-conntrack");
        assert_eq!(labels[NODE_LABEL], "node-a");
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(2));
        let pod_labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(pod_labels[NODE_LABEL], "node-a");
    }

    #[test]
    fn job_is_pinned_tolerant_and_told_what_to_flush() {
        let job = flush_job(&template(), "n", &order("uid-1")).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.host_network, Some(true));
        let terms = pod
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        let field = &terms.node_selector_terms[0].match_fields.as_ref().unwrap()[0];
        assert_eq!((field.key.as_str(), field.operator.as_str()), ("metadata.name", "In"));
        assert_eq!(field.values.as_deref(), Some(&["node-a".to_owned()][..]));
        let tolerations = pod.tolerations.unwrap();
        assert_eq!(tolerations.len(), 2, "the template's own is kept");
        assert!(tolerations.iter().any(|t| t.key.is_none() && t.operator.as_deref() == Some("Exists")));
        let env: BTreeMap<String, Option<String>> =
            pod.containers[0].env.clone().unwrap().into_iter().map(|e| (e.name, e.value)).collect();
        assert_eq!(env["MODE"].as_deref(), Some("flush"));
        assert_eq!(env["TARGET_IP"].as_deref(), Some("192.0.2.1"));
        assert_eq!(env["TARGET_PORT"].as_deref(), Some("8125"), "the order wins over the template");
        assert_eq!(env["KEEP_DNAT_TO"].as_deref(), Some("198.51.100.6"));
        assert_eq!(env["DRY_RUN"].as_deref(), Some("false"));
        assert_eq!(env["LOG_FORMAT"].as_deref(), Some("json"), "the template's others are kept");
        assert_eq!(pod.containers[0].env.as_ref().unwrap().len(), 7);
    }

    #[test]
    fn a_template_without_containers_is_refused() {
        let mut t = template();
        t.spec
            .as_mut()
            .unwrap()
            .job_template
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers
            .clear();
        assert!(
            matches!(flush_job(&t, "n", &order("u")), Err(TemplateError::NoContainers(n)) if n == "flush-conntrack-node")
        );
    }

    #[test]
    fn the_declared_addresses_are_read_from_the_template() {
        let mut t = template();
        assert!(declared_addresses(&t).is_empty(), "none declared: only `local`");
        t.metadata.annotations = Some(BTreeMap::from([(
            ADDRESSES_ANNOTATION.to_owned(),
            " 192.0.2.10, ,2001:db8::1,not-an-ip".to_owned(),
        )]));
        let want: Vec<IpAddr> = ["192.0.2.10", "2001:db8::1"].iter().map(|a| a.parse().unwrap()).collect();
        assert_eq!(declared_addresses(&t), want);
    }

    /// A Job as the API server returns it: an empty value stored as none.
    fn stored(job: &Job) -> Job {
        let mut v = serde_json::to_value(job).unwrap();
        for e in v["spec"]["template"]["spec"]["containers"][0]["env"].as_array_mut().unwrap() {
            if e["value"] == "" {
                e.as_object_mut().unwrap().remove("value");
            }
        }
        v["metadata"]["resourceVersion"] = serde_json::json!("7");
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_the_same_flush_stands_for_ours() {
        let mut o = order("uid-1");
        o.env[4].1 = String::new(); // no KEEP_DNAT_TO: stored without a value
        let wanted = flush_job(&template(), "n", &o).unwrap();
        assert!(same_flush(&stored(&wanted), &wanted), "what a restarted trigger finds");
        let other_run = flush_job(&template(), "n", &FlushOrder { run: "uid-2", ..o.clone() }).unwrap();
        assert!(same_flush(&other_run, &wanted), "the flush is the same whoever made it");

        fn env(job: &mut Job) -> &mut Vec<EnvVar> {
            let pod = job.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
            pod.containers[0].env.as_mut().unwrap()
        }
        let set = |job: &mut Job, name: &str, value: &str| {
            for var in env(job).iter_mut().filter(|v| v.name == name) {
                var.value = Some(value.to_owned());
            }
        };
        type Lie<'a> = Box<dyn Fn(&mut Job) + 'a>;
        let lies: Vec<(&str, Lie<'_>)> = vec![
            ("a dry run", Box::new(|j| set(j, "DRY_RUN", "true"))),
            ("everything kept", Box::new(|j| set(j, "KEEP_DNAT_TO", "10.244.0.0,198.51.100.6"))),
            ("another address", Box::new(|j| set(j, "TARGET_IP", "local"))),
            ("another port", Box::new(|j| set(j, "TARGET_PORT", "8126"))),
            ("a template variable changed", Box::new(|j| set(j, "LOG_FORMAT", "text"))),
            (
                "a variable added",
                Box::new(|j| {
                    env(j).push(EnvVar {
                        name: "KERNEL_FLUSH".into(),
                        value: Some("false".into()),
                        value_from: None,
                    })
                }),
            ),
            (
                "a variable twice",
                Box::new(|j| {
                    let again = env(j)[0].clone();
                    env(j).push(again)
                }),
            ),
            (
                "another image",
                Box::new(|j| {
                    j.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image =
                        Some("busybox".into())
                }),
            ),
            (
                "a pin narrowed by a label",
                Box::new(|j| {
                    let pod = j.spec.as_mut().unwrap().template.spec.as_mut().unwrap();
                    let required = pod.affinity.as_mut().unwrap().node_affinity.as_mut().unwrap();
                    let terms =
                        &mut required.required_during_scheduling_ignored_during_execution.as_mut().unwrap();
                    terms.node_selector_terms[0].match_expressions = Some(vec![NodeSelectorRequirement {
                        key: "kubernetes.io/os".into(),
                        operator: "In".into(),
                        values: Some(vec!["windows".into()]),
                    }]);
                }),
            ),
            (
                "a node annotation that lies",
                Box::new(|j| {
                    j.metadata.annotations.as_mut().unwrap().insert(NODE_ANNOTATION.into(), "node-b".into());
                }),
            ),
        ];
        for (what, lie) in &lies {
            let mut squatter = wanted.clone();
            lie(&mut squatter);
            assert!(!same_flush(&squatter, &wanted), "{what}");
        }
        let elsewhere = flush_job(&template(), "n", &FlushOrder { node: "node-b", ..o.clone() }).unwrap();
        let mut labelled_ours = elsewhere.clone();
        labelled_ours.metadata.annotations.as_mut().unwrap().insert(NODE_ANNOTATION.into(), "node-a".into());
        assert!(!same_flush(&labelled_ours, &wanted), "pinned elsewhere, annotated as ours");
        assert!(!same_flush(&elsewhere, &wanted), "another node's flush");
    }

    /// Names must not change between releases (a restarted trigger finds
    /// its Job by name): FNV-1a 64 over each part and a 0xff after it.
    #[test]
    fn the_name_hash_is_fnv_1a_of_each_part_and_a_separator() {
        let mut hash = Fnv::default();
        hash.write("a");
        assert_eq!(hash.0, 0x089b_c907_b544_c769, "FNV-1a 64 of b\"a\\xff\"");
    }

    #[test]
    fn one_toleration_of_every_taint_whatever_the_template_tolerates() {
        let pinned = |given: serde_json::Value| {
            let spec = serde_json::json!({"containers": [], "tolerations": given});
            let mut pod: PodSpec = serde_json::from_value(spec).unwrap();
            pin(&mut pod, "node-a");
            pod.tolerations.unwrap()
        };
        let every = serde_json::json!({"operator": "Exists"});
        assert_eq!(pinned(serde_json::json!([every])).len(), 1, "it already tolerates every taint");
        let keyed = serde_json::json!({"key": "dedicated", "operator": "Exists"});
        let both = pinned(serde_json::json!([keyed]));
        assert_eq!(both.len(), 2, "a keyed Exists tolerates one taint only");
        assert!(both[1].key.is_none() && both[1].operator.as_deref() == Some("Exists"), "{both:?}");
    }
}
