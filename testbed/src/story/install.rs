//! What a user does before the story starts: builds and "pushes" the
//! images and renders the statsd overlay as the README's Install says.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{io, unexpected, Result};
use crate::image::{self, Built, Image};

use super::AGENT_IMAGE;

/// The directory holding CNI portmap at `version` (`debian`: the package's).
pub fn portmap_dir(root: &Path, version: &str) -> Result<PathBuf> {
    if version == "debian" {
        return Ok("/usr/lib/cni".into());
    }
    let out = crate::command::stdout(
        Command::new("bash").arg(root.join("controlplane/portmap.sh")).arg(version).stderr(Stdio::inherit()),
    )?;
    Ok(String::from_utf8_lossy(&out).trim().into())
}

/// Where the test's image is "pushed": the README's Install step for an
/// image built here (`REGISTRY/flush-conntrack`), with `registry.test` for
/// REGISTRY and the node's containerd for the registry.
pub const REGISTRY: &str = "registry.test";
pub const PUSHED_IMAGE: &str = "registry.test/flush-conntrack:dev";

/// The images a node needs: the shipped one (the Dockerfile's build stage,
/// then its final stage, stamped with the commit's time), the sandbox
/// (pause) and the stand-in agent.
pub fn images(root: &Path, work: &Path) -> Result<Vec<Built>> {
    let binary = crate::recipe::shipped_binary(root)?;
    let created = crate::recipe::source_date_epoch(root)?;
    let shipped = Image::from_dockerfile(&root.join("Dockerfile"), &binary, PUSHED_IMAGE, created)?
        .build(&work.join("flush-conntrack"))?;
    let pause =
        image::from_c(&root.join("testbed/images/pause.c"), &work.join("pause"), crate::node::PAUSE_IMAGE)?;
    let agent = image::from_c(&root.join("testbed/images/udp-echo.c"), &work.join("udp-echo"), AGENT_IMAGE)?;
    Ok(vec![shipped, pause, agent])
}

/// The `images:` entry the README's Install gives, between its
/// `install-images` markers, with the placeholders filled in. Pure.
pub fn install_images_entry(readme: &str, registry: &str, digest: &str) -> Result<String> {
    let (_, after) = readme
        .split_once("<!-- install-images -->")
        .ok_or_else(|| unexpected("the README's Install has no `<!-- install-images -->` block"))?;
    let block =
        after.split_once("```yaml\n").ok_or_else(|| unexpected("no yaml block after `install-images`"))?.1;
    let (block, _) =
        block.split_once("```").ok_or_else(|| unexpected("the install-images block is not closed"))?;
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| unexpected(format!("{digest} is not a sha256 digest")))?;
    if !block.contains("REGISTRY") || !block.contains("sha256:DIGEST") {
        return Err(unexpected(format!(
            "the install-images block names no REGISTRY or sha256:DIGEST:\n{block}"
        )));
    }
    Ok(block.replace("REGISTRY", registry).replace("DIGEST", hex))
}

fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(io(to.display()))?;
    for entry in std::fs::read_dir(from).map_err(io(from.display()))? {
        let entry = entry.map_err(io(from.display()))?;
        let path = entry.path();
        match path.is_dir() {
            true => copy_tree(&path, &to.join(entry.file_name()))?,
            false => {
                std::fs::copy(&path, to.join(entry.file_name())).map_err(io(path.display()))?;
            }
        }
    }
    Ok(())
}

/// The statsd overlay as a user installs it from the README: a copy of the
/// manifests, the README's `images:` entry appended to the overlay's
/// kustomization with the pushed image's `digest`, nothing else edited,
/// rendered by `kubectl kustomize`. Then, for the test alone, the stand-in
/// agent image replaces statsd-exporter.
pub fn rendered_overlay(root: &Path, digest: &str) -> Result<String> {
    let readme = std::fs::read_to_string(root.join("README.md")).map_err(io("README.md"))?;
    let entry = install_images_entry(&readme, REGISTRY, digest)?;
    let copy = std::env::temp_dir().join(format!("fct-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_tree(&root.join("kustomize"), &copy.join("kustomize"))?;
    copy_tree(&root.join("jobs"), &copy.join("jobs"))?;
    let kustomization = copy.join("kustomize/overlays/statsd/kustomization.yaml");
    let mut text = std::fs::read_to_string(&kustomization).map_err(io(kustomization.display()))?;
    text.push_str(&entry);
    std::fs::write(&kustomization, text).map_err(io(kustomization.display()))?;
    let out = crate::command::stdout(
        Command::new("kubectl").arg("kustomize").arg(copy.join("kustomize/overlays/statsd")),
    );
    let _ = std::fs::remove_dir_all(&copy);
    let yaml = String::from_utf8_lossy(&out?).to_string();
    let pinned = format!("image: {REGISTRY}/flush-conntrack@{digest}");
    if yaml.contains("ghcr.io/flush-conntrack/") || !yaml.contains(&pinned) {
        return Err(unexpected(format!(
            "the README's images: entry did not pin every flush-conntrack image to {pinned}"
        )));
    }
    if !yaml.contains("prom/statsd-exporter:") {
        return Err(unexpected("the overlay no longer names the statsd-exporter image"));
    }
    let agent = yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("image: ").filter(|i| i.starts_with("prom/statsd-exporter:")))
        .unwrap_or_default()
        .to_owned();
    Ok(yaml.replace(&agent, AGENT_IMAGE))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn the_readmes_images_entry_filled_in() {
        let readme = "## Install\n<!-- install-images -->\n```yaml\nimages:\n  - name: ghcr.io/flush-conntrack/flush-conntrack\n    newName: REGISTRY/flush-conntrack\n    digest: sha256:DIGEST\n```\n";
        let entry = install_images_entry(readme, "registry.test", "sha256:ab12").unwrap();
        assert_eq!(
            entry,
            "images:\n  - name: ghcr.io/flush-conntrack/flush-conntrack\n    newName: registry.test/flush-conntrack\n    digest: sha256:ab12\n"
        );
        assert!(install_images_entry("no marker", "r", "sha256:ab").is_err());
        assert!(install_images_entry(readme, "r", "md5:ab").is_err());
    }

    #[test]
    fn the_shipped_readme_has_the_entry() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let entry = install_images_entry(&readme, REGISTRY, "sha256:00").unwrap();
        assert!(
            entry.contains("registry.test/flush-conntrack") && entry.contains("digest: sha256:00"),
            "{entry}"
        );
    }
}
