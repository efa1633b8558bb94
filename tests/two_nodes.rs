//! What spans nodes, on two real nodes (testbed::node) of one real cluster,
//! both dual-stack: two kubelets and containerds, each node in a network
//! namespace of its own, their uplinks on one LAN (testbed::node::Lan) with
//! the clients, which send to each node's IPv4 and IPv6 address every 10 ms.
//! The statsd overlay is applied as a user would; the agent DaemonSet runs
//! on both nodes. The stories: a rollout on portmap 0.8.7 leaves both
//! families stale on both nodes, the scheduled sweep visits only the node
//! that changed, each node's trigger repairs its own node with a Job that
//! runs there, a trigger's token from node A is refused for node B, and the
//! hostNetwork switch on portmap 1.1.1 over both families.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use testbed::controlplane::ControlPlane;
use testbed::node::{self, Lan, RealNode};
use testbed::require;
use testbed::scratch::Scratch;
use testbed::story::nodes::{
    start_two_nodes, sweep_done, Cluster, EntryWatch, Family, FlushJob, NodeAgent, Replaced, LAN_CLIENT,
    TWO_NODES,
};
use testbed::story::{self, Agent, Trigger};

const NODES: [(&str, &str, &str, &str, &str); 2] = TWO_NODES;
const NO_TOOL: Agent = Agent { trigger: Trigger::None, host_network: false };
const TRIGGER: Agent = Agent { trigger: Trigger::Container, host_network: false };
const HOST_TRIGGER: Agent = Agent { trigger: Trigger::Container, host_network: true };
const B: usize = 1;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn portmap(version: &str) -> std::path::PathBuf {
    story::portmap_dir(root(), version).unwrap_or_else(|e| panic!("{e}"))
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis()))
}

#[test]
fn two_dual_stack_nodes() {
    if !require::kernel_test("two_dual_stack_nodes", &[node::TOOLS, node::DUAL_STACK_TOOLS].concat()) {
        return;
    }
    let began = std::time::Instant::now();
    let work = Scratch::new("images");
    let images = story::images(root(), work.path()).unwrap_or_else(|e| panic!("{e}"));
    let kubelets: Vec<(&str, &str)> = NODES.iter().map(|n| (n.0, n.1)).collect();
    let cp = ControlPlane::for_kubelets(&kubelets).unwrap_or_else(|e| panic!("control plane: {e}"));
    let lan = Lan::new(LAN_CLIENT.0, LAN_CLIENT.1);
    let nodes = start_two_nodes(&cp, &lan, &portmap("v0.8.7"), &images).unwrap_or_else(|e| panic!("{e}"));
    let refs: Vec<&RealNode> = nodes.iter().collect();
    let mut cluster = Cluster::install(&cp, &refs, &lan, root()).unwrap_or_else(|e| panic!("install: {e}"));
    eprintln!("two dual-stack nodes up and answering both families in {:?}", began.elapsed());
    dual_stack_agents(&cluster);
    a_rollout_leaves_both_families_stale_on_both_nodes(&mut cluster);
    the_first_sweep_repairs_each_node_with_a_job_there(&mut cluster);
    the_sweep_visits_only_the_node_that_changed(&mut cluster);
    each_trigger_repairs_its_own_node(&mut cluster);
    a_token_from_node_a_is_refused_for_node_b(&cluster);
    the_host_network_switch_on_1_1_1_is_repaired_by_each_trigger(&mut cluster, &nodes);
    drop(cluster);
    drop(nodes);
    eprintln!("two_dual_stack_nodes took {:?}", began.elapsed());
}

/// Each agent has an address of each family, from its node's ranges.
fn dual_stack_agents(cluster: &Cluster) {
    for (i, (name, _, _, pods, pods6)) in NODES.iter().enumerate() {
        let pod = cluster.agent_on(i).unwrap_or_else(|e| panic!("{e}"));
        eprintln!("{name}: agent {} at {:?}", pod.name, pod.ips);
        let v4 = pod.ip(Family::V4).unwrap_or_else(|| panic!("{name}: no IPv4: {:?}", pod.ips));
        let v6 = pod.ip(Family::V6).unwrap_or_else(|| panic!("{name}: no IPv6: {:?}", pod.ips));
        assert!(v4.starts_with(pods.trim_end_matches("0/24")), "{name}: {v4} not in {pods}");
        assert!(v6.starts_with(pods6.trim_end_matches(":/64")), "{name}: {v6} not in {pods6}");
    }
}

