//! The Dockerfile's build stage, carried out here without a Docker engine:
//! its `COPY`, `ARG`, `ENV`, `WORKDIR` and `RUN` lines, verbatim, in a
//! scratch directory that stands for the stage's root. This machine is what
//! the stage's base image is (Debian 12, the same Rust release), which is
//! checked first; anything the builder cannot carry out is refused rather
//! than skipped. So the binary every test, the real node and the benchmarks
//! run is the one `docker buildx build` makes, and a change to the stage that
//! breaks it fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use crate::command::stdout;
use crate::error::{self, io, unexpected, Result};
use crate::image::instructions;

/// One instruction of the build stage, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `ARG NAME[=default]`.
    Arg(String, Option<String>),
    Env(String, String),
    Workdir(String),
    /// `COPY source... destination`, from the build context.
    Copy(Vec<String>, String),
    Run(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildStage {
    /// The `FROM` image, e.g. `rust:1.95.0-slim-bookworm`.
    pub base: String,
    pub name: String,
    pub steps: Vec<Step>,
}

/// The stage named `build`. Pure.
pub fn build_stage(dockerfile: &str) -> Result<BuildStage> {
    let lines = instructions(dockerfile);
    let mut stage: Option<BuildStage> = None;
    for line in &lines {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        let word = word.to_ascii_uppercase();
        if word == "FROM" {
            if stage.is_some() {
                break;
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [base, as_, name] = words.as_slice() {
                if as_.eq_ignore_ascii_case("as") && *name == "build" {
                    stage = Some(BuildStage {
                        base: base.to_string(),
                        name: name.to_string(),
                        steps: Vec::new(),
                    });
                }
            }
            continue;
        }
        let Some(stage) = stage.as_mut() else { continue };
        stage.steps.push(step(&word, rest, line)?);
    }
    stage.ok_or_else(|| unexpected("the Dockerfile has no `FROM ... AS build` stage"))
}

/// One instruction of the build stage (`word` upper-cased, `rest` its
/// arguments), refused unless the runner carries it out as docker would.
fn step(word: &str, rest: &str, line: &str) -> Result<Step> {
    let step = match word {
        "ARG" => match rest.split_once('=') {
            Some((name, default)) => Step::Arg(name.to_owned(), Some(default.trim_matches('"').to_owned())),
            None => Step::Arg(rest.to_owned(), None),
        },
        "ENV" => {
            let (name, value) = rest
                .split_once('=')
                .ok_or_else(|| unexpected(format!("ENV must be `ENV NAME=value`: `{line}`")))?;
            Step::Env(name.to_owned(), value.trim_matches('"').to_owned())
        }
        "WORKDIR" => Step::Workdir(rest.to_owned()),
        "COPY" => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.len() < 2 || words.iter().any(|w| w.starts_with("--")) {
                return Err(unexpected(format!(
                    "COPY must be `COPY SOURCE... DEST` from the context: `{line}`"
                )));
            }
            let (destination, sources) =
                words.split_last().ok_or_else(|| unexpected("COPY without words"))?;
            Step::Copy(sources.iter().map(|s| s.to_string()).collect(), destination.to_string())
        }
        "RUN" => {
            if rest.starts_with("--") || rest.starts_with('[') {
                return Err(unexpected(format!("RUN must be a plain shell command: `{line}`")));
            }
            Step::Run(rest.to_owned())
        }
        _ => {
            return Err(unexpected(format!(
                "the recipe runner does not carry out `{word}` in the build stage: `{line}`"
            )))
        }
    };
    Ok(step)
}

/// The Rust release and Debian release a `rust:` image tag names, e.g.
/// `rust:1.95.0-slim-bookworm` -> ("1.95.0", "bookworm"). A tag without a
/// full Rust version would float, and could not be matched here. Pure.
pub fn base_versions(base: &str) -> Result<(String, String)> {
    let image = base.split('@').next().unwrap_or(base);
    let tag =
        image.strip_prefix("rust:").or_else(|| image.strip_prefix("docker.io/library/rust:")).ok_or_else(
            || unexpected(format!("the build stage must be FROM an official rust image, not {base}")),
        )?;
    let mut parts = tag.split('-');
    let rust = parts.next().unwrap_or_default();
    if rust.split('.').count() != 3 || !rust.split('.').all(|p| p.parse::<u32>().is_ok()) {
        return Err(unexpected(format!(
            "the build stage's image {base} must name a full Rust version (1.95.0)"
        )));
    }
    let debian = parts
        .next_back()
        .filter(|d| !d.is_empty())
        .ok_or_else(|| unexpected(format!("{base} names no Debian release")))?;
    Ok((rust.to_owned(), debian.to_owned()))
}

/// Refuses to build unless this machine is what the base image is.
fn check_machine(base: &str) -> Result<()> {
    let (rust, debian) = base_versions(base)?;
    let rustc = String::from_utf8_lossy(&stdout(Command::new("rustc").arg("--version"))?).to_string();
    if !rustc.starts_with(&format!("rustc {rust} ")) {
        return Err(unexpected(format!(
            "the build stage's base {base} has Rust {rust}; this machine has {}",
            rustc.trim()
        )));
    }
    let os = std::fs::read_to_string("/etc/os-release").map_err(io("/etc/os-release"))?;
    if !os.lines().any(|l| l == format!("VERSION_CODENAME={debian}")) {
        return Err(unexpected(format!(
            "the build stage's base {base} is Debian {debian}; this machine is not"
        )));
    }
    Ok(())
}

/// `${NAME}` and `$NAME` of the given variables, as Docker expands them in
/// `COPY`, `ENV` and `WORKDIR` (not in `RUN`: the shell does). Pure.
pub fn expand(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = text.to_owned();
    // Longest names first, so that `$AB` is not taken for `$A` then `B`.
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    for name in names {
        let value = &vars[name];
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    out
}

/// The commit's time, as `SOURCE_DATE_EPOCH` (reproducible builds' rule):
/// the same for every build of a commit.
pub fn source_date_epoch(root: &Path) -> Result<u64> {
    let out = stdout(Command::new("git").arg("-C").arg(root).args(["log", "-1", "--format=%ct"]))?;
    String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .map_err(|e| unexpected(format!("git log -1 --format=%ct: {e}")))
}

/// Copies `from` to `to`, writing only what differs, so that cargo's
/// fingerprints (file times) see no change where there is none; removes
/// files the source no longer has.
fn sync(from: &Path, to: &Path) -> Result<()> {
    let meta = std::fs::metadata(from).map_err(io(from.display()))?;
    if meta.is_file() {
        let new = std::fs::read(from).map_err(io(from.display()))?;
        if std::fs::read(to).ok().as_deref() != Some(new.as_slice()) {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent.display()))?;
            }
            std::fs::write(to, &new).map_err(io(to.display()))?;
        }
        return Ok(());
    }
    std::fs::create_dir_all(to).map_err(io(to.display()))?;
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(from).map_err(io(from.display()))? {
        let entry = entry.map_err(io(from.display()))?;
        names.insert(entry.file_name());
        sync(&entry.path(), &to.join(entry.file_name()))?;
    }
    for entry in std::fs::read_dir(to).map_err(io(to.display()))? {
        let entry = entry.map_err(io(to.display()))?;
        if !names.contains(&entry.file_name()) {
            let path = entry.path();
            let gone =
                if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
            gone.map_err(io(path.display()))?;
        }
    }
    Ok(())
}

