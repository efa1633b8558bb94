//! flush-conntrack beside `conntrack -D` on Debian 12's Linux 6.1, where
//! the flush takes its fallback path: `cargo bench --bench vm_flush` (as
//! root, with what .ci/run installs). Both run in one guest (testbed::vm)
//! on the same fills, `BENCH_RUNS` times each (default 3); the table gives
//! medians and their ratio. The guest runs under software emulation unless
//! FCT_VM_KVM=1, so its seconds are not a node's: read the ratios.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use testbed::image;
use testbed::vm::{self, Kernel};

/// (name, stale entries to 192.0.2.1:8125, kept ones, others to :9125).
const CASES: &[(&str, usize, usize, usize)] = &[
    ("M=100k N=100", 100, 0, 99_900),
    ("M=100k N=10k", 10_000, 0, 90_000),
    ("M=100k N=100k", 100_000, 0, 0),
    ("M=100k N=10k, half kept", 5_000, 5_000, 90_000),
];

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if !testbed::require::kernel_test("bench vm_flush", &["qemu-system-x86_64", "cpio", "gcc", "conntrack"]) {
        return;
    }
    let runs: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::temp_dir().join(format!("fct-vm-bench-{}", std::process::id()));
    let (package, version) = vm::DEBIAN_KERNEL;
    let kernel = Kernel::debian(package, version).expect("kernel");
    let flush = testbed::recipe::shipped_binary(root).expect("static binary");
    let fill = image::static_example(root, "fill").expect("fill");
    let timeit = image::static_c(&root.join("testbed/images/timeit.c"), &work).expect("timeit");

    let mut script = String::new();
    for (name, stale, kept, other) in CASES {
        let keep = if *kept > 0 { "KEEP_DNAT_TO=198.51.100.6" } else { "" };
        let conntrack_keep = if *kept > 0 { "-r 198.51.100.5" } else { "" };
        for run in 0..runs {
            let _ = write!(
                script,
                "conntrack -F >/dev/null 2>&1; /fill . {stale} {kept} {other} >/dev/null\n\
                 echo \"OURS {name} {run} $(/timeit /bin/env -i MODE=flush TARGET_IP=192.0.2.1 TARGET_PORT=8125 {keep} \
                 /flush-conntrack 2>&1 >/dev/null | grep ELAPSED) LEFT $(conntrack -C)\"\n\
                 conntrack -F >/dev/null 2>&1; /fill . {stale} {kept} {other} >/dev/null\n\
                 echo \"THEIRS {name} {run} $(/timeit /bin/conntrack -D -f ipv4 -p udp --orig-dst 192.0.2.1 --dport 8125 \
                 {conntrack_keep} 2>&1 >/dev/null | grep ELAPSED) LEFT $(conntrack -C)\"\n"
            );
        }
    }
    let files = vec![(flush, "/flush-conntrack"), (fill, "/fill"), (timeit, "/timeit")];
    let output = kernel.run(&work, &files, &script, Duration::from_secs(3600)).expect("the guest runs");
    let seconds = |kind: &str, name: &str| -> Vec<f64> {
        output
            .lines()
            .filter(|l| l.starts_with(&format!("{kind} {name} ")))
            .filter_map(|l| l.split("ELAPSED ").nth(1)?.split_whitespace().next()?.parse().ok())
            .collect()
    };
    let left = |kind: &str, name: &str| -> Vec<String> {
        output
            .lines()
            .filter(|l| l.starts_with(&format!("{kind} {name} ")))
            .filter_map(|l| l.split("LEFT ").nth(1).map(str::to_owned))
            .collect()
    };
    println!("\nLinux {} ({package} {version}) under qemu, {runs} runs each, medians:\n", kernel.release);
    println!(
        "| case | flush-conntrack | conntrack -D | -D / flush-conntrack | entries left (ours, theirs) |"
    );
    println!("|---|---|---|---|---|");
    for (name, _, _, _) in CASES {
        let (ours, theirs) = (median(seconds("OURS", name)), median(seconds("THEIRS", name)));
        let first = |v: Vec<String>| v.first().cloned().unwrap_or_else(|| "?".to_owned());
        println!(
            "| {name} | {ours:.3} s | {theirs:.3} s | {:.1} | {}, {} |",
            theirs / ours,
            first(left("OURS", name)),
            first(left("THEIRS", name))
        );
    }
    let _ = std::fs::remove_dir_all(&work);
}
