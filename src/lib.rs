//! flush-conntrack: deletes the stale conntrack entries that keep a hostPort
//! flow translated to a pod that no longer exists, on the node itself or
//! through a node-pinned Kubernetes Job.
//!
//! `main` reads the environment once ([`config`], by the rows of
//! [`contract`]) into one [`Plan`], and [`run`] carries it out.
//! docs/design.md draws the modules and what each may import.

#![forbid(unsafe_code)]

pub mod addresses;
pub mod auto;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod ctnetlink;
pub mod error;
pub mod flush;
pub mod logging;
pub mod plan;
pub mod report;

use std::path::Path;

use error::Error;
pub use plan::Plan;

/// Runs the plan to its end; `auto` first chooses between flush and spawn.
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
        Plan::Spawn(plan) => cluster::run(&plan.cluster, |client, namespace| async move {
            cluster::spawn::run(&client, &namespace, plan).await
        }),
        Plan::Sweep(plan) => cluster::run(&plan.cluster, |client, namespace| async move {
            cluster::sweep::run(&client, &namespace, plan).await
        }),
        Plan::Auto(candidates) => run(&auto::resolve(candidates)?),
    }
}
