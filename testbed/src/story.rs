//! The hostPort story on a real node, as users live it: the statsd overlay
//! installed with kubectl, a client outside the node streaming datagrams to
//! the hostPort, the DaemonSet rolled, and what the client saw: when the old
//! pod last answered, when the new one first did, and whether the node's
//! conntrack entry kept pointing at the dead pod meanwhile.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::command::checked;
use crate::controlplane::ControlPlane;
use crate::error::{io, json, unexpected, Result};
use crate::image::{self, Built, Image};
use crate::node::RealNode;
use crate::podwatch::PodWatch;
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

#[derive(Debug, Clone)]
pub struct AgentPod {
    pub name: String,
    pub ip: String,
    /// What the agent answers with: the pod's hostname.
    pub responder: String,
}

/// An Event as (type, reason).
pub type EventSeen = (String, String);

/// What one rollout looked like from outside, times since the rollout began.
#[derive(Debug, Clone)]
pub struct Rollout {
    pub agent: Agent,
    pub old: AgentPod,
    pub new: AgentPod,
    /// The old pod's last answer.
    pub last_old_answer: Option<Duration>,
    /// The new pod's sandbox networked: its veth on the node, or (host
    /// network) its IP first seen in the API.
    pub sandbox: Option<Duration>,
    /// The new pod first seen Running (its agent container started).
    pub running: Option<Duration>,
    /// The new pod created, as a watch on the pods saw it.
    pub created: Option<Duration>,
    /// The new agent's own "listening" line (its container log's time).
    pub listening: Option<Duration>,
    /// The old pod marked for deletion, and gone, as the watch saw them.
    pub old_deleting: Option<Duration>,
    pub old_gone: Option<Duration>,
    pub first_new_answer: Option<Duration>,
    /// The same for the host-network client sending to 127.0.0.1.
    pub first_new_loopback_answer: Option<Duration>,
    /// Where the client's entry sent replies from once the new pod ran,
    /// while the new pod had not answered yet: the old pod's IP is stale.
    pub entry_while_waiting: Option<String>,
    /// The trigger's log (empty without a trigger).
    pub trigger_log: String,
    /// The Events on the new pod, as (type, reason), in order.
    pub events: Vec<(String, String)>,
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

    /// From the new pod's creation to its agent listening.
    pub fn agent_start(&self) -> Option<Duration> {
        Some(self.listening?.checked_sub(self.created?).unwrap_or_default())
    }

    /// From the old pod's deletion to its end.
    pub fn termination(&self) -> Option<Duration> {
        Some(self.old_gone?.saturating_sub(self.old_deleting?))
    }
}

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

/// The directory holding CNI portmap at `version` (`debian`: the package's).
pub fn portmap_dir(root: &Path, version: &str) -> Result<std::path::PathBuf> {
    if version == "debian" {
        return Ok("/usr/lib/cni".into());
    }
    let out = crate::command::stdout(
        Command::new("bash").arg(root.join("controlplane/portmap.sh")).arg(version).stderr(Stdio::inherit()),
    )?;
    Ok(String::from_utf8_lossy(&out).trim().into())
}

/// Where the test's image is "pushed": the README's Install step for an
/// image built here (`REGISTRY/flush-conntrack`), with `registry.test` for
/// REGISTRY and the node's containerd for the registry.
pub const REGISTRY: &str = "registry.test";
pub const PUSHED_IMAGE: &str = "registry.test/flush-conntrack:dev";

/// The images a node needs: the shipped one (the Dockerfile's build stage,
/// then its final stage, stamped with the commit's time), the sandbox
/// (pause) and the stand-in agent.
pub fn images(root: &Path, work: &Path) -> Result<Vec<Built>> {
    let binary = crate::recipe::shipped_binary(root)?;
    let created = crate::recipe::source_date_epoch(root)?;
    let shipped = Image::from_dockerfile(&root.join("Dockerfile"), &binary, PUSHED_IMAGE, created)?
        .build(&work.join("flush-conntrack"))?;
    let pause =
        image::from_c(&root.join("testbed/images/pause.c"), &work.join("pause"), crate::node::PAUSE_IMAGE)?;
    let agent = image::from_c(&root.join("testbed/images/udp-echo.c"), &work.join("udp-echo"), AGENT_IMAGE)?;
    Ok(vec![shipped, pause, agent])
}

