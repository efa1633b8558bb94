//! A sweep by hand, with the commands the README gives users.

use std::io::Write;
use std::process::Stdio;

use crate::command::checked;
use crate::controlplane::ControlPlane;
use crate::error::{io, spawn, Error, Result};

/// Which nodes a sweep by hand visits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visits {
    /// Those that changed since the sweep CronJob last succeeded.
    Changed,
    /// Every node with an agent (`FULL_SWEEP=true`).
    Every,
}

/// The README's sweep of the changed nodes, with the Job name `sweep-now`.
pub const SWEEP_NOW: &str =
    "kubectl -n flush-conntrack create job sweep-now --from=cronjob/flush-conntrack-sweep";

/// The README's sweep of every node, with the Job name `sweep-all`: the
/// CronJob's Job as the installed overlay made it, with FULL_SWEEP set.
pub const SWEEP_ALL: &str =
    "kubectl -n flush-conntrack create job sweep-all --from=cronjob/flush-conntrack-sweep \
     --dry-run=client -o yaml | kubectl set env --local -f - FULL_SWEEP=true -o yaml | kubectl create -f -";

/// Runs the README's command for `visits` as the admin, the Job named `name`.
pub fn create(cp: &ControlPlane, visits: Visits, name: &str) -> Result<()> {
    let (command, readme_name) = match visits {
        Visits::Changed => (SWEEP_NOW, "sweep-now"),
        Visits::Every => (SWEEP_ALL, "sweep-all"),
    };
    let mut input: Vec<u8> = Vec::new();
    for stage in command.split(" | ") {
        let mut words = stage.split_whitespace();
        if words.next() != Some("kubectl") {
            return Err(Error::Failed { what: stage.to_owned(), said: "not a kubectl command".into() });
        }
        let args: Vec<&str> = words.map(|w| if w == readme_name { name } else { w }).collect();
        let mut child = cp
            .kubectl_command()
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn(stage))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).map_err(io(stage))?;
        }
        let out = checked(child.wait_with_output().map_err(io(stage))?, stage)?;
        input = out.stdout;
    }
    Ok(())
}
