//! Named network namespaces (`ip netns add`), deleted on drop.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;

use nix::sched::CloneFlags;

use crate::command;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace named after the caller's purpose, unique per process.
    pub fn new(purpose: &str) -> Netns {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("fct-{purpose}-{}-{n}", std::process::id());
        let ns = Netns { name };
        command::run(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace and insists that it succeeds.
    pub fn exec(&self, argv: &[&str]) -> Output {
        command::run(Command::new("ip").args(["netns", "exec", &self.name]).args(argv))
    }

    /// The namespace's file, to enter it later (a child before exec).
    pub fn open(&self) -> io::Result<File> {
        File::open(self.path())
    }

    /// Moves the calling thread into the namespace (only that thread). Kept
    /// private: a thread that moves must be one made for it, which `within`
    /// and `spawn` are.
    fn enter(&self) {
        let file = self.open().unwrap_or_else(|e| panic!("open {}: {e}", self.path()));
        join(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("enter {}: {e}", self.name));
    }

    /// Runs `work` on a thread of its own inside the namespace, so that the
    /// caller's thread (and the test harness's) never moves.
    pub fn within<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter();
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Like `within`, for work that outlives the caller (a server, a
    /// client sending until told to stop): the thread enters the namespace
    /// before `work` starts.
    pub fn spawn<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
        let file = self.open().unwrap_or_else(|e| panic!("open {}: {e}", self.path()));
        let name = self.name.clone();
        std::thread::spawn(move || {
            join(&file, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("enter {name}: {e}"));
            drop(file);
            work()
        })
    }

    /// Writes a sysctl of this namespace (`net.*` is per namespace).
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Moves the calling thread (or a child between fork and exec) into the
/// namespace `file` names; the one place the testbed calls `setns`.
pub fn join(file: impl AsFd, kind: CloneFlags) -> io::Result<()> {
    nix::sched::setns(file, kind).map_err(io::Error::from)
}
