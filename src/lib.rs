//! flush-conntrack: deletes the stale conntrack entries that keep a hostPort
//! flow translated to a pod that no longer exists, on the node itself or
//! through a node-pinned Kubernetes Job.

pub mod addresses;
pub mod auto;
pub mod cluster;
pub mod config;
pub mod error;
pub mod flush;
pub mod logging;
pub mod report;

use std::path::Path;

use config::{Mode, Settings};
use error::Error;

/// Runs the configured mode to its end.
pub fn run(settings: &Settings) -> Result<(), Error> {
    let mode = match settings.mode {
        Mode::Auto => auto::choose(&settings.selection.ips)?,
        mode => mode,
    };
    match mode {
        Mode::Flush => {
            let options = flush::Options { dry_run: settings.dry_run, kernel_flush: settings.kernel_flush };
            let summary = flush::run(&settings.selection, options)?;
            summary.log();
            if let Err(e) = summary.write_termination_message(Path::new(report::TERMINATION_LOG)) {
                tracing::warn!(error = %e, path = report::TERMINATION_LOG, "could not write the termination message");
            }
            Ok(())
        }
        mode => cluster::run(mode, settings),
    }
}
