//! Fills an existing named namespace with UDP entries, for experiments by
//! hand: `fill NAMESPACE STALE KEPT OTHER` makes STALE entries to
//! 192.0.2.1:8125 answered by 198.51.100.5, KEPT answered by 198.51.100.6,
//! and OTHER to port 9125. NAMESPACE `.` is this process's own (the VM
//! tests run it so, as the guest's init).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = |i: usize| args.get(i).and_then(|a| a.parse::<usize>().ok());
    let (Some(name), Some(stale), Some(kept), Some(other)) = (args.get(1), count(2), count(3), count(4))
    else {
        eprintln!("usage: fill NAMESPACE STALE KEPT OTHER");
        std::process::exit(2);
    };
    let mut flows = testbed::table::udp_flows(stale, "192.0.2.1", 8125, "198.51.100.5", 0);
    flows.extend(testbed::table::udp_flows(kept, "192.0.2.1", 8125, "198.51.100.6", stale));
    flows.extend(testbed::table::udp_flows(other, "192.0.2.1", 9125, "198.51.100.5", stale + kept));
    if name == "." {
        println!("refused {}", testbed::table::insert_here(&flows));
        return;
    }
    let ns = testbed::netns::Netns { name: name.clone() };
    println!("refused {}", testbed::table::insert(&ns, &flows));
    // The namespace is the caller's: do not delete it on the way out.
    std::mem::forget(ns);
}
