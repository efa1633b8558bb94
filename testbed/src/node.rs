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

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::Signal;

use crate::controlplane::{ControlPlane, SERVICE_IP};
use crate::error::{self, io, unexpected, Result};
use crate::image::Built;
use crate::link::{self, End};
use crate::netns::Netns;

/// The kubelet sets these host-wide; they are read before it starts and
/// written back on drop.
const KUBELET_SYSCTLS: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];

/// Where the node's pods reach the API server (through [`ApiProxy`]).
const API_PORT: u16 = 6443;

/// The CRI sandbox image; `crate::image` builds it from testbed/images/pause.c.
pub const PAUSE_IMAGE: &str = "localhost/fct-pause:test";

pub struct NodeSpec<'a> {
    pub name: &'a str,
    /// The node's InternalIP: `status.hostIP` of its pods.
    pub address: &'a str,
    /// The pods' subnet, e.g. `10.244.0.0/24`.
    pub pod_cidr: &'a str,
    /// A client outside the node, on the node's link: where datagrams to
    /// the hostPort come from.
    pub client_address: &'a str,
    /// A directory holding the `portmap` plugin to use; the other plugins
    /// are Debian's.
    pub portmap: &'a Path,
}

pub struct RealNode {
    pub name: String,
    pub address: String,
    /// The node's network namespace: its table, rules and listeners.
    pub ns: Netns,
    /// A host outside the node, linked to it: clients of hostPorts run here.
    pub client: Netns,
    pub client_address: String,
    pub dir: PathBuf,
    cni_bin: PathBuf,
    holder: Child,
    daemons: Vec<Child>,
    cgroup: String,
    sysctls: Vec<(String, String)>,
    proxy: Option<ApiProxy>,
    socket: PathBuf,
}

fn cgroup_hierarchies() -> Vec<PathBuf> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return Vec::new() };
    mounts
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields.len() > 2 && (fields[2] == "cgroup" || fields[2] == "cgroup2"))
                .then(|| PathBuf::from(fields[1]))
        })
        .collect()
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(path.display()))
}

fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(key)
}

fn alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

/// What a node of a run that was killed (and so never dropped) left: its
/// processes and cgroups, and its network namespaces, found by the pid in
/// their names.
fn remove_leftovers() {
    for hierarchy in cgroup_hierarchies() {
        let Ok(entries) = std::fs::read_dir(&hierarchy) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("fct-node-").and_then(|n| n.rsplit('-').next()) else {
                continue;
            };
            if alive(pid) {
                continue;
            }
            for _ in 0..50 {
                let pids = procs_below(&entry.path());
                if pids.is_empty() {
                    break;
                }
                pids.iter().for_each(|p| crate::process::signal(*p, Signal::SIGKILL));
                std::thread::sleep(Duration::from_millis(100));
            }
            remove_cgroups(&entry.path());
        }
    }
    let Ok(namespaces) = std::fs::read_dir("/run/netns") else { return };
    for ns in namespaces.flatten() {
        let name = ns.file_name().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('-').collect();
        if let ["fct", "knode" | "kclient", pid, _] = parts.as_slice() {
            if !alive(pid) {
                let _ = Command::new("ip").args(["netns", "del", &name]).output();
            }
        }
    }
}

