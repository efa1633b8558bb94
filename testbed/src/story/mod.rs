//! The hostPort story on a real node, as users live it: the statsd overlay
//! installed with kubectl, a client outside the node streaming datagrams to
//! the hostPort, the DaemonSet rolled, and what the client saw: when the old
//! pod last answered, when the new one first did, and whether the node's
//! conntrack entry kept pointing at the dead pod meanwhile.

mod agent;
pub mod by_hand;
mod install;
pub mod nodes;
mod rollout;
mod tour;

pub use agent::{pod_spec, Agent, Trigger, TRIGGER_CONTAINER};
pub use by_hand::Visits;
pub use install::{images, install_images_entry, portmap_dir, rendered_overlay, PUSHED_IMAGE, REGISTRY};
pub use rollout::{json_lines, listening_at, trigger_summary, Rollout};
pub use tour::{tour, Case, Expect, Seen, Sweep, TOUR};

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::command::checked;
use crate::controlplane::ControlPlane;
use crate::error::{json, unexpected, Error, Result};
use crate::node::RealNode;
use crate::stream::Stream;
use crate::table;

pub const AGENT_NAMESPACE: &str = "monitoring";
pub const AGENT_IMAGE: &str = "localhost/fct-udp-echo:test";
/// The agent's container in the overlay.
pub const AGENT_CONTAINER: &str = "statsd";
/// The shipped image's name, as the manifests give it.
pub const SHIPPED_IMAGE: &str = "ghcr.io/flush-conntrack/flush-conntrack:0.1.0";
pub const NAMESPACE: &str = "flush-conntrack";
const SELECTOR: &str = "app.kubernetes.io/name=statsd";
pub const PORT: u16 = 8125;
pub const CLIENT_PORT: u16 = 40000;
/// The source port of the host-network client that sends to 127.0.0.1.
pub const LOOPBACK_CLIENT_PORT: u16 = 40001;
/// One datagram every 10 ms, as a busy statsd client sends.
pub const TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct AgentPod {
    pub name: String,
    pub ip: String,
    /// What the agent answers with: the pod's hostname.
    pub responder: String,
}

/// An agent pod as the API lists it.
#[derive(Debug, Clone)]
struct Listed {
    name: String,
    /// Empty until the pod has one.
    ip: String,
    phase: String,
    /// Marked for deletion.
    deleting: bool,
    host_network: bool,
}

impl Listed {
    /// Running, not on its way out, and reachable.
    fn running(&self) -> bool {
        self.phase == "Running" && !self.deleting && !self.ip.is_empty()
    }
}

/// An Event as (type, reason).
pub type EventSeen = (String, String);

pub struct Story<'a> {
    pub cp: &'a ControlPlane,
    pub node: &'a RealNode,
    /// A client outside the node, sending to the node's address.
    pub stream: Stream,
    /// A host-network client on the node, sending to 127.0.0.1, which
    /// portmap translates too.
    pub loopback: Stream,
    /// The DaemonSet's pod spec as the overlay ships it.
    shipped: Value,
    agent: Agent,
    hostname: String,
    sweeps: u32,
}

