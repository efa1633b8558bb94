//! What a triggered flush did, told where Kubernetes users look: Events
//! (`events.k8s.io/v1`) on the pod that asked for it, shown by
//! `kubectl describe pod` and `kubectl get events`. Best effort: an Event
//! that cannot be written is logged, and the flush is not affected.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};

use super::api::{call, Call};
use crate::error::Grant;
use crate::report::Summary;

pub const REPORTING_CONTROLLER: &str = "flush-conntrack";

/// The pod an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

pub fn job_created(job: &str, namespace: &str, node: &str) -> Note {
    Note {
        warning: false,
        reason: "FlushJobCreated",
        note: format!("created flush Job {namespace}/{job} for the stale conntrack entries on node {node}"),
    }
}

/// Someone created a Job under the name this flush is known by, and it is
/// not this flush: the flush runs under another name, and this says so.
pub fn name_taken(taken: &str, job: &str, namespace: &str, node: &str) -> Note {
    Note {
        warning: true,
        reason: "FlushJobNameTaken",
        note: format!(
            "a Job named {namespace}/{taken} exists and is not this flush of node {node} (another node, \
             target, DRY_RUN or image): the flush runs as {namespace}/{job} instead; find out who created \
             {taken}"
        ),
    }
}

pub fn flushed(summary: &Summary, job: &str, namespace: &str, node: &str) -> Note {
    if summary.found_nothing() {
        return Note {
            warning: false,
            reason: "Flushed",
            note: format!(
                "found no conntrack entry at all for its ports on node {node}: nothing was stale and nothing \
                 was repaired; if clients are sending, their flows are not in the node's conntrack table \
                 (a BPF dataplane keeps its own) (flush Job {namespace}/{job})"
            ),
        };
    }
    let verb = if summary.dry_run { "would delete" } else { "deleted" };
    Note {
        warning: false,
        reason: "Flushed",
        // Every figure of the summary: the operator reads this, not the
        // Job's termination message.
        note: format!(
            "{verb} {} stale conntrack entries on node {node}, kept {} that reach a live pod, {} failed; \
             {} already gone, {} by the kernel's filtered flush, {} matched of {} scanned \
             (flush Job {namespace}/{job})",
            if summary.dry_run { summary.matched } else { summary.deleted },
            summary.kept,
            summary.failed,
            summary.already_gone,
            summary.kernel_flushed,
            summary.matched,
            summary.scanned,
        ),
    }
}

/// One node of a sweep, on the sweep's pod.
pub fn node_flushed(summary: Option<&Summary>, node: &str) -> Note {
    let note = match summary {
        Some(s) if s.found_nothing() => format!(
            "node {node}: no conntrack entry at all for the agents' ports: nothing was stale and nothing was \
             repaired"
        ),
        Some(s) => format!(
            "node {node}: deleted {} stale conntrack entries, kept {}, {} failed",
            s.deleted, s.kept, s.failed
        ),
        None => format!("node {node}: its flush Job succeeded; its summary could not be read"),
    };
    Note { warning: false, reason: "Flushed", note }
}

pub fn node_failed(node: &str, error: &str) -> Note {
    Note { warning: true, reason: "FlushFailed", note: format!("node {node}: {error}") }
}

/// The sweep's total: nodes with agents, those skipped as unchanged since
/// the last success, those flushed and those whose flush failed.
pub fn sweep_done(considered: usize, unchanged: usize, failed: usize, deleted: u64, kept: u64) -> Note {
    let flushed = considered - unchanged - failed;
    Note {
        warning: failed > 0,
        reason: "SweepDone",
        note: format!(
            "{considered} nodes with agents: {unchanged} unchanged since the last sweep, {flushed} flushed, \
             {failed} failed; {deleted} stale entries deleted, {kept} kept"
        ),
    }
}

pub fn failed(reason: &'static str, error: &str) -> Note {
    Note { warning: true, reason, note: error.to_owned() }
}

/// The Event, as the API takes it. Pure.
pub fn event(regarding: &Regarding, note: &Note, instance: &str, now: MicroTime) -> Event {
    let stamp = now.0.as_nanosecond();
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{:x}", regarding.name, stamp)),
            namespace: Some(regarding.namespace.clone()),
            ..ObjectMeta::default()
        },
        event_time: Some(now),
        action: Some("Flush".to_owned()),
        reason: Some(note.reason.to_owned()),
        type_: Some(if note.warning { "Warning" } else { "Normal" }.to_owned()),
        // The API refuses a note over 1 kB.
        note: Some(note.note.chars().take(1000).collect()),
        reporting_controller: Some(REPORTING_CONTROLLER.to_owned()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Pod".to_owned()),
            name: Some(regarding.name.clone()),
            namespace: Some(regarding.namespace.clone()),
            uid: regarding.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Event::default()
    }
}