impl RealNode {
    /// Starts the node's daemons and waits until the node is Ready.
    pub fn start(cp: &ControlPlane, spec: &NodeSpec) -> Result<RealNode> {
        remove_leftovers();
        let bin = crate::controlplane::binaries()?;
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
        let ns = Netns::new("knode");
        let cgroup = format!("fct-node-{}-{}", spec.name, std::process::id());
        let sysctls = KUBELET_SYSCTLS
            .iter()
            .filter_map(|k| {
                Some((k.to_string(), std::fs::read_to_string(sysctl_path(k)).ok()?.trim().to_owned()))
            })
            .collect();
        let mut node = RealNode {
            name: spec.name.to_owned(),
            address: spec.address.to_owned(),
            ns,
            client: Netns::new("kclient"),
            client_address: spec.client_address.to_owned(),
            dir: dir.clone(),
            cni_bin: dir.join("cni/bin"),
            holder: Command::new("true").spawn().map_err(error::spawn("true"))?,
            daemons: Vec::new(),
            cgroup,
            sysctls,
            proxy: None,
            socket: dir.join("containerd.sock"),
        };
        node.network(spec)?;
        node.cgroups()?;
        node.use_portmap(spec.portmap)?;
        node.write_configs(spec, &cp.ca)?;
        node.holder = node.spawn_holder()?;
        node.proxy = Some(ApiProxy::start(&node.ns, spec.address, cp.port)?);

        let containerd = node.spawn_daemon(
            "containerd",
            Command::new("containerd").arg("--config").arg(dir.join("containerd.toml")),
        )?;
        node.daemons.push(containerd);
        crate::controlplane::wait_until("containerd", Duration::from_secs(30), || {
            node.ctr(&["version"]).map(|o| o.status.success()).unwrap_or(false)
        })?;
        let kubeconfig = cp.kubelet_kubeconfig(spec.name, &format!("https://{}:{API_PORT}", spec.address))?;
        let kubelet = node.spawn_daemon(
            "kubelet",
            Command::new(bin.join("kubelet")).args([
                format!("--config={}", dir.join("kubelet.yaml").display()),
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--root-dir={}", dir.join("kubelet").display()),
                format!("--cert-dir={}", dir.join("pki").display()),
                format!("--hostname-override={}", spec.name),
                format!("--node-ip={}", spec.address),
                "--v=1".to_owned(),
            ]),
        )?;
        node.daemons.push(kubelet);
        crate::controlplane::wait_until(
            &format!("node {} Ready", spec.name),
            Duration::from_secs(90),
            || {
                let out = cp.kubectl(&[
                    "get",
                    "node",
                    spec.name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints}",
                ]);
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                text.starts_with("True") && !text.contains("not-ready")
            },
        )?;
        Ok(node)
    }

    /// The node's address on a link to the outside, where clients in their
    /// own namespaces reach its hostPorts; the route pods take to the API.
    fn network(&self, spec: &NodeSpec) -> Result<()> {
        let client = &self.client;
        link::veth(
            End { ns: &self.ns, name: "eth0", address: Some(&format!("{}/24", spec.address)) },
            End { ns: client, name: "eth0", address: Some(&format!("{}/24", spec.client_address)) },
        );
        link::default_route(client, spec.address);
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

    /// A cgroup root of this node's own in every hierarchy: the kubelet's
    /// pods and the daemons (and so every shim and container) live below it.
    fn cgroups(&self) -> Result<()> {
        for hierarchy in cgroup_hierarchies() {
            for sub in ["", "daemons"] {
                let path = hierarchy.join(&self.cgroup).join(sub);
                std::fs::create_dir_all(&path).map_err(io(path.display()))?;
                // cgroup v1 cpusets start empty, and no task may join one.
                for file in ["cpuset.cpus", "cpuset.mems"] {
                    if let Ok(value) = std::fs::read_to_string(hierarchy.join(file)) {
                        if path.join(file).exists() {
                            write(&path.join(file), value.trim())?;
                        }
                    }
                }
            }
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

    fn write_configs(&self, spec: &NodeSpec, ca: &Path) -> Result<()> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let gateway = spec.pod_cidr.rsplit_once('.').map(|(net, _)| format!("{net}.1")).unwrap_or_default();
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "fct-pods",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
                 "ipam": {"type": "host-local", "dataDir": d("cni/ipam"),
                          "ranges": [[{"subnet": spec.pod_cidr, "gateway": gateway}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        write(&self.dir.join("cni/net.d/10-fct.conflist"), &conflist.to_string())?;
        // The VM's bounding set lacks CAP_SYS_RESOURCE, so runc may not
        // lower oom_score_adj: restrict_oom_score_adj keeps it where it is.
        let containerd = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{cni_conf}"
"#,
            root = d("containerd/root"),
            state = d("containerd/state"),
            socket = self.socket.display(),
            opt = d("containerd/opt"),
            cni_bin = d("cni/bin"),
            cni_conf = d("cni/net.d"),
        );
        write(&self.dir.join("containerd.toml"), &containerd)?;
        // The sync period and image pulls are left at the kubelet's defaults
        // (syncFrequency 1m, serializeImagePulls true), as clusters run them:
        // both change when a pod's containers start, which the benchmark
        // measures. fileCheckFrequency (static pods: none here) and
        // nodeStatusReportFrequency (the node's status, not its pods') do not.
        let kubelet = format!(
            r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup}
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: unix://{socket}
podLogsDir: {pods}
address: {address}
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: false}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: AlwaysAllow
resolvConf: /etc/resolv.conf
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: 1Mi
  nodefs.available: 1%
  imagefs.available: 1%
mergeDefaultEvictionSettings: false
fileCheckFrequency: 5s
nodeStatusReportFrequency: 10s
"#,
            cgroup = self.cgroup,
            socket = self.socket.display(),
            pods = d("pods"),
            address = spec.address,
            ca = ca.display(),
        );
        write(&self.dir.join("kubelet.yaml"), &kubelet)?;
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
        // Whatever is left below the node's cgroup (shims, containers,
        // daemons that did not stop) is killed, until nothing is.
        let hierarchies = cgroup_hierarchies();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut alive = 0;
            for h in &hierarchies {
                for pid in procs_below(&h.join(&self.cgroup)) {
                    alive += 1;
                    crate::process::signal(pid, Signal::SIGKILL);
                }
            }
            if alive == 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for child in self.daemons.iter_mut().chain(std::iter::once(&mut self.holder)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for h in &hierarchies {
            remove_cgroups(&h.join(&self.cgroup));
        }
        for (key, value) in &self.sysctls {
            let _ = std::fs::write(sysctl_path(key), value);
        }
    }
}

fn procs_below(cgroup: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    if let Ok(children) = std::fs::read_dir(cgroup) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            pids.extend(procs_below(&child.path()));
        }
    }
    pids
}

fn remove_cgroups(cgroup: &Path) {
    if let Ok(children) = std::fs::read_dir(cgroup) {
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            remove_cgroups(&child.path());
        }
    }
    let _ = std::fs::remove_dir(cgroup);
}

impl Drop for RealNode {
    fn drop(&mut self) {
        self.stop();
        if std::env::var_os("FCT_KEEP_NODE_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Forwards TCP from the node's address to the API server on the host's
/// loopback: the listening socket is made inside the node's namespace and
/// the upstream ones outside, so that no interface joins the two.
struct ApiProxy {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiProxy {
    fn start(ns: &Netns, address: &str, upstream_port: u16) -> Result<ApiProxy> {
        let listen = format!("{address}:{API_PORT}");
        // A socket stays in the namespace it was made in: the listener is
        // the node's, the thread accepting on it and its upstream the host's.
        let listener = ns
            .within(|| TcpListener::bind(&listen).and_then(|l| l.set_nonblocking(true).map(|_| l)))
            .map_err(io(format!("bind {listen}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (flag, open) = (stop.clone(), streams.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else { continue };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                if let Ok(mut all) = open.lock() {
                    all.extend(client.try_clone().ok());
                    all.extend(server.try_clone().ok());
                }
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        Ok(ApiProxy { stop, streams, thread: Some(thread) })
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(all) = self.streams.lock() {
            for s in all.iter() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
