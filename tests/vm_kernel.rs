//! The flush on the kernel most users' nodes run, not only on this
//! machine's: Debian 12's Linux 6.1 (testbed::vm::DEBIAN_KERNEL), booted
//! under qemu. 6.1 has no filtered CT_DELETE, so the flush takes its
//! fallback path there. Every table is checked by conntrack-tools inside
//! the guest, not by the tool.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use testbed::image;
use testbed::require;
use testbed::scratch::Scratch;
use testbed::table::{self, mixed, Flow, MIXED_ENV};
use testbed::vm::{self, Kernel};

const TOOLS: &[&str] = &["qemu-system-x86_64", "cpio", "gzip", "gcc", "conntrack", "apt-get", "dpkg-deb"];

type Key = (String, std::net::IpAddr, u16, std::net::IpAddr, u16, u16);

/// One flush in the guest: the table it starts from, the environment, and
/// whether the table is listed afterwards (too long for a large fill).
struct Scenario {
    name: &'static str,
    setup: String,
    env: Vec<(&'static str, &'static str)>,
    /// Runs the tool without CAP_NET_ADMIN.
    without_net_admin: bool,
    list: bool,
}

fn inserts(flows: &[Flow]) -> String {
    flows.iter().map(|f| f.conntrack_insert().join(" ") + " >/dev/null 2>&1\n").collect()
}

fn script(scenarios: &[Scenario]) -> String {
    let mut s = String::new();
    for sc in scenarios {
        let env: Vec<String> = sc.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let run = if sc.without_net_admin { "/nocap /flush-conntrack" } else { "/flush-conntrack" };
        let _ = write!(
            s,
            "echo '=== BEGIN {name}'\nconntrack -F >/dev/null 2>&1\n{setup}\
             env -i LOG_FORMAT=json RUST_LOG=debug {env} {run} >/tmp/out 2>&1; echo \"EXIT $?\"\ncat /tmp/out\n\
             echo \"COUNT $(conntrack -C)\"\n",
            name = sc.name,
            setup = sc.setup,
            env = env.join(" "),
        );
        if sc.list {
            s.push_str("echo '--- TABLE'\nconntrack -L -o extended,id -f ipv4 2>/dev/null\nconntrack -L -o extended,id -f ipv6 2>/dev/null\n");
        }
        let _ = writeln!(s, "echo '=== END {}'", sc.name);
    }
    s
}

/// What the guest saw for one scenario.
struct Seen {
    exit: i32,
    log: String,
    count: usize,
    table: BTreeSet<Key>,
}

fn seen(output: &str, name: &str) -> Seen {
    let part = vm::section(output, name).unwrap_or_else(|| panic!("{name}: no output in\n{output}"));
    let exit = part.lines().find_map(|l| l.strip_prefix("EXIT ")?.trim().parse().ok()).expect("an exit code");
    let count = part.lines().find_map(|l| l.strip_prefix("COUNT ")?.trim().parse().ok()).expect("a count");
    let table = part
        .split("--- TABLE\n")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .filter_map(table::parse_line)
        .map(|l| l.flow.key())
        .collect();
    Seen { exit, log: part.to_owned(), count, table }
}

fn keys(flows: &[&Flow]) -> BTreeSet<Key> {
    flows.iter().map(|f| f.key()).collect()
}

fn summary(log: &str) -> serde_json::Value {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("scanned").is_some())
        .unwrap_or_else(|| panic!("no summary in:\n{log}"))
}

