//! Which nodes a sweep must visit: where an agent started, restarted or
//! changed address since the last successful sweep, and where the last
//! flush failed. Nowhere else can a stale entry have appeared since. Pure.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::job::{state, JobState};
use super::job_template::NODE_ANNOTATION;
use crate::contract::{truth, DRY_RUN};

/// How far before the last success a sweep still looks: for clocks that
/// disagree, and for what changed while that sweep ran (it lists pods at
/// its start, its success is stamped at its end).
pub const MARGIN: Duration = Duration::from_secs(10 * 60);

/// Changes after this instant are not covered yet; `None`: nothing is (no
/// sweep has succeeded), so every node is visited.
pub fn covered_until(cronjob: &CronJob) -> Option<Timestamp> {
    let last = cronjob.status.as_ref()?.last_successful_time.as_ref()?.0;
    let margin = SignedDuration::try_from(MARGIN).ok()?;
    last.checked_sub(margin).ok()
}

/// Whether the pod's flows can have a new destination since `since`: it
/// started (a new pod has a new IP), or one of its containers (re)started.
/// A pod that does not say when it started counts as changed.
pub fn changed_since(pod: &Pod, since: Timestamp) -> bool {
    let Some(status) = &pod.status else { return true };
    let Some(started) = &status.start_time else { return true };
    if started.0 >= since {
        return true;
    }
    status.container_statuses.iter().flatten().any(|c| {
        let running = c.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.as_ref());
        let ended =
            c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).and_then(|t| t.finished_at.as_ref());
        running.into_iter().chain(ended).any(|t| t.0 >= since)
    })
}

/// Whether a Job is a dry run: it deletes nothing, so it says nothing about
/// whether the node's stale entries are gone. Read from its container's
/// `DRY_RUN` as the flush itself reads it.
pub fn is_dry_run(job: &Job) -> bool {
    let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let env = pod.into_iter().flat_map(|p| p.containers.iter()).flat_map(|c| c.env.iter().flatten());
    env.filter(|v| v.name == DRY_RUN.name).any(|v| {
        let given = v.value.as_deref().filter(|v| !v.trim().is_empty());
        truth(given.unwrap_or(DRY_RUN.default)).unwrap_or(false)
    })
}

