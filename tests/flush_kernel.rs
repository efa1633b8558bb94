//! The flush against the real kernel, each test in fresh network namespaces
//! of its own (never the host's table), checked with conntrack-tools.

use std::collections::BTreeSet;
use std::process::Output;

use serde_json::Value;
use testbed::netns::Netns;
use testbed::table::{self, mixed, Flow, Mixed, MIXED_ENV};
use testbed::{require, tool};

const BIN: &str = env!("CARGO_BIN_EXE_flush-conntrack");
const TOOLS: &[&str] = &["ip", "conntrack"];

fn keys(flows: &[Flow]) -> BTreeSet<(String, std::net::IpAddr, u16, std::net::IpAddr, u16, u16)> {
    flows.iter().map(Flow::key).collect()
}

fn table_keys(ns: &Netns) -> BTreeSet<(String, std::net::IpAddr, u16, std::net::IpAddr, u16, u16)> {
    table::list(ns).iter().map(|l| l.flow.key()).collect()
}

fn flush(ns: &Netns, env: &[(&str, &str)]) -> Output {
    let mut env = env.to_vec();
    env.push(("LOG_FORMAT", "json"));
    tool::run(BIN, ns, &env, tool::Options::default())
}

/// The summary line of a JSON-logging run.
fn summary(out: &Output) -> Value {
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("scanned").is_some())
        .unwrap_or_else(|| panic!("no summary in:\n{stderr}"))
}

fn counts(s: &Value) -> [u64; 5] {
    ["matched", "deleted", "already_gone", "kept", "failed"].map(|k| s[k].as_u64().unwrap_or(u64::MAX))
}

fn filled(purpose: &str, m: &Mixed) -> Netns {
    let ns = Netns::new(purpose);
    for f in m.delete.iter().chain(&m.stay) {
        f.insert_with_conntrack(&ns);
    }
    assert_eq!(table::list(&ns).len(), m.delete.len() + m.stay.len());
    ns
}

#[test]
fn deletes_exactly_the_stale_entries_of_a_mixed_table() {
    if !require::kernel_test("deletes_exactly_the_stale_entries_of_a_mixed_table", TOOLS) {
        return;
    }
    let m = mixed();
    let ns = filled("mixed", &m);
    let out = flush(&ns, MIXED_ENV);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(table_keys(&ns), keys(&m.stay));
    let s = summary(&out);
    assert_eq!(counts(&s), [5, 5, 0, 2, 0]);
    assert_eq!((s["dry_run"].as_bool(), s["kernel_flushed"].as_u64()), (Some(false), Some(0)), "{s}");
    assert_scanned(&s, m.delete.len() + m.stay.len());
}

/// What the kernel returned after its own filter: at least every match and
/// kept entry that did not go in a filtered flush, at most the table
/// (kernels before 5.8 return all of it).
fn assert_scanned(s: &Value, table: usize) {
    let scanned = s["scanned"].as_u64().unwrap_or(0);
    let [matched, kept, flushed] = ["matched", "kept", "kernel_flushed"].map(|k| s[k].as_u64().unwrap_or(0));
    let seen = (matched + kept).saturating_sub(flushed);
    assert!(seen > 0 && (seen..=table as u64).contains(&scanned), "scanned {scanned} of {table}: {s}");
}

