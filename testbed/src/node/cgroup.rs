//! The node's cgroups: a root of its own in every hierarchy, the processes
//! below it, and what a run that was killed left there.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::error::{io, Result};

use super::config::write;

pub(super) fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return Vec::new() };
    mounts
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2"))
                .then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// What a node of a run that was killed (and so never dropped) left: its
/// processes and cgroups, its directory, and its network namespaces (the
/// LAN's too), found by the pid in their names.
pub(super) fn remove_leftovers() {
    for hierarchy in cgroup_hierarchies() {
        let Ok(entries) = std::fs::read_dir(&hierarchy) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("fct-node-").and_then(|n| n.rsplit('-').next()) else {
                continue;
            };
            if alive(pid) {
                continue;
            }
            for _ in 0..50 {
                let pids = procs_below(&entry.path());
                if pids.is_empty() {
                    break;
                }
                pids.iter().for_each(|p| crate::process::signal(*p, Signal::SIGKILL));
                std::thread::sleep(Duration::from_millis(100));
            }
            remove_cgroups(&entry.path());
        }
    }
    remove_node_dirs();
    let Ok(namespaces) = std::fs::read_dir("/run/netns") else { return };
    for ns in namespaces.flatten() {
        let name = ns.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('-').collect();
        if let ["fct", "knode" | "kclient" | "klan", pid, _] = parts.as_slice() {
            if !alive(pid) {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
    }
}

/// The directories of dead runs' nodes (`<temp>/fct-node-<name>-<pid>`),
/// once their processes are gone.
fn remove_node_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("fct-node-").and_then(|n| n.rsplit('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn procs_below(cgroup: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(children) = std::fs::read_dir(cgroup) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            pids.extend(procs_below(&child.path()));
        }
    }
    pids
}

fn remove_cgroups(cgroup: &Path) {
    if let Ok(children) = std::fs::read_dir(cgroup) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            remove_cgroups(&child.path());
        }
    }
    let _ = std::fs::remove_dir(cgroup);
}

/// A cgroup root named `cgroup` in every hierarchy, with a `daemons` group
/// below: the kubelet's pods and the daemons (and so every shim and
/// container) live below it.
pub(super) fn create(cgroup: &str) -> Result<()> {
    for hierarchy in cgroup_hierarchies() {
        for sub in ["", "daemons"] {
            let path = hierarchy.join(cgroup).join(sub);
            std::fs::create_dir_all(&path).map_err(io(path.display()))?;
            // cgroup v1 cpusets start empty, and no task may join one.
            for file in ["cpuset.cpus", "cpuset.mems"] {
                if let Ok(value) = std::fs::read_to_string(hierarchy.join(file)) {
                    if path.join(file).exists() {
                        write(&path.join(file), value.trim())?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Kills whatever is left below `cgroup` (shims, containers, daemons that
/// did not stop) until nothing is, for at most 20 s.
pub(super) fn kill_below(cgroup: &str) {
    let hierarchies = cgroup_hierarchies();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut alive = 0;
        for h in &hierarchies {
            for pid in procs_below(&h.join(cgroup)) {
                alive += 1;
                crate::process::signal(pid, Signal::SIGKILL);
            }
        }
        if alive == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes `cgroup` and the groups below it, in every hierarchy.
pub(super) fn remove(cgroup: &str) {
    for h in cgroup_hierarchies() {
        remove_cgroups(&h.join(cgroup));
    }
}
