//! A real Kubernetes node: containerd, runc, the CNI bridge, host-local and
//! portmap plugins, and a kubelet built from the Kubernetes module, joined to
//! a [`ControlPlane`] started with [`ControlPlane::for_kubelets`].
//!
//! The node lives in network namespaces of its own: its conntrack table,
//! iptables rules, bridge and host-network pods are the namespace's, and the
//! host's table is never touched. Its daemons share one private mount
//! namespace with tmpfs over `/run`, `/var/lib` and `/var/log`, so what
//! containerd, the CNI plugins and the kubelet write to fixed paths goes
//! away with them. What cannot be kept inside is put back on drop: the
//! global sysctls the kubelet sets, and the cgroups it and runc create
//! (under a cgroup root of this node's own, every process in it killed).

mod cgroup;
mod config;
mod lan;
mod proxy;
mod sysctls;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;

use self::cgroup::cgroup_hierarchies;
use self::proxy::ApiProxy;

use crate::controlplane::{ControlPlane, SERVICE_IP};
use crate::error::{self, io, unexpected, Result};
use crate::image::Built;
use crate::link::{self, End};
use crate::netns::Netns;

pub use self::lan::Lan;

/// Where the node's pods reach the API server (through [`ApiProxy`]).
const API_PORT: u16 = 6443;

/// What a real node needs on the host: the control plane's build, the
/// image tools, the runtime, and what portmap and the tests run.
pub const TOOLS: &[&str] = &[
    "go",
    "kubectl",
    "openssl",
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "umoci",
    "skopeo",
    "gcc",
    "gzip",
    "iptables",
    "conntrack",
    "nsenter",
    "unshare",
];

/// What a dual-stack node needs besides [`TOOLS`]: portmap programs IPv6
/// with ip6tables.
pub const DUAL_STACK_TOOLS: &[&str] = &["ip6tables"];

/// The CRI sandbox image; `crate::image` builds it from testbed/images/pause.c.
pub const PAUSE_IMAGE: &str = "localhost/fct-pause:test";

pub struct NodeSpec<'a> {
    pub name: &'a str,
    /// The node's InternalIP: `status.hostIP` of its pods.
    pub address: &'a str,
    /// The pods' subnet, e.g. `10.244.0.0/24`.
    pub pod_cidr: &'a str,
    /// A client outside the node, on the node's link: where datagrams to
    /// the hostPort come from. On a [`Lan`], the LAN's client address.
    pub client_address: &'a str,
    /// A dual-stack node: its IPv6 address (a second InternalIP) and its
    /// pods' IPv6 subnet (a `/64`).
    pub ipv6: Option<Ipv6Spec<'a>>,
    /// A link shared with other nodes and their clients; without one, the
    /// node has a client namespace of its own.
    pub lan: Option<&'a Lan>,
    /// A directory holding the `portmap` plugin to use; the other plugins
    /// are Debian's.
    pub portmap: &'a Path,
}

#[derive(Clone, Copy)]
pub struct Ipv6Spec<'a> {
    pub address: &'a str,
    pub pod_cidr: &'a str,
    /// The client's IPv6 address on the node's own link (unused on a [`Lan`]).
    pub client_address: &'a str,
}

pub struct RealNode {
    pub name: String,
    pub address: String,
    /// The node's IPv6 address, on a dual-stack node.
    pub address6: Option<String>,
    /// The node's network namespace: its table, rules and listeners.
    pub ns: Netns,
    /// A host outside the node, linked to it: clients of hostPorts run here
    /// (shared by the nodes of a [`Lan`]).
    pub client: Arc<Netns>,
    pub client_address: String,
    pub dir: PathBuf,
    cni_bin: PathBuf,
    holder: Child,
    daemons: Vec<Child>,
    cgroup: String,
    proxy: Option<ApiProxy>,
    socket: PathBuf,
}

