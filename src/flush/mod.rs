//! Node-local work: find the entries the selection names in this network
//! namespace's conntrack table and delete the stale ones.

pub mod selection;

use std::ops::ControlFlow;
use std::time::Instant;

use crate::ctnetlink::delete::{DeleteCounts, Deleter};
use crate::ctnetlink::socket::{CtSocket, Dumped};
use crate::ctnetlink::{request, Filter, WireError};
use crate::error::Error;
use crate::report::Summary;
use selection::{Selection, Slice, Verdict};

/// A dry run lists at most this many entries; the summary counts them all.
const DRY_RUN_LISTED: u64 = 1000;

/// Past this many matches in one slice, a filtered flush (one request, done
/// in the kernel) beats deleting entry by entry, and the table-size count it
/// relies on is large enough that churn on a live node does not matter.
const KERNEL_FLUSH_AFTER: u64 = 8192;

/// `MODE=flush`: what to delete and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlushPlan {
    pub selection: Selection,
    pub dry_run: bool,
    /// May finish large slices with the kernel's filtered flush
    /// (`KERNEL_FLUSH`).
    pub kernel_flush: bool,
}

/// Runs the plan in this network namespace and returns what it did.
pub fn run(plan: &FlushPlan) -> Result<Summary, Error> {
    let started = Instant::now();
    let resolved;
    let selection = match plan.selection.local {
        false => &plan.selection,
        true => {
            let here = crate::addresses::local()
                .map_err(|e| Error::kernel("list this network namespace's addresses", e))?;
            resolved = plan.selection.with_local(&here);
            tracing::info!(addresses = ?resolved.ips, "TARGET_IP=local: every address of this network namespace");
            &resolved
        }
    };
    // The filtered flush deletes every match, so it cannot keep entries.
    let kernel_flush = plan.kernel_flush && !plan.dry_run && selection.keep.is_empty();
    let mut flush = Flush::open(selection, plan.dry_run, kernel_flush)?;
    for slice in selection.slices() {
        flush.slice(&slice)?;
    }
    flush.finish(started)
}

/// One flush in progress: its sockets and what it has counted so far.
struct Flush<'a> {
    selection: &'a Selection,
    control: CtSocket,
    /// `None` in a dry run.
    deleter: Option<Deleter>,
    /// Cleared once the kernel has said it has no filtered flush.
    kernel_flush: bool,
    summary: Summary,
}

fn open_socket() -> Result<CtSocket, Error> {
    CtSocket::open().map_err(|e| Error::wire("open a conntrack netlink socket", e))
}

impl<'a> Flush<'a> {
    fn open(selection: &'a Selection, dry_run: bool, kernel_flush: bool) -> Result<Self, Error> {
        let control = open_socket()?;
        // A second socket for deletes, so that the dump streams while we delete.
        let deleter = match dry_run {
            true => None,
            false => Some(Deleter::open().map_err(|e| Error::wire("open a conntrack netlink socket", e))?),
        };
        Ok(Flush {
            selection,
            control,
            deleter,
            kernel_flush,
            summary: Summary { dry_run, ..Summary::default() },
        })
    }

    /// Deletes the slice's stale entries: entry by entry, or, past
    /// [`KERNEL_FLUSH_AFTER`] matches of an exact slice, the rest of it in
    /// the kernel.
    fn slice(&mut self, slice: &Slice) -> Result<(), Error> {
        let switch_after = (self.kernel_flush && slice.exact).then_some(KERNEL_FLUSH_AFTER);
        if !self.dump_and_delete(&slice.filter, switch_after)? {
            return Ok(());
        }
        // The abandoned dump dies with its socket.
        self.control = open_socket()?;
        if let Some(d) = self.deleter.as_mut() {
            d.send().map_err(|e| Error::wire("delete conntrack entries", e))?;
        }
        match KernelFlush::from(filtered_flush(&mut self.control, &slice.filter)) {
            KernelFlush::Done(deleted) => {
                self.summary.kernel_flushed += deleted;
                self.summary.matched += deleted;
                self.summary.deleted += deleted;
                Ok(())
            }
            KernelFlush::Unsupported(e) => {
                tracing::debug!(error = %e, "kernel has no filtered flush (before 6.12): deleting entry by entry");
                self.kernel_flush = false;
                self.dump_and_delete(&slice.filter, None).map(|_| ())
            }
            KernelFlush::Failed(e) => Err(Error::wire("flush conntrack entries", e)),
        }
    }