impl<'a> Story<'a> {
    /// Installs the overlay, waits for the agent and starts the client.
    pub fn install(cp: &'a ControlPlane, node: &'a RealNode, root: &Path) -> Result<Story<'a>> {
        let shipped = apply_overlay(cp, node, root)?;
        let hostname =
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
        let stream =
            Stream::start(&node.client, (&node.client_address, CLIENT_PORT), (&node.address, PORT), TICK);
        let loopback =
            Stream::start(&node.ns, ("127.0.0.1", LOOPBACK_CLIENT_PORT), ("127.0.0.1", PORT), TICK);
        let story = Story {
            cp,
            node,
            stream,
            loopback,
            shipped,
            agent: Agent { trigger: Trigger::Container, host_network: false },
            hostname,
            sweeps: 0,
        };
        let pod = story.wait_for_pod(None, Duration::from_secs(120))?;
        for stream in [&story.stream, &story.loopback] {
            stream
                .wait_for(&pod.responder, Duration::ZERO, Duration::from_secs(20))
                .ok_or_else(|| unexpected(format!("the agent {} never answered", pod.name)))?;
        }
        Ok(story)
    }

    /// The agent pods, as the API lists them.
    fn pods(&self) -> Vec<Listed> {
        let out = self.cp.kubectl(&["-n", AGENT_NAMESPACE, "get", "pods", "-l", SELECTOR, "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| Listed {
                name: p["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                ip: p["status"]["podIP"].as_str().unwrap_or_default().to_owned(),
                phase: p["status"]["phase"].as_str().unwrap_or_default().to_owned(),
                deleting: !p["metadata"]["deletionTimestamp"].is_null(),
                host_network: p["spec"]["hostNetwork"].as_bool().unwrap_or(false),
            })
            .collect()
    }

    fn agent_pod(&self, pod: &Listed) -> AgentPod {
        let responder = if pod.host_network { self.hostname.clone() } else { pod.name.clone() };
        AgentPod { name: pod.name.clone(), ip: pod.ip.clone(), responder }
    }

    /// Waits for a Running agent pod other than `old`.
    fn wait_for_pod(&self, old: Option<&str>, timeout: Duration) -> Result<AgentPod> {
        let deadline = Instant::now() + timeout;
        loop {
            for pod in self.pods() {
                if Some(pod.name.as_str()) != old && pod.running() {
                    return Ok(self.agent_pod(&pod));
                }
            }
            if Instant::now() > deadline {
                return Err(unexpected(format!(
                    "no new Running agent pod within {timeout:?}: {:?}",
                    self.pods()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// How the DaemonSet runs now.
    pub fn agent(&self) -> Agent {
        self.agent
    }

    /// The `events.k8s.io` Events regarding this agent pod, as (type, reason).
    pub fn events_on(&self, pod: &str) -> Vec<EventSeen> {
        self.events_in(AGENT_NAMESPACE, pod)
    }

    /// What the namespace's Jobs and pods were doing, and what the sweep
    /// logged: said with a sweep that did not complete, so that a failure
    /// shows where it stood.
    fn sweep_state(&self) -> String {
        let text = |args: &[&str]| String::from_utf8_lossy(&self.cp.kubectl(args).stdout).into_owned();
        let objects = text(&["-n", NAMESPACE, "get", "jobs,pods", "-o", "wide"]);
        let job = format!("sweep-by-hand-{}", self.sweeps);
        let log = text(&["-n", NAMESPACE, "logs", &format!("job/{job}"), "--tail=40"]);
        let nodes = text(&["get", "nodes", "-o", "custom-columns=NAME:.metadata.name,TAINTS:.spec.taints,READY:.status.conditions[?(@.type==\"Ready\")].status"]);
        let pod = text(&[
            "-n",
            NAMESPACE,
            "describe",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={job}"),
        ]);
        let daemons = self.cp.daemons(40);
        format!(
            "the Jobs and pods:\n{objects}\nthe nodes:\n{nodes}\nthe sweep's pod:\n{pod}\nthe sweep's log:\n{log}\n\
             the control plane:\n{daemons}"
        )
    }

    /// flush-conntrack's Events regarding a pod, as (type, reason), in order.
    pub fn events_in(&self, namespace: &str, pod: &str) -> Vec<EventSeen> {
        events_in(self.cp, namespace, pod)
    }

    /// Where the node's entry for the client's flow sends replies from.
    pub fn client_entry_reply_source(&self) -> Option<String> {
        table::list(&self.node.ns)
            .into_iter()
            .find(|l| l.flow.sport == CLIENT_PORT && l.flow.dport == PORT)
            .map(|l| l.flow.reply_src.to_string())
    }

    /// A sweep by hand as the README gives it, waited for; returns when
    /// (stream time) it was created, its log and the Events on its pod.
    pub fn sweep_once(&mut self, visits: Visits) -> Result<(Duration, String, Vec<EventSeen>)> {
        self.sweeps += 1;
        let name = format!("sweep-by-hand-{}", self.sweeps);
        let started = self.stream.now();
        by_hand::create(self.cp, visits, &name)?;
        let waited = self.cp.kubectl(&[
            "-n",
            NAMESPACE,
            "wait",
            "--for=condition=complete",
            &format!("job/{name}"),
            "--timeout=90s",
        ]);
        checked(waited, "the sweep Job")
            .map_err(|e| Error::In { step: self.sweep_state(), source: Box::new(e) })?;
        let pods = self.cp.kubectl(&[
            "-n",
            NAMESPACE,
            "get",
            "pods",
            "-l",
            &format!("batch.kubernetes.io/job-name={name}"),
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]);
        let pod = String::from_utf8_lossy(&pods.stdout).to_string();
        Ok((started, self.node.container_log(NAMESPACE, &pod, "sweep"), self.events_in(NAMESPACE, &pod)))
    }
}

/// flush-conntrack's Events regarding a pod, as (type, reason), in order.
pub fn events_in(cp: &ControlPlane, namespace: &str, pod: &str) -> Vec<EventSeen> {
    let out = cp.kubectl(&["-n", namespace, "get", "events.events.k8s.io", "-o", "json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut events: Vec<(String, String, String)> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["regarding"]["name"] == pod && e["reportingController"] == "flush-conntrack")
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (text("eventTime"), text("type"), text("reason"))
        })
        .collect();
    events.sort();
    events.into_iter().map(|(_, t, r)| (t, r)).collect()
}

/// Applies the statsd overlay as a user would, the image pinned by the
/// digest `node` holds, and suspends the scheduled sweep: it would repair,
/// at its own time, what a case must see stale; the stories run their
/// sweeps by hand. Returns the DaemonSet's pod spec as shipped.
pub fn apply_overlay(cp: &ControlPlane, node: &RealNode, root: &Path) -> Result<Value> {
    // As a user reads the digest of what they pushed from the registry.
    let digest = node.digest_of(PUSHED_IMAGE)?;
    let yaml = rendered_overlay(root, &digest)?;
    cp.apply(&yaml).map_err(|e| e.during("kubectl apply the statsd overlay"))?;
    checked(
        cp.kubectl(&[
            "-n",
            NAMESPACE,
            "patch",
            "cronjob",
            "flush-conntrack-sweep",
            "-p",
            r#"{"spec":{"suspend":true}}"#,
        ]),
        "suspend the scheduled sweep",
    )?;
    let ds = checked(
        cp.kubectl(&["-n", AGENT_NAMESPACE, "get", "daemonset", "statsd", "-o", "json"]),
        "get the DaemonSet",
    )?;
    let ds: Value = serde_json::from_slice(&ds.stdout).map_err(json("the DaemonSet"))?;
    Ok(ds["spec"]["template"]["spec"].clone())
}
