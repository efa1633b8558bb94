//! The hostPort bug, reproduced: a node namespace with a portmap-style DNAT
//! rule (nftables) from hostIP:8125/udp to a pod, a client namespace sending
//! UDP steadily, and pods that get replaced with a new IP.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::link::{self, End};
use crate::netns::Netns;
use crate::table;
use crate::tool;

pub const HOST_IP: &str = "192.0.2.1";
pub const CLIENT_IP: &str = "192.0.2.2";
pub const GATEWAY: &str = "198.51.100.1";
pub const OLD_POD: &str = "198.51.100.5";
pub const NEW_POD: &str = "198.51.100.6";
pub const PORT: u16 = 8125;
/// Each client flow sends one datagram per tick.
const TICK: Duration = Duration::from_millis(5);
/// How long each phase of the scenario watches the traffic.
pub const WINDOW: Duration = Duration::from_millis(400);

/// A thread in a namespace that runs until its owner is dropped.
struct Worker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Runs `body` in a thread inside `ns`; `body` returns when the flag it
    /// is given is set.
    fn start(ns: &Netns, body: impl FnOnce(Arc<AtomicBool>) + Send + 'static) -> Worker {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = ns.spawn(move || body(flag));
        Worker { stop, thread: Some(thread) }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP server on :8125 inside a pod namespace, counting datagrams by
/// client source port.
struct Receiver {
    counts: Arc<Mutex<HashMap<u16, u64>>>,
    _worker: Worker,
}

pub struct Pod {
    pub ip: &'static str,
    ns: Netns,
    receiver: Receiver,
}

impl Pod {
    pub fn received_from(&self, sport: u16) -> u64 {
        self.receiver.counts.lock().map(|c| c.get(&sport).copied().unwrap_or(0)).unwrap_or(0)
    }
}

/// A client sending to hostIP:8125 from a fixed source port, as a statsd
/// client in another pod would.
pub struct Flow {
    pub sport: u16,
    sent: Arc<AtomicU64>,
    _worker: Worker,
}

impl Flow {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

pub struct Lab {
    pub node: Netns,
    client: Netns,
    pods: u32,
}

impl Lab {
    /// A node with a pod bridge and the hostIP, a client attached to it, and
    /// an empty nftables NAT chain standing in for portmap's.
    pub fn new() -> Lab {
        let node = Netns::new("node");
        let client = Netns::new("client");
        node.sysctl("net.ipv4.ip_forward", "1");
        node.exec(&["ip", "link", "add", "cni0", "type", "bridge"]);
        node.exec(&["ip", "addr", "add", &format!("{GATEWAY}/24"), "dev", "cni0"]);
        node.exec(&["ip", "link", "set", "cni0", "up"]);
        link::veth(
            End { ns: &node, name: "host0", address: Some(&format!("{HOST_IP}/24")) },
            End { ns: &client, name: "eth0", address: Some(&format!("{CLIENT_IP}/24")) },
        );
        link::default_route(&client, HOST_IP);
        // The NAT base chain keeps conntrack active in the node for its whole
        // life, as kube-proxy's rules do on a real node.
        node.exec(&["nft", "add", "table", "ip", "hostport"]);
        node.exec(&[
            "nft",
            "add chain ip hostport prerouting { type nat hook prerouting priority dstnat; policy accept; }",
        ]);
        Lab { node, client, pods: 0 }
    }

    /// Points the hostPort at `pod_ip`, as portmap does when a pod starts.
    fn point_dnat_to(&self, pod_ip: &str) {
        self.node.exec(&["nft", "flush", "chain", "ip", "hostport", "prerouting"]);
        self.node.exec(&[
            "nft",
            &format!(
                "add rule ip hostport prerouting ip daddr {HOST_IP} udp dport {PORT} dnat to {pod_ip}:{PORT}"
            ),
        ]);
    }

    /// Starts a pod with this IP, its UDP server, and the DNAT rule to it.
    pub fn start_pod(&mut self, ip: &'static str) -> Pod {
        self.pods += 1;
        let ns = Netns::new("pod");
        let veth = format!("veth{}", self.pods);
        link::veth(
            End { ns: &self.node, name: &veth, address: None },
            End { ns: &ns, name: "eth0", address: Some(&format!("{ip}/24")) },
        );
        self.node.exec(&["ip", "link", "set", &veth, "master", "cni0"]);
        link::default_route(&ns, GATEWAY);
        let receiver = receive(&ns);
        self.point_dnat_to(ip);
        Pod { ip, ns, receiver }
    }

    /// Deletes the pod's namespace: its IP answers no more.
    pub fn stop_pod(&mut self, pod: Pod) {
        // The server stops before its namespace goes.
        drop(pod.receiver);
        drop(pod.ns);
    }

    pub fn start_flow(&self, sport: u16) -> Flow {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let worker = Worker::start(&self.client, move |stop| {
            let socket = UdpSocket::bind((CLIENT_IP, sport)).expect("client binds its source port");
            while !stop.load(Ordering::Relaxed) {
                if socket.send_to(b"requests:1|c", (HOST_IP, PORT)).is_ok() {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(TICK);
            }
        });
        Flow { sport, sent, _worker: worker }
    }

    /// Runs the flush-conntrack binary on the node.
    pub fn run_tool(&self, binary: &str, env: &[(&str, &str)]) -> Output {
        tool::run(binary, &self.node, env, tool::Options::default())
    }

    /// `CTA_ID` of the node's entry for this client source port, read with
    /// conntrack-tools.
    pub fn entry_id(&self, sport: u16) -> Option<u32> {
        table::list(&self.node)
            .into_iter()
            .find(|l| l.flow.sport == sport && l.flow.dport == PORT)
            .map(|l| l.id)
    }

    /// Where the node's entry for this source port sends replies from.
    pub fn entry_reply_src(&self, sport: u16) -> Option<String> {
        table::list(&self.node)
            .into_iter()
            .find(|l| l.flow.sport == sport && l.flow.dport == PORT)
            .map(|l| l.flow.reply_src.to_string())
    }
}

impl Default for Lab {
    fn default() -> Self {
        Lab::new()
    }
}

fn receive(ns: &Netns) -> Receiver {
    let counts = Arc::new(Mutex::new(HashMap::new()));
    let tally = counts.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let worker = Worker::start(ns, move |stop| {
        let socket = UdpSocket::bind(("0.0.0.0", PORT)).expect("pod binds :8125");
        socket.set_read_timeout(Some(Duration::from_millis(20))).expect("read timeout");
        let _ = ready_tx.send(());
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, from)) = socket.recv_from(&mut buf) {
                if let Ok(mut c) = tally.lock() {
                    *c.entry(from.port()).or_insert(0) += 1;
                }
            }
        }
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(5));
    Receiver { counts, _worker: worker }
}

/// Datagrams a flow sent and a pod received over one window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub sent: u64,
    pub received: u64,
}

