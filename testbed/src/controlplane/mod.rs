//! A real control plane on loopback: etcd, kube-apiserver (RBAC and Node
//! authorization, service account tokens, a static admin token, Pod
//! Security admission and ValidatingAdmissionPolicy as they ship) and
//! kube-controller-manager (Job, CronJob, garbage collector, service
//! account and resource quota controllers: without the last, a
//! ResourceQuota is never enforced), built from their Go modules by
//! controlplane/build.sh.
//!
//! Two ways to have nodes. [`ControlPlane::start`] registers fake ones: a
//! fake kubelet here binds each pod to the node its required affinity names
//! and finishes flush pods with a summary as their termination message, so
//! that the real Job controller decides the Job. [`ControlPlane::for_kubelets`]
//! adds what real kubelets need (the scheduler, the DaemonSet, node
//! lifecycle, root CA and TTL controllers, a serving certificate valid for
//! the Service IP and the nodes' address, a token per node); see
//! `crate::node`.

mod credentials;
mod fake_kubelet;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::command;
use crate::error::{self, io, Error, Result};
use serde_json::json;

/// What the fake kubelet's flush pods report, as the real binary would.
pub const SUMMARY: &str = r#"{"dry_run":false,"scanned":4,"matched":1,"deleted":1,"already_gone":0,"kept":1,"failed":0,"kernel_flushed":0,"elapsed_seconds":0.003}"#;

/// The first address of the Service range: what pods see as
/// `KUBERNETES_SERVICE_HOST`.
pub const SERVICE_IP: &str = "10.96.0.1";

pub struct ControlPlane {
    pub dir: PathBuf,
    pub server: String,
    pub admin: PathBuf,
    /// The API server's port on 127.0.0.1.
    pub port: u16,
    /// The CA that signed the API server's certificate (PEM file).
    pub ca: PathBuf,
    children: Vec<Child>,
    stop: Arc<AtomicBool>,
    kubelet: Option<JoinHandle<()>>,
    /// `namespace/pod` bound to which node, in order.
    pub bound: Arc<Mutex<Vec<(String, String)>>>,
    /// Nodes where the stand-in kubelet fails flush pods, as a flush that
    /// lost its privilege does (exit 3).
    pub failing: Arc<Mutex<Vec<String>>>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// Builds the binaries once (cached) and returns their directory.
pub fn binaries() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../controlplane/build.sh");
    let out = command::stdout(Command::new("bash").arg(&script).stderr(Stdio::inherit()))?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out).trim()))
}

/// A test killed before its drop ran must not leave its servers behind.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl only, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(Error::NotReady { what: what.to_owned(), timeout })
}

fn spawn(bin: &Path, name: &str, dir: &Path, args: &[String]) -> Result<Child> {
    let path = dir.join(format!("{name}.log"));
    let log = std::fs::File::create(&path).map_err(io(path.display()))?;
    let err = log.try_clone().map_err(io(path.display()))?;
    let mut cmd = Command::new(bin.join(name));
    cmd.args(args).stdout(log).stderr(err);
    die_with_parent(&mut cmd);
    cmd.spawn().map_err(error::spawn(name))
}

/// etcd on loopback; returns once it accepts connections.
fn start_etcd(bin: &Path, dir: &Path, client_port: u16, peer_port: u16) -> Result<Child> {
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut etcd = spawn(
        bin,
        "etcd",
        dir,
        &[
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--log-level=warn".into(),
        ],
    )?;
    let ready = wait_until("etcd", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", client_port)).is_ok()
    });
    if let Err(e) = ready {
        let _ = etcd.kill();
        let _ = etcd.wait();
        return Err(e);
    }
    Ok(etcd)
}

