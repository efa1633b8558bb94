//! Signals to the processes a test started.

use std::process::Child;

use nix::sys::signal::kill;
pub use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Sends `signal` to `pid`. A process already gone is what the caller
/// wanted anyway, so the outcome is not reported.
pub fn signal(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}

/// Asks a child to stop (SIGTERM), as a node or a control plane stops its
/// daemons; `Child::kill` would give them no chance to clean up.
pub fn terminate(child: &Child) {
    signal(child.id() as i32, Signal::SIGTERM);
}
