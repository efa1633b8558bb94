//! The hostPort story on a real node, timed: `cargo bench --bench real_node`
//! (as root, with what .ci/run installs). Plays testbed::story::TOUR
//! `BENCH_RUNS` times (default 3) on one node and prints, per case, the
//! medians of what a client streaming every 10 ms saw: the outage (old
//! pod's last answer to the new pod's first) and the repair (the new pod's
//! sandbox networked to its first answer), and, where the entry was stale,
//! how long a sweep by hand took to repair it. The trigger's cost is the
//! difference of outages with and without it where nothing is stale.

use std::path::Path;
use std::time::Duration;

use testbed::controlplane::ControlPlane;
use testbed::node::{NodeSpec, RealNode};
use testbed::story::{self, Seen, Story, TOUR};

fn median(mut values: Vec<Duration>) -> Option<Duration> {
    values.sort();
    values.get(values.len() / 2).copied()
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

fn main() {
    if !testbed::require::kernel_test("bench real_node", &["go", "kubectl", "containerd", "umoci", "skopeo"])
    {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("fct-bench-images-{}", std::process::id()));
    let images = story::images(root, &work).expect("images");
    let portmap = |v: &str| story::portmap_dir(root, v).expect("portmap");
    let cp = ControlPlane::for_kubelets(&[("node-a", "192.0.2.1")]).expect("control plane");
    let first = portmap(TOUR[0].portmap);
    let spec = NodeSpec {
        name: "node-a",
        address: "192.0.2.1",
        pod_cidr: "10.244.0.0/24",
        client_address: "192.0.2.2",
        portmap: &first,
    };
    let node = RealNode::start(&cp, &spec).expect("node");
    for image in &images {
        node.import(image).expect("import");
    }
    let mut story = Story::install(&cp, &node, root).expect("install");
    let mut all: Vec<Vec<Seen>> = Vec::new();
    for run in 1..=runs {
        eprintln!("run {run} of {runs}");
        all.push(story::tour(&mut story, portmap).expect("tour"));
    }
    println!(
        "\n{} runs; image {}: {} bytes uncompressed, {} bytes compressed\n",
        runs, images[0].reference, images[0].uncompressed_bytes, images[0].compressed_bytes
    );
    println!("| case | outage | repair (sandbox to first datagram) | a sweep by hand repairs in |");
    println!("|---|---|---|---|");
    let mut outage_of = Vec::new();
    for (i, case) in TOUR.iter().enumerate() {
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
            if case.expect == story::Expect::Stale { ms(sweep) } else { "-".to_owned() }
        );
        outage_of.push((case.name, outage));
    }
    let find = |name: &str| outage_of.iter().find(|(n, _)| *n == name).and_then(|(_, o)| *o);
    if let (Some(sidecar), Some(waiting), Some(without)) = (
        find("portmap 1.1.1, pod replaced, trigger"),
        find("portmap 1.1.1, pod replaced, waiting trigger"),
        find("portmap 1.1.1, pod replaced, no tool"),
    ) {
        println!(
            "\nWhere nothing is stale (portmap 1.1.1), the trigger adds {} to the agent's outage as a sidecar \
             ({} against {} without it) and {} when it waits for its Job ({}).",
            ms(Some(sidecar.saturating_sub(without))),
            ms(Some(sidecar)),
            ms(Some(without)),
            ms(Some(waiting.saturating_sub(without))),
            ms(Some(waiting))
        );
    }
    drop(story);
    drop(node);
    let _ = std::fs::remove_dir_all(&work);
}