/// Writes the Event; a failure is logged with what to grant, never returned.
pub async fn publish(client: &Client, regarding: &Regarding, note: &Note, instance: &str) {
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    let event = event(regarding, note, instance, now);
    let events: Api<Event> = Api::namespaced(client.clone(), &regarding.namespace);
    let params = PostParams::default();
    match call(|| events.create(&params, &event)).await {
        Ok(_) => tracing::debug!(reason = note.reason, pod = %regarding.name, "event written"),
        Err(e) => {
            let e = e.explain(&Call::new("create", "events", &regarding.namespace, Grant::Events));
            tracing::warn!(
                reason = note.reason,
                "could not write the Event on the pod (the flush is not affected): {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_that_says_nothing_was_there() {
        let nothing = Summary { scanned: 0, ..Summary::default() };
        let note = flushed(&nothing, "flush-node-a-1", "flush-conntrack", "node-a");
        assert!(!note.warning);
        assert!(
            note.note.starts_with("found no conntrack entry at all for its ports on node node-a"),
            "{}",
            note.note
        );
        assert!(
            note.note.contains("nothing was repaired") && !note.note.contains("deleted 0"),
            "{}",
            note.note
        );
        let note = node_flushed(Some(&nothing), "node-b");
        assert!(note.note.starts_with("node node-b: no conntrack entry at all"), "{}", note.note);
        let kept = Summary { scanned: 1, kept: 1, ..Summary::default() };
        assert!(flushed(&kept, "j", "ns", "n").note.starts_with("deleted 0 stale conntrack entries"));
    }

    #[test]
    fn an_event_on_the_trigger_pod() {
        let pod =
            Regarding { namespace: "monitoring".into(), name: "statsd-x".into(), uid: Some("u1".into()) };
        let summary = Summary { deleted: 2, kept: 1, scanned: 4, matched: 2, ..Summary::default() };
        let note = flushed(&summary, "flush-node-a-1", "flush-conntrack", "node-a");
        let now = MicroTime("2026-11-26T17:00:00.123456Z".parse().unwrap());
        let e = serde_json::to_value(event(&pod, &note, "node-a", now.clone())).unwrap();
        assert_eq!(e["type"], "Normal");
        assert_eq!(e["reason"], "Flushed");
        // The API refuses a new Event without its action or reporting instance.
        assert_eq!((&e["action"], &e["reportingInstance"]), (&"Flush".into(), &"node-a".into()));
        assert_eq!(e["reportingController"], "flush-conntrack");
        assert_eq!(
            e["regarding"],
            serde_json::json!({"apiVersion": "v1", "kind": "Pod", "name": "statsd-x",
                                                      "namespace": "monitoring", "uid": "u1"})
        );
        assert_eq!(e["metadata"]["namespace"], "monitoring");
        let text = e["note"].as_str().unwrap();
        assert!(text.starts_with("deleted 2 stale conntrack entries on node node-a, kept 1"), "{text}");
        assert_eq!(e["eventTime"], "2026-11-26T17:00:00.123456Z");
        // The API refuses an Event without a name; two Events on one pod
        // must not collide.
        let name = e["metadata"]["name"].as_str().unwrap_or_default();
        assert!(name.starts_with("statsd-x.") && name.len() > "statsd-x.".len(), "{name}");
        let later = MicroTime("2026-11-26T17:00:00.123457Z".parse().unwrap());
        assert_ne!(event(&pod, &note, "node-a", later).metadata.name.as_deref(), Some(name));

        let dry = Summary { dry_run: true, matched: 5, kept: 1, scanned: 9, ..Summary::default() };
        let note = flushed(&dry, "flush-node-a-1", "flush-conntrack", "node-a").note;
        assert!(note.starts_with("would delete 5 stale conntrack entries on node node-a, kept 1"), "{note}");

        let warning = event(&pod, &failed("FlushFailed", &"x".repeat(2000)), "node-a", now);
        assert_eq!(warning.type_.as_deref(), Some("Warning"));
        assert_eq!(warning.note.map(|n| n.len()), Some(1000));
    }

    /// The sweep's total, its arithmetic and its type: a Warning only when a
    /// node failed.
    #[test]
    fn sweep_done_counts_the_flushed_nodes() {
        let done = sweep_done(6, 2, 1, 40, 3);
        assert_eq!(
            done.note,
            "6 nodes with agents: 2 unchanged since the last sweep, 3 flushed, 1 failed; 40 stale entries \
             deleted, 3 kept"
        );
        assert!(done.warning);
        let clean = sweep_done(6, 2, 0, 40, 3);
        assert!(clean.note.contains("4 flushed, 0 failed"), "{}", clean.note);
        assert!(!clean.warning, "nothing failed: a Normal Event");
    }
}
