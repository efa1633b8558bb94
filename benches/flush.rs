//! flush-conntrack against its reference, side by side on the same tables:
//! `cargo bench --bench flush` as root (needs conntrack-tools).
//!
//! Each case fills a fresh network namespace with M UDP entries through
//! batched CT_NEW, N of them to the target 192.0.2.1:8125, and times the
//! release binary, `conntrack -D` with the equivalent filter, and the
//! kernel's own filtered flush. After every run it checks that exactly the
//! stale entries are gone. BENCH_RUNS sets the runs per tool (default 5).
//! The binary measured is the shipped one, built by the Dockerfile's build
//! stage (testbed::recipe), not the one `cargo bench` builds.

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::netns::Netns;
use testbed::table::{self, udp_flows};
use testbed::{floor, require};

const OLD_POD: &str = "198.51.100.5";
const NEW_POD: &str = "198.51.100.6";
const OLD_POD6: &str = "2001:db8:1::5";

#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    m: usize,
    n: usize,
    /// Half of the N matches already reach the new pod and must be kept.
    keep_half: bool,
    v6: bool,
    /// KERNEL_FLUSH=false: the path of kernels before 6.12.
    force_fallback: bool,
}

impl Case {
    const fn new(name: &'static str, m: usize, n: usize) -> Case {
        Case { name, m, n, keep_half: false, v6: false, force_fallback: false }
    }
    fn dst(&self) -> &'static str {
        if self.v6 {
            "2001:db8::1"
        } else {
            "192.0.2.1"
        }
    }
    fn stale(&self) -> usize {
        if self.keep_half {
            self.n - self.n / 2
        } else {
            self.n
        }
    }
    fn flows(&self) -> Vec<table::Flow> {
        let old = if self.v6 { OLD_POD6 } else { OLD_POD };
        let mut flows = udp_flows(self.stale(), self.dst(), 8125, old, 0);
        flows.extend(udp_flows(self.n - self.stale(), self.dst(), 8125, NEW_POD, self.stale()));
        flows.extend(udp_flows(self.m - self.n, self.dst(), 9125, old, self.n));
        flows
    }
}

struct Run {
    elapsed: Duration,
    max_rss_kib: u64,
}

/// Runs `argv` in the namespace to completion, timing it. Peak RSS comes
/// from GNU time, a small process that forks the command: a child forked
/// (or vforked) from this process would report this process's high-water
/// mark, since the kernel folds the old memory's peak into it at exec.
fn measure(ns: &Netns, env: &[(&str, &str)], argv: &[&str]) -> Run {
    let report = std::env::temp_dir().join(format!("fct-bench-rss-{}", std::process::id()));
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "/usr/bin/time", "-f", "%M", "-o"]).arg(&report).arg("env");
    cmd.args(env.iter().map(|(k, v)| format!("{k}={v}"))).args(argv);
    let started = Instant::now();
    let out = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).output().expect("starts");
    let elapsed = started.elapsed();
    assert!(out.status.success(), "{argv:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let max_rss_kib = std::fs::read_to_string(&report).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    Run { elapsed, max_rss_kib }
}

fn fill(ns: &Netns, case: &Case, flows: &[table::Flow]) {
    table::clear(ns);
    assert_eq!(table::insert(ns, flows), 0, "{}: kernel refused entries", case.name);
    assert_eq!(table::count(ns), case.m, "{}: table not filled", case.name);
}

