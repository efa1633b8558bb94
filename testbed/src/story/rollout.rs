//! One rollout of the agent's DaemonSet, watched from outside: when the
//! old pod last answered, when the new one was networked, ran and first
//! answered, and where the node's conntrack entry pointed meanwhile.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::command::checked;
use crate::error::{unexpected, Result};
use crate::podwatch::{PodTimes, PodWatch};

use super::{
    pod_spec, Agent, AgentPod, EventSeen, Listed, Story, AGENT_CONTAINER, AGENT_NAMESPACE, SELECTOR,
};

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

/// When a rollout began, on each clock it is measured with.
struct Began {
    at: Instant,
    wall: std::time::SystemTime,
    /// On the outside client's stream.
    stream: Duration,
}

/// The new pod, as it came up.
struct Replacement {
    pod: AgentPod,
    /// First seen with an IP (the sandbox networked, as far as the API says).
    sandbox: Option<Duration>,
    /// First seen Running.
    running: Option<Duration>,
}

impl Story<'_> {
    /// Changes the DaemonSet to run as `agent` (a rollout, or a restart if
    /// nothing changes) and watches the replacement from outside, waiting at
    /// most `patience` after the new pod runs for it to answer.
    pub fn roll(&mut self, agent: Agent, patience: Duration) -> Result<Rollout> {
        let old = self.pod_to_replace()?;
        let watch = PodWatch::start(self.cp.kubectl_command(), AGENT_NAMESPACE, SELECTOR, &old.name)?;
        let sandbox_watch = SandboxWatch::start(&self.node.ns);
        let at = Instant::now();
        let began = Began { at, wall: std::time::SystemTime::now(), stream: self.stream.at(at) };
        self.run_as(agent)?;
        let mut new = self.wait_for_replacement(&old, began.stream)?;
        // The veth is the sandbox's network, set up by the CNI plugins: more
        // precise than the pod's IP in the API, which lags by up to a second.
        // Host-network pods have none.
        if let Some(at) = sandbox_watch.finish() {
            new.sandbox = Some(self.stream.at(at).saturating_sub(began.stream));
        }
        let entry_while_waiting = match self.stream.first_from(&new.pod.responder, began.stream) {
            Some(_) => None,
            None => self.client_entry_reply_source(),
        };
        let first = self.stream.wait_for(&new.pod.responder, began.stream, patience);
        // The agent's line is written before the first answer can be.
        let agent_log = self.node.container_log(AGENT_NAMESPACE, &new.pod.name, AGENT_CONTAINER);
        let listening = listening_at(&agent_log).and_then(|t| t.duration_since(began.wall).ok());
        let loopback_began = self.loopback.at(began.at);
        let loopback_first =
            self.loopback.wait_for(&new.pod.responder, loopback_began, Duration::from_secs(2));
        let (trigger_log, events) = self.trigger_outcome(agent, &new.pod);
        let (old_seen, new_seen) = wait_until_gone(watch, &old, &new.pod);
        let since = |at: Option<Instant>| at.map(|t| t.saturating_duration_since(began.at));
        Ok(Rollout {
            agent,
            created: since(new_seen.and_then(|s| s.added)),
            listening,
            old_deleting: since(old_seen.deleting),
            old_gone: since(old_seen.gone),
            last_old_answer: self.stream.last_from(&old.responder).map(|t| t.saturating_sub(began.stream)),
            old,
            new: new.pod,
            sandbox: new.sandbox,
            running: new.running,
            first_new_answer: first.map(|t| t.saturating_sub(began.stream)),
            first_new_loopback_answer: loopback_first.map(|t| t.saturating_sub(loopback_began)),
            entry_while_waiting,
            trigger_log,
            events,
        })
    }

    fn pod_to_replace(&self) -> Result<AgentPod> {
        let current = self
            .pods()
            .into_iter()
            .find(Listed::running)
            .ok_or_else(|| unexpected("no running agent pod to replace"))?;
        Ok(self.agent_pod(&current))
    }

    /// Rolls the DaemonSet to `agent`: a patch of its pod spec, or a
    /// restart when the spec stays as it is.
    fn run_as(&mut self, agent: Agent) -> Result<()> {
        roll_to(self.cp, &self.shipped, self.agent, agent)?;
        self.agent = agent;
        Ok(())
    }

    /// Waits until a pod other than `old` runs; times on the stream since
    /// `began`.
    fn wait_for_replacement(&self, old: &AgentPod, began: Duration) -> Result<Replacement> {
        let (mut sandbox, mut running, mut new) = (None, None, None);
        let deadline = Instant::now() + Duration::from_secs(120);
        while running.is_none() {
            if Instant::now() > deadline {
                return Err(unexpected(format!("the new agent pod did not run: {:?}", self.pods())));
            }
            for pod in self.pods() {
                if pod.name == old.name || pod.deleting || pod.ip.is_empty() {
                    continue;
                }
                let at = self.stream.now().saturating_sub(began);
                sandbox.get_or_insert(at);
                if pod.phase == "Running" {
                    running = Some(at);
                    new = Some(self.agent_pod(&pod));
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pod = new.ok_or_else(|| unexpected("no new pod"))?;
        Ok(Replacement { pod, sandbox, running })
    }

    /// The trigger's log and Events on `new`. The trigger is a sidecar: the
    /// agent may answer before its flush Job is done, so its outcome is
    /// waited for here.
    fn trigger_outcome(&self, agent: Agent, new: &AgentPod) -> (String, Vec<EventSeen>) {
        if !agent.trigger.present() {
            return (String::new(), Vec::new());
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let log = self.node.container_log(AGENT_NAMESPACE, &new.name, "flush-conntrack");
            let events = self.events_on(&new.name);
            // The Event can be written before containerd has copied the
            // log line that precedes it into the log file: wait for both.
            let flushed =
                events.iter().any(|(_, reason)| reason == "Flushed") && trigger_summary(&log).is_some();
            let failed =
                events.iter().any(|(_, reason)| reason == "FlushFailed" || reason == "FlushTimedOut");
            if flushed || failed || Instant::now() > deadline {
                return (log, events);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Rolls the DaemonSet from `now` to `agent`: a patch of its pod spec as
/// shipped, or a restart when the spec stays as it is.
pub(super) fn roll_to(
    cp: &crate::controlplane::ControlPlane,
    shipped: &Value,
    now: Agent,
    agent: Agent,
) -> Result<()> {
    let out = if agent == now {
        cp.kubectl(&["-n", AGENT_NAMESPACE, "rollout", "restart", "daemonset/statsd"])
    } else {
        let spec = pod_spec(shipped, agent);
        let patch = json!([{"op": "replace", "path": "/spec/template/spec", "value": spec}]).to_string();
        cp.kubectl(&["-n", AGENT_NAMESPACE, "patch", "daemonset", "statsd", "--type=json", "-p", &patch])
    };
    checked(out, "roll the DaemonSet").map(|_| ())
}

/// What the watch saw of both pods, once the old one is gone (or 30 s on).
/// The DaemonSet controller creates the new pod once the old one is
/// terminating, not gone: its end may come later still.
fn wait_until_gone(watch: PodWatch, old: &AgentPod, new: &AgentPod) -> (PodTimes, Option<PodTimes>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while watch.seen(&old.name).is_some_and(|s| s.gone.is_none()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    (watch.seen(&old.name).unwrap_or_default(), watch.seen(&new.name))
}

/// The JSON log lines of a container log (CRI format: time, stream, tag, line).
pub fn json_lines(log: &str) -> Vec<Value> {
    log.lines().filter_map(|l| l.splitn(4, ' ').nth(3)).filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The flush summary a trigger logged for its Job.
pub fn trigger_summary(log: &str) -> Option<Value> {
    json_lines(log).into_iter().find(|v| v["message"] == "flush Job succeeded")
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
}
