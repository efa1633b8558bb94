//! The host-wide sysctls the kubelet sets. Every node's kubelet sets the
//! same ones, so they are read before the first node of this process starts
//! and written back once the last one has stopped: a second node reading
//! them would read the first kubelet's values.
//!
//! The values are also written to a file named after this process, removed
//! once they are written back: a run that was killed (and so never wrote
//! them back) leaves its file, and the next run puts the host's values back
//! from it before it reads them itself.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

const KUBELET_SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// How many nodes are running, and the host's values from before the first.
static SAVED: Mutex<(usize, Vec<(String, String)>)> = Mutex::new((0, Vec::new()));

fn path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key)
}

/// Where a run keeps the host's values while its nodes run.
fn record(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("fct-sysctls-{pid}"))
}

fn write_back(values: &[(String, String)]) {
    for (key, value) in values {
        let _ = std::fs::write(path(key), value);
    }
}

/// `key=value` lines.
fn parse(text: &str) -> Vec<(String, String)> {
    text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// The host's values a killed run saved and never wrote back.
fn put_back_after_killed_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("fct-sysctls-") else { continue };
        if Path::new("/proc").join(pid).exists() {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            write_back(&parse(&text));
        }
        let _ = std::fs::remove_file(entry.path());
    }
}

/// A node is about to start: the first one reads the host's values.
pub(super) fn save() {
    let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    if saved.0 == 0 {
        put_back_after_killed_runs();
        saved.1 = KUBELET_SYSCTLS
            .iter()
            .filter_map(|k| Some((k.to_string(), std::fs::read_to_string(path(k)).ok()?.trim().to_owned())))
            .collect();
        let text: String = saved.1.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        let _ = std::fs::write(record(std::process::id()), text);
    }
    saved.0 += 1;
}

/// A node has stopped: the last one writes the host's values back.
pub(super) fn restore() {
    let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    saved.0 = saved.0.saturating_sub(1);
    if saved.0 == 0 {
        write_back(&saved.1);
        let _ = std::fs::remove_file(record(std::process::id()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let values = vec![
            ("vm/overcommit_memory".to_owned(), "0".to_owned()),
            ("kernel/panic".to_owned(), "1".to_owned()),
        ];
        let text: String = values.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        assert_eq!(parse(&text), values);
        assert!(record(42).ends_with("fct-sysctls-42"));
    }
}