/// Exactly the stale entries are gone: the total dropped by their number,
/// and none with the old pod's reply source is left at the target port.
fn verify(ns: &Netns, case: &Case, tool: &str) {
    let left = table::count(ns);
    assert_eq!(left, case.m - case.stale(), "{}: {tool} left {left} entries", case.name);
    let family = if case.v6 { "ipv6" } else { "ipv4" };
    let old = if case.v6 { OLD_POD6 } else { OLD_POD };
    let stale_left = table::count_listed(ns, &["-f", family, "-p", "udp", "--dport", "8125", "-r", old]);
    assert_eq!(stale_left, 0, "{}: {tool} left stale entries", case.name);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !require::kernel_test("benchmark", &["ip", "conntrack", "/usr/bin/time"]) {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(5).max(1);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bin = testbed::recipe::shipped_binary(root).expect("the Dockerfile's build stage");
    let bin = bin.to_str().expect("a UTF-8 path").to_owned();
    let max: usize = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let mut cases = vec![
        Case::new("M=250k N=100", 250_000, 100),
        Case::new("M=250k N=25k", 250_000, 25_000),
        Case::new("M=250k N=250k", 250_000, 250_000),
        Case { keep_half: true, ..Case::new("M=250k N=100, half kept", 250_000, 100) },
        Case { keep_half: true, ..Case::new("M=250k N=25k, half kept", 250_000, 25_000) },
        Case { keep_half: true, ..Case::new("M=250k N=250k, half kept", 250_000, 250_000) },
        Case { v6: true, ..Case::new("IPv6 M=250k N=100", 250_000, 100) },
        Case { force_fallback: true, ..Case::new("M=250k N=250k, no kernel flush", 250_000, 250_000) },
        Case::new("M=25k N=100", 25_000, 100),
    ];
    if max >= 1_000_000 {
        cases.push(Case::new("M=1M N=100", 1_000_000, 100));
    }

    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let cpu = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
        c.lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
    });
    println!("\nflush-conntrack benchmark: {runs} runs per tool and case, medians");
    println!(
        "kernel {}, {} x {}",
        kernel.unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu.unwrap_or_default()
    );
    if max < 1_000_000 {
        println!("M=1M not run: nf_conntrack_max is {max} (raise it in the initial namespace to run it)");
    }
    println!();
    println!("| case | flush-conntrack | conntrack -D | kernel floor | -D / flush-conntrack | flush-conntrack / floor | peak RSS |");
    println!("|---|---|---|---|---|---|---|");

    for case in &cases {
        let ns = Netns::new("bench");
        let flows = case.flows();
        let dst: IpAddr = case.dst().parse().expect("address");
        let mut ours = Vec::new();
        let mut rss = 0u64;
        let mut theirs = Vec::new();
        let mut floors = Vec::new();
        for _ in 0..runs {
            fill(&ns, case, &flows);
            let mut env = vec![("MODE", "flush"), ("TARGET_IP", case.dst()), ("TARGET_PORT", "8125")];
            if case.keep_half {
                env.push(("KEEP_DNAT_TO", NEW_POD));
            }
            if case.force_fallback {
                env.push(("KERNEL_FLUSH", "false"));
            }
            // Started through `ip netns exec` like conntrack: a process forked
            // from this one would carry the flows' pages into its peak RSS.
            let run = measure(&ns, &env, &[&bin]);
            verify(&ns, case, "flush-conntrack");
            ours.push(run.elapsed);
            rss = rss.max(run.max_rss_kib);

            fill(&ns, case, &flows);
            let family = if case.v6 { "ipv6" } else { "ipv4" };
            let mut args = vec![
                "conntrack",
                "-D",
                "-f",
                family,
                "-p",
                "udp",
                "--orig-dst",
                case.dst(),
                "--dport",
                "8125",
            ];
            let old = if case.v6 { OLD_POD6 } else { OLD_POD };
            if case.keep_half {
                args.extend(["-r", old]);
            }
            theirs.push(measure(&ns, &[], &args).elapsed);
            verify(&ns, case, "conntrack -D");

            fill(&ns, case, &flows);
            let reply = case.keep_half.then(|| old.parse().expect("address"));
            match floor::filtered_flush(&ns, dst, 8125, reply) {
                Ok(took) => {
                    verify(&ns, case, "kernel floor");
                    floors.push(took);
                }
                Err(e) => eprintln!("{}: kernel floor unavailable: {e}", case.name),
            }
        }
        let (ours, theirs) = (median(ours), median(theirs));
        let floor = (!floors.is_empty()).then(|| median(floors));
        let secs = |d: Duration| format!("{:.3} s", d.as_secs_f64());
        println!(
            "| {} | {} | {} | {} | {:.1} | {} | {:.1} MiB |",
            case.name,
            secs(ours),
            secs(theirs),
            floor.map_or("n/a".into(), secs),
            theirs.as_secs_f64() / ours.as_secs_f64(),
            floor.map_or("n/a".into(), |f| format!("{:.1}", ours.as_secs_f64() / f.as_secs_f64())),
            rss as f64 / 1024.0
        );
    }
    println!("\nbenchmark: {} passed, 0 failed", cases.len());
}
