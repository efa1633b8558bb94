//! The hostPort story on a real node, timed: `cargo bench --bench real_node`
//! (as root, with what .ci/run installs). Two parts:
//!
//! - **What the trigger costs the agent** where nothing is stale (portmap
//!   1.1.1): `BENCH_PAIRS` pairs (default 5) of rollouts, one with the
//!   trigger and one without, each a restart of the DaemonSet from its own
//!   pod spec, so that both sides start from the same state: the old pod is
//!   the same spec as the new one. Each prints the new pod's creation (seen
//!   by a watch) to the agent's own "listening" line, the old pod's
//!   deletion to its end, and the outage a client streaming every 10 ms
//!   saw. The pairs alternate which side goes first. The trigger as shipped
//!   (a container after the agent) and as a native sidecar are both paired.
//! - **The tour**: testbed::story::TOUR `BENCH_RUNS` times (default 3),
//!   with the medians of the outage (old pod's last answer to the new pod's
//!   first) and the repair (the new pod's sandbox networked to its first
//!   answer), and, where the entry was stale, how long a sweep by hand took.
//! - **Two dual-stack nodes** (testbed::story::nodes), portmap 0.8.7:
//!   `BENCH_TWO_NODE_RUNS` (default 3) rolling updates of the two-node
//!   DaemonSet with the trigger as shipped and as many without it, each a
//!   restart from its own pod spec. Each prints every node's outage per
//!   family (old pod's last answer to the new pod's first, from a client
//!   on the nodes' LAN sending every 10 ms) and the rolling update end to
//!   end: from the rollout's start to the last flow answered by its node's
//!   new pod. Without the trigger the flows stay stale; a sweep by hand
//!   repairs them before the next run, and how long it took is printed.

use std::path::Path;
use std::time::Duration;

use testbed::controlplane::ControlPlane;
use testbed::image::Built;
use testbed::node::Lan;
use testbed::node::{NodeSpec, RealNode};
use testbed::story::nodes::{start_two_nodes, Cluster, Replaced, LAN_CLIENT};
use testbed::story::{self, Agent, Rollout, Seen, Story, Trigger, TOUR};

fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    values.get(values.len() / 2).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// `with - without`, signed: a trigger can cost nothing and the noise
/// still go either way.
fn added(with: Option<Duration>, without: Option<Duration>) -> Option<f64> {
    Some(with?.as_secs_f64() - without?.as_secs_f64())
}

