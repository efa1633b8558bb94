//! The image users build is the image the suite runs, and it says what is
//! inside. The binary comes from the Dockerfile's own build stage
//! (testbed::recipe), carried out twice from two source paths: the same
//! bytes and, made into the final stage at the commit's time, the same
//! image digest. The dependency list `cargo auditable` embeds is the one
//! Cargo.lock resolves for the binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use auditable_info::audit_info_from_file;
use auditable_serde::DependencyKind;
use testbed::image::Image;
use testbed::{recipe, require};

const TOOLS: &[&str] = &["git", "cargo-auditable", "umoci", "skopeo", "gzip"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The recipe's binary, built in `target/recipe/<name>`, and how long that took.
fn built(name: &str) -> (PathBuf, f64) {
    let started = Instant::now();
    let binary = recipe::binary_in(root(), &root().join("target/recipe").join(name))
        .unwrap_or_else(|e| panic!("the Dockerfile's build stage in target/recipe/{name}: {e}"));
    (binary, started.elapsed().as_secs_f64())
}

/// Where `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn two_builds_of_one_commit_give_one_binary_and_one_image_digest() {
    if !require::tools("two_builds_of_one_commit_give_one_binary_and_one_image_digest", TOOLS) {
        return;
    }
    let (a, seconds_a) = built("a");
    let (b, seconds_b) = built("b");
    eprintln!("build stage: {seconds_a:.0} s in target/recipe/a, {seconds_b:.0} s in target/recipe/b");
    let (bytes_a, bytes_b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    eprintln!("binary: {} bytes", bytes_a.len());
    assert!(bytes_a == bytes_b, "{} and {} differ", a.display(), b.display());

    // No path of the build machine: the source, the stage root and cargo's
    // home are renamed away.
    let home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_default()));
    for path in [root().to_str().unwrap(), home.as_str(), "target/recipe"] {
        assert!(!contains(&bytes_a, path), "the binary holds the build machine's path {path}");
    }

    let created = recipe::source_date_epoch(root()).unwrap();
    let dockerfile = root().join("Dockerfile");
    let image = |binary: &Path, work: &str| {
        let work = std::env::temp_dir().join(format!("fct-repro-{work}-{}", std::process::id()));
        let built = Image::from_dockerfile(&dockerfile, binary, "registry.test/flush-conntrack:dev", created)
            .and_then(|i| i.build(&work))
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = std::fs::remove_dir_all(&work);
        built
    };
    let (image_a, image_b) = (image(&a, "a"), image(&b, "b"));
    eprintln!(
        "image digests: {} and {}; {} bytes unpacked, {} compressed",
        image_a.digest, image_b.digest, image_a.uncompressed_bytes, image_a.compressed_bytes
    );
    assert!(image_a.digest.starts_with("sha256:"), "{}", image_a.digest);
    assert_eq!(image_a.digest, image_b.digest);
    assert_eq!(image_a.config["created"], testbed::image::rfc3339(created));
}

type Packages = BTreeSet<(String, String)>;

fn cargo(args: &[&str]) -> Vec<u8> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo).current_dir(root()).args(args).output().expect("cargo runs");
    assert!(out.status.success(), "cargo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// (name, version) of the packages `cargo tree` resolves from Cargo.lock
/// for normal dependencies on this target: of the binary's package, or
/// (`workspace`) of every member's.
fn resolved(workspace: bool) -> Packages {
    let mut args = vec!["tree", "--locked", "-e", "normal", "--target", "x86_64-unknown-linux-gnu"];
    args.extend(if workspace { ["--workspace", "--all-features"] } else { ["-p", "flush-conntrack"] });
    args.extend(["--prefix", "none", "-f", "{p}"]);
    String::from_utf8_lossy(&cargo(&args))
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next()?.to_owned();
            let version = words.next()?.strip_prefix('v')?.to_owned();
            Some((name, version))
        })
        .collect()
}

/// The packages that are proc-macros: run by the compiler, not linked in,
/// which `cargo auditable` records as build-time dependencies.
fn proc_macros() -> Packages {
    let metadata: serde_json::Value =
        serde_json::from_slice(&cargo(&["metadata", "--locked", "--format-version", "1"])).expect("JSON");
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["kind"] == serde_json::json!(["proc-macro"]))
        })
        .filter_map(|p| Some((p["name"].as_str()?.to_owned(), p["version"].as_str()?.to_owned())))
        .collect()
}

#[test]
fn the_binary_carries_the_dependency_list_cargo_lock_resolves_for_it() {
    if !require::tools("the_binary_carries_the_dependency_list_cargo_lock_resolves_for_it", TOOLS) {
        return;
    }
    let (binary, _) = built("a");
    let info = audit_info_from_file(&binary, Default::default())
        .unwrap_or_else(|e| panic!("no `cargo auditable` data (.dep-v0) in {}: {e}", binary.display()));
    let of_kind = |kind: DependencyKind| -> Packages {
        info.packages
            .iter()
            .filter(|p| p.kind == kind)
            .map(|p| (p.name.clone(), p.version.to_string()))
            .collect()
    };
    let (runtime, build) = (of_kind(DependencyKind::Runtime), of_kind(DependencyKind::Build));
    let macros = proc_macros();
    let for_the_binary = resolved(false);
    let (linked, run_by_rustc): (Packages, Packages) =
        for_the_binary.iter().cloned().partition(|p| !macros.contains(p));
    eprintln!(
        "embedded: {} runtime and {} build-time packages; cargo tree -e normal: {} for the binary ({} of them \
         proc-macros)",
        runtime.len(),
        build.len(),
        for_the_binary.len(),
        run_by_rustc.len()
    );

    // Nothing the binary links is left out, at the version Cargo.lock pins;
    // proc-macros are listed too (as build-time or runtime dependencies,
    // depending on the path cargo auditable finds to them).
    let missing: Vec<_> = linked.difference(&runtime).collect();
    assert!(missing.is_empty(), "linked, not embedded as runtime dependencies: {missing:?}");
    let embedded: Packages = runtime.union(&build).cloned().collect();
    let macros_missing: Vec<_> = run_by_rustc.difference(&embedded).collect();
    assert!(macros_missing.is_empty(), "proc-macros not embedded: {macros_missing:?}");
    assert!(runtime.contains(&("flush-conntrack".to_owned(), env!("CARGO_PKG_VERSION").to_owned())));
    assert!(runtime.iter().any(|(name, _)| name == "rustls"), "the TLS stack is listed");

    // cargo auditable reads `cargo metadata`, whose features are unified
    // over the workspace, so it also lists what another member's features
    // add to a shared dependency (hyper's server side, for testbed): an
    // over-report, never an omission. Each extra must be exactly that.
    let extra: Packages = runtime.difference(&for_the_binary).cloned().collect();
    let elsewhere: Packages = resolved(true).difference(&for_the_binary).cloned().collect();
    eprintln!("embedded but not linked (workspace feature unification): {extra:?}");
    let unexplained: Vec<_> = extra.difference(&elsewhere).collect();
    assert!(unexplained.is_empty(), "embedded, resolved for no member of the workspace: {unexplained:?}");
}