/// Without the tool, the rollout on portmap 0.8.7 leaves each client's
/// entry on each node pointing at the old pod's address of its family.
fn a_rollout_leaves_both_families_stale_on_both_nodes(cluster: &mut Cluster) {
    let replaced = cluster.roll(NO_TOOL).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(4));
    for r in &replaced {
        for (c, client) in cluster.clients.iter().enumerate().filter(|(_, c)| c.node == r.node) {
            let entry = cluster.entry(client).map(|e| e.flow.reply_src.to_string());
            let answered = client.stream.first_from(&r.new.name, r.began[c]);
            let old = r.old.ip(client.family);
            eprintln!(
                "no tool, {} {:?}: old pod {} ({:?}), entry replies from {entry:?}, new pod {} ({:?}) answered at {}",
                NODES[r.node].0,
                client.family,
                r.old.name,
                old,
                r.new.name,
                r.new.ip(client.family),
                ms(answered)
            );
            assert_eq!(entry.as_deref(), old, "{} {:?}: not stale", NODES[r.node].0, client.family);
            assert_eq!(answered, None, "{} {:?}: the new pod answered", NODES[r.node].0, client.family);
        }
    }
}

/// Waits until each client of `nodes` is answered by the agent now on its
/// node, after `since` (on its stream); returns when, by client index.
fn answered_by_agents(cluster: &Cluster, nodes: &[usize], since: &[Duration]) -> Vec<Option<Duration>> {
    let agents: Vec<_> = (0..NODES.len()).map(|i| cluster.agent_on(i).expect("an agent")).collect();
    cluster
        .clients
        .iter()
        .enumerate()
        .map(|(c, client)| {
            nodes.contains(&client.node).then(|| {
                let who = &agents[client.node].name;
                client
                    .stream
                    .wait_for(who, since[c], Duration::from_secs(20))
                    .map(|t| t.saturating_sub(since[c]))
            })?
        })
        .collect()
}

/// The Jobs `run` (a sweep pod's UID) made: their nodes and where they ran.
fn jobs_of_run(cluster: &Cluster, run: &str) -> Vec<FlushJob> {
    cluster.flush_jobs().unwrap_or_else(|e| panic!("{e}")).into_iter().filter(|j| j.run == run).collect()
}

/// A Job ran on the node it was made for, and only that node's kubelet ran
/// its pod; it deleted `deleted` entries there and failed none.
fn ran_on_its_node(cluster: &Cluster, job: &FlushJob, deleted: u64) {
    let logs = cluster.nodes_with_log_of(job);
    let summary = cluster.summary_of(job).unwrap_or_else(|| panic!("{}: no summary", job.name));
    eprintln!(
        "  Job {} for {}: its pod {} ran on {} (logs on {:?}); deleted {}, kept {}, failed {}",
        job.name, job.node, job.pod, job.ran_on, logs, summary["deleted"], summary["kept"], summary["failed"]
    );
    assert!(job.succeeded, "{}: not succeeded", job.name);
    assert_eq!(job.ran_on, job.node, "{}: ran on another node", job.name);
    assert_eq!(logs, std::slice::from_ref(&job.node), "{}: its pod's log", job.name);
    assert_eq!(
        (summary["deleted"].as_u64(), summary["failed"].as_u64()),
        (Some(deleted), Some(0)),
        "{summary}"
    );
}

/// With no success recorded, the sweep visits every node: one Job on each,
/// deleting both families' stale entries there.
fn the_first_sweep_repairs_each_node_with_a_job_there(cluster: &mut Cluster) {
    let run = cluster.sweep_once().unwrap_or_else(|e| panic!("{e}"));
    let jobs = jobs_of_run(cluster, &run.uid);
    eprintln!("first sweep {}: {:?}; {} Jobs", run.pod, sweep_done(&run.log), jobs.len());
    let mut nodes: Vec<&str> = jobs.iter().map(|j| j.node.as_str()).collect();
    nodes.sort();
    assert_eq!(nodes, ["node-a", "node-b"], "one Job per node");
    for job in &jobs {
        ran_on_its_node(cluster, job, 2);
    }
    let answered = answered_by_agents(cluster, &[0, 1], &run.began);
    for (client, at) in cluster.clients.iter().zip(&answered) {
        eprintln!(
            "  {} {:?}: the new agent answered {} after the sweep began",
            NODES[client.node].0,
            client.family,
            ms(*at)
        );
        assert!(at.is_some(), "{} {:?}: not repaired by the sweep", NODES[client.node].0, client.family);
    }
    settle_sweep(cluster);
}

