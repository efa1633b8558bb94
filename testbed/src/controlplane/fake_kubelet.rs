//! The stand-in for kubelets of [`ControlPlane::start`](super::ControlPlane::start):
//! it binds each pod to the node its required affinity names, and reports
//! pods as running or, for Jobs, finished with [`SUMMARY`] (or failed where
//! the node is one of `failing`), so that the real Job controller decides.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use super::SUMMARY;

/// What the tests read (`bound`) and set (`failing`) while it runs.
pub(super) struct Shared {
    pub bound: Arc<Mutex<Vec<(String, String)>>>,
    pub failing: Arc<Mutex<Vec<String>>>,
}

/// Runs passes over all pods, as the admin, until `stop`.
pub(super) fn start(
    admin: PathBuf,
    stop: Arc<AtomicBool>,
    nodes: Vec<(String, String)>,
    shared: Shared,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        runtime.block_on(async move {
            let Ok(kubeconfig) = kube::config::Kubeconfig::read_from(&admin) else { return };
            let options = kube::config::KubeConfigOptions::default();
            let Ok(config) = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await else {
                return;
            };
            let Ok(client) = kube::Client::try_from(config) else { return };
            while !stop.load(Ordering::Relaxed) {
                let _ = kubelet_pass(&client, &nodes, &shared.bound, &shared.failing).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    })
}

/// The node a pod's required node affinity pins it to.
fn pinned_node(pod: &Pod) -> Option<String> {
    let terms = &pod.spec.as_ref()?.affinity.as_ref()?.node_affinity.as_ref()?;
    let required = terms.required_during_scheduling_ignored_during_execution.as_ref()?;
    required.node_selector_terms.iter().find_map(|t| {
        t.match_fields.iter().flatten().find_map(|f| {
            (f.key == "metadata.name" && f.operator == "In")
                .then(|| f.values.as_ref()?.first().cloned())
                .flatten()
        })
    })
}

async fn kubelet_pass(
    client: &kube::Client,
    nodes: &[(String, String)],
    bound: &Mutex<Vec<(String, String)>>,
    failing: &Mutex<Vec<String>>,
) -> Result<(), kube::Error> {
    let all: Api<Pod> = Api::all(client.clone());
    for pod in all.list(&ListParams::default()).await?.items {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        match pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            None => {
                // The scheduler's part: only where the pod is pinned.
                let Some(node) = pinned_node(&pod).filter(|n| nodes.iter().any(|(name, _)| name == n)) else {
                    continue;
                };
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                                     "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                let _: serde_json::Value =
                    pods.create_subresource("binding", &name, &PostParams::default(), &binding).await?;
                if let Ok(mut b) = bound.lock() {
                    b.push((format!("{ns}/{name}"), node));
                }
            }
            Some(node) if phase == "Pending" || phase.is_empty() => {
                let address =
                    nodes.iter().find(|(n, _)| *n == node).map(|(_, a)| a.clone()).unwrap_or_default();
                let fails = failing.lock().is_ok_and(|f| f.contains(&node));
                let status = status(&pod, &node, &address, fails);
                let _: Pod = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
                    .await?;
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// The status a kubelet on `node` (at `address`) would report for a pod it
/// started: a Job's pod finished (failed where the node `fails`), any
/// other running.
fn status(pod: &Pod, node: &str, address: &str, fails: bool) -> serde_json::Value {
    let spec = pod.spec.clone().unwrap_or_default();
    let container = spec.containers.first().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()));
    let (cname, image) = container.unwrap_or_default();
    let is_job = pod.metadata.labels.as_ref().is_some_and(|l| l.contains_key("batch.kubernetes.io/job-name"));
    // Pods in the pod network are dual-stack, as on a dual-stack node.
    let (pod_ip, pod_ips) = if spec.host_network == Some(true) {
        (address.to_owned(), json!([{"ip": address}]))
    } else {
        let (v4, v6) = (format!("10.244.{}.9", node.len()), format!("fd00:10:244:{}::9", node.len()));
        (v4.clone(), json!([{"ip": v4}, {"ip": v6}]))
    };
    if is_job && fails {
        json!({"phase": "Failed", "hostIP": address, "podIP": pod_ip, "containerStatuses": [{
            "name": cname, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 3, "reason": "Error",
                "message": "no permission over the network namespace (EPERM)"}}}]})
    } else if is_job {
        json!({"phase": "Succeeded", "hostIP": address, "podIP": pod_ip, "containerStatuses": [{
            "name": cname, "image": image, "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": SUMMARY}}}]})
    } else {
        json!({"phase": "Running", "hostIP": address, "podIP": pod_ip, "podIPs": pod_ips,
            "startTime": k8s_openapi::jiff::Timestamp::now().to_string(),
            "containerStatuses": [{"name": cname, "image": image, "imageID": "", "ready": true,
            "restartCount": 0, "started": true, "state": {"running": {}}}]})
    }
}
