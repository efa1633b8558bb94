//! The README's claims name the tests that show them, in comments such as
//! `<!-- tests/two_nodes.rs: each_trigger_repairs_its_own_node -->`. A test
//! renamed or removed would leave its claim unshown: every name a comment
//! gives must still be a function of the file it names. Fast: files only.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `(file, name)` for every snake_case name after `tests/X.rs:` or
/// `benches/X.rs:` in a comment, up to the next `;`.
fn named_tests(readme: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for comment in readme.split("<!--").skip(1).filter_map(|c| c.split("-->").next()) {
        for dir in ["tests/", "benches/"] {
            for part in comment.split(dir).skip(1) {
                let Some((file, rest)) = part.split_once(".rs: ") else { continue };
                if !file.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
                    continue;
                }
                let names = rest.split(';').next().unwrap_or_default();
                for name in names.split(',').filter_map(|n| n.split_whitespace().next()) {
                    let snake = name.contains('_')
                        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                    if snake {
                        found.push((format!("{dir}{file}.rs"), name.to_owned()));
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_test_a_claim_names_exists() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let named = named_tests(&readme);
    assert!(named.len() >= 50, "the README's comments name {} tests; the reader lost them?", named.len());
    let missing: Vec<String> = named
        .iter()
        .filter(|(file, name)| {
            let text = std::fs::read_to_string(root().join(file)).unwrap_or_default();
            !text.contains(&format!("fn {name}("))
        })
        .map(|(file, name)| format!("{file}: {name}"))
        .collect();
    assert!(missing.is_empty(), "README comments name tests that do not exist:\n{}", missing.join("\n"));
}

#[test]
fn the_reader_takes_names_up_to_the_next_file() {
    let text =
        "<!-- tests/a.rs: one_test, two_test (both); benches/b.rs: bench_fn --> <!-- tests/c.rs: x -->";
    let got = named_tests(text);
    let want = [("tests/a.rs", "one_test"), ("tests/a.rs", "two_test"), ("benches/b.rs", "bench_fn")];
    assert_eq!(got, want.map(|(f, n)| (f.to_owned(), n.to_owned())));
}

/// The sweeps by hand the README gives are the commands the real-node and
/// control-plane tests run (`testbed::story::by_hand`), word for word once
/// its line continuations are joined.
#[test]
fn the_sweeps_by_hand_are_the_commands_the_tests_run() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let joined = readme.replace("\\\n", " ");
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let lines: Vec<String> =
        joined.lines().map(|l| words(l.split(" #").next().unwrap_or_default())).collect();
    for command in [testbed::story::by_hand::SWEEP_NOW, testbed::story::by_hand::SWEEP_ALL] {
        assert!(lines.iter().any(|l| *l == words(command)), "the README does not give `{command}`");
    }
}