/// The CronJob controller records a by-hand sweep's success once it has
/// seen it finish; waits for that, so a success recorded next stays.
fn settle_sweep(cluster: &Cluster) {
    for _ in 0..40 {
        let out = cluster.cp.kubectl(&[
            "-n",
            story::NAMESPACE,
            "get",
            "cronjob",
            "flush-conntrack-sweep",
            "-o",
            "jsonpath={.status.active}",
        ]);
        if String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The sweep after only node B's agent was replaced (by its real start
/// time) creates one Job, on node B, repairs it, and leaves node A's table
/// as it was; the same sweep with nothing changed since creates none.
fn the_sweep_visits_only_the_node_that_changed(cluster: &mut Cluster) {
    cluster.record_sweep_success(602).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(3));
    let replaced = cluster.replace_on(B).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(2));
    let a_before = cluster.entries_on(0);
    let b_stale = cluster.entries_on(B);
    let run = cluster.sweep_once().unwrap_or_else(|e| panic!("{e}"));
    let jobs = jobs_of_run(cluster, &run.uid);
    eprintln!(
        "sweep after node-b's agent {} -> {}: {:?}; Jobs {:?}; node-b entries before {b_stale:?}",
        replaced.old.name,
        replaced.new.name,
        sweep_done(&run.log),
        jobs.iter().map(|j| (&j.node, &j.ran_on)).collect::<Vec<_>>()
    );
    for (_, _, reply) in &b_stale {
        assert!(replaced.old.ips.contains(reply), "node-b was not stale: {b_stale:?}");
    }
    assert_eq!(jobs.iter().map(|j| j.node.as_str()).collect::<Vec<_>>(), ["node-b"], "one Job, for node B");
    ran_on_its_node(cluster, &jobs[0], 2);
    let done = sweep_done(&run.log).unwrap_or_default();
    assert_eq!((done["flushed"].as_u64(), done["unchanged"].as_u64()), (Some(1), Some(1)), "{done}");
    let answered = answered_by_agents(cluster, &[B], &run.began);
    let a_after = cluster.entries_on(0);
    eprintln!(
        "  node-b answered after the sweep at {:?}; node-a entries before {a_before:?}, after {a_after:?}",
        answered
            .iter()
            .zip(&cluster.clients)
            .filter(|(_, c)| c.node == B)
            .map(|(a, _)| ms(*a))
            .collect::<Vec<_>>()
    );
    for (client, at) in cluster.clients.iter().zip(&answered).filter(|(c, _)| c.node == B) {
        assert!(at.is_some(), "node-b {:?}: not repaired", client.family);
    }
    assert_eq!(a_before.len(), 2, "node-a's two flows: {a_before:?}");
    assert_eq!(a_before, a_after, "node-a's entries were touched");
    settle_sweep(cluster);
    cluster.record_sweep_success(602).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(3));
    let quiet = cluster.sweep_once().unwrap_or_else(|e| panic!("{e}"));
    let none = jobs_of_run(cluster, &quiet.uid);
    eprintln!("the same sweep with nothing changed: {:?}; {} Jobs", sweep_done(&quiet.log), none.len());
    assert!(none.is_empty(), "Jobs with nothing changed: {none:?}");
    let done = sweep_done(&quiet.log).unwrap_or_default();
    assert_eq!((done["flushed"].as_u64(), done["unchanged"].as_u64()), (Some(0), Some(2)), "{done}");
    settle_sweep(cluster);
}

/// The rollout with the trigger as shipped, on portmap 0.8.7: each node's
/// trigger creates one Job, which runs on that node, deletes both families'
/// entries there, and nothing else: each flow's entry is replaced once.
fn each_trigger_repairs_its_own_node(cluster: &mut Cluster) {
    let before: Vec<String> = cluster.flush_jobs().expect("jobs").into_iter().map(|j| j.name).collect();
    let watch = EntryWatch::start(cluster);
    let replaced = cluster.roll(TRIGGER).unwrap_or_else(|e| panic!("{e}"));
    for r in &replaced {
        let (log, events) = cluster.trigger_outcome(r.node, &r.new.name);
        let summary = story::trigger_summary(&log).unwrap_or_else(|| panic!("no summary:\n{log}"));
        eprintln!(
            "trigger on {}: {} -> {}; events {events:?}; {summary}",
            NODES[r.node].0, r.old.name, r.new.name
        );
        let reasons: Vec<&str> = events.iter().map(|(_, reason)| reason.as_str()).collect();
        assert_eq!(reasons, ["FlushJobCreated", "Flushed"], "{}", NODES[r.node].0);
    }
    outages(cluster, &replaced, |pod| pod.name.clone());
    let history = watch.finish();
    let new_pod = |r: &Replaced, family| r.new.ip(family).unwrap_or_default().to_owned();
    one_job_per_node_and_one_change_per_flow(cluster, &before, &replaced, &history, new_pod);
}

