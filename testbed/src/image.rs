//! Container images without a Docker engine or a registry. The shipped
//! image is the final stage of the Dockerfile, read from the Dockerfile
//! itself and carried out with umoci, so the two cannot drift apart; the
//! test images (pause, the UDP agent) are single static programs built the
//! same way. `skopeo` exports each for `ctr images import`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::stdout;
use crate::error::{io, json, unexpected, Result};

/// The final stage of a Dockerfile, as far as an image of one static binary
/// needs: anything else in it is refused rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalStage {
    pub base: String,
    /// `COPY --from=<stage> <source> <destination>`.
    pub copies: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub user: Option<String>,
    pub entrypoint: Vec<String>,
}

/// Logical lines: comments dropped, `\` continuations joined.
pub(crate) fn instructions(dockerfile: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    out.push(current.trim().to_owned());
                }
                current.clear();
            }
        }
    }
    out
}

/// `${NAME}` and `$NAME` from the stage's `ARG`s.
fn expand(text: &str, args: &HashMap<String, String>) -> String {
    let mut out = text.to_owned();
    for (name, value) in args {
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("${name}"), value);
    }
    out
}

/// `key="value with spaces" other=plain`.
fn pairs(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=').ok_or_else(|| unexpected(format!("no `=` in `{rest}`")))?;
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end =
                    quoted.find('"').ok_or_else(|| unexpected(format!("unterminated quote in `{rest}`")))?;
                (quoted[..end].to_owned(), &quoted[end + 1..])
            }
            None => {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (after[..end].to_owned(), &after[end..])
            }
        };
        out.push((key.trim().to_owned(), value));
        rest = after.trim();
    }
    Ok(out)
}

pub fn final_stage(dockerfile: &str) -> Result<FinalStage> {
    let lines = instructions(dockerfile);
    let start = lines
        .iter()
        .rposition(|l| l.to_ascii_uppercase().starts_with("FROM "))
        .ok_or_else(|| unexpected("the Dockerfile has no FROM"))?;
    let base = lines[start][5..].split_whitespace().next().unwrap_or_default().to_owned();
    let mut stage =
        FinalStage { base, copies: Vec::new(), labels: Vec::new(), user: None, entrypoint: Vec::new() };
    let mut args = HashMap::new();
    for line in &lines[start + 1..] {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match word.to_ascii_uppercase().as_str() {
            "ARG" => {
                let (name, default) = rest.split_once('=').unwrap_or((rest, ""));
                args.insert(name.to_owned(), default.trim_matches('"').to_owned());
            }
            "LABEL" => stage.labels.extend(pairs(&expand(rest, &args))?),
            "COPY" => {
                let words: Vec<&str> = rest.split_whitespace().collect();
                match words.as_slice() {
                    [from, source, destination] if from.starts_with("--from=") => {
                        stage.copies.push((source.to_string(), destination.to_string()))
                    }
                    _ => {
                        return Err(unexpected(format!(
                            "COPY must be `COPY --from=STAGE SOURCE DEST`: `{line}`"
                        )))
                    }
                }
            }
            "USER" => stage.user = Some(expand(rest, &args)),
            "ENTRYPOINT" => {
                stage.entrypoint = serde_json::from_str(rest)
                    .map_err(|e| unexpected(format!("ENTRYPOINT must be a JSON array ({e}): `{line}`")))?
            }
            _ => {
                return Err(unexpected(format!(
                    "the image builder does not carry out `{word}` in the final stage: `{line}`"
                )))
            }
        }
    }
    Ok(stage)
}

/// An image of static files, an entrypoint, a user and labels.
#[derive(Debug, Clone)]
pub struct Image {
    /// As pods name it, e.g. `ghcr.io/flush-conntrack/flush-conntrack:0.1.0`.
    pub reference: String,
    /// (file on this machine, path in the image).
    pub files: Vec<(PathBuf, String)>,
    pub entrypoint: Vec<String>,
    pub user: Option<String>,
    pub labels: Vec<(String, String)>,
    /// Seconds since the epoch: the image's, its history's and its files'
    /// times (`SOURCE_DATE_EPOCH`), so that one input gives one digest.
    pub created: u64,
}

/// A built image: the archive `ctr images import` takes, and its size.
#[derive(Debug, Clone)]
pub struct Built {
    pub reference: String,
    pub archive: PathBuf,
    /// The same image as an OCI archive, its manifest unchanged: what a
    /// registry would hold under [`Built::digest`].
    pub oci_archive: PathBuf,
    /// The manifest's digest (`sha256:...`): what a pull pins.
    pub digest: String,
    /// The layers as a registry stores and sends them (gzip).
    pub compressed_bytes: u64,
    /// The layers unpacked: what the node's disk holds.
    pub uncompressed_bytes: u64,
    /// The image configuration as umoci wrote it.
    pub config: serde_json::Value,
}