pub fn watch(flow: &Flow, pod: &Pod) -> Window {
    let (sent, received) = (flow.sent(), pod.received_from(flow.sport));
    std::thread::sleep(WINDOW);
    Window { sent: flow.sent() - sent, received: pod.received_from(flow.sport) - received }
}

/// What the scenario observed, phase by phase.
#[derive(Debug)]
pub struct Outcome {
    pub before_replacement: Window,
    pub stale: Window,
    pub entry_before: Option<String>,
    pub tool: Output,
    pub after_flush: Window,
    pub entry_after: Option<String>,
    /// With `KEEP_DNAT_TO`: the flow that started after the replacement.
    pub healthy: Option<Healthy>,
}

#[derive(Debug)]
pub struct Healthy {
    pub id_before: Option<u32>,
    pub id_after: Option<u32>,
    /// Over the whole run of the tool and the window after it.
    pub window: Window,
}

/// Runs the tool on the node as the story does (with `KEEP_DNAT_TO` the
/// new pod when `keep`), telling what it runs and what it said.
fn flush(lab: &Lab, binary: &str, keep: bool, narrate: impl Fn(&str)) -> Output {
    let mut env =
        vec![("MODE", "flush"), ("TARGET_IP", HOST_IP), ("TARGET_PORT", "8125"), ("LOG_FORMAT", "text")];
    if keep {
        env.push(("KEEP_DNAT_TO", NEW_POD));
    }
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    narrate(&format!("Running on the node: {} flush-conntrack", shown.join(" ")));
    let tool = lab.run_tool(binary, &env);
    for line in String::from_utf8_lossy(&tool.stderr).lines() {
        narrate(&format!("  | {line}"));
    }
    tool
}

