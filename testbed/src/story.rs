//! The hostPort story on a real node, as users live it: the statsd overlay
//! installed with kubectl, a client outside the node streaming datagrams to
//! the hostPort, the DaemonSet rolled, and what the client saw: when the old
//! pod last answered, when the new one first did, and whether the node's
//! conntrack entry kept pointing at the dead pod meanwhile.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::controlplane::ControlPlane;
use crate::node::RealNode;
use crate::stream::Stream;
use crate::table;

pub const AGENT_NAMESPACE: &str = "monitoring";
pub const AGENT_IMAGE: &str = "localhost/fct-udp-echo:test";
pub const NAMESPACE: &str = "flush-conntrack";
const SELECTOR: &str = "app.kubernetes.io/name=statsd";
pub const PORT: u16 = 8125;
pub const CLIENT_PORT: u16 = 40000;
/// One datagram every 10 ms, as a busy statsd client sends.
pub const TICK: Duration = Duration::from_millis(10);

/// How the agent's DaemonSet runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agent {
    /// The flush-conntrack initContainer of the overlay.
    pub trigger: bool,
    /// `hostNetwork: true` (the switch of containernetworking/plugins#1190).
    pub host_network: bool,
}

#[derive(Debug, Clone)]
pub struct AgentPod {
    pub name: String,
    pub ip: String,
    /// What the agent answers with: the pod's hostname.
    pub responder: String,
}

/// What one rollout looked like from outside, times since the rollout began.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub agent: Agent,
    pub old: AgentPod,
    pub new: AgentPod,
    /// The old pod's last answer.
    pub last_old_answer: Option<Duration>,
    /// The new pod first seen with its IP (its sandbox networked).
    pub sandbox: Option<Duration>,
    /// The new pod first seen Running (its agent container started).
    pub running: Option<Duration>,
    pub first_new_answer: Option<Duration>,
    /// Where the client's entry sent replies from once the new pod ran,
    /// while the new pod had not answered yet: the old pod's IP is stale.
    pub entry_while_waiting: Option<String>,
    /// The trigger initContainer's log (empty without a trigger).
    pub trigger_log: String,
}

impl Rollout {
    /// Datagrams answered by nobody: from the old pod's last answer to the
    /// new pod's first.
    pub fn outage(&self) -> Option<Duration> {
        Some(self.first_new_answer?.saturating_sub(self.last_old_answer?))
    }

    pub fn stale(&self) -> bool {
        self.entry_while_waiting.as_deref() == Some(self.old.ip.as_str())
    }
}

pub struct Story<'a> {
    pub cp: &'a ControlPlane,
    pub node: &'a RealNode,
    pub stream: Stream,
    init_containers: Value,
    agent: Agent,
    hostname: String,
    sweeps: u32,
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn checked(o: Output, what: &str) -> Result<Output, String> {
    if o.status.success() {
        Ok(o)
    } else {
        Err(format!("{what}: {}", text(&o)))
    }
}

/// The statsd overlay as `kubectl kustomize` renders it, with the stand-in
/// agent image (the flush-conntrack image keeps its shipped name).
pub fn rendered_overlay(root: &Path) -> Result<String, String> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(root.join("kustomize/overlays/statsd"))
        .output()
        .map_err(|e| e.to_string())?;
    let out = checked(out, "kubectl kustomize")?;
    let yaml = String::from_utf8_lossy(&out.stdout).to_string();
    if !yaml.contains("prom/statsd-exporter:") {
        return Err("the overlay no longer names the statsd-exporter image".to_owned());
    }
    let agent = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: ").filter(|i| i.starts_with("prom/statsd-exporter:")))
        .unwrap_or_default()
        .to_owned();
    Ok(yaml.replace(&agent, AGENT_IMAGE))
}