    /// Dumps one slice and deletes its stale entries as they stream in. With
    /// `stop_after`, returns `true` once that many entries matched in this
    /// slice (checked between reads, after their deletes went out), leaving
    /// the rest of the dump unread.
    fn dump_and_delete(&mut self, filter: &Filter, stop_after: Option<u64>) -> Result<bool, Error> {
        // A dump resumes a hash bucket from its last unsent entry, and walks
        // the whole bucket again if that entry went away meanwhile. Sending
        // our deletes before every read means that no match can come back
        // twice; only a kept entry can, rarely, be counted again.
        let Flush { selection, control, deleter, summary, .. } = self;
        let mut failure: Option<WireError> = None;
        let mut matched_here = 0u64;
        let outcome = control
            .dump(request::dump(filter), |dumped| {
                let entry = match dumped {
                    Dumped::Entry(entry) => entry,
                    Dumped::Paused => {
                        if let Some(Err(e)) = deleter.as_mut().map(Deleter::send) {
                            failure = Some(e);
                            return ControlFlow::Break(());
                        }
                        return match stop_after.is_some_and(|n| matched_here >= n) {
                            true => ControlFlow::Break(()),
                            false => ControlFlow::Continue(()),
                        };
                    }
                };
                summary.scanned += 1;
                match selection.verdict(&entry) {
                    Verdict::Other => {}
                    Verdict::Keep => summary.kept += 1,
                    Verdict::Delete => {
                        summary.matched += 1;
                        matched_here += 1;
                        match deleter.as_mut() {
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
            return Err(Error::wire("delete conntrack entries", e));
        }
        if outcome.undecodable > 0 {
            tracing::warn!(
                count = outcome.undecodable,
                "entries whose attributes could not be decoded were skipped"
            );
        }
        if outcome.messages > 0 && !outcome.kernel_filtered {
            tracing::debug!(%filter.family, "the kernel ignored the dump filter (before 5.8): filtered here instead");
        }
        Ok(outcome.stopped)
    }

    /// Sends the last deletes and counts their answers.
    fn finish(self, started: Instant) -> Result<Summary, Error> {
        let mut summary = self.summary;
        if let Some(deleter) = self.deleter {
            let (counts, failure) =
                deleter.finish().map_err(|e| Error::wire("delete conntrack entries", e))?;
            add_deletes(&mut summary, &counts);
            if let Some(first) = failure {
                summary.set_elapsed(started.elapsed());
                summary.log();
                return Err(Error::deletes_failed(counts.failed, first));
            }
        }
        if summary.dry_run && summary.matched > DRY_RUN_LISTED {
            tracing::info!(
                unlisted = summary.matched - DRY_RUN_LISTED,
                "more entries would be deleted than listed"
            );
        }
        summary.set_elapsed(started.elapsed());
        Ok(summary)
    }
}

/// Deletes the slice inside the kernel and returns how many entries went,
/// read from the table size since the kernel answers with a bare ACK.
fn filtered_flush(control: &mut CtSocket, filter: &Filter) -> Result<u64, WireError> {
    let before = control.table_size()?;
    control.acknowledged(request::filtered_flush(filter))?;
    let after = control.table_size()?;
    Ok(u64::from(before.saturating_sub(after)))
}

/// What the kernel's answer to a filtered flush leaves to do.
#[derive(Debug)]
enum KernelFlush {
    /// It deleted this many entries.
    Done(u64),
    /// It has no filtered flush (before 6.12): the flush goes on entry by
    /// entry.
    Unsupported(WireError),
    /// A real failure, which a second dump must not hide.
    Failed(WireError),
}

impl From<Result<u64, WireError>> for KernelFlush {
    fn from(answer: Result<u64, WireError>) -> Self {
        match answer {
            Ok(deleted) => KernelFlush::Done(deleted),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                KernelFlush::Unsupported(e)
            }
            Err(e) => KernelFlush::Failed(e),
        }
    }
}

/// The deleter's answers, into the summary that already counts the kernel's
/// filtered flushes.
fn add_deletes(summary: &mut Summary, counts: &DeleteCounts) {
    summary.deleted += counts.deleted;
    summary.already_gone += counts.already_gone;
    summary.failed += counts.failed;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn only_einval_and_eopnotsupp_fall_back_to_entry_by_entry() {
        assert!(matches!(KernelFlush::from(Ok(12_000)), KernelFlush::Done(12_000)));
        for errno in [libc::EINVAL, libc::EOPNOTSUPP] {
            let answer = KernelFlush::from(Err(io::Error::from_raw_os_error(errno).into()));
            assert!(matches!(answer, KernelFlush::Unsupported(_)), "errno {errno}: {answer:?}");
        }
        for errno in [libc::EPERM, libc::ENOBUFS, libc::EBUSY, libc::ENOMEM] {
            let answer = KernelFlush::from(Err(io::Error::from_raw_os_error(errno).into()));
            assert!(matches!(answer, KernelFlush::Failed(_)), "errno {errno}: {answer:?}");
        }
        let truncated = KernelFlush::from(Err(WireError::Truncated { len: 70_000, buffer: 65_536 }));
        assert!(matches!(truncated, KernelFlush::Failed(_)), "{truncated:?}");
    }

    #[test]
    fn delete_counts_add_to_what_the_kernel_flushed() {
        let mut summary = Summary { matched: 20, deleted: 9, kernel_flushed: 9, ..Summary::default() };
        add_deletes(&mut summary, &DeleteCounts { deleted: 7, already_gone: 3, failed: 1 });
        assert_eq!(
            (summary.deleted, summary.already_gone, summary.failed, summary.kernel_flushed),
            (16, 3, 1, 9)
        );
        add_deletes(&mut summary, &DeleteCounts { deleted: 1, already_gone: 2, failed: 3 });
        assert_eq!((summary.deleted, summary.already_gone, summary.failed), (17, 5, 4));
    }
}