impl RealNode {
    /// Starts the node's daemons and waits until the node is Ready.
    pub fn start(cp: &ControlPlane, spec: &NodeSpec) -> Result<RealNode> {
        cgroup::remove_leftovers();
        let bin = crate::controlplane::binaries()?;
        let mut node = RealNode::prepare(spec)?;
        node.network(spec)?;
        cgroup::create(&node.cgroup)?;
        node.use_portmap(spec.portmap)?;
        node.write_configs(spec, &cp.ca)?;
        node.holder = node.spawn_holder()?;
        node.proxy = Some(ApiProxy::start(&node.ns, spec.address, cp.port)?);
        node.start_containerd()?;
        node.start_kubelet(cp, spec, &bin)?;
        node.wait_ready(cp)?;
        Ok(node)
    }

    /// The node's directories, namespaces and the host's sysctls as they
    /// are before the kubelet changes them; nothing runs yet.
    fn prepare(spec: &NodeSpec) -> Result<RealNode> {
        let dir = std::env::temp_dir().join(format!("fct-node-{}-{}", spec.name, std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for sub in [
            "cni/bin",
            "cni/net.d",
            "cni/ipam",
            "containerd/root",
            "containerd/state",
            "kubelet",
            "pki",
            "pods",
        ] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io(dir.join(sub).display()))?;
        }
        sysctls::save();
        Ok(RealNode {
            name: spec.name.to_owned(),
            address: spec.address.to_owned(),
            address6: spec.ipv6.map(|v6| v6.address.to_owned()),
            ns: Netns::new("knode"),
            client: spec.lan.map_or_else(|| Arc::new(Netns::new("kclient")), |lan| lan.ns.clone()),
            client_address: spec.client_address.to_owned(),
            dir: dir.clone(),
            cni_bin: dir.join("cni/bin"),
            holder: Command::new("true").spawn().map_err(error::spawn("true"))?,
            daemons: Vec::new(),
            cgroup: format!("fct-node-{}-{}", spec.name, std::process::id()),
            proxy: None,
            socket: dir.join("containerd.sock"),
        })
    }

    fn start_containerd(&mut self) -> Result<()> {
        let config = self.dir.join("containerd.toml");
        let containerd =
            self.spawn_daemon("containerd", Command::new("containerd").arg("--config").arg(config))?;
        self.daemons.push(containerd);
        crate::controlplane::wait_until("containerd", Duration::from_secs(30), || {
            self.ctr(&["version"]).map(|o| o.status.success()).unwrap_or(false)
        })
    }

