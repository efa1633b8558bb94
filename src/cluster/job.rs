//! One flush Job's life through the API: the template it is made from, its
//! creation (or adoption, when a restarted trigger made the same flush
//! already; a Job squatting its name is not adopted), its
//! outcome and the summary its pod left behind.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::time::Instant;

use super::api::{call, ApiError, Call};
use super::job_template::{self, FlushOrder};
use crate::error::{report, Error, Grant};
use crate::report::Summary;

/// A server-side watch ends after this long and is opened again, so that a
/// silently dropped connection cannot outlast it.
const WATCH_WINDOW: Duration = Duration::from_secs(50);
const REWATCH_PAUSE: Duration = Duration::from_millis(200);

pub async fn template(client: &Client, namespace: &str, name: &str) -> Result<CronJob, Error> {
    let cronjobs: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    call(|| cronjobs.get(name)).await.map_err(|e| match e.code() {
        Some(404) => Error::TemplateMissing { namespace: namespace.to_owned(), name: name.to_owned() },
        _ => e.explain(&Call::new("get", "cronjobs", namespace, Grant::Spawner)),
    })
}

/// The Job a run waits for, and the name it could not have.
#[derive(Debug, Clone)]
pub struct Placed {
    pub job: Job,
    /// The name the flush is known by, taken by a Job that runs another
    /// flush: ours was created under a generated name instead.
    pub taken: Option<String>,
}

/// Creates the Job, or adopts the one that already runs this very flush
/// (a restarted trigger finds the Job it made). A Job under our name that
/// runs anything else (another node, target, `KEEP_DNAT_TO`, `DRY_RUN` or
/// image) is never adopted, whatever its labels and annotations claim: ours
/// is created beside it under a generated name, so that squatting a name
/// cannot stop a flush.
pub async fn create_or_adopt(client: &Client, job: &Job, order: &FlushOrder<'_>) -> Result<Placed, Error> {
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let create = Call::new("create", "jobs", &namespace, Grant::Spawner);
    let params = PostParams::default();
    match call(|| jobs.create(&params, job)).await {
        Ok(created) => {
            tracing::info!(job = %name, %namespace, node = order.node, "created the flush Job");
            return Ok(Placed { job: created, taken: None });
        }
        Err(ApiError::Status { code: 409, .. }) => {}
        Err(e) => return Err(e.explain(&create)),
    }
    let existing = call(|| jobs.get(&name))
        .await
        .map_err(|e| e.explain(&Call::new("get", "jobs", &namespace, Grant::Spawner)))?;
    if job_template::same_flush(&existing, job) {
        tracing::info!(job = %name, %namespace, node = order.node, "adopted the flush Job that already runs this flush");
        return Ok(Placed { job: existing, taken: None });
    }
    let renamed = job_template::renamed(job);
    let created = call(|| jobs.create(&params, &renamed)).await.map_err(|e| e.explain(&create))?;
    let given = created.metadata.name.clone().unwrap_or_default();
    tracing::warn!(
        job = %given,
        taken = %name,
        %namespace,
        node = order.node,
        "a Job named {name} exists and is not this flush (another node, target, DRY_RUN or image): \
         created the flush Job under a generated name instead"
    );
    Ok(Placed { job: created, taken: Some(name) })
}

/// Where a Job stands, from its conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed { reason: String, message: String },
}

/// `Complete` and `Failed` are final; `SuccessCriteriaMet` and
/// `FailureTarget` (1.31+) come first and already decide the outcome.
pub fn state(job: &Job) -> JobState {
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    for c in conditions.into_iter().flatten().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" | "SuccessCriteriaMet" => return JobState::Succeeded,
            "Failed" | "FailureTarget" => {
                return JobState::Failed {
                    reason: c.reason.clone().unwrap_or_default(),
                    message: c.message.clone().unwrap_or_default(),
                }
            }
            _ => {}
        }
    }
    JobState::Running
}

/// Watches the Job until it succeeds or fails; `None` when the deadline
/// comes first, whatever the API server is doing by then.
pub async fn outcome(
    client: &Client,
    namespace: &str,
    name: &str,
    deadline: Instant,
) -> Result<Option<JobState>, Error> {
    match tokio::time::timeout_at(deadline, watch_until_final(client, namespace, name)).await {
        Ok(result) => result.map(Some),
        Err(_) => Ok(None),
    }
}

