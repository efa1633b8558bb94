//! The module map in docs/design.md, held to the code: every `crate::` path
//! in a module's files (its `use` lines and paths written inline, tests
//! included) must name the module itself or one the map lets it import, and
//! every module of `src/` must be on the map. Fast: files only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `module -> what it may import`, from the table between the markers.
fn map() -> BTreeMap<String, BTreeSet<String>> {
    let design = std::fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md");
    let table = design
        .split("<!-- module map: begin -->")
        .nth(1)
        .and_then(|rest| rest.split("<!-- module map: end -->").next())
        .expect("docs/design.md has the module map between its markers");
    let names = |cell: &str| -> BTreeSet<String> {
        cell.split(", ")
            .filter_map(|n| n.trim().strip_prefix('`')?.strip_suffix('`'))
            .map(str::to_owned)
            .collect()
    };
    table
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.strip_prefix("| `")?.split(" | ").collect();
            let module = cells.first()?.strip_suffix('`')?;
            let imports = cells.last()?.trim_end_matches(" |");
            Some((module.to_owned(), names(imports)))
        })
        .collect()
}

/// The top-level modules of `src/` and the files of each.
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let mut modules: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("src")).expect("src/").flatten() {
        let path = entry.path();
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
        let files = match path.is_dir() {
            true => rust_files(&path),
            false if path.extension().is_some_and(|e| e == "rs") => vec![path.clone()],
            false => continue,
        };
        modules.entry(name).or_default().extend(files);
    }
    modules
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a module folder").flatten() {
        let path = entry.path();
        match path.is_dir() {
            true => files.extend(rust_files(&path)),
            false if path.extension().is_some_and(|e| e == "rs") => files.push(path),
            false => {}
        }
    }
    files
}

/// The modules a file names through `prefix` (`crate::` inside the library,
/// the crate's name in `main.rs`), comments left out. A name after the
/// prefix that is no module is an item of `lib.rs`.
fn named(text: &str, prefix: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| !l.starts_with("//")) {
        for rest in line.split(prefix).skip(1) {
            let items: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group.split('}').next().unwrap_or_default().split(',').collect(),
                None => vec![rest],
            };
            for item in items {
                let ident: String =
                    item.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if ident.is_empty() {
                    continue;
                }
                found.insert(if modules.contains(&ident) { ident } else { "lib".to_owned() });
            }
        }
    }
    found
}

#[test]
fn every_module_is_on_the_map_and_the_map_has_no_other() {
    let on_map: BTreeSet<String> = map().into_keys().collect();
    let in_src: BTreeSet<String> = modules().into_keys().collect();
    assert_eq!(on_map, in_src, "docs/design.md's module map against src/");
}

#[test]
fn every_import_is_one_the_map_allows() {
    let map = map();
    let names: BTreeSet<String> = modules().into_keys().filter(|m| m != "lib" && m != "main").collect();
    let mut refused = Vec::new();
    for (module, files) in modules() {
        if module == "lib" {
            continue; // it declares every module and runs the plan: it may import them all
        }
        let allowed = map.get(&module).cloned().unwrap_or_default();
        let prefix = if module == "main" { "flush_conntrack::" } else { "crate::" };
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a source file");
            for import in named(&text, prefix, &names) {
                if import != module && !allowed.contains(&import) {
                    refused.push(format!(
                        "{} imports {import}",
                        file.strip_prefix(root()).unwrap_or(&file).display()
                    ));
                }
            }
        }
    }
    assert!(refused.is_empty(), "imports the module map does not allow:\n{}", refused.join("\n"));
}

/// The map itself runs one way: a module may import only modules listed
/// above it in the table, so a circle cannot be drawn into it either.
#[test]
fn the_map_has_no_circle() {
    let design = std::fs::read_to_string(root().join("docs/design.md")).expect("docs/design.md");
    let order: Vec<String> = design
        .lines()
        .skip_while(|l| !l.contains("module map: begin"))
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next().map(str::to_owned))
        .collect();
    let map = map();
    for (i, module) in order.iter().enumerate() {
        for import in &map[module] {
            if module == "lib" {
                continue;
            }
            let at = order.iter().position(|m| m == import);
            assert!(
                at.is_some_and(|at| at < i),
                "{module} imports {import}, which is not above it in the map"
            );
        }
    }
}

#[test]
fn the_reader_sees_through_groups_and_comments() {
    let modules: BTreeSet<String> = ["error", "flush", "cluster"].map(str::to_owned).into();
    let text = "use crate::{error::Error, flush};\n// crate::cluster is below\nlet x = crate::run();\n";
    let got = named(text, "crate::", &modules);
    assert_eq!(got, ["error", "flush", "lib"].map(str::to_owned).into());
}