#[test]
fn on_debian_12_linux_6_1() {
    if !require::kernel_test("on_debian_12_linux_6_1", TOOLS) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let scratch = Scratch::new("vm");
    let work = scratch.path();
    let (package, version) = vm::DEBIAN_KERNEL;
    let kernel = Kernel::debian(package, version).unwrap_or_else(|e| panic!("{e}"));
    let flush = testbed::recipe::shipped_binary(root).unwrap_or_else(|e| panic!("{e}"));
    let fill = image::static_example(root, "fill").unwrap_or_else(|e| panic!("{e}"));
    let nocap = image::static_c(&root.join("testbed/images/nocap.c"), work).unwrap_or_else(|e| panic!("{e}"));

    let m = mixed();
    let all: Vec<&Flow> = m.delete.iter().chain(&m.stay).collect();
    let mixed_table = inserts(&m.delete.iter().chain(&m.stay).cloned().collect::<Vec<_>>());
    let mut dry = MIXED_ENV.to_vec();
    dry.push(("DRY_RUN", "true"));
    let scenarios = vec![
        Scenario {
            name: "mixed",
            setup: mixed_table.clone(),
            env: MIXED_ENV.to_vec(),
            without_net_admin: false,
            list: true,
        },
        Scenario {
            name: "dry-run",
            setup: mixed_table.clone(),
            env: dry,
            without_net_admin: false,
            list: true,
        },
        Scenario {
            name: "port-only",
            setup: mixed_table.clone(),
            env: vec![
                ("MODE", "flush"),
                ("TARGET_PORT", "8125"),
                ("KEEP_DNAT_TO", "198.51.100.6,2001:db8:1::6"),
            ],
            without_net_admin: false,
            list: true,
        },
        Scenario {
            name: "bad-input",
            setup: mixed_table.clone(),
            env: vec![("MODE", "flush"), ("TARGET_PORT", "0")],
            without_net_admin: false,
            list: true,
        },
        Scenario {
            name: "no-net-admin",
            setup: mixed_table,
            env: MIXED_ENV.to_vec(),
            without_net_admin: true,
            list: true,
        },
        // Past the kernel-flush threshold: 6.1 refuses the filtered flush
        // and the rest goes entry by entry.
        Scenario {
            name: "fallback",
            setup: "/fill . 12000 0 500\n".to_owned(),
            env: vec![("MODE", "flush"), ("TARGET_IP", "192.0.2.1"), ("TARGET_PORT", "8125")],
            without_net_admin: false,
            list: false,
        },
    ];
    let files = vec![(flush, "/flush-conntrack"), (fill, "/fill"), (nocap, "/nocap")];
    let output = kernel
        .run(work, &files, &script(&scenarios), Duration::from_secs(600))
        .unwrap_or_else(|e| panic!("{e}"));
    let booted =
        output.lines().find_map(|l| l.split_once("FCT-VM-BOOTED ")).map(|(_, r)| r).unwrap_or_default();
    eprintln!("booted Linux {booted} ({package} {version})");
    assert!(booted.contains(&kernel.release), "{output}");

    let s = seen(&output, "mixed");
    assert_eq!(s.exit, 0, "{}", s.log);
    assert_eq!(s.table, keys(&m.stay.iter().collect::<Vec<_>>()), "{}", s.log);
    let counts = summary(&s.log);
    assert_eq!((counts["deleted"].as_u64(), counts["kept"].as_u64()), (Some(5), Some(2)), "{counts}");
    // The dump filter (5.8+) works here: the kernel returned fewer entries
    // than the table holds.
    assert!(counts["scanned"].as_u64() < Some(all.len() as u64), "{counts}");
    assert!(!s.log.contains("ignored the dump filter"), "{}", s.log);

    let s = seen(&output, "dry-run");
    assert_eq!(s.exit, 0, "{}", s.log);
    assert_eq!(s.table, keys(&all), "a dry run deletes nothing");
    assert_eq!(s.log.matches("would delete").count(), 5, "{}", s.log);

    let s = seen(&output, "port-only");
    assert_eq!(s.exit, 0, "{}", s.log);
    let stays: Vec<&Flow> = all
        .iter()
        .copied()
        .filter(|f| {
            !(f.protocol == "udp"
                && f.dport == 8125
                && !["198.51.100.6", "2001:db8:1::6"].contains(&f.reply_src.to_string().as_str()))
        })
        .collect();
    assert_eq!(s.table, keys(&stays), "both families, any address, the keep set spared: {}", s.log);

    let s = seen(&output, "bad-input");
    assert_eq!(s.exit, 2, "{}", s.log);
    assert!(s.log.contains("TARGET_PORT=\"0\""), "{}", s.log);
    assert_eq!(s.table, keys(&all), "bad input touches nothing");

    let s = seen(&output, "no-net-admin");
    assert_eq!(s.exit, 3, "{}", s.log);
    assert!(s.log.contains("CAP_NET_ADMIN"), "{}", s.log);
    assert_eq!(s.table, keys(&all), "without the privilege nothing is touched");

    let s = seen(&output, "fallback");
    assert!(s.log.contains("refused 0"), "every entry was created: {}", s.log);
    assert_eq!(s.exit, 0, "{}", s.log);
    assert_eq!(s.count, 500, "only the other port remains: {}", s.log);
    let counts = summary(&s.log);
    assert_eq!(counts["deleted"], 12_000, "{counts}");
    assert_eq!(counts["kernel_flushed"], 0, "{counts}");
    assert!(s.log.contains("kernel has no filtered flush"), "the fallback was taken: {}", s.log);
}