/// `path` in the stage's file system, as a directory under `stage_root`.
fn inside(stage_root: &Path, path: &str) -> PathBuf {
    stage_root.join(path.trim_start_matches('/'))
}

/// Builds of one process share their stage roots: one at a time.
static BUILDING: Mutex<()> = Mutex::new(());

/// Carries out the build stage of `root`'s Dockerfile in `stage_root`
/// (kept between runs, so that cargo builds incrementally) with
/// `SOURCE_DATE_EPOCH` from the commit.
pub fn build(root: &Path, stage_root: &Path) -> Result<()> {
    let dockerfile = root.join("Dockerfile");
    let text = std::fs::read_to_string(&dockerfile).map_err(io(dockerfile.display()))?;
    let stage = build_stage(&text)?;
    check_machine(&stage.base)?;
    let _one = BUILDING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut builder =
        Builder { root, stage_root, given: given_args(root)?, vars: machine_env(), workdir: "/".to_owned() };
    for step in &stage.steps {
        builder.step(step)?;
    }
    Ok(())
}

/// The build arguments buildx would pass: the platform's, and the
/// commit's time.
fn given_args(root: &Path) -> Result<BTreeMap<String, String>> {
    Ok([
        ("TARGETARCH", "amd64".to_owned()),
        ("TARGETOS", "linux".to_owned()),
        ("TARGETPLATFORM", "linux/amd64".to_owned()),
        ("SOURCE_DATE_EPOCH", source_date_epoch(root)?.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

/// The machine's own environment, as the base image sets it: where the
/// toolchain is, and nothing of the test's (no RUSTFLAGS, no CARGO_*).
fn machine_env() -> BTreeMap<String, String> {
    ["PATH", "HOME", "CARGO_HOME", "RUSTUP_HOME"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), std::env::var(k).ok()?)))
        .collect()
}

/// The build stage under way: its variables and working directory.
struct Builder<'a> {
    root: &'a Path,
    stage_root: &'a Path,
    given: BTreeMap<String, String>,
    vars: BTreeMap<String, String>,
    workdir: String,
}