    fn start_kubelet(&mut self, cp: &ControlPlane, spec: &NodeSpec, bin: &Path) -> Result<()> {
        let kubeconfig = cp.kubelet_kubeconfig(spec.name, &format!("https://{}:{API_PORT}", spec.address))?;
        let dir = &self.dir;
        let kubelet = self.spawn_daemon(
            "kubelet",
            Command::new(bin.join("kubelet")).args([
                format!("--config={}", dir.join("kubelet.yaml").display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--cert-dir={}", dir.join("pki").display()),
                format!("--hostname-override={}", spec.name),
                format!("--node-ip={}", node_ips(spec)),
                "--v=1".to_owned(),
            ]),
        )?;
        self.daemons.push(kubelet);
        Ok(())
    }

    /// Waits until the API server has the node Ready and untainted.
    fn wait_ready(&self, cp: &ControlPlane) -> Result<()> {
        crate::controlplane::wait_until(&format!("node {} Ready", self.name), Duration::from_secs(90), || {
            let out = cp.kubectl(&[
                "get",
                "node",
                &self.name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            text.starts_with("True") && !text.contains("not-ready")
        })
    }

    /// The node's address on a link to the outside, where clients in their
    /// own namespaces reach its hostPorts; the route pods take to the API.
    fn network(&self, spec: &NodeSpec) -> Result<()> {
        let node_end = End { ns: &self.ns, name: "eth0", address: Some(&format!("{}/24", spec.address)) };
        match spec.lan {
            Some(lan) => lan.attach(node_end, spec.name),
            None => {
                let client = &self.client;
                let address = format!("{}/24", spec.client_address);
                link::veth(node_end, End { ns: client, name: "eth0", address: Some(&address) });
                link::default_route(client, spec.address);
                if let Some(v6) = spec.ipv6 {
                    link::add_ipv6(client, "eth0", v6.client_address);
                }
            }
        }
        if let Some(v6) = spec.ipv6 {
            link::add_ipv6(&self.ns, "eth0", v6.address);
            // The bridge plugin turns it on at the first pod; the hostPort's
            // DNAT to a pod needs it from then on either way.
            self.ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        }
        // No kube-proxy here: the Service IP of the API server, as pods see
        // it, is translated to the proxy on the node's address.
        // Host-network pods need a route towards the Service range before
        // OUTPUT can translate it.
        self.ns.exec(&["ip", "route", "add", "10.96.0.0/16", "dev", "eth0"]);
        // From pods (PREROUTING) and host-network pods (OUTPUT).
        for chain in ["PREROUTING", "OUTPUT"] {
            self.ns.exec(&[
                "iptables",
                "-t",
                "nat",
                "-A",
                chain,
                "-d",
                &format!("{SERVICE_IP}/32"),
                "-p",
                "tcp",
                "--dport",
                "443",
                "-j",
                "DNAT",
                "--to-destination",
                &format!("{}:{API_PORT}", spec.address),
            ]);
        }
        Ok(())
    }

    /// Makes `portmap` in `dir` the node's portmap plugin, beside Debian's
    /// bridge, host-local and loopback. Takes effect at the next pod.
    pub fn use_portmap(&self, dir: &Path) -> Result<()> {
        for plugin in ["bridge", "host-local", "loopback", "portmap"] {
            let source =
                if plugin == "portmap" { dir.join(plugin) } else { Path::new("/usr/lib/cni").join(plugin) };
            let link = self.cni_bin.join(plugin);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&source, &link).map_err(io(link.display()))?;
        }
        Ok(())
    }

    /// The process that holds the node's private mount namespace (tmpfs
    /// over `/run`, `/var/lib` and `/var/log`) for the daemons to join.
    fn spawn_holder(&self) -> Result<Child> {
        let script =
            "set -e; for d in /run /var/lib /var/log; do mount -t tmpfs -o mode=755 fct-node \"$d\"; done; \
                      echo ready; exec sleep infinity";
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.ns.path()))
            .args(["--", "unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        self.in_cgroup(&mut cmd);
        crate::controlplane::die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(error::spawn("the node's namespace holder"))?;
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
                .map_err(io("the node's namespace holder"))?;
        }
        if line.trim() != "ready" {
            let _ = child.kill();
            return Err(unexpected("the node's mount namespace could not be set up"));
        }
        Ok(child)
    }

    /// Puts the command's process into this node's `daemons` cgroup in every
    /// hierarchy before it runs, so that it and all it starts can be found.
    fn in_cgroup(&self, cmd: &mut Command) {
        let files: Vec<std::ffi::CString> = cgroup_hierarchies()
            .iter()
            .map(|h| h.join(&self.cgroup).join("daemons/cgroup.procs"))
            .filter_map(|p| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok())
            .collect();
        // SAFETY: open, write and close only, on strings made before fork.
        unsafe {
            cmd.pre_exec(move || {
                for file in &files {
                    let fd = libc::open(file.as_ptr(), libc::O_WRONLY);
                    if fd >= 0 {
                        libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                    }
                }
                Ok(())
            });
        }
    }

    /// Runs a daemon in the node's network and mount namespaces and cgroup,
    /// its output in `<dir>/<name>.log`.
    fn spawn_daemon(&self, name: &str, cmd: &mut Command) -> Result<Child> {
        let path = self.dir.join(format!("{name}.log"));
        let log = std::fs::File::create(&path).map_err(io(path.display()))?;
        let err = log.try_clone().map_err(io(path.display()))?;
        self.enter(cmd)?;
        self.in_cgroup(cmd);
        crate::controlplane::die_with_parent(cmd);
        cmd.stdout(log).stderr(err).spawn().map_err(error::spawn(name))
    }

    /// Makes the command run in the node's network and mount namespaces.
    pub fn enter(&self, cmd: &mut Command) -> Result<()> {
        let net = self.ns.open().map_err(io(self.ns.path()))?;
        let mnt_path = format!("/proc/{}/ns/mnt", self.holder.id());
        let mnt = std::fs::File::open(&mnt_path).map_err(io(&mnt_path))?;
        // SAFETY: setns only, on descriptors opened before fork; the child
        // is single-threaded, as joining a mount namespace requires.
        unsafe {
            cmd.pre_exec(move || {
                crate::netns::join(&net, CloneFlags::CLONE_NEWNET)?;
                crate::netns::join(&mnt, CloneFlags::CLONE_NEWNS)
            });
        }
        Ok(())
    }

    /// `ctr` against the node's containerd, in the `k8s.io` namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address").arg(&self.socket).args(["--namespace", "k8s.io"]).args(args);
        self.enter(&mut cmd)?;
        cmd.output().map_err(error::spawn("ctr"))
    }