/// What an OCI layout holds, as [`Built`] tells it.
struct Layout {
    digest: String,
    config: serde_json::Value,
    compressed_bytes: u64,
    uncompressed_bytes: u64,
}

/// What the OCI layout at `layout` holds: its manifest's digest, its
/// configuration and the size of its layers.
fn read_layout(layout: &Path) -> Result<Layout> {
    let index = read_json(&layout.join("index.json"))?;
    let digest =
        index["manifests"][0]["digest"].as_str().ok_or_else(|| unexpected("index.json has no manifest"))?;
    let manifest = read_json(&blob(layout, digest))?;
    let config = read_json(&blob(
        layout,
        manifest["config"]["digest"].as_str().ok_or_else(|| unexpected("no config"))?,
    ))?;
    let mut compressed_bytes = 0;
    let mut uncompressed_bytes = 0;
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        compressed_bytes += layer["size"].as_u64().ok_or_else(|| unexpected("a layer without a size"))?;
        let digest = layer["digest"].as_str().ok_or_else(|| unexpected("a layer without a digest"))?;
        let unpacked = stdout(Command::new("gzip").arg("-dc").arg(blob(layout, digest)))?;
        uncompressed_bytes += unpacked.len() as u64;
    }
    Ok(Layout { digest: digest.to_owned(), config, compressed_bytes, uncompressed_bytes })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read(path).map_err(io(path.display()))?;
    serde_json::from_slice(&text).map_err(json(path.display()))
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    layout.join("blobs").join(algorithm).join(hex)
}

impl Image {
    /// The shipped image: the Dockerfile's final stage with `binary` as the
    /// file its `COPY` takes from the build stage, made at `created`.
    pub fn from_dockerfile(dockerfile: &Path, binary: &Path, reference: &str, created: u64) -> Result<Image> {
        let text = std::fs::read_to_string(dockerfile).map_err(io(dockerfile.display()))?;
        let stage = final_stage(&text)?;
        if stage.base != "scratch" {
            return Err(unexpected(format!(
                "the final stage is FROM {}; only FROM scratch can be built here (no registry)",
                stage.base
            )));
        }
        let [(_, destination)] = stage.copies.as_slice() else {
            return Err(unexpected(format!(
                "the final stage must COPY exactly the binary, not {:?}",
                stage.copies
            )));
        };
        Ok(Image {
            reference: reference.to_owned(),
            files: vec![(binary.to_owned(), destination.clone())],
            entrypoint: stage.entrypoint,
            user: stage.user,
            labels: stage.labels,
            created,
        })
    }