impl Healthy {
    /// What the story tells of the kept flow.
    fn told(&self) -> String {
        format!(
            "  the flow from port 40001, which started after the replacement, was kept: conntrack id {} -> {}, \
             {} of {} datagrams delivered meanwhile",
            self.id_before.map_or("none".into(), |i| i.to_string()),
            self.id_after.map_or("none".into(), |i| i.to_string()),
            self.window.received,
            self.window.sent
        )
    }
}

/// The whole story: pod A receives, A is replaced by B, the client's flow
/// stays pointed at A, the tool runs on the node, B receives. With `keep`,
/// a second flow that started after the replacement already reaches B and
/// the tool runs with `KEEP_DNAT_TO` = B, which must leave that flow alone.
pub fn scenario(binary: &str, keep: bool, narrate: impl Fn(&str)) -> Outcome {
    let mut lab = Lab::new();
    let old = lab.start_pod(OLD_POD);
    let flow = lab.start_flow(40000);
    narrate(&format!(
        "A DaemonSet pod at {OLD_POD} receives statsd on the node's hostPort {HOST_IP}:{PORT}/udp \
         (nftables DNAT, like portmap); a client at {CLIENT_IP} sends from port 40000."
    ));
    let before_replacement = watch(&flow, &old);
    narrate(&format!(
        "  before the replacement: {} of {} datagrams reached the pod",
        before_replacement.received, before_replacement.sent
    ));

    lab.stop_pod(old);
    let new = lab.start_pod(NEW_POD);
    narrate(&format!("The pod is replaced: the new one has {NEW_POD}, and the DNAT rule now points there."));
    let healthy_flow = keep.then(|| lab.start_flow(40001));
    let stale = watch(&flow, &new);
    let entry_before = lab.entry_reply_src(40000);
    narrate(&format!(
        "  after the replacement: {} of {} datagrams reached the new pod; the node's conntrack entry \
         still translates the flow to {}",
        stale.received,
        stale.sent,
        entry_before.as_deref().unwrap_or("(none)")
    ));

    let healthy_start = healthy_flow.as_ref().map(|f| (f.sent(), new.received_from(f.sport)));
    let id_before = healthy_flow.as_ref().and_then(|f| lab.entry_id(f.sport));
    let tool = flush(&lab, binary, keep, &narrate);

    let after_flush = watch(&flow, &new);
    let entry_after = lab.entry_reply_src(40000);
    narrate(&format!(
        "  after flush-conntrack: {} of {} datagrams reached the new pod (entry now translates to {})",
        after_flush.received,
        after_flush.sent,
        entry_after.as_deref().unwrap_or("(none)")
    ));
    let healthy = healthy_flow.map(|f| {
        let (sent0, received0) = healthy_start.unwrap_or_default();
        let h = Healthy {
            id_before,
            id_after: lab.entry_id(f.sport),
            window: Window { sent: f.sent() - sent0, received: new.received_from(f.sport) - received0 },
        };
        narrate(&h.told());
        h
    });
    Outcome { before_replacement, stale, entry_before, tool, after_flush, entry_after, healthy }
}