async fn watch_until_final(client: &Client, namespace: &str, name: &str) -> Result<JobState, Error> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let get = Call::new("get", "jobs", namespace, Grant::Spawner);
    let watch = Call::new("watch", "jobs", namespace, Grant::Spawner);
    loop {
        let job = call(|| jobs.get(name)).await.map_err(|e| e.explain(&get))?;
        let now = state(&job);
        if now != JobState::Running {
            return Ok(now);
        }
        let version = job.metadata.resource_version.clone().unwrap_or_default();
        let params = WatchParams::default()
            .fields(&format!("metadata.name={name}"))
            .timeout(WATCH_WINDOW.as_secs() as u32);
        let stream = call(|| jobs.watch(&params, &version)).await.map_err(|e| e.explain(&watch))?;
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(WatchEvent::Added(job)) | Ok(WatchEvent::Modified(job)) => {
                    let now = state(&job);
                    if now != JobState::Running {
                        return Ok(now);
                    }
                }
                Ok(WatchEvent::Deleted(_)) => {
                    return Ok(JobState::Failed {
                        reason: "Deleted".to_owned(),
                        message: "the Job was deleted before it finished".to_owned(),
                    })
                }
                Ok(WatchEvent::Bookmark(_)) => {}
                // 410 Gone and broken streams: read the Job again, watch anew.
                Ok(WatchEvent::Error(status)) => {
                    tracing::debug!(code = status.code, message = %status.message, "watch ended");
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "watch broke");
                    break;
                }
            }
        }
        // A watch that keeps breaking at once must not spin.
        tokio::time::sleep(REWATCH_PAUSE).await;
    }
}

/// Why a succeeded Job's summary could not be read. The flush itself
/// succeeded; only its figures are missing.
#[derive(Debug, thiserror::Error)]
pub enum Unread {
    #[error("its pods cannot be listed")]
    Pods(#[source] Error),
    #[error("its termination message is not a flush summary: {message}")]
    NotASummary {
        message: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("none of its {pods} pod(s) left a termination message")]
    NoMessage { pods: usize },
}

/// The flush summary the Job's pod wrote as its termination message.
pub async fn summary(client: &Client, namespace: &str, job: &str) -> Result<Summary, Unread> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let list = call(|| pods.list(&params))
        .await
        .map_err(|e| Unread::Pods(e.explain(&Call::new("list", "pods", namespace, Grant::Spawner))))?;
    let messages: Vec<&str> = list
        .items
        .iter()
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.as_deref())
        .collect();
    let mut first_failure = None;
    for message in &messages {
        match serde_json::from_str(message) {
            Ok(summary) => return Ok(summary),
            Err(source) => {
                first_failure.get_or_insert(Unread::NotASummary { message: (*message).to_owned(), source });
            }
        }
    }
    Err(first_failure.unwrap_or(Unread::NoMessage { pods: list.items.len() }))
}

/// Why the Job's pods could not be created, if the Job controller said so
/// (Pod Security admission refusing the pod is the usual cause).
pub async fn creation_failure(client: &Client, namespace: &str, job: &str) -> Option<String> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default()
        .fields(&format!("involvedObject.kind=Job,involvedObject.name={job},reason=FailedCreate"));
    let list = call(|| events.list(&params)).await.ok()?;
    list.items.iter().rev().find_map(|e| e.message.clone())
}

/// Builds the Job the order calls for from the template.
pub fn build(template: &CronJob, order: &FlushOrder) -> Result<Job, Error> {
    let template_name = template.metadata.name.as_deref().unwrap_or_default();
    let name = job_template::job_name(template_name, order);
    Ok(job_template::flush_job(template, &name, order)?)
}

/// Waits for one Job and turns its outcome into ours, logging the summary
/// its pod left and returning it when it could be read.
pub async fn finish(
    client: &Client,
    namespace: &str,
    name: &str,
    node: &str,
    deadline: Instant,
    timeout: std::time::Duration,
) -> Result<Option<Summary>, Error> {
    match outcome(client, namespace, name, deadline).await? {
        Some(JobState::Succeeded) => match summary(client, namespace, name).await {
            Ok(s) => {
                // The job and node ride on a span: the summary logs itself.
                let _job = tracing::info_span!("flush_job", job = name, node).entered();
                s.log_as("flush Job succeeded");
                Ok(Some(s))
            }
            Err(why) => {
                tracing::info!(
                    job = name,
                    node,
                    "flush Job succeeded; its summary cannot be read: {}",
                    report(&why)
                );
                Ok(None)
            }
        },
        Some(JobState::Failed { reason, message }) => Err(Error::JobFailed {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            reason: format!("{reason}: {message}"),
        }),
        Some(JobState::Running) | None => Err(Error::TimedOut {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            seconds: timeout.as_secs(),
            cause: creation_failure(client, namespace, name).await,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(
            serde_json::json!({"metadata": {"name": "j"}, "status": {"conditions": conditions}}),
        )
        .unwrap()
    }

    #[test]
    fn states_from_conditions() {
        assert_eq!(state(&job(serde_json::json!([]))), JobState::Running);
        assert_eq!(
            state(&job(serde_json::json!([{"type": "Complete", "status": "True"}]))),
            JobState::Succeeded
        );
        assert_eq!(
            state(&job(serde_json::json!([{"type": "SuccessCriteriaMet", "status": "True"}]))),
            JobState::Succeeded
        );
        assert_eq!(
            state(&job(serde_json::json!([{"type": "Complete", "status": "False"}]))),
            JobState::Running
        );
        let failed = state(&job(serde_json::json!([
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
        ])));
        assert_eq!(
            failed,
            JobState::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into()
            }
        );
    }
}
