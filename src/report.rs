//! The one summary a run prints, and its copy in the termination message,
//! where a spawner (or `kubectl describe pod`) reads it back.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Kubernetes' default `terminationMessagePath`.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub dry_run: bool,
    /// Entries the kernel returned to us after its own filter.
    pub scanned: u64,
    /// Entries that matched the selection and were not kept.
    pub matched: u64,
    pub deleted: u64,
    /// Matched, but expired or deleted by someone else before our delete.
    pub already_gone: u64,
    /// Entries of the selection whose reply comes from a `KEEP_DNAT_TO`
    /// address: not stale, and not counted in `matched`.
    pub kept: u64,
    pub failed: u64,
    /// Deleted inside the kernel by filtered flushes (counted by table size).
    pub kernel_flushed: u64,
    pub elapsed_seconds: f64,
}

/// Said whenever a flush found no entry at all for its ports, so that
/// `deleted: 0` is not read as "repaired": on a dataplane that keeps hostPort
/// flows in its own BPF maps (Cilium's kube-proxy replacement, Calico's eBPF
/// dataplane, GKE Dataplane V2) this table never holds them.
pub const NOTHING_FOR_THE_PORTS: &str = "no conntrack entry at all for the target ports in this table: \
     nothing was stale here, and nothing was repaired; if clients are sending to these ports, their flows \
     are not in this conntrack table (a BPF dataplane keeps its own, which this tool does not touch)";

impl Summary {
    /// No entry to the target addresses and ports came back at all: none
    /// stale, none kept, none deleted in the kernel. `scanned` alone would
    /// not say so, since it counts what the kernel's filter let through,
    /// which on kernels before 5.8 (or for IPv6 addresses) is more than the
    /// selection.
    pub fn found_nothing(&self) -> bool {
        self.matched == 0 && self.kept == 0 && self.kernel_flushed == 0
    }

    /// The summary line's message.
    pub fn headline(&self) -> String {
        let verb = if self.dry_run { "dry run: nothing deleted" } else { "flush done" };
        match self.found_nothing() {
            true => format!("{verb}: {NOTHING_FOR_THE_PORTS}"),
            false => verb.to_owned(),
        }
    }

    pub fn set_elapsed(&mut self, elapsed: Duration) {
        self.elapsed_seconds = (elapsed.as_secs_f64() * 1e6).round() / 1e6;
    }

    pub fn log(&self) {
        self.log_as(&self.headline());
    }

    /// The summary line under another message (a spawner reporting its Job).
    pub fn log_as(&self, verb: &str) {
        tracing::info!(
            dry_run = self.dry_run,
            scanned = self.scanned,
            matched = self.matched,
            deleted = self.deleted,
            already_gone = self.already_gone,
            kept = self.kept,
            failed = self.failed,
            kernel_flushed = self.kernel_flushed,
            elapsed_seconds = self.elapsed_seconds,
            "{verb}"
        );
    }

    /// The termination message: one JSON object, far below the kubelet's
    /// 4096-byte limit.
    pub fn termination_message(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Writes the termination message if the file exists (it does in a
    /// Kubernetes container); never creates it elsewhere.
    pub fn write_termination_message(&self, path: &Path) -> io::Result<bool> {
        match OpenOptions::new().write(true).truncate(true).open(path) {
            Ok(mut f) => f.write_all(self.termination_message().as_bytes()).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Summary {
        let mut s =
            Summary { scanned: 10, matched: 4, deleted: 3, already_gone: 1, kept: 2, ..Summary::default() };
        s.set_elapsed(Duration::from_micros(34_567));
        s
    }

    #[test]
    fn says_plainly_when_nothing_was_there() {
        let empty = Summary { scanned: 0, ..Summary::default() };
        assert!(empty.found_nothing());
        assert!(
            empty.headline().starts_with("flush done: no conntrack entry at all"),
            "{}",
            empty.headline()
        );
        assert!(empty.headline().contains("nothing was repaired"));
        let dry = Summary { dry_run: true, ..Summary::default() };
        assert!(dry.headline().starts_with("dry run: nothing deleted: no conntrack entry at all"));
        // Entries of other ports the kernel could not filter out are still nothing for ours.
        let unfiltered = Summary { scanned: 250, ..Summary::default() };
        assert!(unfiltered.found_nothing());
        // A kept entry is an entry for the ports: the flow reaches the live pod through this table.
        let kept = Summary { scanned: 1, kept: 1, ..Summary::default() };
        assert!(!kept.found_nothing());
        assert_eq!(kept.headline(), "flush done");
        assert!(!sample().found_nothing());
        let in_kernel = Summary {
            scanned: 8193,
            matched: 9000,
            deleted: 9000,
            kernel_flushed: 807,
            ..Summary::default()
        };
        assert_eq!(in_kernel.headline(), "flush done");
    }

    #[test]
    fn termination_message_round_trips() {
        let s = sample();
        let text = s.termination_message();
        assert!(text.contains("\"deleted\":3") && text.contains("\"elapsed_seconds\":0.034567"), "{text}");
        assert_eq!(serde_json::from_str::<Summary>(&text).unwrap(), s);
    }

    #[test]
    fn termination_message_written_only_where_the_file_exists() {
        let dir = std::env::temp_dir().join(format!("fct-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("termination-log");
        assert!(!sample().write_termination_message(&path).unwrap());
        assert!(!path.exists(), "must not create the file");
        std::fs::write(&path, "stale content that is longer than the summary will ever be ....................................................................................................................................................................................................").unwrap();
        assert!(sample().write_termination_message(&path).unwrap());
        let written = std::fs::read_to_string(&path).unwrap();
        assert_eq!(serde_json::from_str::<Summary>(&written).unwrap(), sample());
        // Only a missing file means "not in a container"; any other failure
        // to write it is reported.
        assert!(sample().write_termination_message(&dir).is_err(), "a directory cannot be written");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
