//! The environment contract's rows (`src/contract.rs`) against what is
//! written about them elsewhere: the README's configuration tables and the
//! admission policy's list of the variables a flush Job may carry. Adding a
//! variable, or carrying one more into spawned Jobs, fails here until the
//! README and the policy say so too. Fast: files only.

use std::collections::BTreeSet;
use std::path::Path;

use flush_conntrack::contract::{self, ALL};

fn read(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The README's configuration section: each table row's variables (one
/// row may name two) and the rest of the row.
fn readme_rows() -> Vec<(Vec<String>, String)> {
    let readme = read("README.md");
    let section = readme.split("\n## Configuration\n").nth(1).expect("a Configuration section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("| ")?.splitn(2, " | ").collect();
            let [names, meaning] = cells[..] else { return None };
            let names: Vec<String> = names
                .split(", ")
                .filter_map(|n| n.strip_prefix('`')?.strip_suffix('`'))
                .filter(|n| n.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
                .map(str::to_owned)
                .collect();
            (!names.is_empty()).then(|| (names, meaning.to_owned()))
        })
        .collect()
}

#[test]
fn the_readme_lists_every_variable_once_and_no_other() {
    let listed: Vec<String> = readme_rows().into_iter().flat_map(|(names, _)| names).collect();
    let unique: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
    assert_eq!(unique.len(), listed.len(), "a variable listed twice: {listed:?}");
    let rows: BTreeSet<&str> = ALL.iter().map(|r| r.name).collect();
    assert_eq!(unique, rows, "README's configuration tables against src/contract.rs");
}

/// A default other than `false` (which every boolean has) is stated in the
/// variable's README line, as the row gives it.
#[test]
fn the_readme_gives_each_default_the_row_gives() {
    let rows = readme_rows();
    for row in ALL.iter().filter(|r| !r.default.is_empty() && r.default != "false") {
        let (_, meaning) =
            rows.iter().find(|(names, _)| names.iter().any(|n| n == row.name)).expect("listed");
        let stated = [format!("`{}` (default)", row.default), format!("`{}` (the default)", row.default)]
            .into_iter()
            .chain([format!("Default `{}`", row.default), format!("Default {}.", row.default)])
            .chain([format!("`{}` by default", row.default)]);
        assert!(
            stated.clone().any(|s| meaning.contains(&s)),
            "README's {} line does not state its default {:?}: {meaning}",
            row.name,
            row.default
        );
    }
}

/// The policy names the carried variables twice: the list it checks and the
/// message it refuses with.
#[test]
fn the_admission_policy_admits_exactly_the_carried_variables() {
    let policy = read("kustomize/base/admission-policy.yaml");
    let carried: Vec<&str> = contract::carried().collect();
    assert_eq!(carried, ["MODE", "TARGET_IP", "TARGET_PORT", "TARGET_PROTOCOL", "KEEP_DNAT_TO", "DRY_RUN"]);

    let mut lines = policy.lines().skip_while(|l| l.trim() != "- name: flushVariables");
    lines.next().expect("a flushVariables variable");
    let expression = lines.next().expect("its expression").trim();
    let list = expression
        .strip_prefix("expression: \"[")
        .and_then(|l| l.strip_suffix("]\""))
        .unwrap_or_else(|| panic!("flushVariables is a literal list: {expression}"));
    let checked: Vec<&str> = list.split(", ").map(|n| n.trim_matches('\'')).collect();
    assert_eq!(checked, carried, "the policy's flushVariables");

    let message = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("message: \"a flush Job sets only the flush variables ("))
        .expect("the refusal names the flush variables");
    let named: Vec<&str> = message.split(')').next().unwrap_or_default().split(", ").collect();
    assert_eq!(named, carried, "the policy's message");
}

/// `MODE=flush` is what the policy requires, as the contract spells it.
#[test]
fn the_admission_policy_requires_the_flush_mode_as_spelled() {
    let policy = read("kustomize/base/admission-policy.yaml");
    let wanted = format!(
        "e.name == '{}' && has(e.value) && e.value == '{}'",
        contract::MODE.name,
        contract::Mode::Flush
    );
    assert!(policy.contains(&wanted), "the policy checks {wanted}");
}
