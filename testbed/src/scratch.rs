//! A working directory under the system's temporary directory, removed when
//! dropped, so that a test that fails (and unwinds) leaves nothing behind.

use std::path::{Path, PathBuf};

pub struct Scratch(PathBuf);

impl Scratch {
    /// `fct-<purpose>-<pid>`, emptied first.
    pub fn new(purpose: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("fct-{purpose}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
