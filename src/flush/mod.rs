//! Node-local work: find the entries the selection names in this network
//! namespace's conntrack table and delete the stale ones.

pub mod delete;
pub mod request;
pub mod selection;
pub mod socket;
pub mod tuple;

use std::io;
use std::ops::ControlFlow;
use std::time::Instant;

use crate::error::Error;
use crate::report::Summary;
use delete::Deleter;
use selection::{Selection, Slice, Verdict};
use socket::{CtSocket, Dumped};

/// A dry run lists at most this many entries; the summary counts them all.
const DRY_RUN_LISTED: u64 = 1000;

/// Past this many matches in one slice, a filtered flush (one request, done
/// in the kernel) beats deleting entry by entry, and the table-size count it
/// relies on is large enough that churn on a live node does not matter.
const KERNEL_FLUSH_AFTER: u64 = 8192;

/// How a flush may go about its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub dry_run: bool,
    /// May finish large slices with the kernel's filtered flush.
    pub kernel_flush: bool,
}

pub fn run(selection: &Selection, options: Options) -> Result<Summary, Error> {
    let Options { dry_run, kernel_flush } = options;
    let started = Instant::now();
    let resolved;
    let selection = match selection.local {
        false => selection,
        true => {
            let here = crate::addresses::local()
                .map_err(|e| Error::kernel("list this network namespace's addresses", e))?;
            resolved = selection.with_local(&here);
            tracing::info!(addresses = ?resolved.ips, "TARGET_IP=local: every address of this network namespace");
            &resolved
        }
    };
    let mut summary = Summary { dry_run, ..Summary::default() };
    let open = || CtSocket::open().map_err(|e| Error::kernel("open a conntrack netlink socket", e));
    let mut control = open()?;
    // A second socket for deletes, so that the dump streams while we delete.
    let mut deleter = match dry_run {
        true => None,
        false => Some(Deleter::open().map_err(|e| Error::kernel("open a conntrack netlink socket", e))?),
    };
    let mut kernel_flush = kernel_flush && !dry_run && selection.keep.is_empty();

    for slice in selection.slices() {
        let switch_after = (kernel_flush && slice.exact).then_some(KERNEL_FLUSH_AFTER);
        let stopped =
            dump_and_delete(&mut control, deleter.as_mut(), selection, &slice, &mut summary, switch_after)?;
        if !stopped {
            continue;
        }
        // The abandoned dump dies with its socket.
        control = open()?;
        if let Some(d) = deleter.as_mut() {
            d.send().map_err(|e| Error::kernel("delete conntrack entries", e))?;
        }
        match filtered_flush(&mut control, &slice) {
            Ok(deleted) => {
                summary.kernel_flushed += deleted;
                summary.matched += deleted;
                summary.deleted += deleted;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                tracing::debug!(error = %e, "kernel has no filtered flush (before 6.12): deleting entry by entry");
                kernel_flush = false;
                dump_and_delete(&mut control, deleter.as_mut(), selection, &slice, &mut summary, None)?;
            }
            Err(e) => return Err(Error::kernel("flush conntrack entries", e)),
        }
    }

    if let Some(deleter) = deleter {
        let (counts, failure) = deleter.finish().map_err(|e| Error::kernel("delete conntrack entries", e))?;
        summary.deleted += counts.deleted;
        summary.already_gone += counts.already_gone;
        summary.failed += counts.failed;
        if let Some(first) = failure {
            summary.set_elapsed(started.elapsed());
            summary.log();
            return Err(Error::deletes_failed(counts.failed, first));
        }
    }
    if dry_run && summary.matched > DRY_RUN_LISTED {
        tracing::info!(
            unlisted = summary.matched - DRY_RUN_LISTED,
            "more entries would be deleted than listed"
        );
    }
    summary.set_elapsed(started.elapsed());
    Ok(summary)
}

/// Dumps one slice and deletes its stale entries as they stream in. With
/// `stop_after`, returns `true` once that many entries matched in this
/// slice (checked between reads, after their deletes went out), leaving the
/// rest of the dump unread.
fn dump_and_delete(
    control: &mut CtSocket,
    mut deleter: Option<&mut Deleter>,
    selection: &Selection,
    slice: &Slice,
    summary: &mut Summary,
    stop_after: Option<u64>,
) -> Result<bool, Error> {
    // A dump resumes a hash bucket from its last unsent entry, and walks the
    // whole bucket again if that entry went away meanwhile. Sending our
    // deletes before every read means that no match can come back twice;
    // only a kept entry can, rarely, be counted again.
    let mut failure: Option<io::Error> = None;
    let mut matched_here = 0u64;
    let outcome = control
        .dump(request::dump(slice), |dumped| {
            let entry = match dumped {
                Dumped::Entry(entry) => entry,
                Dumped::Paused => {
                    if let Some(Err(e)) = deleter.as_deref_mut().map(Deleter::send) {
                        failure = Some(e);
                        return ControlFlow::Break(());
                    }
                    if stop_after.is_some_and(|n| matched_here >= n) {
                        return ControlFlow::Break(());
                    }
                    return ControlFlow::Continue(());
                }
            };
            summary.scanned += 1;
            match selection.verdict(&entry) {
                Verdict::Other => {}
                Verdict::Keep => summary.kept += 1,
                Verdict::Delete => {
                    summary.matched += 1;
                    matched_here += 1;
                    match deleter.as_deref_mut() {
                        None if summary.matched <= DRY_RUN_LISTED => {
                            tracing::info!(entry = %entry, "would delete")
                        }
                        None => {}
                        Some(d) => {
                            if let Err(e) = d.push(&entry) {
                                failure = Some(e);
                                return ControlFlow::Break(());
                            }
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        })
        .map_err(Error::dump)?;
    if let Some(e) = failure {
        return Err(Error::kernel("delete conntrack entries", e));
    }
    if outcome.undecodable > 0 {
        tracing::warn!(
            count = outcome.undecodable,
            "entries whose attributes could not be decoded were skipped"
        );
    }
    if outcome.messages > 0 && !outcome.kernel_filtered {
        tracing::debug!(%slice.family, "the kernel ignored the dump filter (before 5.8): filtered here instead");
    }
    Ok(outcome.stopped)
}

/// Deletes the slice inside the kernel and returns how many entries went,
/// read from the table size since the kernel answers with a bare ACK.
fn filtered_flush(control: &mut CtSocket, slice: &Slice) -> io::Result<u64> {
    let before = control.table_size()?;
    control.acknowledged(request::filtered_flush(slice))?;
    let after = control.table_size()?;
    Ok(u64::from(before.saturating_sub(after)))
}
