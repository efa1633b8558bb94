//! The fake API server's Job controller and kubelet: what becomes of a
//! created Job, as [`Controller`] says.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::{lock, Controller, State};

fn condition(kind: &str, reason: &str, message: &str) -> JobCondition {
    JobCondition {
        type_: kind.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        ..JobCondition::default()
    }
}

/// What the Job controller and a kubelet would do with the Job.
pub(super) fn play(
    state: &Arc<Mutex<State>>,
    events: &broadcast::Sender<(u64, String, Value)>,
    ns: &str,
    name: &str,
    controller: Controller,
) {
    let mut s = lock(state);
    let conditions = match controller {
        Controller::Idle => return,
        Controller::Complete(summary) => {
            let pod = job_pod(&mut s, ns, name, summary);
            s.pods.push(pod);
            vec![
                condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
                condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
            ]
        }
    };
    finish_job(&mut s, events, ns, name, conditions);
}

/// The Job's pod, succeeded, with the flush's summary as its termination
/// message.
fn job_pod(s: &mut State, ns: &str, name: &str, summary: String) -> Pod {
    let metadata = ObjectMeta {
        name: Some(format!("{name}-x7k2q")),
        namespace: Some(ns.to_owned()),
        labels: Some(BTreeMap::from([
            ("batch.kubernetes.io/job-name".to_owned(), name.to_owned()),
            ("job-name".to_owned(), name.to_owned()),
        ])),
        resource_version: Some(s.bump()),
        ..ObjectMeta::default()
    };
    let terminated = ContainerStatus {
        name: "flush".to_owned(),
        image: "flush-conntrack".to_owned(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        state: Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 0,
                message: Some(summary),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }),
        ..ContainerStatus::default()
    };
    let status = PodStatus {
        phase: Some("Succeeded".to_owned()),
        container_statuses: Some(vec![terminated]),
        ..PodStatus::default()
    };
    Pod { metadata, spec: None, status: Some(status) }
}

/// Gives the Job its final `conditions` and tells its watchers.
fn finish_job(
    s: &mut State,
    events: &broadcast::Sender<(u64, String, Value)>,
    ns: &str,
    name: &str,
    conditions: Vec<JobCondition>,
) {
    let version = s.bump();
    let key = (ns.to_owned(), name.to_owned());
    let Some(job) = s.jobs.get_mut(&key) else { return };
    job.metadata.resource_version = Some(version.clone());
    job.status = Some(JobStatus { conditions: Some(conditions), ..JobStatus::default() });
    let event = json!({"type": "MODIFIED", "object": job});
    let v: u64 = version.parse().unwrap_or(0);
    s.history.push((v, ns.to_owned(), event.clone()));
    let _ = events.send((v, ns.to_owned(), event));
}
