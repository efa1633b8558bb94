//! `MODE=spawn`: the initContainer trigger. One flush Job pinned to this
//! node, waited for, its outcome made ours.

use kube::Client;
use tokio::time::Instant;

use super::events::{self, Regarding};
use super::job;
use super::job_env;
use super::job_template::FlushOrder;
use super::Options;
use crate::error::{report, Error};
use crate::flush::selection::Selection;

/// A Job made without a trigger pod (by hand) is one run of its own: each
/// invocation flushes, rather than adopting an earlier one's finished Job,
/// and its name cannot be guessed ahead.
pub fn manual_run(unix_seconds: u64, random: u64) -> String {
    format!("manual-{unix_seconds}-{:016x}", random)
}

fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Keyed at random per process by the standard library; no dependency.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// `MODE=spawn`: one flush of this node, by a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnPlan {
    /// The node the Job is pinned to (`NODE_NAME`).
    pub node: String,
    /// What the Job deletes.
    pub selection: Selection,
    /// Print the Job instead of creating it; the Job itself is a dry run.
    pub dry_run: bool,
    pub cluster: Options,
}

pub async fn run(client: &Client, namespace: &str, plan: &SpawnPlan) -> Result<(), Error> {
    let node = plan.node.as_str();
    let regarding = plan.cluster.pod.as_ref();
    let result = spawn(client, namespace, plan, regarding).await;
    if let (Some(pod), Err(e)) = (regarding, &result) {
        let reason = match e {
            Error::TimedOut { .. } => "FlushTimedOut",
            _ => "FlushFailed",
        };
        events::publish(client, pod, &events::failed(reason, &report(e)), node).await;
    }
    result
}

async fn spawn(
    client: &Client,
    namespace: &str,
    plan: &SpawnPlan,
    regarding: Option<&Regarding>,
) -> Result<(), Error> {
    let (cluster, node) = (&plan.cluster, plan.node.as_str());
    let template = job::template(client, namespace, &cluster.job_template).await?;
    let manual = || {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        manual_run(now.map_or(0, |d| d.as_secs()), random())
    };
    let run = cluster.run.clone().unwrap_or_else(manual);
    let order = FlushOrder { node, env: job_env::flush_job(&plan.selection, plan.dry_run), run: &run };
    let job = job::build(&template, &order)?;
    if plan.dry_run {
        print!("{}", super::yaml(&job));
        tracing::info!("dry run: printed the Job, created nothing");
        return Ok(());
    }
    let started = Instant::now();
    let placed = job::create_or_adopt(client, &job, &order).await?;
    let name = placed.job.metadata.name.clone().unwrap_or_default();
    if let Some(pod) = regarding {
        if let Some(taken) = &placed.taken {
            events::publish(client, pod, &events::name_taken(taken, &name, namespace, node), node).await;
        }
        events::publish(client, pod, &events::job_created(&name, namespace, node), node).await;
    }
    if cluster.wait_timeout.is_zero() {
        return Ok(());
    }
    let summary =
        job::finish(client, namespace, &name, node, started + cluster.wait_timeout, cluster.wait_timeout)
            .await?;
    if let (Some(pod), Some(summary)) = (regarding, summary) {
        events::publish(client, pod, &events::flushed(&summary, &name, namespace, node), node).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_by_hand_is_its_own() {
        let run = manual_run(1_790_000_000, 0xfeed);
        assert_eq!(run, "manual-1790000000-000000000000feed");
        assert_ne!(run, manual_run(1_790_000_000, 0xbeef), "same second, another run");
        assert_ne!(random(), random(), "keyed afresh each time");
    }
}