impl ControlPlane {
    /// Starts everything and registers `nodes` (name, address), which a
    /// fake kubelet runs.
    pub fn start(nodes: &[(&str, &str)]) -> Result<ControlPlane> {
        let mut cp = Self::start_with(&[], &[])?;
        for (name, address) in nodes {
            let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name}},
                "status": {"addresses": [{"type": "InternalIP", "address": address}]}});
            cp.apply(&node.to_string())?;
        }
        let nodes = nodes.iter().map(|(n, a)| (n.to_string(), a.to_string())).collect();
        let fake = fake_kubelet::Shared { bound: cp.bound.clone(), failing: cp.failing.clone() };
        cp.kubelet = Some(fake_kubelet::start(cp.admin.clone(), cp.stop.clone(), nodes, fake));
        Ok(cp)
    }

    /// Starts everything real kubelets need, for these nodes (name, address):
    /// each gets a token as `system:node:NAME`, and the API server's
    /// certificate is valid for their addresses, where `crate::node` makes
    /// the API server reachable.
    pub fn for_kubelets(nodes: &[(&str, &str)]) -> Result<ControlPlane> {
        let addresses: Vec<&str> = nodes.iter().map(|(_, a)| *a).collect();
        let names: Vec<&str> = nodes.iter().map(|(n, _)| *n).collect();
        let cp = Self::start_with(&addresses, &names)?;
        let bin = binaries()?;
        let mut cp = cp;
        cp.children.push(spawn(
            &bin,
            "kube-scheduler",
            &cp.dir,
            &[
                format!("--kubeconfig={}", cp.admin.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
            ],
        )?);
        Ok(cp)
    }

    fn start_with(addresses: &[&str], kubelets: &[&str]) -> Result<ControlPlane> {
        let bin = binaries()?;
        let dir = std::env::temp_dir().join(format!("fct-controlplane-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io(dir.display()))?;
        let ca = credentials::write(&dir, addresses, kubelets)?;
        let (client_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd = start_etcd(&bin, &dir, client_port, peer_port)?;
        let mut cp = ControlPlane {
            dir: dir.clone(),
            server: format!("https://127.0.0.1:{api_port}"),
            admin: dir.join("admin.kubeconfig"),
            port: api_port,
            ca,
            children: vec![etcd],
            stop: Arc::new(AtomicBool::new(false)),
            kubelet: None,
            bound: Arc::new(Mutex::new(Vec::new())),
            failing: Arc::new(Mutex::new(Vec::new())),
        };
        cp.start_apiserver(&bin, client_port)?;
        cp.start_controller_manager(&bin, !kubelets.is_empty())?;
        Ok(cp)
    }

    /// kube-apiserver on `self.port`, storing in the etcd on `etcd_port`;
    /// returns once it is ready.
    fn start_apiserver(&mut self, bin: &Path, etcd_port: u16) -> Result<()> {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let key = d("sa.key");
        let apiserver = spawn(
            bin,
            "kube-apiserver",
            &self.dir,
            &[
                format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={}", self.port),
                format!("--tls-cert-file={}", d("apiserver.crt")),
                format!("--tls-private-key-file={}", d("apiserver.key")),
                format!("--token-auth-file={}", d("tokens.csv")),
                "--authorization-mode=Node,RBAC".into(),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                format!("--service-account-key-file={key}"),
                format!("--service-account-signing-key-file={key}"),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--allow-privileged=true".into(),
                "--enable-priority-and-fairness=false".into(),
            ],
        )?;
        self.children.push(apiserver);
        self.write_kubeconfig(&self.admin, "admin-token", "default")?;
        wait_until("kube-apiserver", Duration::from_secs(90), || {
            self.kubectl(&["get", "--raw", "/readyz"]).status.success()
        })
    }

    /// kube-controller-manager with the controllers the tests rely on, and
    /// those real kubelets need `for_kubelets`; returns once the default
    /// service account exists.
    fn start_controller_manager(&mut self, bin: &Path, for_kubelets: bool) -> Result<()> {
        let mut controllers =
            "job-controller,cronjob-controller,garbage-collector-controller,serviceaccount-controller,\
             resourcequota-controller"
                .to_owned();
        if for_kubelets {
            controllers.push_str(
                ",daemonset-controller,node-lifecycle-controller,root-ca-certificate-publisher-controller,\
                 ttl-after-finished-controller,taint-eviction-controller",
            );
        }
        let manager = spawn(
            bin,
            "kube-controller-manager",
            &self.dir,
            &[
                format!("--kubeconfig={}", self.admin.display()),
                // Each controller as its own service account, as kubeadm
                // and managed clusters run them: admission sees
                // system:serviceaccount:kube-system:cronjob-controller.
                "--use-service-account-credentials=true".into(),
                format!("--controllers={controllers}"),
                format!("--root-ca-file={}", self.ca.display()),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                "--secure-port=0".into(),
            ],
        )?;
        self.children.push(manager);
        wait_until("the default service account", Duration::from_secs(60), || {
            self.kubectl(&["-n", "default", "get", "serviceaccount", "default"]).status.success()
        })
    }

    /// A kubeconfig for a kubelet registered with [`ControlPlane::for_kubelets`],
    /// reaching the API server at `server` and checking its certificate.
    pub fn kubelet_kubeconfig(&self, node: &str, server: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("kubelet-{node}.kubeconfig"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: kubelet\n  user:\n    token: {node}-token\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: kubelet\ncurrent-context: local\n",
            self.ca.display()
        );
        std::fs::write(&path, text).map_err(io(path.display()))?;
        Ok(path)
    }

    pub fn write_kubeconfig(&self, path: &Path, token: &str, namespace: &str) -> Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: user\n    namespace: {namespace}\ncurrent-context: local\n",
            self.server
        );
        std::fs::write(path, text).map_err(io(path.display()))
    }

    /// Whether each daemon still runs, and the last `lines` lines of each
    /// one's log: said when the cluster did not do what a test waited for.
    pub fn daemons(&self, lines: usize) -> String {
        let mut out = String::new();
        for child in &self.children {
            let pid = child.id();
            // An exited child stays a zombie until it is waited for.
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let field = |key: &str| {
                status.lines().find_map(|l| l.strip_prefix(key)).map_or("?", str::trim).to_owned()
            };
            out.push_str(&format!("--- {} (pid {pid}): {}\n", field("Name:"), field("State:")));
        }
        for name in ["kube-scheduler", "kube-controller-manager"] {
            let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(lines).collect();
            out.push_str(&format!("--- the last {} lines of {name}.log\n", tail.len()));
            for line in tail.iter().rev() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// kubectl as the admin.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.admin, args)
    }

    /// `kubectl` as the admin, for a caller that runs it itself (a watch).
    pub fn kubectl_command(&self) -> Command {
        let mut command = Command::new("kubectl");
        command.arg("--kubeconfig").arg(&self.admin);
        command
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("kubectl: {e}"))
    }

    pub fn apply(&self, manifest: &str) -> Result<()> {
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.admin)
            .args(["apply", "--server-side", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(error::spawn("kubectl apply"))?;
        if let Some(mut stdin) = child.stdin.take() {
            std::io::Write::write_all(&mut stdin, manifest.as_bytes())
                .map_err(io("kubectl apply's stdin"))?;
        }
        let out = child.wait_with_output().map_err(io("kubectl apply"))?;
        command::checked(out, "kubectl apply").map(drop)
    }

    /// A kubeconfig holding a real token of this service account.
    pub fn service_account_kubeconfig(&self, namespace: &str, account: &str) -> Result<PathBuf> {
        self.token_kubeconfig(namespace, account, &[], &format!("{namespace}-{account}"))
    }

    /// `kubectl create token` with `extra` arguments, into a kubeconfig.
    fn token_kubeconfig(
        &self,
        namespace: &str,
        account: &str,
        extra: &[&str],
        name: &str,
    ) -> Result<PathBuf> {
        let mut args = vec!["-n", namespace, "create", "token", account, "--duration=1h"];
        args.extend_from_slice(extra);
        let out = command::checked(self.kubectl(&args), "kubectl create token")?;
        let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let path = self.dir.join(format!("{name}.kubeconfig"));
        self.write_kubeconfig(&path, &token, namespace)?;
        Ok(path)
    }

    /// A kubeconfig holding a token bound to a pod of this service account
    /// running on `node`, as a pod's projected token is: the API server
    /// puts the pod's node in the token's user info
    /// (`authentication.kubernetes.io/node-name`). The pod is created.
    pub fn pod_bound_kubeconfig(
        &self,
        namespace: &str,
        account: &str,
        pod: &str,
        node: &str,
    ) -> Result<PathBuf> {
        let object = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": namespace},
            "spec": {"nodeName": node, "serviceAccountName": account, "automountServiceAccountToken": false,
                     "containers": [{"name": "agent", "image": "agent"}]}});
        command::checked(self.create_as(&self.admin, &object), &format!("kubectl create pod {pod}"))?;
        let uid = self.kubectl(&["-n", namespace, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}"]);
        let uid = String::from_utf8_lossy(&uid.stdout).trim().to_owned();
        let (name, uid) = (format!("--bound-object-name={pod}"), format!("--bound-object-uid={uid}"));
        let bound = ["--bound-object-kind=Pod", name.as_str(), uid.as_str()];
        self.token_kubeconfig(namespace, account, &bound, &format!("{namespace}-{account}-{pod}"))
    }

    /// `kubectl create` of one object with this kubeconfig's credentials.
    pub fn create_as(&self, kubeconfig: &Path, object: &serde_json::Value) -> Output {
        let name = object["metadata"]["name"].as_str().unwrap_or("object");
        let file = self.dir.join(format!("create-{name}.json"));
        if let Err(e) = std::fs::write(&file, object.to_string()) {
            panic!("write {}: {e}", file.display());
        }
        self.kubectl_as(kubeconfig, &["create", "-f", &file.to_string_lossy()])
    }

    /// The node a pod was bound to by the fake kubelet.
    pub fn node_of(&self, namespace: &str, pod_prefix: &str) -> Option<String> {
        let bound = self.bound.lock().ok()?;
        bound
            .iter()
            .find(|(p, _)| p.starts_with(&format!("{namespace}/{pod_prefix}")))
            .map(|(_, n)| n.clone())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(k) = self.kubelet.take() {
            let _ = k.join();
        }
        for child in self.children.iter_mut().rev() {
            crate::process::terminate(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
