//! How the agent's DaemonSet runs: with which flush-conntrack trigger, on
//! the pod network or the host's, and the pod spec that says so.

use serde_json::{json, Value};

/// The flush-conntrack trigger of the agent's pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The agent as it ran before the overlay (statsd.yaml): no trigger,
    /// its service account's token mounted as Kubernetes does by default.
    None,
    /// The agent with no trigger and no token at all
    /// (`automountServiceAccountToken: false`, no volume).
    NoneWithoutToken,
    /// As the overlay ships it: an ordinary container after the agent,
    /// which stays once it has reported (`STAY_RUNNING`).
    Container,
    /// The same container as a native sidecar (an init container with
    /// `restartPolicy: Always`), as the overlay shipped it before.
    NativeSidecar,
    /// A plain init container that waits for the flush Job's result.
    Waiting,
}

impl Trigger {
    /// Whether the pod runs a trigger at all.
    pub fn present(self) -> bool {
        !matches!(self, Trigger::None | Trigger::NoneWithoutToken)
    }
}

/// The trigger's container in the overlay.
pub const TRIGGER_CONTAINER: &str = "flush-conntrack";
/// The projected volume that holds the trigger's token.
const TRIGGER_TOKEN_VOLUME: &str = "trigger-token";

/// How the agent's DaemonSet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agent {
    pub trigger: Trigger,
    /// `hostNetwork: true` (the switch of containernetworking/plugins#1190).
    pub host_network: bool,
}

/// The agent's pod spec for `agent`, made from the one the overlay ships
/// (the trigger an ordinary container after the agent). Pure.
pub fn pod_spec(shipped: &Value, agent: Agent) -> Value {
    let mut spec = shipped.clone();
    let mut trigger = Value::Null;
    if let Some(containers) = spec["containers"].as_array_mut() {
        if let Some(i) = containers.iter().position(|c| c["name"] == TRIGGER_CONTAINER) {
            trigger = containers.remove(i);
        }
    }
    let Some(object) = spec.as_object_mut() else { return spec };
    object.remove("initContainers");
    if !agent.trigger.present() {
        if let Some(volumes) = object.get_mut("volumes").and_then(Value::as_array_mut) {
            volumes.retain(|v| v["name"] != TRIGGER_TOKEN_VOLUME);
        }
        if volumes_empty(object.get("volumes")) {
            object.remove("volumes");
        }
    }
    match agent.trigger {
        Trigger::None => {
            object.remove("automountServiceAccountToken");
        }
        Trigger::NoneWithoutToken => {}
        Trigger::Container => {
            if let Some(containers) = object.get_mut("containers").and_then(Value::as_array_mut) {
                containers.push(trigger);
            }
        }
        Trigger::NativeSidecar => {
            trigger["restartPolicy"] = json!("Always");
            object.insert("initContainers".to_owned(), json!([trigger]));
        }
        Trigger::Waiting => {
            if let Some(env) = trigger["env"].as_array_mut() {
                env.retain(|e| e["name"] != "STAY_RUNNING");
            }
            object.insert("initContainers".to_owned(), json!([trigger]));
        }
    }
    let dns = if agent.host_network { "ClusterFirstWithHostNet" } else { "ClusterFirst" };
    object.insert("hostNetwork".to_owned(), json!(agent.host_network));
    object.insert("dnsPolicy".to_owned(), json!(dns));
    spec
}

fn volumes_empty(volumes: Option<&Value>) -> bool {
    volumes.and_then(Value::as_array).is_some_and(Vec::is_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Value {
        json!({
            "containers": [{"name": "statsd"}, {"name": "flush-conntrack", "env": [
                {"name": "MODE", "value": "spawn"}, {"name": "STAY_RUNNING", "value": "true"}]}],
            "volumes": [{"name": "trigger-token"}, {"name": "data"}],
            "automountServiceAccountToken": false
        })
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array().into_iter().flatten().filter_map(|c| c["name"].as_str()).collect()
    }

    #[test]
    fn each_trigger_from_the_shipped_spec() {
        let pod = |trigger| pod_spec(&shipped(), Agent { trigger, host_network: false });
        let shipped_again = pod(Trigger::Container);
        assert_eq!(names(&shipped_again["containers"]), ["statsd", "flush-conntrack"]);
        assert_eq!(shipped_again["containers"], shipped()["containers"]);
        assert!(shipped_again["initContainers"].is_null());

        let alone = pod(Trigger::None);
        assert_eq!(names(&alone["containers"]), ["statsd"]);
        assert_eq!(names(&alone["volumes"]), ["data"], "the token volume goes with the trigger");
        assert!(alone["automountServiceAccountToken"].is_null(), "the default token, as before the overlay");
        let tokenless = pod(Trigger::NoneWithoutToken);
        assert_eq!(names(&tokenless["containers"]), ["statsd"]);
        assert_eq!(tokenless["automountServiceAccountToken"], false);

        let sidecar = pod(Trigger::NativeSidecar);
        assert_eq!(names(&sidecar["containers"]), ["statsd"]);
        assert_eq!(names(&sidecar["initContainers"]), ["flush-conntrack"]);
        assert_eq!(sidecar["initContainers"][0]["restartPolicy"], "Always");

        let waiting = pod(Trigger::Waiting);
        assert!(waiting["initContainers"][0]["restartPolicy"].is_null());
        assert_eq!(names(&waiting["initContainers"][0]["env"]), ["MODE"], "no STAY_RUNNING");

        let host = pod_spec(&shipped(), Agent { trigger: Trigger::None, host_network: true });
        assert_eq!(
            (host["hostNetwork"].clone(), host["dnsPolicy"].clone()),
            (json!(true), json!("ClusterFirstWithHostNet"))
        );
        assert_eq!(alone["hostNetwork"], false);
    }
}