/// The nodes whose most recent flush Job failed: a failure is retried at
/// the next sweep, changed or not. Dry runs do not count (a dry run that
/// succeeded after a failure would hide it); of two Jobs created in the
/// same second, a failed one decides, since a needless retry costs one
/// flush and a missed one leaves entries stale.
pub fn failed_nodes(jobs: &[Job]) -> BTreeSet<String> {
    let mut latest: BTreeMap<String, (Option<Timestamp>, bool)> = BTreeMap::new();
    for job in jobs.iter().filter(|j| !is_dry_run(j)) {
        let Some(node) = job.metadata.annotations.as_ref().and_then(|a| a.get(NODE_ANNOTATION)) else {
            continue;
        };
        let created = job.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let failed = matches!(state(job), JobState::Failed { .. });
        let newer = latest.get(node).map_or(true, |&(other, other_failed)| {
            created > other || (created == other && failed && !other_failed)
        });
        if newer {
            latest.insert(node.clone(), (created, failed));
        }
    }
    latest.into_iter().filter(|(_, (_, failed))| *failed).map(|(node, _)| node).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn pod(started: &str, container_started: &str, restarted: Option<&str>) -> Pod {
        let mut last = json!({});
        if let Some(t) = restarted {
            last = json!({"terminated": {"exitCode": 1, "finishedAt": t}});
        }
        serde_json::from_value(json!({
            "metadata": {"name": "agent"},
            "status": {"startTime": started, "containerStatuses": [{
                "name": "agent", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": container_started}}, "lastState": last}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_changed_when_it_or_a_container_started_after() {
        let since = at("2026-11-26T12:00:00Z");
        assert!(!changed_since(&pod("2026-11-26T10:00:00Z", "2026-11-26T10:00:01Z", None), since));
        assert!(changed_since(&pod("2026-11-26T12:00:00Z", "2026-11-26T12:00:01Z", None), since));
        assert!(
            changed_since(&pod("2026-11-26T10:00:00Z", "2026-11-26T12:30:00Z", None), since),
            "a restart"
        );
        assert!(
            changed_since(
                &pod("2026-11-26T10:00:00Z", "2026-11-26T10:00:01Z", Some("2026-11-26T12:05:00Z")),
                since
            ),
            "a container that ended since"
        );
        let unknown: Pod = serde_json::from_value(json!({"metadata": {"name": "x"}, "status": {}})).unwrap();
        assert!(changed_since(&unknown, since));
    }

    #[test]
    fn covered_until_the_last_success_less_the_margin() {
        let mut cronjob: CronJob = serde_json::from_value(json!({"metadata": {"name": "sweep"}})).unwrap();
        assert_eq!(covered_until(&cronjob), None, "never succeeded: visit every node");
        cronjob = serde_json::from_value(json!({"metadata": {"name": "sweep"},
            "status": {"lastSuccessfulTime": "2026-11-26T12:15:00Z"}}))
        .unwrap();
        assert_eq!(covered_until(&cronjob), Some(at("2026-11-26T12:05:00Z")));
    }

    fn flush_job(node: &str, created: &str, condition: &str, dry_run: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": format!("flush-{node}-{created}"), "creationTimestamp": created,
                         "annotations": {"flush-conntrack/node": node}},
            "spec": {"template": {"spec": {"containers": [{"name": "flush", "env": [
                {"name": "MODE", "value": "flush"}, {"name": "DRY_RUN", "value": dry_run}]}]}}},
            "status": {"conditions": [{"type": condition, "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_latest_job_of_each_node_decides() {
        let job = |node: &str, created: &str, condition: &str| flush_job(node, created, condition, "false");
        let jobs = vec![
            job("node-a", "2026-11-26T10:00:00Z", "Failed"),
            job("node-a", "2026-11-26T11:00:00Z", "Complete"),
            job("node-b", "2026-11-26T10:00:00Z", "Complete"),
            job("node-b", "2026-11-26T11:00:00Z", "Failed"),
            job("node-c", "2026-11-26T11:00:00Z", "Complete"),
        ];
        assert_eq!(failed_nodes(&jobs), BTreeSet::from(["node-b".to_owned()]));
    }

    #[test]
    fn a_dry_run_after_a_failure_does_not_hide_it() {
        let jobs = vec![
            flush_job("node-a", "2026-11-26T10:00:00Z", "Failed", "false"),
            flush_job("node-a", "2026-11-26T11:00:00Z", "Complete", "true"),
            flush_job("node-b", "2026-11-26T10:00:00Z", "Failed", "false"),
            flush_job("node-b", "2026-11-26T11:00:00Z", "Complete", "false"),
            // Only a failed dry run: nothing was to be deleted, nothing to retry.
            flush_job("node-c", "2026-11-26T11:00:00Z", "Failed", "true"),
        ];
        assert_eq!(failed_nodes(&jobs), BTreeSet::from(["node-a".to_owned()]));
        assert!(is_dry_run(&jobs[1]) && !is_dry_run(&jobs[0]));
        // Spelled as the flush reads it.
        assert!(is_dry_run(&flush_job("n", "2026-11-26T11:00:00Z", "Complete", " TRUE")));
    }

    #[test]
    fn of_two_jobs_created_in_the_same_second_a_failure_decides() {
        let same = "2026-11-26T11:00:00Z";
        for order in [["Failed", "Complete"], ["Complete", "Failed"]] {
            let jobs: Vec<Job> = order.iter().map(|c| flush_job("node-a", same, c, "false")).collect();
            assert_eq!(failed_nodes(&jobs), BTreeSet::from(["node-a".to_owned()]), "{order:?}");
        }
    }
}
