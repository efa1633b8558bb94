//! Objects checked against the Kubernetes OpenAPI schemas with
//! `kubernetes-validate --strict` (PyPI), at the oldest release we support.

use crate::error::{io, spawn, Error, Result};
use std::process::Command;

/// The oldest Kubernetes release the binary targets (k8s-openapi `v1_33`).
pub const KUBERNETES_VERSION: &str = "1.33.0";

/// True when the validator can run; otherwise SKIPPED loudly (a failure
/// under CI=true).
pub fn available(test: &str) -> bool {
    let found =
        Command::new("kubernetes-validate").arg("--version").output().is_ok_and(|o| o.status.success());
    if found {
        return true;
    }
    let message = format!("{test}: needs kubernetes-validate (pip install kubernetes-validate)");
    if crate::require::in_ci() {
        panic!("{message}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("\n*** SKIPPED *** {message}\n");
    false
}

/// Validates YAML or JSON documents strictly; `Err` carries the report.
pub fn strictly(label: &str, documents: &[String]) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fct-validate-{}-{label}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
    let mut files = Vec::new();
    for (i, doc) in documents.iter().enumerate() {
        let path = dir.join(format!("{i}.yaml"));
        std::fs::write(&path, doc).map_err(io(path.display()))?;
        files.push(path);
    }
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--no-warn", "-k", KUBERNETES_VERSION])
        .args(&files)
        .output()
        .map_err(spawn("kubernetes-validate"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && !report.contains("ERROR") {
        Ok(())
    } else {
        Err(Error::Failed { what: format!("kubernetes-validate of {label}"), said: report })
    }
}
