//! Running the tools a test drives, and reading what they said.

use std::process::{Command, Output};

use crate::error::{spawn, Error, Result};

/// stdout and stderr of a command, for messages.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The output of a command that must have succeeded (a test's assertion).
pub fn ok(o: Output, what: &str) -> Output {
    assert!(o.status.success(), "{what}: {}", text(&o));
    o
}

/// Runs a command that must succeed (a test's assertion) and returns its
/// output.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let what = format!("{cmd:?} failed");
    ok(out, &what)
}

/// The output of a command that must have succeeded, or what it said.
pub fn checked(o: Output, what: &str) -> Result<Output> {
    match o.status.success() {
        true => Ok(o),
        false => Err(Error::Failed { what: what.to_owned(), said: text(&o) }),
    }
}

/// Runs `cmd` to its end: its output if it succeeded, else what it said.
pub fn succeeded(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(spawn(&shown))?;
    checked(out, &format!("{shown} failed"))
}

/// Runs `cmd` and returns its stdout, or why it failed.
pub fn stdout(cmd: &mut Command) -> Result<Vec<u8>> {
    Ok(succeeded(cmd)?.stdout)
}
