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
use super::job_env;
use super::job_template::{self, FlushOrder, NODE_LABEL};
use super::Options;
use crate::ctnetlink::Protocol;
use crate::error::{report, Error, Grant};
use crate::report::Summary;

/// Pods listed per request: a large cluster's pods come in pages.
const PAGE: u32 = 500;

/// `MODE=sweep`: which agents, which of their nodes, how many at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepPlan {
    /// Label selector of the agents' pods (`SWEEP_SELECTOR`).
    pub selector: String,
    /// Namespace of the agents' pods; `None`: all namespaces.
    pub namespace: Option<String>,
    /// Every node with an agent, not only those that changed.
    pub full: bool,
    /// The CronJob whose last success marks what an incremental sweep has
    /// already covered.
    pub cronjob: String,
    /// Flush Jobs at once.
    pub parallelism: usize,
    /// The hostPorts' protocols that are swept (`TARGET_PROTOCOL`).
    pub protocols: Vec<Protocol>,
    /// Print the Jobs instead of creating them.
    pub dry_run: bool,
    pub cluster: Options,
}

pub async fn run(client: &Client, namespace: &str, sweep: &SweepPlan) -> Result<(), Error> {
    let cluster = &sweep.cluster;
    let selector = sweep.selector.as_str();
    let pods = running_pods(client, sweep.namespace.as_deref(), selector).await?;
    let mut plan = hostports::plan(&pods, &sweep.protocols);
    let considered = plan.len();
    match nodes_to_visit(client, namespace, sweep, &pods).await {
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
    within_declared(&mut plan, &template);
    // Unique per sweep run: the CronJob's pod, or the time for a run by hand.
    let run = cluster.run.clone().unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos().to_string()).unwrap_or_default()
    });
    let started = Instant::now();
    let results: Vec<(String, Result<Option<Summary>, Error>)> = stream::iter(&plan)
        .map(|node| async {
            let result = one_node(client, namespace, sweep, &template, node, &run, started).await;
            (node.node.clone(), result)
        })
        .buffer_unordered(sweep.parallelism)
        .collect()
        .await;

    tell(client, sweep, Counts { considered, unchanged }, &results).await
}

/// How many nodes the sweep looked at, and how many of them had not changed.
#[derive(Clone, Copy)]
struct Counts {
    considered: usize,
    unchanged: usize,
}

/// Each node's outcome as an Event on the sweep's own pod (`kubectl describe
/// pod`), the totals in the log and a `SweepDone` Event, and the sweep's own
/// outcome: it fails when any node's flush failed.
async fn tell(
    client: &Client,
    sweep: &SweepPlan,
    Counts { considered, unchanged }: Counts,
    results: &[(String, Result<Option<Summary>, Error>)],
) -> Result<(), Error> {
    let cluster = &sweep.cluster;
    let total = results.len();
    let regarding: Option<&Regarding> = cluster.pod.as_ref();
    let instance = regarding.as_ref().map(|r| r.name.clone()).unwrap_or_default();
    for (node, result) in results {
        let note = match result {
            Ok(summary) => events::node_flushed(summary.as_ref(), node),
            Err(e) => {
                let e = report(e);
                tracing::error!(node = %node, "flush failed: {e}");
                events::node_failed(node, &e)
            }
        };
        if let (Some(pod), false) = (regarding, sweep.dry_run || cluster.wait_timeout.is_zero()) {
            events::publish(client, pod, &note, &instance).await;
        }
    }
    let Tally { flushed, failed, deleted, kept, unreported } = Tally::of(results);
    tracing::info!(nodes = considered, unchanged, flushed, failed, deleted, kept, unreported, "sweep done");
    if let (Some(pod), false) = (regarding, sweep.dry_run) {
        let done = events::sweep_done(considered, unchanged, failed, deleted, kept);
        events::publish(client, pod, &done, &instance).await;
    }
    match failed {
        0 => Ok(()),
        _ => Err(Error::SweepFailed { failed, total }),
    }
}

/// What the visited nodes came to: the sweep's `sweep done` line, its
/// `SweepDone` Event and its outcome.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    /// Nodes whose flush succeeded, reported or not.
    flushed: usize,
    failed: usize,
    deleted: u64,
    kept: u64,
    /// Flushes that succeeded without a readable summary.
    unreported: usize,
}

