//! `MODE=sweep`: the CronJob that covers every node. One flush Job per node
//! where matching pods declare hostPorts and something changed since the
//! last successful sweep, each deleting only what no live pod receives.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::{stream, StreamExt};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use tokio::time::Instant;

use super::api::{call, Call};
use super::churn;
use super::events::{self, Regarding};
use super::hostports::{self, NodeFlush};
use super::job;
use super::job_template::{FlushOrder, NODE_LABEL};
use crate::config::Settings;
use crate::error::Error;
use crate::report::Summary;

/// Pods listed per request: a large cluster's pods come in pages.
const PAGE: u32 = 500;

pub async fn run(client: &Client, namespace: &str, settings: &Settings) -> Result<(), Error> {
    let cluster = &settings.cluster;
    let selector = cluster.sweep_selector.clone().unwrap_or_default();
    let pods = running_pods(client, cluster.sweep_namespace.as_deref(), &selector).await?;
    let mut plan = hostports::plan(&pods, &settings.selection.protocols);
    let considered = plan.len();
    match nodes_to_visit(client, namespace, settings, &pods).await {
        Some(visit) => plan.retain(|n| visit.contains(&n.node)),
        None => tracing::info!("visiting every node with an agent"),
    }
    let unchanged = considered - plan.len();
    tracing::info!(selector = %selector, pods = pods.len(), nodes = considered, unchanged, to_flush = plan.len(), "sweep planned");
    if plan.is_empty() {
        tracing::info!(nodes = considered, unchanged, flushed = 0, failed = 0, "sweep done");
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
        .buffer_unordered(cluster.sweep_parallelism)
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
    let flushed = total - failed;
    tracing::info!(nodes = considered, unchanged, flushed, failed, deleted, kept, unreported, "sweep done");
    if let (Some(pod), false) = (&regarding, settings.dry_run) {
        let done = events::sweep_done(considered, unchanged, failed, deleted, kept);
        events::publish(client, pod, &done, &instance).await;
    }
    match failed {
        0 => Ok(()),
        _ => Err(Error::SweepFailed { failed, total }),
    }
}

/// The running pods of the selector, page by page, filtered by the API
/// server on their phase.
async fn running_pods(client: &Client, namespace: Option<&str>, selector: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list_call = Call::new("list", "pods", namespace.unwrap_or("(all namespaces)"));
    let mut pods = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params = ListParams::default().labels(selector).fields("status.phase=Running").limit(PAGE);
        if let Some(t) = &token {
            params = params.continue_token(t);
        }
        let page = call(|| api.list(&params)).await.map_err(|e| e.explain(&list_call))?;
        pods.extend(page.items);
        match page.metadata.continue_.filter(|t| !t.is_empty()) {
            Some(next) => token = Some(next),
            None => return Ok(pods),
        }
    }
}

/// The nodes an incremental sweep visits: where an agent changed since the
/// last successful sweep (less a margin), and where the last flush failed.
/// `None`: every node (FULL_SWEEP, no success recorded, or the record
/// cannot be read).
async fn nodes_to_visit(
    client: &Client,
    namespace: &str,
    settings: &Settings,
    pods: &[Pod],
) -> Option<BTreeSet<String>> {
    let cluster = &settings.cluster;
    if cluster.full_sweep {
        tracing::info!("FULL_SWEEP=true");
        return None;
    }
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let since = match call(|| cronjobs.get(&cluster.sweep_cronjob)).await {
        Ok(cronjob) => churn::covered_until(&cronjob),
        Err(e) => {
            let e = e.explain(&Call::new("get", "cronjobs", namespace));
            tracing::warn!(cronjob = %cluster.sweep_cronjob, "cannot read when the last sweep succeeded: {e}");
            None
        }
    };
    let Some(since) = since else {
        tracing::info!(cronjob = %cluster.sweep_cronjob, "no successful sweep recorded");
        return None;
    };
    let mut visit: BTreeSet<String> = pods
        .iter()
        .filter(|p| churn::changed_since(p, since))
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(NODE_LABEL);
    match call(|| jobs.list(&params)).await {
        Ok(list) => visit.extend(churn::failed_nodes(&list.items)),
        Err(e) => {
            let e = e.explain(&Call::new("list", "jobs", namespace));
            tracing::warn!("cannot tell which nodes' last flush failed; retrying none: {e}");
        }
    }
    tracing::info!(since = %since, changed_or_failed = visit.len(), "only nodes that changed since the last sweep");
    Some(visit)
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
