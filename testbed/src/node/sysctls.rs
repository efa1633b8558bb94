//! The host-wide sysctls the kubelet sets. Every node's kubelet sets the
//! same ones, so they are read before the first node of this process starts
//! and written back once the last one has stopped: a second node reading
//! them would read the first kubelet's values.

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

/// A node is about to start: the first one reads the host's values.
pub(super) fn save() {
    let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    if saved.0 == 0 {
        saved.1 = KUBELET_SYSCTLS
            .iter()
            .filter_map(|k| Some((k.to_string(), std::fs::read_to_string(path(k)).ok()?.trim().to_owned())))
            .collect();
    }
    saved.0 += 1;
}

/// A node has stopped: the last one writes the host's values back.
pub(super) fn restore() {
    let mut saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    saved.0 = saved.0.saturating_sub(1);
    if saved.0 == 0 {
        for (key, value) in &saved.1 {
            let _ = std::fs::write(path(key), value);
        }
    }
}