impl Builder<'_> {
    fn step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::Arg(name, default) => {
                let value = self
                    .given
                    .get(name)
                    .cloned()
                    .or_else(|| default.as_ref().map(|d| expand(d, &self.vars)))
                    .ok_or_else(|| {
                        unexpected(format!("the build stage's ARG {name} has no default and no value here"))
                    })?;
                self.vars.insert(name.clone(), value);
            }
            Step::Env(name, value) => {
                let value = expand(value, &self.vars);
                self.vars.insert(name.clone(), value);
            }
            Step::Workdir(dir) => {
                let dir = expand(dir, &self.vars);
                self.workdir = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", self.workdir.trim_end_matches('/'))
                };
                let path = inside(self.stage_root, &self.workdir);
                std::fs::create_dir_all(&path).map_err(io(path.display()))?;
            }
            Step::Copy(sources, destination) => self.copy(sources, destination)?,
            Step::Run(command) => self.run(command)?,
        }
        Ok(())
    }

    fn copy(&self, sources: &[String], destination: &str) -> Result<()> {
        let destination = expand(destination, &self.vars);
        let base = match destination.starts_with('/') {
            true => destination.clone(),
            false => format!("{}/{destination}", self.workdir.trim_end_matches('/')),
        };
        for source in sources {
            let source = expand(source, &self.vars);
            let from = self.root.join(&source);
            // `COPY dir dest` copies the directory's contents into
            // dest; `COPY a b ./` puts a and b in the directory.
            let to = match (from.is_dir(), destination.ends_with('/')) {
                (false, true) => inside(self.stage_root, &base).join(
                    from.file_name()
                        .ok_or_else(|| unexpected(format!("COPY of `{source}`: no file name")))?,
                ),
                _ => inside(self.stage_root, &base),
            };
            sync(&from, &to)?;
        }
        Ok(())
    }

    fn run(&self, command: &str) -> Result<()> {
        let cwd = inside(self.stage_root, &self.workdir);
        let out = Command::new("sh")
            .args(["-c", command])
            .current_dir(&cwd)
            .env_clear()
            .envs(&self.vars)
            .env("PWD", &cwd)
            .output()
            .map_err(error::spawn(format!("the build stage's `RUN {command}`")))?;
        if !out.status.success() {
            let said = String::from_utf8_lossy(&out.stderr);
            let tail: Vec<&str> = said.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(unexpected(format!(
                "the build stage's `RUN {command}` failed ({}):\n{}",
                out.status,
                tail.join("\n")
            )));
        }
        Ok(())
    }
}

