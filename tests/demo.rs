//! The README's demonstration: `cargo test --test demo` as root. It builds
//! throwaway network namespaces, makes a hostPort flow go stale, runs the
//! real binary on the simulated node, and shows the flow recover.

use std::process::ExitCode;

use testbed::hostport::scenario;

fn main() -> ExitCode {
    if !testbed::require::kernel_test("demo", &["ip", "nft", "conntrack"]) {
        return ExitCode::SUCCESS;
    }
    println!();
    let o = scenario(env!("CARGO_BIN_EXE_flush-conntrack"), false, |line| println!("{line}"));
    let lost = o.stale.sent.saturating_sub(o.stale.received);
    let repaired = o.tool.status.success() && o.stale.received == 0 && o.after_flush.received > 0;
    println!();
    if repaired {
        println!(
            "Result: {lost} of {} datagrams were lost while the stale entry lived; after one flush, \
             {} of {} arrived.",
            o.stale.sent, o.after_flush.received, o.after_flush.sent
        );
        println!("demo: 1 passed, 0 failed");
        ExitCode::SUCCESS
    } else {
        println!("Result: the demonstration did not go as described: {o:?}");
        println!("demo: 0 passed, 1 failed");
        ExitCode::FAILURE
    }
}
