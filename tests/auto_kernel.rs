//! MODE=auto decides in a fresh network namespace: flush only where the
//! node's hostIP is local and CAP_NET_ADMIN is held; otherwise spawn; refuse
//! when it cannot tell. A wrong decision here could only touch this
//! throwaway namespace's table.

use testbed::netns::Netns;
use testbed::table::{self, Flow};
use testbed::{require, tool};

const BIN: &str = env!("CARGO_BIN_EXE_flush-conntrack");
const TOOLS: &[&str] = &["ip", "conntrack"];

fn node_like(purpose: &str) -> Netns {
    let ns = Netns::new(purpose);
    Flow::udp("192.0.2.2", 40000, "192.0.2.1", 8125, "198.51.100.5").insert_with_conntrack(&ns);
    ns
}

#[test]
fn auto_flushes_where_the_host_ip_is_local() {
    if !require::kernel_test("auto_flushes_where_the_host_ip_is_local", TOOLS) {
        return;
    }
    let ns = node_like("auto-node");
    ns.exec(&["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"]);
    let out =
        tool::run(BIN, &ns, &[("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8125")], tool::Options::default());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("MODE=auto chose") && stderr.contains("mode=flush") && stderr.contains("deleted=1"),
        "{stderr}"
    );
    assert!(table::list(&ns).is_empty());
}

#[test]
fn auto_spawns_from_a_pod_namespace_and_never_flushes_it() {
    if !require::kernel_test("auto_spawns_from_a_pod_namespace_and_never_flushes_it", TOOLS) {
        return;
    }
    let ns = node_like("auto-pod");
    let before = table::list(&ns);
    // With NET_ADMIN but not the node's address, and without NET_ADMIN: both
    // spawn, which here stops at the missing NODE_NAME before any API call.
    for without_net_admin in [false, true] {
        let options = tool::Options { without_net_admin, ..Default::default() };
        let out = tool::run(BIN, &ns, &[("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8125")], options);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("mode=spawn") && stderr.contains("NODE_NAME"), "{stderr}");
        assert_eq!(table::list(&ns), before);
    }
}

#[test]
fn auto_refuses_when_it_cannot_tell() {
    if !require::kernel_test("auto_refuses_when_it_cannot_tell", TOOLS) {
        return;
    }
    let ns = node_like("auto-unsure");
    // Loopback is local in every namespace, a pod's included: a client of
    // the agent on the node sends to 127.0.0.1, and it proves nothing.
    Flow::udp("127.0.0.1", 40001, "127.0.0.1", 8125, "198.51.100.5").insert_with_conntrack(&ns);
    let before = table::list(&ns);
    for target in [None, Some("127.0.0.1"), Some("local,127.0.0.1")] {
        let mut env = vec![("TARGET_PORT", "8125")];
        env.extend(target.map(|t| ("TARGET_IP", t)));
        let out = tool::run(BIN, &ns, &env, tool::Options::default());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{target:?}: {stderr}");
        assert!(
            stderr.contains("cannot tell") && stderr.contains("TARGET_IP names no address of the node"),
            "{target:?}: {stderr}"
        );
        assert_eq!(table::list(&ns), before, "{target:?}");
    }
}