fn signed(d: Option<f64>) -> String {
    d.map_or("-".to_owned(), |d| format!("{d:+.2} s"))
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A rollout of the agent as `trigger`, from a pod of the same spec.
fn restart(story: &mut Story, trigger: Trigger) -> Rollout {
    let agent = Agent { trigger, host_network: false };
    if story.agent() != agent {
        story.roll(agent, Duration::from_secs(20)).expect("switch the agent's spec");
    }
    story.roll(agent, Duration::from_secs(20)).expect("a measured rollout")
}

/// Pairs of rollouts with `trigger` and as `without`; prints every sample
/// and returns the differences in the agent's start.
fn pairs(story: &mut Story, trigger: Trigger, without: Trigger, label: &str, count: usize) -> Vec<f64> {
    println!("\n{label}: {count} pairs, portmap 1.1.1 (nothing stale)\n");
    println!(
        "| pair | agent start, without | with | added | old pod's end, without | with | outage, without | with |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rows: Vec<(Rollout, Rollout)> = Vec::new();
    for i in 0..count {
        let (without, with) = if i % 2 == 0 {
            let first = restart(story, without);
            (first, restart(story, trigger))
        } else {
            let with = restart(story, trigger);
            (restart(story, without), with)
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            ms(without.agent_start()),
            ms(with.agent_start()),
            signed(added(with.agent_start(), without.agent_start())),
            ms(without.termination()),
            ms(with.termination()),
            ms(without.outage()),
            ms(with.outage()),
        );
        rows.push((without, with));
    }
    let col =
        |f: &dyn Fn(&(Rollout, Rollout)) -> Option<Duration>| median(rows.iter().filter_map(f).collect());
    let mut costs: Vec<f64> =
        rows.iter().filter_map(|(a, b)| added(b.agent_start(), a.agent_start())).collect();
    costs.sort_by(f64::total_cmp);
    let termination: Vec<f64> =
        rows.iter().filter_map(|(a, b)| added(b.termination(), a.termination())).collect();
    println!(
        "| median | {} | {} | {} | {} | {} | {} | {} |",
        ms(col(&|r| r.0.agent_start())),
        ms(col(&|r| r.1.agent_start())),
        signed(costs.get(costs.len() / 2).copied()),
        ms(col(&|r| r.0.termination())),
        ms(col(&|r| r.1.termination())),
        ms(col(&|r| r.0.outage())),
        ms(col(&|r| r.1.outage())),
    );
    let samples = |v: &[f64]| v.iter().map(|d| format!("{d:+.2}")).collect::<Vec<_>>().join(", ");
    println!(
        "\n{label} adds to the agent's start (s): {}; at most {}. To the old pod's end: {}.",
        samples(&costs),
        signed(costs.last().copied()),
        samples(&termination)
    );
    costs
}

fn main() {
    if !testbed::require::kernel_test(
        "bench real_node",
        &[testbed::node::TOOLS, testbed::node::DUAL_STACK_TOOLS].concat(),
    ) {
        return;
    }
    let runs = env_count("BENCH_RUNS", 3);
    let pair_count = env_count("BENCH_PAIRS", 5);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("fct-bench-images-{}", std::process::id()));
    let images = story::images(root, &work).expect("images");
    let portmap = |v: &str| story::portmap_dir(root, v).expect("portmap");
    let cp = ControlPlane::for_kubelets(&[("node-a", "192.0.2.1")]).expect("control plane");
    let first = portmap("debian");
    let spec = NodeSpec {
        name: "node-a",
        address: "192.0.2.1",
        pod_cidr: "10.244.0.0/24",
        client_address: "192.0.2.2",
        portmap: &first,
        ipv6: None,
        lan: None,
    };
    let node = RealNode::start(&cp, &spec).expect("node");
    for image in &images {
        node.import(image).expect("import");
    }
    let mut story = Story::install(&cp, &node, root).expect("install");
    println!(
        "image {}: {} bytes uncompressed, {} bytes compressed; kubelet at its default syncFrequency and serializeImagePulls",
        images[0].reference, images[0].uncompressed_bytes, images[0].compressed_bytes
    );
    if pair_count > 0 {
        let as_it_was = Trigger::None;
        pairs(
            &mut story,
            Trigger::Container,
            as_it_was,
            "The trigger as shipped (a container after the agent), against the agent as it was (its default token mounted)",
            pair_count,
        );
        pairs(
            &mut story,
            Trigger::NativeSidecar,
            as_it_was,
            "The trigger as a native sidecar, against the agent as it was",
            pair_count,
        );
        pairs(
            &mut story,
            Trigger::Container,
            Trigger::NoneWithoutToken,
            "The trigger as shipped, against an agent that mounts no token at all",
            pair_count,
        );
    }

    let mut all: Vec<Vec<Seen>> = Vec::new();
    for run in 1..=runs {
        eprintln!("tour {run} of {runs}");
        all.push(story::tour(&mut story, portmap).expect("tour"));
    }
    if runs > 0 {
        println!("\nThe tour, {runs} runs (medians)\n");
        println!("| case | outage | repair (sandbox to first datagram) | a sweep by hand repairs in |");
        println!("|---|---|---|---|");
    }
    for (i, case) in TOUR.iter().enumerate().filter(|_| runs > 0) {
        let seen: Vec<&Seen> = all.iter().map(|run| &run[i]).collect();
        let answered = seen.iter().filter(|s| s.rollout.first_new_answer.is_some()).count();
        let outage = median(seen.iter().filter_map(|s| s.rollout.outage()).collect());
        let repair = median(seen.iter().filter_map(|s| s.repair()).collect());
        let sweep = median(seen.iter().filter_map(|s| s.sweep.as_ref()?.repaired_after).collect());
        let never = if answered < seen.len() {
            format!(" ({} of {} never)", seen.len() - answered, seen.len())
        } else {
            String::new()
        };
        println!(
            "| {} | {}{never} | {} | {} |",
            case.name,
            ms(outage),
            ms(repair),
            if matches!(case.expect, story::Expect::Stale(_)) { ms(sweep) } else { "-".to_owned() }
        );
    }
    drop(story);
    drop(node);
    drop(cp);
    let two_runs = env_count("BENCH_TWO_NODE_RUNS", 3);
    if two_runs > 0 {
        two_nodes(root, &images, two_runs);
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Each flow's outage on a rolling update, and when the last flow was
/// answered by its node's new pod (since the rollout began), if all were.
fn flows(
    cluster: &Cluster,
    replaced: &[Replaced],
    patience: Duration,
) -> (Vec<Option<Duration>>, Option<Duration>) {
    let mut outages = Vec::new();
    let mut last: Option<Duration> = Some(Duration::ZERO);
    // One patience for all flows: a stale flow must not hold the next one's wait.
    let deadline = std::time::Instant::now() + patience;
    for (c, client) in cluster.clients.iter().enumerate() {
        let r = &replaced[client.node];
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let first = client.stream.wait_for(&r.new.name, r.began[c], left);
        outages.push(first.zip(client.stream.last_from(&r.old.name)).map(|(f, l)| f.saturating_sub(l)));
        last = last.zip(first.map(|f| f.saturating_sub(r.began[c]))).map(|(a, b)| a.max(b));
    }
    (outages, last)
}

/// Rolling updates of the two-node DaemonSet on portmap 0.8.7, with the
/// trigger as shipped and without it.
fn two_nodes(root: &Path, images: &[Built], runs: usize) {
    let nodes: Vec<(&str, &str)> = story::nodes::TWO_NODES.iter().map(|n| (n.0, n.1)).collect();
    let cp = ControlPlane::for_kubelets(&nodes).expect("control plane");
    let lan = Lan::new(LAN_CLIENT.0, LAN_CLIENT.1);
    let portmap = story::portmap_dir(root, "v0.8.7").expect("portmap");
    let nodes = start_two_nodes(&cp, &lan, &portmap, images).expect("two nodes");
    let refs: Vec<&RealNode> = nodes.iter().collect();
    let mut cluster = Cluster::install(&cp, &refs, &lan, root).expect("install");
    println!(
        "\nTwo dual-stack nodes, portmap 0.8.7: a rolling update of the DaemonSet, {runs} runs of each\n"
    );
    println!("| run | agent | node-a IPv4 | node-a IPv6 | node-b IPv4 | node-b IPv6 | end to end | a sweep by hand repaired in |");
    println!("|---|---|---|---|---|---|---|---|");
    for run in 1..=runs {
        for (label, trigger) in [("trigger as shipped", Trigger::Container), ("no tool", Trigger::None)] {
            let agent = Agent { trigger, host_network: false };
            if cluster.agent() != agent {
                cluster.roll(agent).expect("switch the agent's spec");
                repair(&mut cluster);
            }
            let replaced = cluster.roll(agent).expect("a measured rollout");
            let (outages, end) = flows(&cluster, &replaced, Duration::from_secs(20));
            let swept = end.is_none().then(|| repair(&mut cluster));
            let cells: Vec<String> = outages.iter().map(|o| ms(*o)).collect();
            println!(
                "| {run} | {label} | {} | {} | {} |",
                cells.join(" | "),
                ms(end),
                swept.map_or_else(|| "-".to_owned(), ms)
            );
        }
    }
}

/// A sweep by hand; how long until every flow was answered by its node's
/// agent.
fn repair(cluster: &mut Cluster) -> Option<Duration> {
    let run = cluster.sweep_once().expect("a sweep by hand");
    let mut last = Some(Duration::ZERO);
    for (c, client) in cluster.clients.iter().enumerate() {
        let agent = cluster.agent_on(client.node).expect("an agent");
        let first = client.stream.wait_for(&agent.name, run.began[c], Duration::from_secs(20));
        last = last.zip(first.map(|f| f.saturating_sub(run.began[c]))).map(|(a, b)| a.max(b));
    }
    last
}
