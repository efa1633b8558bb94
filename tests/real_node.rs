//! The product as its users run it, on a real node (testbed::node): the
//! image built from the Dockerfile (its build stage carried out here, then
//! its final stage), containerd and runc, the CNI bridge and portmap
//! plugins, a kubelet joined to the real control plane, and the statsd
//! overlay installed as the README's Install says: the image pinned by
//! digest with its `images:` entry, applied with kubectl. A client outside the
//! node streams datagrams to the hostPort while the DaemonSet is replaced.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use testbed::controlplane::ControlPlane;
use testbed::node::{self, NodeSpec, RealNode};
use testbed::require;
use testbed::scratch::Scratch;
use testbed::story::{self, Expect, Rollout, Seen, Story, Visits};

const NODE: &str = "node-a";
const NODE_IP: &str = "192.0.2.1";
const CLIENT_IP: &str = "192.0.2.2";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn portmap(version: &str) -> std::path::PathBuf {
    story::portmap_dir(root(), version).unwrap_or_else(|e| panic!("{e}"))
}

fn show(seen: &Seen) {
    let ms = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis()));
    let r = &seen.rollout;
    eprintln!(
        "{}: old {} ({}) last answered at {}; new {} ({}) networked at {}, first answered at {}; outage {}; \
         entry while waiting: {:?}{}",
        seen.case.name,
        r.old.name,
        r.old.ip,
        ms(r.last_old_answer),
        r.new.name,
        r.new.ip,
        ms(r.sandbox),
        ms(r.first_new_answer),
        ms(r.outage()),
        r.entry_while_waiting,
        seen.sweep
            .as_ref()
            .map(|s| format!("; a sweep by hand repaired it in {}", ms(s.repaired_after)))
            .unwrap_or_default()
    );
}

/// Checks one case of the tour against what it should show.
fn check(seen: &Seen) {
    let (what, r) = (seen.case.name, &seen.rollout);
    match seen.case.expect {
        Expect::Stale(visits) => {
            assert!(r.stale(), "{what}: the entry did not point at the old pod");
            assert_eq!(r.first_new_answer, None, "{what}: the new pod answered through a stale entry");
            let sweep = seen.sweep.as_ref().unwrap_or_else(|| panic!("{what}: no sweep"));
            let done =
                sweep.done.as_ref().unwrap_or_else(|| panic!("{what}: no `sweep done` in the sweep's log"));
            assert_eq!(done["failed"], 0, "{what}: {done}");
            assert!(done["deleted"].as_u64() >= Some(1), "{what}: the sweep deleted nothing: {done}");
            assert!(sweep.repaired_after.is_some(), "{what}: the agent did not answer after the sweep");
            assert_eq!(
                sweep.full,
                visits == Visits::Every,
                "{what}: FULL_SWEEP as the README's command sets it"
            );
            let reasons: Vec<&str> = sweep.events.iter().map(|(_, r)| r.as_str()).collect();
            assert_eq!(reasons, ["Flushed", "SweepDone"], "{what}: the Events on the sweep's pod");
            assert!(
                sweep.loopback_repaired,
                "{what}: the client on 127.0.0.1 was not answered after the sweep"
            );
            assert_eq!(r.first_new_loopback_answer, None, "{what}: the client on 127.0.0.1 was not stale");
        }
        Expect::Repaired(deleted) => {
            assert!(r.first_new_answer.is_some(), "{what}: the new pod never answered");
            assert!(r.first_new_loopback_answer.is_some(), "{what}: the client on 127.0.0.1 stayed stale");
            let s = summary_of(r);
            assert_eq!(
                (s["deleted"].as_u64(), s["failed"].as_u64()),
                (Some(deleted), Some(0)),
                "{what}: {s}"
            );
        }
        Expect::Clean => {
            assert!(r.first_new_answer.is_some(), "{what}: the new pod never answered");
            assert!(
                r.first_new_loopback_answer.is_some(),
                "{what}: the client on 127.0.0.1 was not answered"
            );
            assert!(!r.stale(), "{what}: stale");
            if seen.case.agent.trigger.present() {
                assert_eq!(summary_of(r)["deleted"], 0, "{what}: nothing was stale");
            }
        }
    }
}

/// A trigger's outcome shows on its pod as Events.
fn check_events(seen: &Seen) {
    let (what, r) = (seen.case.name, &seen.rollout);
    if !seen.case.agent.trigger.present() {
        assert!(r.events.is_empty(), "{what}: {:?}", r.events);
        return;
    }
    let reasons: Vec<&str> = r.events.iter().map(|(_, reason)| reason.as_str()).collect();
    assert_eq!(reasons, ["FlushJobCreated", "Flushed"], "{what}: the Events on the pod: {:?}", r.events);
    assert!(r.events.iter().all(|(kind, _)| kind == "Normal"), "{what}: {:?}", r.events);
}

fn summary_of(r: &Rollout) -> Value {
    story::trigger_summary(&r.trigger_log)
        .unwrap_or_else(|| panic!("no summary in the trigger's log:\n{}", r.trigger_log))
}

#[test]
fn on_a_real_node() {
    if !require::kernel_test("on_a_real_node", node::TOOLS) {
        return;
    }
    let work = Scratch::new("images");
    let images = story::images(root(), work.path()).unwrap_or_else(|e| panic!("{e}"));
    let shipped = &images[0];
    eprintln!(
        "image {} ({}): {} bytes uncompressed, {} bytes compressed",
        shipped.reference, shipped.digest, shipped.uncompressed_bytes, shipped.compressed_bytes
    );
    // The image is the Dockerfile's final stage, and small.
    assert!(shipped.uncompressed_bytes < 10_000_000, "{} bytes", shipped.uncompressed_bytes);
    assert_eq!(shipped.config["config"]["Entrypoint"], json!(["/flush-conntrack"]));
    assert_eq!(shipped.config["config"]["User"], "65532:65532");
    assert_eq!(shipped.config["config"]["Labels"]["org.opencontainers.image.version"], "0.1.0");

    let cp = ControlPlane::for_kubelets(&[(NODE, NODE_IP)]).unwrap_or_else(|e| panic!("control plane: {e}"));
    let first = portmap(story::TOUR[0].portmap);
    let spec = NodeSpec {
        name: NODE,
        address: NODE_IP,
        pod_cidr: "10.244.0.0/24",
        client_address: CLIENT_IP,
        portmap: &first,
        ipv6: None,
        lan: None,
    };
    let node = RealNode::start(&cp, &spec).unwrap_or_else(|e| panic!("node: {e}"));
    for image in &images {
        node.import(image).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut story = Story::install(&cp, &node, root()).unwrap_or_else(|e| panic!("install: {e}"));
    let seen = story::tour(&mut story, portmap).unwrap_or_else(|e| panic!("{e}"));
    for s in &seen {
        show(s);
    }
    for s in &seen {
        check(s);
        check_events(s);
    }
    // After the trigger of a host-network agent, the flow is no longer
    // translated: it reaches the node's own listener.
    let host =
        seen.iter().find(|s| s.case.agent.host_network && s.case.agent.trigger.present()).expect("the case");
    assert!(host.rollout.first_new_answer.is_some());

    drop(story);
    drop(node);
}
