//! The hostPort story across nodes: the statsd overlay on several real
//! nodes of one cluster, dual-stack, a client of each family streaming to
//! each node's address of that family from the nodes' LAN, and what each
//! client saw when the agent on its node was replaced.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::command::checked;
use crate::controlplane::ControlPlane;
use crate::error::{json, unexpected, Result};
use crate::image::Built;
use crate::node::{Ipv6Spec, Lan, NodeSpec, RealNode};
use crate::stream::Stream;
use crate::table;

use super::rollout::roll_to;
use super::{
    apply_overlay, events_in, json_lines, trigger_summary, Agent, EventSeen, Trigger, AGENT_NAMESPACE,
    CLIENT_PORT, NAMESPACE, PORT, SELECTOR, TICK, TRIGGER_CONTAINER,
};

/// Two dual-stack nodes: (name, IPv4, IPv6, IPv4 pods, IPv6 pods).
pub const TWO_NODES: [(&str, &str, &str, &str, &str); 2] = [
    ("node-a", "192.0.2.1", "2001:db8::1", "10.244.0.0/24", "fd00:10:244::/64"),
    ("node-b", "192.0.2.3", "2001:db8::3", "10.244.1.0/24", "fd00:10:244:1::/64"),
];
/// The clients' addresses on the nodes' LAN.
pub const LAN_CLIENT: (&str, &str) = ("192.0.2.2", "2001:db8::2");

/// Starts [`TWO_NODES`] on `lan` with the portmap plugin in `portmap`, and
/// loads `images` into each.
pub fn start_two_nodes(
    cp: &ControlPlane,
    lan: &Lan,
    portmap: &Path,
    images: &[Built],
) -> Result<Vec<RealNode>> {
    let mut nodes = Vec::new();
    for (name, address, address6, pods, pods6) in TWO_NODES {
        let ipv6 = Some(Ipv6Spec { address: address6, pod_cidr: pods6, client_address: LAN_CLIENT.1 });
        let spec = NodeSpec {
            name,
            address,
            pod_cidr: pods,
            client_address: LAN_CLIENT.0,
            portmap,
            ipv6,
            lan: Some(lan),
        };
        let node = RealNode::start(cp, &spec).map_err(|e| e.during(format!("start {name}")))?;
        for image in images {
            node.import(image)?;
        }
        nodes.push(node);
    }
    Ok(nodes)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    fn of(ip: &str) -> Family {
        if ip.contains(':') {
            Family::V6
        } else {
            Family::V4
        }
    }
}

/// One client on the LAN, sending to one node's address of one family.
pub struct Client {
    pub node: usize,
    pub family: Family,
    /// Its source port: how its entry is found in the node's table.
    pub port: u16,
    pub stream: Stream,
}

/// An agent pod as the API lists it, with its node and both its IPs.
#[derive(Debug, Clone)]
pub struct NodeAgent {
    pub name: String,
    pub node: String,
    pub ips: Vec<String>,
    phase: String,
    deleting: bool,
}

impl NodeAgent {
    pub fn ip(&self, family: Family) -> Option<&str> {
        self.ips.iter().map(String::as_str).find(|ip| Family::of(ip) == family)
    }

    fn running(&self) -> bool {
        self.phase == "Running" && !self.deleting && !self.ips.is_empty()
    }
}

/// One node's agent, replaced.
#[derive(Debug, Clone)]
pub struct Replaced {
    pub node: usize,
    pub old: NodeAgent,
    pub new: NodeAgent,
    /// When the replacement began, on the stream clock of each client (by
    /// the client's index).
    pub began: Vec<Duration>,
}

/// A flush Job, with where its pod ran as the API says.
#[derive(Debug, Clone)]
pub struct FlushJob {
    pub name: String,
    /// The node it was made for (its annotation).
    pub node: String,
    /// The sweep run (its pod's UID) that made it; empty for a trigger's.
    pub run: String,
    pub pod: String,
    /// `spec.nodeName` of its pod.
    pub ran_on: String,
    pub succeeded: bool,
}

pub struct Cluster<'a> {
    pub cp: &'a ControlPlane,
    pub nodes: Vec<&'a RealNode>,
    pub clients: Vec<Client>,
    shipped: Value,
    agent: Agent,
    sweeps: u32,
}

