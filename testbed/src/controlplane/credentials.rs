//! What the control plane trusts: a CA, the API server's certificate, the
//! service account key and static tokens, made with openssl in its
//! directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command;
use crate::error::{io, Result};

use super::SERVICE_IP;

/// A CA and the API server's certificate, valid for loopback, the Service
/// IP (pods reach the API server there) and the nodes' addresses. Returns
/// the CA's PEM file.
fn certificates(dir: &Path, addresses: &[&str]) -> Result<PathBuf> {
    let run =
        |args: &[&str]| command::succeeded(Command::new("openssl").current_dir(dir).args(args)).map(drop);
    let mut names = vec![
        "DNS:kubernetes".to_owned(),
        "DNS:kubernetes.default".to_owned(),
        "DNS:kubernetes.default.svc".to_owned(),
        "DNS:localhost".to_owned(),
        "IP:127.0.0.1".to_owned(),
        format!("IP:{SERVICE_IP}"),
    ];
    names.extend(addresses.iter().map(|a| format!("IP:{a}")));
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=flush-conntrack-test-ca",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "apiserver.key",
        "-out",
        "apiserver.csr",
        "-subj",
        "/CN=kube-apiserver",
    ])?;
    let ext = dir.join("san.ext");
    std::fs::write(&ext, format!("subjectAltName={}\n", names.join(","))).map_err(io(ext.display()))?;
    run(&[
        "x509",
        "-req",
        "-in",
        "apiserver.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "apiserver.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ])?;
    Ok(dir.join("ca.crt"))
}

/// The service account key, the certificates (see [`certificates`]) and
/// the static tokens: the admin's and one per kubelet. Returns the CA's
/// PEM file.
pub(super) fn write(dir: &Path, addresses: &[&str], kubelets: &[&str]) -> Result<PathBuf> {
    let key = dir.join("sa.key");
    command::succeeded(Command::new("openssl").args(["genrsa", "-out"]).arg(&key).arg("2048"))?;
    let ca = certificates(dir, addresses)?;
    let mut tokens = "admin-token,admin,admin-uid,system:masters\n".to_owned();
    for name in kubelets {
        tokens.push_str(&format!("{name}-token,system:node:{name},{name}-uid,system:nodes\n"));
    }
    let csv = dir.join("tokens.csv");
    std::fs::write(&csv, tokens).map_err(io(csv.display()))?;
    Ok(ca)
}