#[test]
fn without_keep_the_kernel_filtered_flush_deletes_the_same_set() {
    if !require::kernel_test("without_keep_the_kernel_filtered_flush_deletes_the_same_set", TOOLS) {
        return;
    }
    let m = mixed();
    let ns = filled("nokeep", &m);
    let env = [("MODE", "flush"), ("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8125")];
    let out = flush(&ns, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected: Vec<Flow> = m
        .delete
        .iter()
        .chain(&m.stay)
        .filter(|f| !(f.protocol == "udp" && f.dst.to_string() == "192.0.2.1" && f.dport == 8125))
        .cloned()
        .collect();
    assert_eq!(table_keys(&ns), keys(&expected));
    let s = summary(&out);
    assert_eq!(s["deleted"], 4, "{s}");
}

#[test]
fn dry_run_lists_and_deletes_nothing() {
    if !require::kernel_test("dry_run_lists_and_deletes_nothing", TOOLS) {
        return;
    }
    let m = mixed();
    let ns = filled("dry", &m);
    let before = table::list(&ns);
    let mut env = MIXED_ENV.to_vec();
    env.push(("DRY_RUN", "true"));
    let out = flush(&ns, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(table::list(&ns), before, "same entries, same IDs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("would delete").count(), 5, "{stderr}");
    assert!(stderr.contains("192.0.2.4:40002 -> 192.0.2.1:8125 (not translated)"), "{stderr}");
    let s = summary(&out);
    assert_eq!(counts(&s), [5, 0, 0, 2, 0]);
    assert_eq!((s["dry_run"].as_bool(), s["kernel_flushed"].as_u64()), (Some(true), Some(0)), "{s}");
    assert_scanned(&s, before.len());
}

#[test]
fn bad_configuration_exits_2_naming_the_variable_and_touches_nothing() {
    if !require::kernel_test("bad_configuration_exits_2_naming_the_variable_and_touches_nothing", TOOLS) {
        return;
    }
    let m = mixed();
    let ns = filled("badcfg", &m);
    let before = table::list(&ns);
    for (bad, needle) in [
        (vec![("MODE", "flush")], "neither TARGET_IP nor TARGET_PORT"),
        (vec![("MODE", "flush"), ("TARGET_PORT", "0")], "TARGET_PORT=\"0\""),
        (vec![("MODE", "flush"), ("TARGET_PORT", "70000")], "TARGET_PORT=\"70000\""),
        (vec![("MODE", "flush"), ("TARGET_PORT", "8100-8000")], "inverted"),
        (vec![("MODE", "flush"), ("TARGET_IP", "192.0.2.300")], "TARGET_IP=\"192.0.2.300\""),
        (vec![("MODE", "flush"), ("TARGET_PORT", "8125"), ("TARGET_PROTOCOL", "icmp")], "TARGET_PROTOCOL"),
        (vec![("MODE", "flush"), ("TARGET_PORT", "8125"), ("KEEP_DNAT_TO", "new-pod")], "KEEP_DNAT_TO"),
        (vec![("MODE", "nuke"), ("TARGET_PORT", "8125")], "MODE=\"nuke\""),
        (vec![("MODE", "flush"), ("TARGET_PORT", "8125"), ("DRY_RUN", "sure")], "DRY_RUN"),
        (vec![("MODE", "spawn"), ("TARGET_PORT", "8125")], "NODE_NAME"),
        (
            vec![("MODE", "spawn"), ("TARGET_PORT", "8125"), ("NODE_NAME", "n"), ("WAIT_TIMEOUT", "soon")],
            "WAIT_TIMEOUT",
        ),
    ] {
        let out = tool::run(BIN, &ns, &bad, tool::Options::default());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(stderr.contains(needle), "{bad:?}: {stderr}");
        assert_eq!(table::list(&ns), before, "{bad:?} touched the table");
    }
}

#[test]
fn without_net_admin_exits_3_with_advice_and_touches_nothing() {
    if !require::kernel_test("without_net_admin_exits_3_with_advice_and_touches_nothing", TOOLS) {
        return;
    }
    let m = mixed();
    let ns = filled("nocap", &m);
    let before = table::list(&ns);
    for env in [MIXED_ENV.to_vec(), vec![("MODE", "flush"), ("TARGET_PORT", "8125")]] {
        let options = tool::Options { without_net_admin: true, ..Default::default() };
        let out = tool::run(BIN, &ns, &env, options);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{stderr}");
        assert!(stderr.contains("CAP_NET_ADMIN") && stderr.contains("hostNetwork"), "{stderr}");
        assert_eq!(table::list(&ns), before);
    }
}

#[test]
fn writes_the_summary_to_the_termination_log() {
    if !require::kernel_test("writes_the_summary_to_the_termination_log", TOOLS) {
        return;
    }
    let m = mixed();
    let ns = filled("termlog", &m);
    let dev = std::env::temp_dir().join(format!("fct-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("termination-log"), "").unwrap();
    let options = tool::Options { dev: Some(&dev), ..Default::default() };
    let out = tool::run(BIN, &ns, MIXED_ENV, options);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let message = std::fs::read_to_string(dev.join("termination-log")).unwrap();
    let s: Value = serde_json::from_str(&message).unwrap_or_else(|e| panic!("{e}: {message}"));
    assert_eq!(counts(&s), [5, 5, 0, 2, 0]);
    assert!(s["elapsed_seconds"].as_f64().is_some_and(|t| t > 0.0), "{s}");
    std::fs::remove_dir_all(&dev).unwrap();
}

#[test]
fn two_flushers_at_once_both_succeed_and_leave_nothing_stale() {
    if !require::kernel_test("two_flushers_at_once_both_succeed_and_leave_nothing_stale", TOOLS) {
        return;
    }
    const STALE: usize = 20_000;
    const KEPT: usize = 2_000;
    for (purpose, keep) in [("race-dump", true), ("race-kernel", false)] {
        let ns = Netns::new(purpose);
        let mut flows = table::udp_flows(STALE, "192.0.2.1", 8125, "198.51.100.5", 0);
        flows.extend(table::udp_flows(KEPT, "192.0.2.1", 8125, "198.51.100.6", STALE));
        assert_eq!(table::insert(&ns, &flows), 0);
        assert_eq!(table::count(&ns), STALE + KEPT);
        let mut env = vec![
            ("MODE", "flush"),
            ("TARGET_IP", "192.0.2.1"),
            ("TARGET_PORT", "8125"),
            ("LOG_FORMAT", "json"),
        ];
        if keep {
            env.push(("KEEP_DNAT_TO", "198.51.100.6"));
        }
        let children: Vec<_> = (0..2)
            .map(|_| {
                tool::command(BIN, &ns, &env, tool::Options::default())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<Output> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        for out in &outs {
            assert!(out.status.success(), "{purpose}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let left = table::count(&ns);
        if keep {
            assert_eq!(left, KEPT, "{purpose}: only the kept entries remain");
            let deleted: u64 = outs.iter().map(|o| summary(o)["deleted"].as_u64().unwrap()).sum();
            let gone: u64 = outs.iter().map(|o| summary(o)["already_gone"].as_u64().unwrap()).sum();
            assert_eq!(deleted, STALE as u64, "{purpose}: every entry deleted exactly once");
            assert!(gone <= STALE as u64);
            for out in &outs {
                let s = summary(out);
                let [matched, deleted, gone, _, failed] = counts(&s);
                assert_eq!(matched, deleted + gone, "{purpose}: each match deleted or gone: {s}");
                assert_eq!(failed, 0, "{s}");
            }
        } else {
            assert_eq!(left, 0, "{purpose}");
        }
    }
}

#[test]
fn many_matches_switch_to_the_kernel_filtered_flush_with_exact_counts() {
    if !require::kernel_test("many_matches_switch_to_the_kernel_filtered_flush_with_exact_counts", TOOLS) {
        return;
    }
    // KERNEL_FLUSH=false is the path of kernels before 6.12: entry by entry.
    for kernel_flush in ["true", "false"] {
        let ns = Netns::new("switch");
        let mut flows = table::udp_flows(20_000, "192.0.2.1", 8125, "198.51.100.5", 0);
        flows.extend(table::udp_flows(500, "192.0.2.1", 8126, "198.51.100.5", 20_000));
        assert_eq!(table::insert(&ns, &flows), 0);
        let env = [
            ("MODE", "flush"),
            ("TARGET_IP", "192.0.2.1"),
            ("TARGET_PORT", "8125"),
            ("KERNEL_FLUSH", kernel_flush),
        ];
        let out = flush(&ns, &env);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(table::count(&ns), 500, "only the other port remains");
        let s = summary(&out);
        assert_eq!(counts(&s), [20_000, 20_000, 0, 0, 0], "{s}");
        let flushed = s["kernel_flushed"].as_u64().unwrap();
        if kernel_flush == "true" {
            // The switch comes after 8192 matches entry by entry, not before.
            assert!(flushed > 0 && flushed <= 20_000 - 8_192, "part by entry, the rest in the kernel: {s}");
            assert_scanned(&s, 20_500);
        } else {
            assert_eq!(flushed, 0, "{s}");
        }
    }
}

/// Entries at the target address, `per_port` on each of these ports.
fn on_ports(ports: &[u16], per_port: usize, reply_src: &str, first: usize) -> Vec<Flow> {
    let mut flows = Vec::new();
    for (i, &port) in ports.iter().enumerate() {
        flows.extend(table::udp_flows(per_port, "192.0.2.1", port, reply_src, first + i * per_port));
    }
    flows
}

#[test]
fn a_port_range_past_the_kernel_flush_threshold_deletes_only_the_range() {
    if !require::kernel_test("a_port_range_past_the_kernel_flush_threshold_deletes_only_the_range", TOOLS) {
        return;
    }
    // A range is not something the kernel's flush filter can say: a filtered
    // flush here would take every port of the address with it.
    let ns = Netns::new("range");
    let inside = on_ports(&[8000, 8050, 8100], 3_500, "198.51.100.5", 0);
    let outside = on_ports(&[7999, 8101, 9999], 300, "198.51.100.5", 20_000);
    assert_eq!(table::insert(&ns, &inside), 0);
    assert_eq!(table::insert(&ns, &outside), 0);
    let out = flush(&ns, &[("MODE", "flush"), ("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8000-8100")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(table_keys(&ns), keys(&outside), "every entry outside the range remains");
    let s = summary(&out);
    assert_eq!(counts(&s), [10_500, 10_500, 0, 0, 0], "{s}");
    assert_eq!(s["kernel_flushed"], 0, "{s}");
}

#[test]
fn a_keep_set_past_the_kernel_flush_threshold_keeps_its_entries() {
    if !require::kernel_test("a_keep_set_past_the_kernel_flush_threshold_keeps_its_entries", TOOLS) {
        return;
    }
    // The kernel's filtered flush cannot spare an entry by its reply source,
    // so with KEEP_DNAT_TO every delete goes entry by entry.
    let ns = Netns::new("keepmany");
    let stale = table::udp_flows(10_000, "192.0.2.1", 8125, "198.51.100.5", 0);
    let kept = table::udp_flows(200, "192.0.2.1", 8125, "198.51.100.6", 10_000);
    assert_eq!(table::insert(&ns, &stale), 0);
    assert_eq!(table::insert(&ns, &kept), 0);
    let ids_before: BTreeSet<u32> = table::list(&ns)
        .into_iter()
        .filter(|l| l.flow.reply_src.to_string() == "198.51.100.6")
        .map(|l| l.id)
        .collect();
    assert_eq!(ids_before.len(), 200);
    let env = [
        ("MODE", "flush"),
        ("TARGET_IP", "192.0.2.1"),
        ("TARGET_PORT", "8125"),
        ("KEEP_DNAT_TO", "198.51.100.6"),
    ];
    let out = flush(&ns, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ids_after: BTreeSet<u32> = table::list(&ns).into_iter().map(|l| l.id).collect();
    assert_eq!(ids_after, ids_before, "exactly the kept entries remain, the same entries");
    let s = summary(&out);
    assert_eq!(counts(&s), [10_000, 10_000, 0, 200, 0], "{s}");
    assert_eq!(s["kernel_flushed"], 0, "{s}");
}

/// A dry run lists what it would delete, up to 1000 lines, and counts all.
#[test]
fn a_dry_run_lists_the_first_thousand_and_counts_every_match() {
    if !require::kernel_test("a_dry_run_lists_the_first_thousand_and_counts_every_match", TOOLS) {
        return;
    }
    let ns = Netns::new("dry-cap");
    assert_eq!(table::insert(&ns, &table::udp_flows(1_200, "192.0.2.1", 8125, "198.51.100.5", 0)), 0);
    let before = table::list(&ns);
    let out = flush(
        &ns,
        &[("MODE", "flush"), ("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8125"), ("DRY_RUN", "true")],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("would delete").count(), 1_000);
    let s = summary(&out);
    assert_eq!(
        (s["matched"].as_u64(), s["deleted"].as_u64(), s["dry_run"].as_bool()),
        (Some(1_200), Some(0), Some(true)),
        "{s}"
    );
    assert_eq!(table::list(&ns), before, "same entries, same IDs");
}

/// Deletes name the entry's conntrack ID as well as its tuple, and the
/// kernel honours it: an entry under the same tuple with another ID (a new
/// flow, re-created after the dumped one went) is not deleted; with its own
/// ID it is. (The kernel derives the ID from the entry's address and
/// original tuple, so a new flow that also reused the old entry's memory
/// gets the old ID back: seen on 6.18, and said in docs/ctnetlink.md.)
#[test]
fn a_delete_spares_an_entry_under_the_same_tuple_with_another_id() {
    use flush_conntrack::ctnetlink::delete::{DeleteCounts, Deleter};

    if !require::kernel_test("a_delete_spares_an_entry_under_the_same_tuple_with_another_id", TOOLS) {
        return;
    }
    let ns = Netns::new("reused");
    Flow::udp("192.0.2.2", 40000, "192.0.2.1", 8125, "198.51.100.6").insert_with_conntrack(&ns);
    let live = table::list(&ns)[0].id;
    let delete = |id: u32| {
        ns.within(|| {
            let mut deleter = Deleter::open().unwrap();
            deleter.push(&dumped(40000, id)).unwrap();
            deleter.finish().unwrap()
        })
    };
    let (counts, failure) = delete(live.wrapping_add(1));
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(counts, DeleteCounts { deleted: 0, already_gone: 1, failed: 0 });
    assert_eq!(table::list(&ns).first().map(|l| l.id), Some(live), "the entry with another ID stays");
    let (counts, failure) = delete(live);
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(counts, DeleteCounts { deleted: 1, already_gone: 0, failed: 0 });
    assert!(table::list(&ns).is_empty());
}

#[test]
fn deleting_an_entry_that_is_already_gone_counts_it_as_gone_not_failed() {
    use flush_conntrack::ctnetlink::delete::{DeleteCounts, Deleter};

    if !require::kernel_test("deleting_an_entry_that_is_already_gone_counts_it_as_gone_not_failed", TOOLS) {
        return;
    }
    let ns = Netns::new("gone");
    let present = Flow::udp("192.0.2.2", 40000, "192.0.2.1", 8125, "198.51.100.5");
    present.insert_with_conntrack(&ns);
    let id = table::list(&ns)[0].id;
    // One entry that exists, one that never did, and the first one again.
    let batch = [dumped(40000, id), dumped(40001, 1), dumped(40000, id)];
    let (counts, failure) = ns.within(|| {
        let mut deleter = Deleter::open().unwrap();
        for e in &batch {
            deleter.push(e).unwrap();
        }
        deleter.finish().unwrap()
    });
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(counts, DeleteCounts { deleted: 1, already_gone: 2, failed: 0 });
    assert!(table::list(&ns).is_empty());
}

#[test]
fn target_ip_local_is_every_address_of_the_namespace_as_portmap_matches() {
    if !require::kernel_test("target_ip_local_is_every_address_of_the_namespace_as_portmap_matches", TOOLS) {
        return;
    }
    // A node with its hostIP, a second address and loopback, as portmap's
    // `--dst-type LOCAL` DNAT sees them.
    let ns = Netns::new("local");
    ns.exec(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"]);
    ns.exec(&["ip", "addr", "add", "192.0.2.1/24", "dev", "eth0"]);
    ns.exec(&["ip", "addr", "add", "198.18.0.1/24", "dev", "eth0"]);
    ns.exec(&["ip", "addr", "add", "2001:db8::1/64", "dev", "eth0", "nodad"]);
    ns.exec(&["ip", "link", "set", "eth0", "up"]);
    let stale = vec![
        // a host-network client to 127.0.0.1, one to the second address,
        // one to the hostIP, one over IPv6: all still sent to the old pod
        Flow::udp("127.0.0.1", 40001, "127.0.0.1", 8125, "10.244.0.5"),
        Flow::udp("192.0.2.2", 40003, "198.18.0.1", 8125, "10.244.0.5"),
        Flow::udp("192.0.2.2", 40002, "192.0.2.1", 8125, "10.244.0.5"),
        Flow::udp("2001:db8::2", 40002, "2001:db8::1", 8125, "2001:db8:1::5"),
    ];
    let stay = vec![
        // already at the new pod
        Flow::udp("192.0.2.3", 40004, "192.0.2.1", 8125, "10.244.0.6"),
        // a Service's virtual IP translated to a live backend of another pod
        Flow::udp("10.244.0.9", 40005, "10.96.5.5", 8125, "10.244.0.7"),
        // an outbound flow of the node to a remote :8125
        Flow::udp("192.0.2.1", 40006, "203.0.113.9", 8125, "203.0.113.9"),
    ];
    for f in stale.iter().chain(&stay) {
        f.insert_with_conntrack(&ns);
    }
    let ids_before: BTreeSet<u32> = table::list(&ns)
        .into_iter()
        .filter(|l| stay.iter().any(|f| f.key() == l.flow.key()))
        .map(|l| l.id)
        .collect();
    assert_eq!(ids_before.len(), stay.len());
    let env = [
        ("MODE", "flush"),
        ("TARGET_IP", "local"),
        ("TARGET_PORT", "8125"),
        ("KEEP_DNAT_TO", "10.244.0.6,2001:db8:1::6"),
    ];
    let out = flush(&ns, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(table_keys(&ns), keys(&stay), "exactly the stale entries went");
    let ids_after: BTreeSet<u32> = table::list(&ns).into_iter().map(|l| l.id).collect();
    assert_eq!(ids_after, ids_before, "the others are the same entries");
    assert_eq!(counts(&summary(&out)), [4, 4, 0, 1, 0]);

    // Only the hostIP, as before: the loopback and second-address flows stay stale.
    for f in &stale {
        f.insert_with_conntrack(&ns);
    }
    let out = flush(&ns, &[("MODE", "flush"), ("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8125")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let left = table_keys(&ns);
    assert!(left.contains(&stale[0].key()) && left.contains(&stale[1].key()), "{left:?}");
}

#[test]
fn a_table_with_nothing_for_the_ports_says_so_instead_of_a_bare_deleted_0() {
    if !require::kernel_test("a_table_with_nothing_for_the_ports_says_so_instead_of_a_bare_deleted_0", TOOLS)
    {
        return;
    }
    // What a node on a BPF dataplane looks like to ctnetlink: other flows,
    // none to the agent's port.
    let other = [
        Flow::udp("192.0.2.2", 40000, "192.0.2.1", 9125, "198.51.100.5"),
        Flow::udp("192.0.2.3", 40001, "192.0.2.9", 8125, "198.51.100.5"),
    ];
    let ns = Netns::new("nothing-there");
    for f in &other {
        f.insert_with_conntrack(&ns);
    }
    let env = [("MODE", "flush"), ("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8125")];
    let out = flush(&ns, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = summary(&out);
    assert_eq!(counts(&s), [0, 0, 0, 0, 0]);
    let message = s["fields"]["message"].as_str().or(s["message"].as_str()).unwrap_or_default();
    assert!(message.contains("no conntrack entry at all for the target ports"), "{s}");
    assert!(message.contains("nothing was repaired"), "{s}");
    assert_eq!(table_keys(&ns), keys(&other), "nothing else is touched");

    // One entry for the port, reaching the live pod: found, kept, and the
    // plain summary.
    Flow::udp("192.0.2.2", 40002, "192.0.2.1", 8125, "198.51.100.6").insert_with_conntrack(&ns);
    let mut env = env.to_vec();
    env.push(("KEEP_DNAT_TO", "198.51.100.6"));
    let out = flush(&ns, &env);
    let s = summary(&out);
    assert_eq!(counts(&s), [0, 0, 0, 1, 0]);
    let message = s["fields"]["message"].as_str().or(s["message"].as_str()).unwrap_or_default();
    assert_eq!(message, "flush done", "{s}");
}

/// The entry a dump returns for 192.0.2.2:`sport` -> 192.0.2.1:8125/udp,
/// translated to 198.51.100.5, with this conntrack ID.
fn dumped(sport: u16, id: u32) -> flush_conntrack::ctnetlink::Entry {
    flush_conntrack::ctnetlink::Entry {
        family: flush_conntrack::ctnetlink::Family::V4,
        protocol: 17,
        src: "192.0.2.2".parse().unwrap(),
        dst: "192.0.2.1".parse().unwrap(),
        src_port: sport,
        dst_port: 8125,
        reply_src: Some("198.51.100.5".parse().unwrap()),
        id: Some(id),
        zone: 0,
    }
}

/// An entry that was never in the table.
fn absent(sport: u16) -> flush_conntrack::ctnetlink::Entry {
    dumped(sport, 1)
}

/// Deletes answer only when they fail, so an error can still be queued when
/// the next request goes out: each request carries its own sequence number
/// and only its answers count.
#[test]
fn an_answer_counts_only_for_the_request_it_echoes() {
    use flush_conntrack::ctnetlink::request;
    use flush_conntrack::ctnetlink::socket::CtSocket;

    if !require::kernel_test("an_answer_counts_only_for_the_request_it_echoes", TOOLS) {
        return;
    }
    let ns = Netns::new("sequence");
    Flow::udp("192.0.2.3", 40000, "192.0.2.1", 8125, "198.51.100.5").insert_with_conntrack(&ns);
    let (first, size) = ns.within(|| {
        let mut socket = CtSocket::open().unwrap();
        let first = socket.next_sequence();
        let mut bytes = Vec::new();
        request::emit_into(&mut request::delete(&absent(40000)), first, &mut bytes);
        socket.send(&bytes).unwrap();
        // ENOENT for the delete is queued ahead of the statistics.
        (first, socket.table_size().map_err(|e| e.to_string()))
    });
    assert_eq!(size, Ok(1), "the delete's ENOENT (sequence {first}) was taken for the size's answer");
}

/// A receive buffer too small for a batch's error answers loses some, and
/// the kernel says so; counting the lost ones as deleted would be a lie.
#[test]
fn lost_error_answers_fail_the_drain() {
    use flush_conntrack::ctnetlink::request;
    use flush_conntrack::ctnetlink::socket::CtSocket;

    if !require::kernel_test("lost_error_answers_fail_the_drain", TOOLS) {
        return;
    }
    let ns = Netns::new("enobufs");
    let (drained, answers) = ns.within(|| {
        let mut socket = CtSocket::open().unwrap();
        socket.cap_acks().unwrap();
        // The kernel's minimum receive buffer holds a few answers, not 256.
        socket.grow_buffers(1 << 20, 0);
        let mut batch = Vec::new();
        for sport in 0..256 {
            let sequence = socket.next_sequence();
            request::emit_into(&mut request::delete(&absent(40000 + sport)), sequence, &mut batch);
        }
        socket.send(&batch).unwrap();
        let mut answers = 0;
        let drained = socket.drain_errors(|_| answers += 1).map_err(|e| e.raw_os_error());
        (drained, answers)
    });
    assert_eq!(drained, Err(Some(libc::ENOBUFS)), "{answers} answers read");
}

/// Under CAP_NET_ADMIN the delete socket's buffers pass the sysctl caps
/// (212992 bytes by default), which sets how many deletes go in one batch.
#[test]
fn the_delete_socket_is_granted_buffers_past_the_sysctl_caps() {
    use flush_conntrack::ctnetlink::socket::CtSocket;

    if !require::kernel_test("the_delete_socket_is_granted_buffers_past_the_sysctl_caps", TOOLS) {
        return;
    }
    let ns = Netns::new("buffers");
    let granted = ns.within(|| CtSocket::open().unwrap().grow_buffers(1 << 20, 4 << 20));
    // The kernel reports what it keeps: twice what was asked.
    assert_eq!(granted, (2 << 20, 8 << 20));
}