/// The `images:` entry the README's Install gives, between its
/// `install-images` markers, with the placeholders filled in. Pure.
pub fn install_images_entry(readme: &str, registry: &str, digest: &str) -> Result<String> {
    let (_, after) = readme
        .split_once("<!-- install-images -->")
        .ok_or_else(|| unexpected("the README's Install has no `<!-- install-images -->` block"))?;
    let block =
        after.split_once("```yaml\n").ok_or_else(|| unexpected("no yaml block after `install-images`"))?.1;
    let (block, _) =
        block.split_once("```").ok_or_else(|| unexpected("the install-images block is not closed"))?;
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| unexpected(format!("{digest} is not a sha256 digest")))?;
    if !block.contains("REGISTRY") || !block.contains("sha256:DIGEST") {
        return Err(unexpected(format!(
            "the install-images block names no REGISTRY or sha256:DIGEST:\n{block}"
        )));
    }
    Ok(block.replace("REGISTRY", registry).replace("DIGEST", hex))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io(to.display()))?;
    for entry in std::fs::read_dir(from).map_err(io(from.display()))? {
        let entry = entry.map_err(io(from.display()))?;
        let path = entry.path();
        match path.is_dir() {
            true => copy_tree(&path, &to.join(entry.file_name()))?,
            false => {
                std::fs::copy(&path, to.join(entry.file_name())).map_err(io(path.display()))?;
            }
        }
    }
    Ok(())
}

