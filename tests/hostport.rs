//! The hostPort bug end to end: datagrams to a replaced pod are lost until
//! flush-conntrack runs on the node, then they reach the new pod.

use testbed::hostport::{scenario, NEW_POD, OLD_POD};
use testbed::require;

const BIN: &str = env!("CARGO_BIN_EXE_flush-conntrack");
const TOOLS: &[&str] = &["ip", "nft", "conntrack"];

/// A window of traffic counts as flowing when most datagrams arrive, and as
/// lost when none does (the client sends every 5 ms over 400 ms windows).
fn flowing(w: testbed::hostport::Window) -> bool {
    w.sent >= 20 && w.received * 10 >= w.sent * 8
}

#[test]
fn stale_hostport_flow_is_repaired_by_flushing_on_the_node() {
    if !require::kernel_test("stale_hostport_flow_is_repaired_by_flushing_on_the_node", TOOLS) {
        return;
    }
    let o = scenario(BIN, false, |_| {});
    assert!(flowing(o.before_replacement), "{o:?}");
    assert!(o.stale.sent >= 20 && o.stale.received == 0, "the bug did not reproduce: {o:?}");
    assert_eq!(o.entry_before.as_deref(), Some(OLD_POD));
    assert!(o.tool.status.success(), "{}", String::from_utf8_lossy(&o.tool.stderr));
    assert!(flowing(o.after_flush), "{o:?}");
    assert_eq!(o.entry_after.as_deref(), Some(NEW_POD));
}

#[test]
fn keep_dnat_to_leaves_the_flow_that_already_reaches_the_new_pod_alone() {
    if !require::kernel_test("keep_dnat_to_leaves_the_flow_that_already_reaches_the_new_pod_alone", TOOLS) {
        return;
    }
    let o = scenario(BIN, true, |_| {});
    assert!(o.stale.sent >= 20 && o.stale.received == 0, "the bug did not reproduce: {o:?}");
    assert!(o.tool.status.success(), "{}", String::from_utf8_lossy(&o.tool.stderr));
    assert!(flowing(o.after_flush), "{o:?}");
    let healthy = o.healthy.as_ref().expect("keep scenario has a healthy flow");
    assert!(healthy.id_before.is_some(), "{o:?}");
    assert_eq!(healthy.id_before, healthy.id_after, "the healthy entry was deleted and recreated");
    assert!(flowing(healthy.window), "the healthy flow lost datagrams: {o:?}");
    let stderr = String::from_utf8_lossy(&o.tool.stderr);
    assert!(stderr.contains("kept=1") && stderr.contains("deleted=1"), "{stderr}");
}
