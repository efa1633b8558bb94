//! The product as its users run it, on a real node (testbed::node): the
//! image built from the Dockerfile's final stage, containerd and runc, the
//! CNI bridge and portmap plugins, a kubelet joined to the real control
//! plane, and the statsd overlay applied with kubectl. A client outside the
//! node streams datagrams to the hostPort while the DaemonSet is replaced.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use testbed::controlplane::ControlPlane;
use testbed::image::{self, Built, Image};
use testbed::node::{NodeSpec, RealNode, PAUSE_IMAGE};
use testbed::require;
use testbed::story::{self, Agent, Rollout, Story, AGENT_IMAGE};

const NODE: &str = "node-a";
const NODE_IP: &str = "192.0.2.1";
const CLIENT_IP: &str = "192.0.2.2";
const SHIPPED: &str = "ghcr.io/flush-conntrack/flush-conntrack:0.1.0";
const TOOLS: &[&str] = &[
    "go",
    "kubectl",
    "openssl",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "umoci",
    "skopeo",
    "gcc",
    "gzip",
    "iptables",
    "conntrack",
    "nsenter",
    "unshare",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn portmap(version: &str) -> std::path::PathBuf {
    if version == "debian" {
        return "/usr/lib/cni".into();
    }
    let out = Command::new("bash").arg(root().join("controlplane/portmap.sh")).arg(version).output().unwrap();
    assert!(out.status.success(), "portmap {version}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().into()
}

fn images(work: &Path) -> Vec<Built> {
    let binary = image::static_release_binary(root()).unwrap_or_else(|e| panic!("{e}"));
    let shipped = Image::from_dockerfile(&root().join("Dockerfile"), &binary, SHIPPED)
        .and_then(|i| i.build(&work.join("flush-conntrack")))
        .unwrap_or_else(|e| panic!("{e}"));
    let pause = image::from_c(&root().join("testbed/images/pause.c"), &work.join("pause"), PAUSE_IMAGE);
    let agent = image::from_c(&root().join("testbed/images/udp-echo.c"), &work.join("udp-echo"), AGENT_IMAGE);
    vec![shipped, pause.unwrap_or_else(|e| panic!("{e}")), agent.unwrap_or_else(|e| panic!("{e}"))]
}

fn show(what: &str, r: &Rollout) {
    let ms = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{} ms", d.as_millis()));
    eprintln!(
        "{what}: old {} ({}) last answered at {}; new {} ({}) networked at {}, running at {}, first answered at {}; \
         outage {}; entry while waiting: {:?}",
        r.old.name,
        r.old.ip,
        ms(r.last_old_answer),
        r.new.name,
        r.new.ip,
        ms(r.sandbox),
        ms(r.running),
        ms(r.first_new_answer),
        ms(r.outage()),
        r.entry_while_waiting
    );
}

fn roll(story: &mut Story, trigger: bool, host_network: bool, patience: u64, what: &str) -> Rollout {
    let r = story
        .roll(Agent { trigger, host_network }, Duration::from_secs(patience))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    show(what, &r);
    r
}

fn summary_of(r: &Rollout) -> Value {
    story::trigger_summary(&r.trigger_log)
        .unwrap_or_else(|| panic!("no summary in the trigger's log:\n{}", r.trigger_log))
}

/// A sweep by hand repairs what is stale: the agent answers again, and the
/// sweep's log totals what it deleted.
fn sweep_repairs(story: &mut Story, r: &Rollout, what: &str) -> Duration {
    let (at, log) = story.sweep_once().unwrap_or_else(|e| panic!("{what}: {e}"));
    let done = story::json_lines(&log)
        .into_iter()
        .find(|v| v["message"] == "sweep done")
        .unwrap_or_else(|| panic!("{what}: no `sweep done` in the sweep's log:\n{log}"));
    assert_eq!(done["failed"], 0, "{what}: {done}");
    assert!(done["deleted"].as_u64() >= Some(1), "{what}: the sweep deleted nothing: {done}");
    let answered = story.stream.wait_for(&r.new.responder, at, Duration::from_secs(10));
    let answered = answered.unwrap_or_else(|| panic!("{what}: the agent did not answer after the sweep"));
    eprintln!(
        "{what}: the sweep ran, the agent answered {} ms after it was created",
        (answered - at).as_millis()
    );
    answered - at
}

#[test]
fn on_a_real_node() {
    if !require::kernel_test("on_a_real_node", TOOLS) {
        return;
    }
    let work = std::env::temp_dir().join(format!("fct-images-{}", std::process::id()));
    let images = images(&work);
    let shipped = &images[0];
    eprintln!(
        "image {}: {} bytes uncompressed, {} bytes compressed",
        shipped.reference, shipped.uncompressed_bytes, shipped.compressed_bytes
    );
    // The image is the Dockerfile's final stage, and small.
    assert!(shipped.uncompressed_bytes < 10_000_000, "{} bytes", shipped.uncompressed_bytes);
    assert_eq!(shipped.config["config"]["Entrypoint"], json!(["/flush-conntrack"]));
    assert_eq!(shipped.config["config"]["User"], "65532:65532");
    assert_eq!(shipped.config["config"]["Labels"]["org.opencontainers.image.version"], "0.1.0");

    let cp = ControlPlane::for_kubelets(&[(NODE, NODE_IP)]).unwrap_or_else(|e| panic!("control plane: {e}"));
    let (old, debian, new) = (portmap("v0.8.7"), portmap("debian"), portmap("v1.10.0"));
    let spec = NodeSpec {
        name: NODE,
        address: NODE_IP,
        pod_cidr: "10.244.0.0/24",
        client_address: CLIENT_IP,
        portmap: &old,
    };
    let node = RealNode::start(&cp, &spec).unwrap_or_else(|e| panic!("node: {e}"));
    for image in &images {
        node.import(image).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut story = Story::install(&cp, &node, root()).unwrap_or_else(|e| panic!("install: {e}"));

    // portmap 0.8.7 never deletes entries: the classical bug.
    let what = "portmap 0.8.7, no trigger";
    let r = roll(&mut story, false, false, 4, what);
    assert!(r.stale(), "{what}: the entry did not point at the old pod");
    assert_eq!(r.first_new_answer, None, "{what}: the new pod answered through a stale entry");
    sweep_repairs(&mut story, &r, what);

    let what = "portmap 0.8.7, trigger";
    let r = roll(&mut story, true, false, 20, what);
    assert!(r.first_new_answer.is_some(), "{what}: the new pod never answered");
    let s = summary_of(&r);
    assert_eq!((s["deleted"].as_u64(), s["failed"].as_u64()), (Some(1), Some(0)), "{what}: {s}");
    assert_eq!(story.client_entry_reply_source().as_deref(), Some(r.new.ip.as_str()));

    // Debian's portmap 1.1.1 deletes them when the new pod is set up.
    node.use_portmap(&debian).unwrap();
    let what = "portmap 1.1.1, trigger";
    let r = roll(&mut story, true, false, 20, what);
    assert!(r.first_new_answer.is_some() && !r.stale(), "{what}");
    let s = summary_of(&r);
    assert_eq!(s["deleted"], 0, "{what}: nothing was stale: {s}");
    let what = "portmap 1.1.1, no trigger";
    let r = roll(&mut story, false, false, 20, what);
    assert!(r.first_new_answer.is_some() && !r.stale(), "{what}");

    // ...but not when the agent moves to the host network (#1190): no ADD.
    let what = "portmap 1.1.1, switch to hostNetwork, no trigger";
    let r = roll(&mut story, false, true, 4, what);
    assert!(r.stale(), "{what}: the entry did not point at the old pod");
    assert_eq!(r.first_new_answer, None, "{what}");
    sweep_repairs(&mut story, &r, what);
    roll(&mut story, false, false, 20, "portmap 1.1.1, back to the pod network");
    let what = "portmap 1.1.1, switch to hostNetwork, trigger";
    let r = roll(&mut story, true, true, 20, what);
    assert!(r.first_new_answer.is_some(), "{what}: the host-network agent never answered");
    let s = summary_of(&r);
    assert_eq!(s["deleted"], 1, "{what}: {s}");
    assert_eq!(
        story.client_entry_reply_source().as_deref(),
        Some(NODE_IP),
        "{what}: not translated any more"
    );

    // portmap 1.10 deletes them on ADD and on DEL.
    node.use_portmap(&new).unwrap();
    let what = "portmap 1.10.0, back to the pod network, trigger";
    let r = roll(&mut story, true, false, 20, what);
    assert!(r.first_new_answer.is_some() && !r.stale(), "{what}");
    assert_eq!(summary_of(&r)["deleted"], 0, "{what}");
    let what = "portmap 1.10.0, switch to hostNetwork, no trigger";
    let r = roll(&mut story, false, true, 20, what);
    assert!(r.first_new_answer.is_some() && !r.stale(), "{what}: 1.10 left a stale entry");

    drop(story);
    drop(node);
    let _ = std::fs::remove_dir_all(&work);
}