impl<'a> Story<'a> {
    /// Installs the overlay, waits for the agent and starts the client.
    pub fn install(cp: &'a ControlPlane, node: &'a RealNode, root: &Path) -> Result<Story<'a>, String> {
        let yaml = rendered_overlay(root)?;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&cp.admin)
            .args(["apply", "--server-side", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, yaml.as_bytes()).map_err(|e| e.to_string())?;
        }
        checked(child.wait_with_output().map_err(|e| e.to_string())?, "kubectl apply the statsd overlay")?;
        let ds = checked(
            cp.kubectl(&["-n", AGENT_NAMESPACE, "get", "daemonset", "statsd", "-o", "json"]),
            "get the DaemonSet",
        )?;
        let ds: Value = serde_json::from_slice(&ds.stdout).map_err(|e| e.to_string())?;
        let hostname =
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
        let stream =
            Stream::start(&node.client, (&node.client_address, CLIENT_PORT), (&node.address, PORT), TICK);
        let story = Story {
            cp,
            node,
            stream,
            init_containers: ds["spec"]["template"]["spec"]["initContainers"].clone(),
            agent: Agent { trigger: true, host_network: false },
            hostname,
            sweeps: 0,
        };
        let pod = story.wait_for_pod(None, Duration::from_secs(120))?;
        story
            .stream
            .wait_for(&pod.responder, Duration::ZERO, Duration::from_secs(20))
            .ok_or_else(|| format!("the agent {} never answered", pod.name))?;
        Ok(story)
    }

    /// The agent pods, as (name, IP, phase, being deleted, host network).
    fn pods(&self) -> Vec<(String, String, String, bool, bool)> {
        let out = self.cp.kubectl(&["-n", AGENT_NAMESPACE, "get", "pods", "-l", SELECTOR, "-o", "json"]);
        let list: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                    p["status"]["podIP"].as_str().unwrap_or_default().to_owned(),
                    p["status"]["phase"].as_str().unwrap_or_default().to_owned(),
                    !p["metadata"]["deletionTimestamp"].is_null(),
                    p["spec"]["hostNetwork"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    fn agent_pod(&self, name: &str, ip: &str, host_network: bool) -> AgentPod {
        let responder = if host_network { self.hostname.clone() } else { name.to_owned() };
        AgentPod { name: name.to_owned(), ip: ip.to_owned(), responder }
    }

    /// Waits for a Running agent pod other than `old`.
    fn wait_for_pod(&self, old: Option<&str>, timeout: Duration) -> Result<AgentPod, String> {
        let deadline = Instant::now() + timeout;
        loop {
            for (name, ip, phase, deleting, host) in self.pods() {
                if Some(name.as_str()) != old && phase == "Running" && !deleting && !ip.is_empty() {
                    return Ok(self.agent_pod(&name, &ip, host));
                }
            }
            if Instant::now() > deadline {
                return Err(format!("no new Running agent pod within {timeout:?}: {:?}", self.pods()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Changes the DaemonSet to run as `agent` (a rollout, or a restart if
    /// nothing changes) and watches the replacement from outside, waiting at
    /// most `patience` after the new pod runs for it to answer.
    pub fn roll(&mut self, agent: Agent, patience: Duration) -> Result<Rollout, String> {
        let current = self
            .pods()
            .into_iter()
            .find(|(_, ip, phase, deleting, _)| phase == "Running" && !deleting && !ip.is_empty())
            .ok_or("no running agent pod to replace")?;
        let old = self.agent_pod(&current.0, &current.1, current.4);
        let mut patch = Vec::new();
        if agent.trigger != self.agent.trigger {
            patch.push(match agent.trigger {
                true => json!({"op": "add", "path": "/spec/template/spec/initContainers", "value": self.init_containers}),
                false => json!({"op": "remove", "path": "/spec/template/spec/initContainers"}),
            });
        }
        if agent.host_network != self.agent.host_network {
            let dns = if agent.host_network { "ClusterFirstWithHostNet" } else { "ClusterFirst" };
            patch.push(
                json!({"op": "add", "path": "/spec/template/spec/hostNetwork", "value": agent.host_network}),
            );
            patch.push(json!({"op": "add", "path": "/spec/template/spec/dnsPolicy", "value": dns}));
        }
        let started = self.stream.now();
        let out = if patch.is_empty() {
            self.cp.kubectl(&["-n", AGENT_NAMESPACE, "rollout", "restart", "daemonset/statsd"])
        } else {
            let patch = Value::Array(patch).to_string();
            self.cp.kubectl(&[
                "-n",
                AGENT_NAMESPACE,
                "patch",
                "daemonset",
                "statsd",
                "--type=json",
                "-p",
                &patch,
            ])
        };
        checked(out, "roll the DaemonSet")?;
        self.agent = agent;

        let (mut sandbox, mut running, mut new) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while running.is_none() {
            if Instant::now() > deadline {
                return Err(format!("the new agent pod did not run: {:?}", self.pods()));
            }
            for (name, ip, phase, deleting, host) in self.pods() {
                if name == old.name || deleting || ip.is_empty() {
                    continue;
                }
                let at = self.stream.now().saturating_sub(started);
                sandbox.get_or_insert(at);
                if phase == "Running" {
                    running = Some(at);
                    new = Some(self.agent_pod(&name, &ip, host));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let new = new.ok_or("no new pod")?;
        let entry_while_waiting = match self.stream.first_from(&new.responder, started) {
            Some(_) => None,
            None => self.client_entry_reply_source(),
        };
        let first = self.stream.wait_for(&new.responder, started, patience);
        let trigger_log = match agent.trigger {
            true => self.node.container_log(AGENT_NAMESPACE, &new.name, "flush-conntrack"),
            false => String::new(),
        };
        Ok(Rollout {
            agent,
            last_old_answer: self.stream.last_from(&old.responder).map(|t| t.saturating_sub(started)),
            old,
            new,
            sandbox,
            running,
            first_new_answer: first.map(|t| t.saturating_sub(started)),
            entry_while_waiting,
            trigger_log,
        })
    }

    /// Where the node's entry for the client's flow sends replies from.
    pub fn client_entry_reply_source(&self) -> Option<String> {
        table::list(&self.node.ns)
            .into_iter()
            .find(|l| l.flow.sport == CLIENT_PORT && l.flow.dport == PORT)
            .map(|l| l.flow.reply_src.to_string())
    }

    /// `kubectl create job --from=cronjob/flush-conntrack-sweep`, waited
    /// for; returns when (stream time) it was created and its log.
    pub fn sweep_once(&mut self) -> Result<(Duration, String), String> {
        self.sweeps += 1;
        let name = format!("sweep-by-hand-{}", self.sweeps);
        let started = self.stream.now();
        checked(
            self.cp.kubectl(&[
                "-n",
                NAMESPACE,
                "create",
                "job",
                &name,
                "--from=cronjob/flush-conntrack-sweep",
            ]),
            "kubectl create job --from",
        )?;
        checked(
            self.cp.kubectl(&[
                "-n",
                NAMESPACE,
                "wait",
                "--for=condition=complete",
                &format!("job/{name}"),
                "--timeout=90s",
            ]),
            "the sweep Job",
        )?;
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
        Ok((started, self.node.container_log(NAMESPACE, &pod, "sweep")))
    }
}

/// The JSON log lines of a container log (CRI format: time, stream, tag, line).
pub fn json_lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The flush summary a trigger logged for its Job.
pub fn trigger_summary(log: &str) -> Option<Value> {
    json_lines(log).into_iter().find(|v| v["message"] == "flush Job succeeded")
}
