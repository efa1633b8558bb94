//! Running the tools a test drives, and reading what they said.

use std::process::{Command, Output};

/// stdout and stderr of a command, for messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The output of a command that must have succeeded (a test's assertion).
pub fn ok(o: Output, what: &str) -> Output {
    assert!(o.status.success(), "{what}: {}", text(&o));
    o
}

/// The output of a command that must have succeeded, or what it said.
pub fn checked(o: Output, what: &str) -> Result<Output, String> {
    match o.status.success() {
        true => Ok(o),
        false => Err(format!("{what}: {}", text(&o))),
    }
}

/// Runs `cmd` and returns its stdout, or why it failed.
pub fn stdout(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let out = cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(out.stdout)
}