/// Each node's trigger made one Job, which ran on that node; each flow's
/// entry changed once, from the old pod to where the new agent answers: a
/// Job that touched the other node would have changed that node's flows
/// again, or left its own stale.
fn one_job_per_node_and_one_change_per_flow(
    cluster: &Cluster,
    before: &[String],
    replaced: &[Replaced],
    history: &[Vec<(u32, String)>],
    answering: impl Fn(&Replaced, Family) -> String,
) {
    let jobs: Vec<FlushJob> =
        cluster.flush_jobs().expect("jobs").into_iter().filter(|j| !before.contains(&j.name)).collect();
    for (i, (name, ..)) in NODES.iter().enumerate() {
        let mine: Vec<&FlushJob> = jobs.iter().filter(|j| j.node == *name).collect();
        assert_eq!(mine.len(), 1, "{name}: the trigger's Jobs: {jobs:?}");
        ran_on_its_node(cluster, mine[0], 2);
        for (c, client) in cluster.clients.iter().enumerate().filter(|(_, c)| c.node == i) {
            let r = &replaced[i];
            eprintln!("  {name} {:?}: entries seen (id, reply source) {:?}", client.family, history[c]);
            let replies: Vec<String> = history[c].iter().map(|(_, reply)| reply.clone()).collect();
            let expected = [r.old.ip(client.family).expect("old ip").to_owned(), answering(r, client.family)];
            assert_eq!(replies, expected, "{name} {:?}: one entry replaced once", client.family);
        }
    }
}

/// #1190 on portmap 1.1.1, both families: the agent switched to the host
/// network leaves each flow's entry on the dead pod; each node's trigger
/// deletes both, and the flows reach the node's own listener untranslated.
fn the_host_network_switch_on_1_1_1_is_repaired_by_each_trigger(cluster: &mut Cluster, nodes: &[RealNode]) {
    for node in nodes {
        node.use_portmap(&portmap("debian")).unwrap_or_else(|e| panic!("{e}"));
    }
    let before: Vec<String> = cluster.flush_jobs().expect("jobs").into_iter().map(|j| j.name).collect();
    let watch = EntryWatch::start(cluster);
    let replaced = cluster.roll(HOST_TRIGGER).unwrap_or_else(|e| panic!("{e}"));
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_owned();
    for r in &replaced {
        let (log, events) = cluster.trigger_outcome(r.node, &r.new.name);
        let summary = story::trigger_summary(&log).unwrap_or_else(|| panic!("no summary:\n{log}"));
        eprintln!("hostNetwork trigger on {}: {} -> {}; {summary}", NODES[r.node].0, r.old.name, r.new.name);
        assert_eq!(summary["deleted"], 2, "{}: {summary}; {events:?}", NODES[r.node].0);
    }
    outages(cluster, &replaced, |_| hostname.clone());
    let history = watch.finish();
    // Untranslated, a flow's replies come from the node's address it was sent to.
    let node_address = |r: &Replaced, family| {
        let node = cluster.nodes[r.node];
        match family {
            Family::V4 => node.address.clone(),
            Family::V6 => node.address6.clone().unwrap_or_default(),
        }
    };
    one_job_per_node_and_one_change_per_flow(cluster, &before, &replaced, &history, node_address);
}

/// Each family's outage on each node: from the old pod's last answer to
/// the new pod's first.
fn outages(cluster: &Cluster, replaced: &[Replaced], responder: impl Fn(&NodeAgent) -> String) {
    for r in replaced {
        for (c, client) in cluster.clients.iter().enumerate().filter(|(_, c)| c.node == r.node) {
            let first = client.stream.wait_for(&responder(&r.new), r.began[c], Duration::from_secs(30));
            let last = client.stream.last_from(&r.old.name);
            let outage = first.zip(last).map(|(f, l)| f.saturating_sub(l));
            eprintln!(
                "  outage {} {:?}: {} (old last answered {}, new first {} after the rollout began)",
                NODES[r.node].0,
                client.family,
                ms(outage),
                ms(last.map(|l| l.saturating_sub(r.began[c]))),
                ms(first.map(|f| f.saturating_sub(r.began[c])))
            );
            assert!(first.is_some(), "{} {:?}: the new agent never answered", NODES[r.node].0, client.family);
        }
    }
}