/// The binary the image ships, built by the Dockerfile's own build stage in
/// `stage_root`: the file the final stage's `COPY --from=build` takes.
pub fn binary_in(root: &Path, stage_root: &Path) -> Result<PathBuf> {
    build(root, stage_root)?;
    let text = std::fs::read_to_string(root.join("Dockerfile")).map_err(io("Dockerfile"))?;
    let stage = crate::image::final_stage(&text)?;
    let [(source, _)] = stage.copies.as_slice() else {
        return Err(unexpected(format!(
            "the final stage must COPY exactly the binary, not {:?}",
            stage.copies
        )));
    };
    let binary = inside(stage_root, source);
    match binary.is_file() {
        true => Ok(binary),
        false => Err(unexpected(format!("the build stage left no {source}"))),
    }
}

/// The shipped binary, from the one stage root the suite and the
/// benchmarks share (`target/recipe/a`).
pub fn shipped_binary(root: &Path) -> Result<PathBuf> {
    binary_in(root, &root.join("target/recipe/a"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKERFILE: &str = r#"
# syntax=docker/dockerfile:1
FROM rust:1.95.0-slim-bookworm AS build
ARG CARGO_AUDITABLE_VERSION=0.7.7
ENV FOO="bar"
WORKDIR /src
RUN cargo install --locked "cargo-auditable@${CARGO_AUDITABLE_VERSION}"
COPY Cargo.toml Cargo.lock ./
COPY src src
RUN a \
    && b
FROM scratch
COPY --from=build /src/out/x /x
"#;

    #[test]
    fn reads_the_build_stage_in_order() {
        let stage = build_stage(DOCKERFILE).unwrap();
        assert_eq!(stage.base, "rust:1.95.0-slim-bookworm");
        assert_eq!(
            stage.steps,
            vec![
                Step::Arg("CARGO_AUDITABLE_VERSION".into(), Some("0.7.7".into())),
                Step::Env("FOO".into(), "bar".into()),
                Step::Workdir("/src".into()),
                Step::Run(r#"cargo install --locked "cargo-auditable@${CARGO_AUDITABLE_VERSION}""#.into()),
                Step::Copy(vec!["Cargo.toml".into(), "Cargo.lock".into()], "./".into()),
                Step::Copy(vec!["src".into()], "src".into()),
                Step::Run("a  && b".into()),
            ]
        );
    }

    #[test]
    fn refuses_what_it_cannot_carry_out() {
        let e = build_stage("FROM rust:1.95.0-slim-bookworm AS build\nRUN --mount=type=cache,target=/x a\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("plain shell"), "{e}");
        let e = build_stage("FROM rust:1.95.0-slim-bookworm AS build\nCOPY --chown=1 a b\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("COPY"), "{e}");
        let e = build_stage("FROM rust:1.95.0-slim-bookworm AS build\nADD https://x /x\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ADD"), "{e}");
        let e = build_stage("FROM scratch\nCOPY a b\n").unwrap_err().to_string();
        assert!(e.contains("AS build"), "{e}");
    }

    #[test]
    fn the_base_must_name_the_exact_rust_and_debian() {
        assert_eq!(
            base_versions("rust:1.95.0-slim-bookworm").unwrap(),
            ("1.95.0".to_owned(), "bookworm".to_owned())
        );
        assert_eq!(
            base_versions("rust:1.95.0-bookworm@sha256:0123").unwrap(),
            ("1.95.0".to_owned(), "bookworm".to_owned())
        );
        assert!(base_versions("rust:1.95-bookworm").is_err());
        assert!(base_versions("rust:latest").is_err());
        assert!(base_versions("debian:bookworm").is_err());
    }

    #[test]
    fn expands_the_longest_name_first() {
        let vars: BTreeMap<String, String> =
            [("A".to_owned(), "1".to_owned()), ("AB".to_owned(), "2".to_owned())].into_iter().collect();
        assert_eq!(expand("$AB ${A} $A", &vars), "2 1 1");
    }

    #[test]
    fn the_shipped_dockerfile_has_a_build_stage_the_runner_carries_out() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
        let stage = build_stage(&text).unwrap();
        base_versions(&stage.base).unwrap();
        assert!(stage.steps.iter().any(|s| matches!(s, Step::Run(r) if r.contains("cargo auditable build"))));
        // Every COPY source exists in the repository.
        for step in &stage.steps {
            if let Step::Copy(sources, _) = step {
                for s in sources {
                    assert!(root.join(s).exists(), "COPY {s}: missing");
                }
            }
        }
    }
}
