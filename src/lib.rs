//! flush-conntrack: deletes the stale conntrack entries that keep a hostPort
//! flow translated to a pod that no longer exists, on the node itself or
//! through a node-pinned Kubernetes Job.
//!
//! `main` reads the environment once ([`config`]), resolves `MODE=auto`
//! ([`auto`]) and runs one [`Plan`].

pub mod addresses;
pub mod auto;
pub mod cluster;
pub mod config;
pub mod ctnetlink;
pub mod error;
pub mod flush;
pub mod logging;
pub mod report;

use std::path::Path;

use error::Error;

/// One mode's work, carrying only what that mode needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Delete the stale entries in this network namespace.
    Flush(flush::Plan),
    /// Have a node-pinned Job delete them, and wait for it.
    Spawn(cluster::spawn::Plan),
    /// One Job for every node whose agents declare hostPorts.
    Sweep(cluster::sweep::Plan),
}

/// Runs the plan to its end.
pub fn run(plan: &Plan) -> Result<(), Error> {
    match plan {
        Plan::Flush(plan) => {
            let summary = flush::run(plan)?;
            summary.log();
            if let Err(e) = summary.write_termination_message(Path::new(report::TERMINATION_LOG)) {
                tracing::warn!(error = %e, path = report::TERMINATION_LOG, "could not write the termination message");
            }
            Ok(())
        }
        Plan::Spawn(plan) => cluster::run(cluster::Work::Spawn(plan)),
        Plan::Sweep(plan) => cluster::run(cluster::Work::Sweep(plan)),
    }
}