/// The token a real kubelet mounted for node A's trigger creates node A's
/// Job, and is refused by the admission policy for the same Job on node B.
fn a_token_from_node_a_is_refused_for_node_b(cluster: &Cluster) {
    let pod = cluster.agent_on(0).expect("node-a's agent");
    let uid = text(&cluster.cp.kubectl(&[
        "-n",
        story::AGENT_NAMESPACE,
        "get",
        "pod",
        &pod.name,
        "-o",
        "jsonpath={.metadata.uid}",
    ]));
    let token_file = cluster.nodes[0]
        .dir
        .join(format!("kubelet/pods/{uid}/volumes/kubernetes.io~projected/trigger-token/token"));
    // The kubelet keeps projected volumes on a tmpfs of its own, mounted
    // in the node's mount namespace: read as the node sees it.
    let mut cat = std::process::Command::new("cat");
    cat.arg(&token_file);
    cluster.nodes[0].enter(&mut cat).expect("enter node-a");
    let read = cat.output().expect("cat the token");
    assert!(read.status.success(), "{}: {}", token_file.display(), text_of(&read));
    let token = text(&read);
    let kubeconfig = cluster.cp.dir.join("stolen-from-node-a.kubeconfig");
    cluster.cp.write_kubeconfig(&kubeconfig, token.trim(), story::NAMESPACE).expect("kubeconfig");
    let (log, _) = cluster.trigger_outcome(0, &pod.name);
    let summary = story::trigger_summary(&log).unwrap_or_else(|| panic!("no summary:\n{log}"));
    let genuine = trigger_job_of(cluster, summary["span"]["job"].as_str().expect("the Job's name"));
    let create = |job: &Value| {
        let file = cluster.cp.dir.join(format!("{}.json", job["metadata"]["name"].as_str().unwrap_or("job")));
        std::fs::write(&file, job.to_string()).expect("write the Job");
        let file = file.display().to_string();
        cluster.cp.kubectl_as(&kubeconfig, &["create", "--dry-run=server", "-o", "name", "-f", &file])
    };
    let own = create(&pinned(&genuine, "node-a"));
    eprintln!("node-a's trigger token, its own node: {}", text_of(&own));
    assert!(own.status.success(), "node-a's Job refused: {}", text_of(&own));
    let other = create(&pinned(&genuine, "node-b"));
    eprintln!("node-a's trigger token, node-b: {}", text_of(&other));
    assert!(!other.status.success(), "node-b's Job admitted with node-a's token");
    assert!(
        text_of(&other).contains("ValidatingAdmissionPolicy 'flush-conntrack-jobs'")
            && text_of(&other).contains("bound to node node-a, the Job names node node-b"),
        "{}",
        text_of(&other)
    );
}

/// The Job node A's trigger created, as the API holds it, made creatable again.
fn trigger_job_of(cluster: &Cluster, name: &str) -> Value {
    let out = cluster.cp.kubectl(&["-n", story::NAMESPACE, "get", "job", name, "-o", "json"]);
    let mut job: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("the Job {name}: {e}"));
    for key in ["uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"] {
        job["metadata"].as_object_mut().map(|m| m.remove(key));
    }
    job.as_object_mut().map(|j| j.remove("status"));
    job["spec"].as_object_mut().map(|s| s.remove("selector"));
    for key in
        ["controller-uid", "batch.kubernetes.io/controller-uid", "job-name", "batch.kubernetes.io/job-name"]
    {
        job["spec"]["template"]["metadata"]["labels"].as_object_mut().map(|l| l.remove(key));
    }
    job
}

/// The Job, renamed and pinned to `node` as a trigger there would pin it.
fn pinned(job: &Value, node: &str) -> Value {
    let mut j = job.clone();
    j["metadata"]["name"] = json!(format!("stolen-{node}"));
    j["spec"]["template"]["spec"]["affinity"]["nodeAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0]["matchFields"][0]
        ["values"] = json!([node]);
    j["metadata"]["annotations"]["flush-conntrack/node"] = json!(node);
    j["metadata"]["labels"]["flush-conntrack/node"] = json!(node);
    j["spec"]["template"]["metadata"]["labels"]["flush-conntrack/node"] = json!(node);
    j
}

fn text(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn text_of(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
        .trim()
        .to_owned()
}
