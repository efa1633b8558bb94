//! Starts the test control plane by hand and keeps it until Ctrl-C:
//! `cargo run -p testbed --example controlplane`. Prints an admin KUBECONFIG
//! to use with kubectl or the binary; nodes node-a, node-b and node-c exist
//! and the fake kubelet runs pods pinned to them.

fn main() {
    // Blocked before any thread starts, so that Ctrl-C reaches the sigwait
    // below and the control plane is stopped, not orphaned.
    // SAFETY: a local signal set applied to this thread and its children.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let nodes = [("node-a", "192.0.2.11"), ("node-b", "192.0.2.12"), ("node-c", "192.0.2.13")];
    let cp = match testbed::controlplane::ControlPlane::start(&nodes) {
        Ok(cp) => cp,
        Err(e) => {
            eprintln!("control plane: {e}");
            std::process::exit(1);
        }
    };
    println!("export KUBECONFIG={}", cp.admin.display());
    println!("API server {}; logs in {}; Ctrl-C stops it all", cp.server, cp.dir.display());
    let mut signal = 0;
    // SAFETY: waits for one of the blocked signals.
    unsafe { libc::sigwait(&set, &mut signal) };
    drop(cp);
}