    /// Builds the image in `work` (created, emptied first).
    pub fn build(&self, work: &Path) -> Result<Built> {
        let _ = std::fs::remove_dir_all(work);
        std::fs::create_dir_all(work).map_err(io(work.display()))?;
        let layout = work.join("oci");
        let tagged = format!("{}:image", layout.display());
        stdout(Command::new("umoci").args(["init", "--layout"]).arg(&layout))?;
        stdout(Command::new("umoci").args(["new", "--image", &tagged]))?;
        self.insert_files(work, &tagged)?;
        self.configure(&tagged)?;
        stdout(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
        let read = read_layout(&layout)?;
        let (archive, oci_archive) = (work.join("image.tar"), work.join("image-oci.tar"));
        for (format, archive) in [("docker-archive", &archive), ("oci-archive", &oci_archive)] {
            stdout(Command::new("skopeo").args(["copy", "--quiet", &format!("oci:{tagged}")]).arg(format!(
                "{format}:{}:{}",
                archive.display(),
                self.reference
            )))?;
        }
        Ok(Built {
            reference: self.reference.clone(),
            archive,
            oci_archive,
            digest: read.digest,
            compressed_bytes: read.compressed_bytes,
            uncompressed_bytes: read.uncompressed_bytes,
            config: read.config,
        })
    }

    /// One layer per file, each stamped with the image's time.
    fn insert_files(&self, work: &Path, tagged: &str) -> Result<()> {
        let created = rfc3339(self.created);
        let staged = work.join("files");
        for (n, (source, destination)) in self.files.iter().enumerate() {
            // The layer's tar headers carry the file's time: the copy gets
            // the image's.
            let copy = staged.join(n.to_string());
            std::fs::create_dir_all(&staged).map_err(io(staged.display()))?;
            std::fs::copy(source, &copy).map_err(io(source.display()))?;
            stdout(Command::new("touch").arg("-d").arg(format!("@{}", self.created)).arg(&copy))?;
            stdout(
                Command::new("umoci")
                    .args(["insert", "--image", tagged, "--history.created", &created])
                    .arg(&copy)
                    .arg(destination),
            )?;
        }
        Ok(())
    }

    /// The entrypoint, user and labels, and the image's time.
    fn configure(&self, tagged: &str) -> Result<()> {
        let created = rfc3339(self.created);
        let mut config = Command::new("umoci");
        config.args(["config", "--image", tagged, "--created", &created, "--history.created", &created]);
        config.arg("--config.entrypoint");
        config.arg(self.entrypoint.first().ok_or_else(|| unexpected("an image needs an entrypoint"))?);
        for arg in &self.entrypoint[1..] {
            config.args(["--config.entrypoint", arg]);
        }
        if let Some(user) = &self.user {
            config.args(["--config.user", user]);
        }
        for (key, value) in &self.labels {
            config.args(["--config.label", &format!("{key}={value}")]);
        }
        stdout(&mut config).map(drop)
    }
}

/// `1970-01-01T00:00:00Z` plus `seconds`, as OCI's `created` fields take
/// it. Pure (days to a civil date: Howard Hinnant's algorithm).
pub fn rfc3339(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// A testbed example, static (debug), for a guest with no libraries.
pub fn static_example(root: &Path, name: &str) -> Result<PathBuf> {
    static_build(root, &["-p", "testbed", "--example", name])?;
    Ok(root.join("target/static/x86_64-unknown-linux-gnu/debug/examples").join(name))
}

fn static_build(root: &Path, what: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    stdout(
        Command::new(cargo)
            .current_dir(root)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args(["build", "--locked", "--target", "x86_64-unknown-linux-gnu"])
            .args(what)
            .arg("--target-dir")
            .arg(root.join("target/static")),
    )?;
    Ok(())
}

/// A static C program of the test tooling.
pub fn static_c(source: &Path, work: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(work).map_err(io(work.display()))?;
    let name = source.file_stem().and_then(|s| s.to_str()).ok_or_else(|| unexpected("a source file name"))?;
    let binary = work.join(format!("{name}.bin"));
    stdout(Command::new("gcc").args(["-static", "-O2", "-o"]).arg(&binary).arg(source))?;
    Ok(binary)
}
/// An image of one static C program (the test images: pause, the agent).
pub fn from_c(source: &Path, work: &Path, reference: &str) -> Result<Built> {
    let name = source.file_stem().and_then(|s| s.to_str()).ok_or_else(|| unexpected("a source file name"))?;
    let binary = static_c(source, work)?;
    let image = Image {
        reference: reference.to_owned(),
        files: vec![(binary, format!("/{name}"))],
        entrypoint: vec![format!("/{name}")],
        user: None,
        labels: Vec::new(),
        created: 0,
    };
    image.build(&work.join("image"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_final_stage() {
        let dockerfile = r#"
FROM rust:1 AS build
RUN cargo build
# the image
FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="flush-conntrack" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=build /flush-conntrack /flush-conntrack
USER 65532:65532
ENTRYPOINT ["/flush-conntrack"]
"#;
        let stage = final_stage(dockerfile).unwrap();
        assert_eq!(stage.base, "scratch");
        assert_eq!(
            stage.labels,
            vec![
                ("org.opencontainers.image.title".into(), "flush-conntrack".into()),
                ("org.opencontainers.image.version".into(), "0.1.0".into())
            ]
        );
        assert_eq!(stage.copies, vec![("/flush-conntrack".into(), "/flush-conntrack".into())]);
        assert_eq!(stage.user.as_deref(), Some("65532:65532"));
        assert_eq!(stage.entrypoint, vec!["/flush-conntrack".to_owned()]);
    }

    #[test]
    fn dates_as_oci_writes_them() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
        assert_eq!(rfc3339(1_709_210_096), "2024-02-29T12:34:56Z");
    }

    #[test]
    fn refuses_what_it_cannot_carry_out() {
        let e = final_stage("FROM scratch\nRUN echo hi\n").unwrap_err().to_string();
        assert!(e.contains("RUN"), "{e}");
        let e = final_stage("FROM scratch\nCOPY a b\n").unwrap_err().to_string();
        assert!(e.contains("--from"), "{e}");
    }
}