/// The statsd overlay as a user installs it from the README: a copy of the
/// manifests, the README's `images:` entry appended to the overlay's
/// kustomization with the pushed image's `digest`, nothing else edited,
/// rendered by `kubectl kustomize`. Then, for the test alone, the stand-in
/// agent image replaces statsd-exporter.
pub fn rendered_overlay(root: &Path, digest: &str) -> Result<String> {
    let readme = std::fs::read_to_string(root.join("README.md")).map_err(io("README.md"))?;
    let entry = install_images_entry(&readme, REGISTRY, digest)?;
    let copy = std::env::temp_dir().join(format!("fct-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_tree(&root.join("kustomize"), &copy.join("kustomize"))?;
    copy_tree(&root.join("jobs"), &copy.join("jobs"))?;
    let kustomization = copy.join("kustomize/overlays/statsd/kustomization.yaml");
    let mut text = std::fs::read_to_string(&kustomization).map_err(io(kustomization.display()))?;
    text.push_str(&entry);
    std::fs::write(&kustomization, text).map_err(io(kustomization.display()))?;
    let out = crate::command::stdout(
        Command::new("kubectl").arg("kustomize").arg(copy.join("kustomize/overlays/statsd")),
    );
    let _ = std::fs::remove_dir_all(&copy);
    let yaml = String::from_utf8_lossy(&out?).to_string();
    let pinned = format!("image: {REGISTRY}/flush-conntrack@{digest}");
    if yaml.contains("ghcr.io/flush-conntrack/") || !yaml.contains(&pinned) {
        return Err(unexpected(format!(
            "the README's images: entry did not pin every flush-conntrack image to {pinned}"
        )));
    }
    if !yaml.contains("prom/statsd-exporter:") {
        return Err(unexpected("the overlay no longer names the statsd-exporter image"));
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
    pub fn install(cp: &'a ControlPlane, node: &'a RealNode, root: &Path) -> Result<Story<'a>> {
        // As a user reads the digest of what they pushed from the registry.
        let digest = node.digest_of(PUSHED_IMAGE)?;
        let yaml = rendered_overlay(root, &digest)?;
        cp.apply(&yaml).map_err(|e| e.during("kubectl apply the statsd overlay"))?;
        // The scheduled sweep would repair, at its own time, what a case
        // must see stale; the story runs its sweeps by hand.
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
            shipped: ds["spec"]["template"]["spec"].clone(),
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
    fn wait_for_pod(&self, old: Option<&str>, timeout: Duration) -> Result<AgentPod> {
        let deadline = Instant::now() + timeout;
        loop {
            for (name, ip, phase, deleting, host) in self.pods() {
                if Some(name.as_str()) != old && phase == "Running" && !deleting && !ip.is_empty() {
                    return Ok(self.agent_pod(&name, &ip, host));
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

    /// Changes the DaemonSet to run as `agent` (a rollout, or a restart if
    /// nothing changes) and watches the replacement from outside, waiting at
    /// most `patience` after the new pod runs for it to answer.
    pub fn roll(&mut self, agent: Agent, patience: Duration) -> Result<Rollout> {
        let current = self
            .pods()
            .into_iter()
            .find(|(_, ip, phase, deleting, _)| phase == "Running" && !deleting && !ip.is_empty())
            .ok_or_else(|| unexpected("no running agent pod to replace"))?;
        let old = self.agent_pod(&current.0, &current.1, current.4);
        let changed = agent != self.agent;
        let watch = PodWatch::start(self.cp.kubectl_command(), AGENT_NAMESPACE, SELECTOR, &old.name)?;
        let sandbox_watch = SandboxWatch::start(&self.node.ns);
        let started_at = Instant::now();
        let wall_at = std::time::SystemTime::now();
        let started = self.stream.at(started_at);
        let out = if !changed {
            self.cp.kubectl(&["-n", AGENT_NAMESPACE, "rollout", "restart", "daemonset/statsd"])
        } else {
            let spec = pod_spec(&self.shipped, agent);
            let patch = json!([{"op": "replace", "path": "/spec/template/spec", "value": spec}]).to_string();
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
                return Err(unexpected(format!("the new agent pod did not run: {:?}", self.pods())));
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
        let new = new.ok_or_else(|| unexpected("no new pod"))?;
        // The veth is the sandbox's network, set up by the CNI plugins: more
        // precise than the pod's IP in the API, which lags by up to a second.
        // Host-network pods have none.
        if let Some(at) = sandbox_watch.finish() {
            sandbox = Some(self.stream.at(at).saturating_sub(started));
        }
        let entry_while_waiting = match self.stream.first_from(&new.responder, started) {
            Some(_) => None,
            None => self.client_entry_reply_source(),
        };
        let first = self.stream.wait_for(&new.responder, started, patience);
        // The agent's line is written before the first answer can be.
        let agent_log = self.node.container_log(AGENT_NAMESPACE, &new.name, AGENT_CONTAINER);
        let listening = listening_at(&agent_log).and_then(|t| t.duration_since(wall_at).ok());
        let since = |at: Option<Instant>| at.map(|t| t.saturating_duration_since(started_at));
        let loopback_started = self.loopback.at(started_at);
        let loopback_first = self.loopback.wait_for(&new.responder, loopback_started, Duration::from_secs(2));
        // The trigger is a sidecar: the agent may answer before its flush
        // Job is done. Its outcome is waited for here.
        let (trigger_log, events) = match agent.trigger.present() {
            true => {
                let deadline = Instant::now() + Duration::from_secs(90);
                loop {
                    let log = self.node.container_log(AGENT_NAMESPACE, &new.name, "flush-conntrack");
                    let events = self.events_on(&new.name);
                    // The Event can be written before containerd has copied the
                    // log line that precedes it into the log file: wait for both.
                    let flushed = events.iter().any(|(_, reason)| reason == "Flushed")
                        && trigger_summary(&log).is_some();
                    let failed =
                        events.iter().any(|(_, reason)| reason == "FlushFailed" || reason == "FlushTimedOut");
                    let done = flushed || failed;
                    if done || Instant::now() > deadline {
                        break (log, events);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            false => (String::new(), Vec::new()),
        };
        // The DaemonSet controller creates the new pod once the old one is
        // terminating, not gone: its end may come later still.
        let deadline = Instant::now() + Duration::from_secs(30);
        while watch.seen(&old.name).is_some_and(|s| s.gone.is_none()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (old_seen, new_seen) = (watch.seen(&old.name).unwrap_or_default(), watch.seen(&new.name));
        drop(watch);
        Ok(Rollout {
            agent,
            created: since(new_seen.and_then(|s| s.added)),
            listening,
            old_deleting: since(old_seen.deleting),
            old_gone: since(old_seen.gone),
            last_old_answer: self.stream.last_from(&old.responder).map(|t| t.saturating_sub(started)),
            old,
            new,
            sandbox,
            running,
            first_new_answer: first.map(|t| t.saturating_sub(started)),
            first_new_loopback_answer: loopback_first.map(|t| t.saturating_sub(loopback_started)),
            entry_while_waiting,
            trigger_log,
            events,
        })
    }

    /// How the DaemonSet runs now.
    pub fn agent(&self) -> Agent {
        self.agent
    }

    /// The `events.k8s.io` Events regarding this agent pod, as (type, reason).
    pub fn events_on(&self, pod: &str) -> Vec<EventSeen> {
        self.events_in(AGENT_NAMESPACE, pod)
    }

    /// flush-conntrack's Events regarding a pod, as (type, reason), in order.
    pub fn events_in(&self, namespace: &str, pod: &str) -> Vec<EventSeen> {
        let out = self.cp.kubectl(&["-n", namespace, "get", "events.events.k8s.io", "-o", "json"]);
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

    /// Where the node's entry for the client's flow sends replies from.
    pub fn client_entry_reply_source(&self) -> Option<String> {
        table::list(&self.node.ns)
            .into_iter()
            .find(|l| l.flow.sport == CLIENT_PORT && l.flow.dport == PORT)
            .map(|l| l.flow.reply_src.to_string())
    }

    /// `kubectl create job --from=cronjob/flush-conntrack-sweep`, waited
    /// for; returns when (stream time) it was created, its log and the
    /// Events on its pod.
    pub fn sweep_once(&mut self) -> Result<(Duration, String, Vec<EventSeen>)> {
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
        Ok((started, self.node.container_log(NAMESPACE, &pod, "sweep"), self.events_in(NAMESPACE, &pod)))
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

/// What a case of the tour should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The new pod never answers: the entry still points at the old one.
    /// A sweep by hand follows and must repair it.
    Stale,
    /// The trigger's Job deleted this many entries (the outside client's and
    /// the loopback client's) and the new pod answers both.
    Repaired(u64),
    /// The new pod answers and nothing was stale (a trigger deletes nothing).
    Clean,
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    /// `v0.8.7`, `debian` (1.1.1) or `v1.10.0`.
    pub portmap: &'static str,
    pub agent: Agent,
    pub expect: Expect,
}

const fn case(
    name: &'static str,
    portmap: &'static str,
    trigger: Trigger,
    host: bool,
    expect: Expect,
) -> Case {
    Case { name, portmap, agent: Agent { trigger, host_network: host }, expect }
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

/// When the agent listened: the time it wrote in its "listening" line, by
/// its own clock (`at SECONDS.NANOS`); without one, the container log's
/// time, which is when containerd copied the line.
pub fn listening_at(log: &str) -> Option<std::time::SystemTime> {
    let line = log.lines().find(|l| l.contains(" listening on "))?;
    if let Some(own) = line.rsplit_once(" at ").and_then(|(_, t)| t.trim().split_once('.')) {
        let (seconds, nanos) = (own.0.parse::<u64>().ok()?, own.1.parse::<u32>().ok()?);
        return Some(std::time::UNIX_EPOCH + Duration::new(seconds, nanos));
    }
    let stamp: k8s_openapi::jiff::Timestamp = line.split(' ').next()?.parse().ok()?;
    let nanos = u64::try_from(stamp.as_nanosecond()).ok()?;
    Some(std::time::UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// Every case users meet, in an order where each starts from the state the
/// one before left: portmap before 0.9 (the classical bug), Debian's 1.1.1
/// (flushes on ADD, not on DEL: the hostNetwork switch of #1190 stays
/// stale), 1.10 (flushes on both).
pub const TOUR: &[Case] = &[
    case("portmap 0.8.7, pod replaced, no tool", "v0.8.7", Trigger::None, false, Expect::Stale),
    case("portmap 0.8.7, pod replaced, trigger", "v0.8.7", Trigger::Container, false, Expect::Repaired(2)),
    case(
        "portmap 0.8.7, pod replaced, waiting trigger",
        "v0.8.7",
        Trigger::Waiting,
        false,
        Expect::Repaired(2),
    ),
    case("portmap 1.1.1, pod replaced, waiting trigger", "debian", Trigger::Waiting, false, Expect::Clean),
    case("portmap 1.1.1, pod replaced, trigger", "debian", Trigger::Container, false, Expect::Clean),
    case("portmap 1.1.1, pod replaced, no tool", "debian", Trigger::None, false, Expect::Clean),
    case("portmap 1.1.1, switch to hostNetwork, no tool", "debian", Trigger::None, true, Expect::Stale),
    case("portmap 1.1.1, back to the pod network, no tool", "debian", Trigger::None, false, Expect::Clean),
    case(
        "portmap 1.1.1, switch to hostNetwork, trigger",
        "debian",
        Trigger::Container,
        true,
        Expect::Repaired(2),
    ),
    case(
        "portmap 1.10.0, back to the pod network, trigger",
        "v1.10.0",
        Trigger::Container,
        false,
        Expect::Clean,
    ),
    case("portmap 1.10.0, switch to hostNetwork, no tool", "v1.10.0", Trigger::None, true, Expect::Clean),
    case("portmap 1.10.0, back to the pod network, no tool", "v1.10.0", Trigger::None, false, Expect::Clean),
];

/// A sweep by hand after a stale case.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// From `kubectl create job` to the agent's first answer.
    pub repaired_after: Option<Duration>,
    /// The host-network client on 127.0.0.1 was answered after it too.
    pub loopback_repaired: bool,
    /// The sweep's `sweep done` log line.
    pub done: Option<Value>,
    /// The Events on the sweep's pod, as (type, reason).
    pub events: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub case: Case,
    pub rollout: Rollout,
    pub sweep: Option<Sweep>,
}

impl Seen {
    /// From the new pod's sandbox to its first answer.
    pub fn repair(&self) -> Option<Duration> {
        Some(self.rollout.first_new_answer?.saturating_sub(self.rollout.sandbox?))
    }
}

/// Plays the tour once. `portmap` gives each case's plugin directory.
pub fn tour(story: &mut Story, portmap: impl Fn(&str) -> std::path::PathBuf) -> Result<Vec<Seen>> {
    let mut seen = Vec::new();
    for case in TOUR {
        story.node.use_portmap(&portmap(case.portmap))?;
        let patience = if case.expect == Expect::Stale { 4 } else { 20 };
        let rollout =
            story.roll(case.agent, Duration::from_secs(patience)).map_err(|e| e.during(case.name))?;
        let sweep = match case.expect {
            Expect::Stale => {
                let (at, log, events) = story.sweep_once()?;
                let done = json_lines(&log).into_iter().find(|v| v["message"] == "sweep done");
                let answered = story.stream.wait_for(&rollout.new.responder, at, Duration::from_secs(10));
                let at_loopback = story.loopback.now().saturating_sub(story.stream.now().saturating_sub(at));
                let loopback =
                    story.loopback.wait_for(&rollout.new.responder, at_loopback, Duration::from_secs(5));
                Some(Sweep {
                    repaired_after: answered.map(|t| t.saturating_sub(at)),
                    loopback_repaired: loopback.is_some(),
                    done,
                    events,
                })
            }
            _ => None,
        };
        seen.push(Seen { case: *case, rollout, sweep });
    }
    Ok(seen)
}

/// Watches the node's namespace for a new veth: a pod sandbox networked.
struct SandboxWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Option<Instant>>,
}

/// The interfaces of this thread's network namespace.
fn interfaces() -> Vec<String> {
    let Ok(list) = nix::net::if_::if_nameindex() else { return Vec::new() };
    list.iter().map(|i| i.name().to_string_lossy().into_owned()).collect()
}

impl SandboxWatch {
    fn start(ns: &crate::netns::Netns) -> SandboxWatch {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = ns.spawn(move || {
            let before = interfaces();
            while !flag.load(Ordering::Relaxed) {
                if interfaces().iter().any(|i| i.starts_with("veth") && !before.contains(i)) {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        });
        SandboxWatch { stop, thread }
    }

    fn finish(self) -> Option<Instant> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().ok().flatten()
    }
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

    #[test]
    fn the_agent_listens_when_its_line_says() {
        let log = "2026-12-01T08:00:00.100000000Z stdout F starting\n\
                   2026-12-01T08:00:00.250000000Z stdout F udp-echo statsd-x listening on :8125/udp\n";
        let at = listening_at(log).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        let expected: k8s_openapi::jiff::Timestamp = "2026-12-01T08:00:00.25Z".parse().unwrap();
        assert_eq!(at.map(|d| d.as_nanos() as i128), Some(expected.as_nanosecond()));
        assert_eq!(listening_at("2026-12-01T08:00:00Z stdout F starting\n"), None);
        let own =
            "2026-12-01T08:00:01.5Z stdout F udp-echo x listening on :8125/udp at 1764576000.250000000\n";
        let at = listening_at(own).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
        assert_eq!(at, Some(Duration::new(1_764_576_000, 250_000_000)), "its own clock first");
    }

    #[test]
    fn the_readmes_images_entry_filled_in() {
        let readme = "## Install\n<!-- install-images -->\n```yaml\nimages:\n  - name: ghcr.io/flush-conntrack/flush-conntrack\n    newName: REGISTRY/flush-conntrack\n    digest: sha256:DIGEST\n```\n";
        let entry = install_images_entry(readme, "registry.test", "sha256:ab12").unwrap();
        assert_eq!(
            entry,
            "images:\n  - name: ghcr.io/flush-conntrack/flush-conntrack\n    newName: registry.test/flush-conntrack\n    digest: sha256:ab12\n"
        );
        assert!(install_images_entry("no marker", "r", "sha256:ab").is_err());
        assert!(install_images_entry(readme, "r", "md5:ab").is_err());
    }

    #[test]
    fn the_shipped_readme_has_the_entry() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let entry = install_images_entry(&readme, REGISTRY, "sha256:00").unwrap();
        assert!(
            entry.contains("registry.test/flush-conntrack") && entry.contains("digest: sha256:00"),
            "{entry}"
        );
    }
}
