//! Named network namespaces (`ip netns add`), deleted on drop.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

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
        run(Command::new("ip").args(["netns", "add", &ns.name]));
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace and insists that it succeeds.
    pub fn exec(&self, argv: &[&str]) -> Output {
        run(Command::new("ip").args(["netns", "exec", &self.name]).args(argv))
    }

    /// Moves the calling thread into the namespace (only that thread).
    pub fn enter(&self) -> io::Result<()> {
        let file = File::open(self.path())?;
        // SAFETY: a valid namespace fd; affects the calling thread only.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs `work` on a thread of its own inside the namespace, so that the
    /// caller's thread (and the test harness's) never moves.
    pub fn within<T: Send>(&self, work: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter().unwrap_or_else(|e| panic!("enter {}: {e}", self.name));
                work()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
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

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