impl Tally {
    fn of(results: &[(String, Result<Option<Summary>, Error>)]) -> Tally {
        let mut tally = Tally::default();
        for (_, result) in results {
            match result {
                Ok(Some(s)) => {
                    tally.flushed += 1;
                    tally.deleted += s.deleted;
                    tally.kept += s.kept;
                }
                Ok(None) => {
                    tally.flushed += 1;
                    tally.unreported += 1;
                }
                Err(_) => tally.failed += 1,
            }
        }
        tally
    }
}

/// The policy admits no other address than `local` and the declared ones;
/// `local` covers a hostIP, which is an address of its node.
fn within_declared(plan: &mut [NodeFlush], template: &CronJob) {
    let declared = job_template::declared_addresses(template);
    for node in plan {
        let widened = hostports::within_declared(&mut node.selection, &declared);
        if !widened.is_empty() {
            tracing::info!(node = %node.node, host_ips = ?widened, "hostIPs not declared in {}: flushing them as `local`", job_template::ADDRESSES_ANNOTATION);
        }
    }
}

/// The running pods of the selector, page by page, filtered by the API
/// server on their phase.
async fn running_pods(client: &Client, namespace: Option<&str>, selector: &str) -> Result<Vec<Pod>, Error> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let list_call = Call::new("list", "pods", namespace.unwrap_or("(all namespaces)"), Grant::SweepPods);
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
    sweep: &SweepPlan,
    pods: &[Pod],
) -> Option<BTreeSet<String>> {
    if sweep.full {
        tracing::info!("FULL_SWEEP=true");
        return None;
    }
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let since = match call(|| cronjobs.get(&sweep.cronjob)).await {
        Ok(cronjob) => churn::covered_until(&cronjob),
        Err(e) => {
            let e = e.explain(&Call::new("get", "cronjobs", namespace, Grant::Sweep));
            tracing::warn!(cronjob = %sweep.cronjob, "cannot read when the last sweep succeeded: {e}");
            None
        }
    };
    let Some(since) = since else {
        tracing::info!(cronjob = %sweep.cronjob, "no successful sweep recorded");
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
            let e = e.explain(&Call::new("list", "jobs", namespace, Grant::Sweep));
            tracing::warn!("cannot tell which nodes' last flush failed; retrying none: {e}");
        }
    }
    tracing::info!(since = %since, changed_or_failed = visit.len(), "only nodes that changed since the last sweep");
    Some(visit)
}

async fn one_node(
    client: &Client,
    namespace: &str,
    sweep: &SweepPlan,
    template: &CronJob,
    node: &NodeFlush,
    run: &str,
    started: Instant,
) -> Result<Option<Summary>, Error> {
    let order = FlushOrder { node: &node.node, env: job_env::flush_job(&node.selection, sweep.dry_run), run };
    let job = job::build(template, &order)?;
    if sweep.dry_run {
        print!("---\n{}", super::yaml(&job));
        return Ok(None);
    }
    let placed = job::create_or_adopt(client, &job, &order).await?;
    tracing::info!(node = %node.node, pods = ?node.pods, "flush Job for the node's hostPorts");
    let name = placed.job.metadata.name.clone().unwrap_or_default();
    if let (Some(pod), Some(taken)) = (sweep.cluster.pod.as_ref(), &placed.taken) {
        let instance = pod.name.clone();
        events::publish(client, pod, &events::name_taken(taken, &name, namespace, &node.node), &instance)
            .await;
    }
    let timeout = sweep.cluster.wait_timeout;
    if timeout.is_zero() {
        return Ok(None);
    }
    job::finish(client, namespace, &name, &node.node, started + timeout, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Signal;

    #[test]
    fn the_tally_counts_each_node_once_and_adds_what_they_deleted_and_kept() {
        let summary = |deleted, kept| Summary { deleted, kept, ..Summary::default() };
        let results = vec![
            ("node-a".to_owned(), Ok(Some(summary(2, 1)))),
            ("node-b".to_owned(), Ok(Some(summary(3, 0)))),
            ("node-c".to_owned(), Ok(None)),
            ("node-d".to_owned(), Err(Error::Interrupted(Signal::Term))),
        ];
        let expected = Tally { flushed: 3, failed: 1, deleted: 5, kept: 1, unreported: 1 };
        assert_eq!(Tally::of(&results), expected);
        assert_eq!(Tally::of(&[]), Tally::default());
    }
}