impl<'a> Cluster<'a> {
    /// Installs the overlay, starts a client of each family for each node
    /// and waits until every node's agent answers both.
    pub fn install(
        cp: &'a ControlPlane,
        nodes: &[&'a RealNode],
        lan: &Lan,
        root: &Path,
    ) -> Result<Cluster<'a>> {
        let shipped = apply_overlay(cp, nodes[0], root)?;
        let mut clients = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            for family in Family::BOTH {
                let port = CLIENT_PORT + u16::try_from(clients.len()).unwrap_or(0);
                let (source, target) = match family {
                    Family::V4 => (&lan.client_address, &node.address),
                    Family::V6 => (&lan.client_address6, node.address6.as_ref().unwrap_or(&node.address)),
                };
                let stream = Stream::start(&lan.ns, (source, port), (target, PORT), TICK);
                clients.push(Client { node: i, family, port, stream });
            }
        }
        let agent = Agent { trigger: Trigger::Container, host_network: false };
        let cluster = Cluster { cp, nodes: nodes.to_vec(), clients, shipped, agent, sweeps: 0 };
        for i in 0..cluster.nodes.len() {
            let pod = cluster.wait_for_agent(i, &[], Duration::from_secs(120))?;
            for client in cluster.clients.iter().filter(|c| c.node == i) {
                client
                    .stream
                    .wait_for(&pod.name, Duration::ZERO, Duration::from_secs(20))
                    .ok_or_else(|| unexpected(format!("{} never answered {:?}", pod.name, client.family)))?;
            }
        }
        Ok(cluster)
    }

    /// How the DaemonSet runs now.
    pub fn agent(&self) -> Agent {
        self.agent
    }

    /// The agent pods, as the API lists them.
    pub fn agents(&self) -> Vec<NodeAgent> {
        let out = self.cp.kubectl(&["-n", AGENT_NAMESPACE, "get", "pods", "-l", SELECTOR, "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| NodeAgent {
                name: text(&p["metadata"]["name"]),
                node: text(&p["spec"]["nodeName"]),
                ips: p["status"]["podIPs"].as_array().into_iter().flatten().map(|i| text(&i["ip"])).collect(),
                phase: text(&p["status"]["phase"]),
                deleting: !p["metadata"]["deletionTimestamp"].is_null(),
            })
            .collect()
    }

    /// Waits for a running agent on node `i` that is none of `old`.
    fn wait_for_agent(&self, i: usize, old: &[NodeAgent], timeout: Duration) -> Result<NodeAgent> {
        let deadline = Instant::now() + timeout;
        let node = &self.nodes[i].name;
        loop {
            let found = self
                .agents()
                .into_iter()
                .find(|p| &p.node == node && p.running() && old.iter().all(|o| o.name != p.name));
            if let Some(pod) = found {
                return Ok(pod);
            }
            if Instant::now() > deadline {
                return Err(unexpected(format!(
                    "no new agent on {node} within {timeout:?}: {:?}",
                    self.agents()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The running agent on node `i`.
    pub fn agent_on(&self, i: usize) -> Result<NodeAgent> {
        self.wait_for_agent(i, &[], Duration::from_secs(30))
    }

    fn began_now(&self) -> Vec<Duration> {
        self.clients.iter().map(|c| c.stream.now()).collect()
    }

    /// Rolls the DaemonSet to run as `agent` (a restart when it already
    /// does) and waits until every node runs a new agent.
    pub fn roll(&mut self, agent: Agent) -> Result<Vec<Replaced>> {
        let old: Vec<NodeAgent> = (0..self.nodes.len()).map(|i| self.agent_on(i)).collect::<Result<_>>()?;
        let began = self.began_now();
        roll_to(self.cp, &self.shipped, self.agent, agent)?;
        self.agent = agent;
        let mut replaced = Vec::new();
        for (i, old) in old.into_iter().enumerate() {
            let new = self.wait_for_agent(i, std::slice::from_ref(&old), Duration::from_secs(180))?;
            replaced.push(Replaced { node: i, old, new, began: began.clone() });
        }
        Ok(replaced)
    }

    /// Replaces the agent on node `i` alone: its pod deleted, as a rollout
    /// does node by node, and recreated by the DaemonSet controller.
    pub fn replace_on(&self, i: usize) -> Result<Replaced> {
        let old = self.agent_on(i)?;
        let began = self.began_now();
        checked(
            self.cp.kubectl(&["-n", AGENT_NAMESPACE, "delete", "pod", &old.name, "--wait=false"]),
            "delete the agent pod",
        )?;
        let new = self.wait_for_agent(i, std::slice::from_ref(&old), Duration::from_secs(120))?;
        Ok(Replaced { node: i, old, new, began })
    }

    /// The entry of a client's flow in its node's table.
    pub fn entry(&self, client: &Client) -> Option<table::Listed> {
        entry_in(&table::list(&self.nodes[client.node].ns), client.port)
    }

    /// The entries of the clients of node `i`, as (client port, id, reply source).
    pub fn entries_on(&self, i: usize) -> Vec<(u16, u32, String)> {
        let listed = table::list(&self.nodes[i].ns);
        self.clients
            .iter()
            .filter(|c| c.node == i)
            .filter_map(|c| entry_in(&listed, c.port).map(|l| (c.port, l.id, l.flow.reply_src.to_string())))
            .collect()
    }

    /// Waits until the trigger of `pod` has its Job's outcome (an Event and
    /// its summary logged); returns its log and the Events.
    pub fn trigger_outcome(&self, i: usize, pod: &str) -> (String, Vec<EventSeen>) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let log = self.nodes[i].container_log(AGENT_NAMESPACE, pod, TRIGGER_CONTAINER);
            let events = events_in(self.cp, AGENT_NAMESPACE, pod);
            let flushed = events.iter().any(|(_, r)| r == "Flushed") && trigger_summary(&log).is_some();
            let failed = events.iter().any(|(_, r)| r == "FlushFailed" || r == "FlushTimedOut");
            if flushed || failed || Instant::now() > deadline {
                return (log, events);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every flush Job, with the node its pod ran on.
    pub fn flush_jobs(&self) -> Result<Vec<FlushJob>> {
        let get = |kind: &str| -> Result<Value> {
            let out = checked(self.cp.kubectl(&["-n", NAMESPACE, "get", kind, "-o", "json"]), "list")?;
            serde_json::from_slice(&out.stdout).map_err(json("a list"))
        };
        let (jobs, pods) = (get("jobs")?, get("pods")?);
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let items = |v: &Value| v["items"].as_array().cloned().unwrap_or_default();
        let pods = items(&pods);
        Ok(items(&jobs)
            .iter()
            .filter(|j| !j["metadata"]["annotations"]["flush-conntrack/node"].is_null())
            .map(|j| {
                let name = text(&j["metadata"]["name"]);
                let pod = pods
                    .iter()
                    .find(|p| p["metadata"]["labels"]["batch.kubernetes.io/job-name"] == name.as_str());
                FlushJob {
                    node: text(&j["metadata"]["annotations"]["flush-conntrack/node"]),
                    run: text(&j["metadata"]["annotations"]["flush-conntrack/run"]),
                    pod: pod.map(|p| text(&p["metadata"]["name"])).unwrap_or_default(),
                    ran_on: pod.map(|p| text(&p["spec"]["nodeName"])).unwrap_or_default(),
                    succeeded: j["status"]["succeeded"].as_u64() >= Some(1),
                    name,
                }
            })
            .collect())
    }

    /// The names of the nodes whose kubelet holds the log of `job`'s pod.
    pub fn nodes_with_log_of(&self, job: &FlushJob) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| !n.container_log(NAMESPACE, &job.pod, "flush").is_empty())
            .map(|n| n.name.clone())
            .collect()
    }

    /// The flush summary `job`'s pod logged, on the node that ran it.
    pub fn summary_of(&self, job: &FlushJob) -> Option<Value> {
        let node = self.nodes.iter().find(|n| n.name == job.ran_on)?;
        let log = node.container_log(NAMESPACE, &job.pod, "flush");
        json_lines(&log).into_iter().find(|v| !v["deleted"].is_null())
    }
}

fn entry_in(listed: &[table::Listed], port: u16) -> Option<table::Listed> {
    listed.iter().find(|l| l.flow.sport == port && l.flow.dport == PORT).cloned()
}

/// A sweep run by hand from the scheduled sweep's template, waited for.
pub struct SweepRun {
    pub pod: String,
    pub uid: String,
    pub log: String,
    pub events: Vec<EventSeen>,
    /// When it was created, on each client's stream clock.
    pub began: Vec<Duration>,
}

impl Cluster<'_> {
    /// The README's sweep of the changed nodes, waited for.
    pub fn sweep_once(&mut self) -> Result<SweepRun> {
        self.sweeps += 1;
        let name = format!("sweep-by-hand-{}", self.sweeps);
        let began = self.began_now();
        super::by_hand::create(self.cp, super::Visits::Changed, &name)?;
        let kubectl = |args: &[&str], what: &str| checked(self.cp.kubectl(args), what);
        let job = format!("job/{name}");
        kubectl(&["-n", NAMESPACE, "wait", "--for=condition=complete", &job, "--timeout=120s"], "the sweep")?;
        let selector = format!("batch.kubernetes.io/job-name={name}");
        let out = kubectl(&["-n", NAMESPACE, "get", "pods", "-l", &selector, "-o", "json"], "its pod")?;
        let pods: Value = serde_json::from_slice(&out.stdout).map_err(json("the sweep's pod"))?;
        let item = &pods["items"][0];
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        let (pod, uid, on) = (
            text(&item["metadata"]["name"]),
            text(&item["metadata"]["uid"]),
            text(&item["spec"]["nodeName"]),
        );
        let log = self.nodes.iter().find(|n| n.name == on).map(|n| n.container_log(NAMESPACE, &pod, "sweep"));
        let events = events_in(self.cp, NAMESPACE, &pod);
        Ok(SweepRun { log: log.unwrap_or_default(), events, pod, uid, began })
    }

    /// Records a success of the sweep CronJob `ahead` seconds from now: the
    /// sweep looks 10 minutes back from its last success, so 602 leaves out
    /// what changes from two seconds on.
    pub fn record_sweep_success(&self, ahead: i64) -> Result<()> {
        let last = k8s_openapi::jiff::Timestamp::now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(ahead))
            .map_err(|e| unexpected(e.to_string()))?;
        let time = last.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let patch = serde_json::json!({"status": {"lastSuccessfulTime": time}}).to_string();
        let args = [
            "-n",
            NAMESPACE,
            "patch",
            "cronjob",
            "flush-conntrack-sweep",
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ];
        checked(self.cp.kubectl(&args), "record a sweep's success").map(drop)
    }
}

/// The sweep's total line.
pub fn sweep_done(log: &str) -> Option<Value> {
    json_lines(log).into_iter().find(|v| v["message"] == "sweep done")
}

/// Every change of the clients' entries on each node, sampled from a thread
/// of its own while a rollout runs: which entry (its id) each client's flow
/// had, and where it sent replies from, in order.
pub struct EntryWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Vec<(u32, String)>>>,
}

impl EntryWatch {
    /// Watches the entries of every client of the cluster.
    pub fn start(cluster: &Cluster) -> EntryWatch {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let watched: Vec<(String, u16)> =
            cluster.clients.iter().map(|c| (cluster.nodes[c.node].ns.name.clone(), c.port)).collect();
        let thread = std::thread::spawn(move || {
            let mut seen: Vec<Vec<(u32, String)>> = vec![Vec::new(); watched.len()];
            while !flag.load(Ordering::Relaxed) {
                sample(&watched, &mut seen);
                std::thread::sleep(Duration::from_millis(20));
            }
            sample(&watched, &mut seen);
            seen
        });
        EntryWatch { stop, thread }
    }

    /// The entries each client's flow had, by the client's index.
    pub fn finish(self) -> Vec<Vec<(u32, String)>> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn sample(watched: &[(String, u16)], seen: &mut [Vec<(u32, String)>]) {
    let mut tables: Vec<(String, Vec<table::Listed>)> = Vec::new();
    for ((ns, port), history) in watched.iter().zip(seen.iter_mut()) {
        if !tables.iter().any(|(n, _)| n == ns) {
            tables.push((ns.clone(), list_in(ns)));
        }
        let listed = tables.iter().find(|(n, _)| n == ns).map(|(_, l)| l.as_slice()).unwrap_or_default();
        if let Some(entry) = entry_in(listed, *port) {
            let now = (entry.id, entry.flow.reply_src.to_string());
            if history.last() != Some(&now) {
                history.push(now);
            }
        }
    }
}

/// The namespace's entries, read without `Netns` (this thread has only names).
fn list_in(ns: &str) -> Vec<table::Listed> {
    let mut all = Vec::new();
    for family in ["ipv4", "ipv6"] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "conntrack", "-L", "-f", family, "-o", "extended,id"])
            .output();
        let Ok(out) = out else { continue };
        all.extend(String::from_utf8_lossy(&out.stdout).lines().filter_map(table::parse_line));
    }
    all
}
