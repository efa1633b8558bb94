//! flush-conntrack: deletes the stale conntrack entries that keep a hostPort
//! flow translated to a pod that no longer exists.

pub mod config;
pub mod error;
pub mod flush;
pub mod logging;
pub mod report;

use std::path::Path;

use config::{Mode, Settings};
use error::Error;
use report::Summary;

/// Runs the configured mode and returns its summary.
pub fn run(settings: &Settings) -> Result<Summary, Error> {
    match settings.mode {
        Mode::Flush => {
            let options = flush::Options { dry_run: settings.dry_run, kernel_flush: settings.kernel_flush };
            let summary = flush::run(&settings.selection, options)?;
            summary.log();
            if let Err(e) = summary.write_termination_message(Path::new(report::TERMINATION_LOG)) {
                tracing::warn!(error = %e, path = report::TERMINATION_LOG, "could not write the termination message");
            }
            Ok(summary)
        }
        mode => Err(Error::NotBuilt(mode)),
    }
}
