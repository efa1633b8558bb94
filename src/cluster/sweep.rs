//! `MODE=sweep`: the CronJob that covers every node. One flush Job per node
//! where matching pods declare hostPorts, each deleting only what no live
//! pod receives.

use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::time::Instant;

use super::api::{call, Call};
use super::events::{self, Regarding};
use super::hostports::{self, NodeFlush};
use super::job;
use super::job_template::FlushOrder;
use crate::config::Settings;
use crate::error::Error;
use crate::report::Summary;

/// Flush Jobs created and awaited at once; the API server and the nodes'
/// image pulls need not take them all together.
const AT_ONCE: usize = 4;

pub async fn run(client: &Client, namespace: &str, settings: &Settings) -> Result<(), Error> {
    let cluster = &settings.cluster;
    let selector = cluster.sweep_selector.clone().unwrap_or_default();
    let pods: Api<Pod> = match &cluster.sweep_namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list_call =
        Call::new("list", "pods", cluster.sweep_namespace.as_deref().unwrap_or("(all namespaces)"));
    let params = ListParams::default().labels(&selector);
    let list = call(|| pods.list(&params)).await.map_err(|e| e.explain(&list_call))?;
    let plan = hostports::plan(&list.items, &settings.selection.protocols);
    tracing::info!(selector = %selector, pods = list.items.len(), nodes = plan.len(), "sweep planned");
    if plan.is_empty() {
        return Ok(());
    }
    let template = job::template(client, namespace, &cluster.job_template).await?;
    // Unique per sweep run: the CronJob's pod, or the time for a run by hand.
    let run = cluster.pod_uid.clone().unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos().to_string()).unwrap_or_default()
    });
    let started = Instant::now();
    let results: Vec<(String, Result<Option<Summary>, Error>)> = stream::iter(&plan)
        .map(|node| async {
            let result = one_node(client, namespace, settings, &template, node, &run, started).await;
            (node.node.clone(), result)
        })
        .buffer_unordered(AT_ONCE)
        .collect()
        .await;

    let total = results.len();
    // Each node's outcome, on the sweep's own pod (`kubectl describe pod`).
    let regarding = cluster.pod.as_ref().map(|(ns, name)| Regarding {
        namespace: ns.clone(),
        name: name.clone(),
        uid: cluster.pod_uid.clone(),
    });
    let instance = regarding.as_ref().map(|r| r.name.clone()).unwrap_or_default();
    let (mut failed, mut deleted, mut kept, mut unreported) = (0, 0, 0, 0);
    for (node, result) in &results {
        let note = match result {
            Ok(Some(s)) => {
                deleted += s.deleted;
                kept += s.kept;
                events::node_flushed(Some(s), node)
            }
            Ok(None) => {
                unreported += 1;
                events::node_flushed(None, node)
            }
            Err(e) => {
                failed += 1;
                tracing::error!(node = %node, "flush failed: {e}");
                events::node_failed(node, &e.to_string())
            }
        };
        if let (Some(pod), false) = (&regarding, settings.dry_run || cluster.wait_timeout.is_zero()) {
            events::publish(client, pod, &note, &instance).await;
        }
    }
    tracing::info!(nodes = total, failed, deleted, kept, unreported, "sweep done");
    if let (Some(pod), false) = (&regarding, settings.dry_run) {
        events::publish(client, pod, &events::sweep_done(total, failed, deleted, kept), &instance).await;
    }
    match failed {
        0 => Ok(()),
        _ => Err(Error::SweepFailed { failed, total }),
    }
}

async fn one_node(
    client: &Client,
    namespace: &str,
    settings: &Settings,
    template: &k8s_openapi::api::batch::v1::CronJob,
    node: &NodeFlush,
    run: &str,
    started: Instant,
) -> Result<Option<Summary>, Error> {
    let order =
        FlushOrder { node: &node.node, selection: node.selection.env(), dry_run: settings.dry_run, run };
    let job = job::build(template, &order)?;
    if settings.dry_run {
        print!("---\n{}", super::yaml(&job));
        return Ok(None);
    }
    let job = job::create_or_adopt(client, &job, &order).await?;
    tracing::info!(node = %node.node, pods = ?node.pods, "flush Job for the node's hostPorts");
    let name = job.metadata.name.clone().unwrap_or_default();
    let timeout = settings.cluster.wait_timeout;
    if timeout.is_zero() {
        return Ok(None);
    }
    super::spawn::finish(client, namespace, &name, &node.node, started + timeout, timeout).await
}