    /// Loads a built image into the node's containerd, as a registry push
    /// and pull would have: under its name and, as a pull by digest finds
    /// it, under `repository@digest`, the manifest unchanged (OCI archive).
    pub fn import(&self, image: &Built) -> Result<()> {
        let archive = image.oci_archive.display().to_string();
        let repository = repository(&image.reference);
        let out = self.ctr(&["images", "import", "--digests", "--base-name", repository, &archive])?;
        crate::command::checked(out, &format!("ctr images import {archive}")).map(drop)
    }

    /// The manifest digest containerd holds for `reference`, as a user
    /// reads it from the registry they pushed to.
    pub fn digest_of(&self, reference: &str) -> Result<String> {
        let out = self.ctr(&["images", "ls", &format!("name=={reference}")])?;
        let out = crate::command::checked(out, "ctr images ls")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                (words.first() == Some(&reference)).then(|| words.get(2).map(|d| d.to_string()))?
            })
            .find(|d| d.starts_with("sha256:"))
            .ok_or_else(|| unexpected(format!("the node holds no image {reference}:\n{text}")))
    }

    /// A container's log, as the kubelet wrote it (CRI format lines).
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> String {
        let Ok(dirs) = std::fs::read_dir(self.dir.join("pods")) else { return String::new() };
        let prefix = format!("{namespace}_{pod}_");
        let mut text = String::new();
        for dir in dirs.flatten() {
            if !dir.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            let Ok(files) = std::fs::read_dir(dir.path().join(container)) else { continue };
            let mut files: Vec<PathBuf> = files.flatten().map(|f| f.path()).collect();
            files.sort();
            for file in files {
                text.push_str(&std::fs::read_to_string(file).unwrap_or_default());
            }
        }
        text
    }

    fn stop(&mut self) {
        self.proxy.take();
        for child in self.daemons.iter_mut().rev() {
            crate::process::terminate(child);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && self.daemons.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
            std::thread::sleep(Duration::from_millis(100));
        }
        cgroup::kill_below(&self.cgroup);
        for child in self.daemons.iter_mut().chain(std::iter::once(&mut self.holder)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        cgroup::remove(&self.cgroup);
        sysctls::restore();
    }
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("FCT_KEEP_NODE_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `--node-ip`: the IPv4 address, and the IPv6 one on a dual-stack node.
fn node_ips(spec: &NodeSpec) -> String {
    match spec.ipv6 {
        Some(v6) => format!("{},{}", spec.address, v6.address),
        None => spec.address.to_owned(),
    }
}

/// `registry/name` of `registry/name:tag` (a port's colon is before the
/// last slash). Pure.
pub fn repository(reference: &str) -> &str {
    let reference = reference.split('@').next().unwrap_or(reference);
    match reference.rfind(':') {
        Some(colon) if colon > reference.rfind('/').unwrap_or(0) => &reference[..colon],
        _ => reference,
    }
}

#[cfg(test)]
mod tests {
    use super::repository;

    #[test]
    fn the_repository_of_a_reference() {
        assert_eq!(repository("registry.test/flush-conntrack:dev"), "registry.test/flush-conntrack");
        assert_eq!(repository("localhost:5000/a/b:1"), "localhost:5000/a/b");
        assert_eq!(repository("localhost:5000/a/b"), "localhost:5000/a/b");
        assert_eq!(repository("a/b@sha256:00"), "a/b");
    }
}
