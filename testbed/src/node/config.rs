//! The node's configuration files: the CNI network, containerd's and the
//! kubelet's, all pointing into the node's directory.

use std::path::Path;

use crate::error::{io, Result};

use super::{NodeSpec, RealNode, PAUSE_IMAGE};

impl RealNode {
    pub(super) fn write_configs(&self, spec: &NodeSpec, ca: &Path) -> Result<()> {
        write(&self.dir.join("cni/net.d/10-fct.conflist"), &self.conflist(spec))?;
        write(&self.dir.join("containerd.toml"), &self.containerd_toml())?;
        write(&self.dir.join("kubelet.yaml"), &self.kubelet_yaml(spec, ca))
    }

    fn path(&self, p: &str) -> String {
        self.dir.join(p).display().to_string()
    }

    /// The pods' network: a bridge with host-local addresses, and portmap.
    fn conflist(&self, spec: &NodeSpec) -> String {
        let d = |p: &str| self.path(p);
        let gateway = spec.pod_cidr.rsplit_once('.').map(|(net, _)| format!("{net}.1")).unwrap_or_default();
        let mut ranges = vec![serde_json::json!([{"subnet": spec.pod_cidr, "gateway": gateway}])];
        let mut routes = vec![serde_json::json!({"dst": "0.0.0.0/0"})];
        if let Some(v6) = spec.ipv6 {
            ranges.push(serde_json::json!([{"subnet": v6.pod_cidr, "gateway": ipv6_gateway(v6.pod_cidr)}]));
            routes.push(serde_json::json!({"dst": "::/0"}));
        }
        let conflist = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": "fct-pods",
            "plugins": [
                {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
                 "ipam": {"type": "host-local", "dataDir": d("cni/ipam"), "ranges": ranges, "routes": routes}},
                {"type": "portmap", "capabilities": {"portMappings": true}}
            ]
        });
        conflist.to_string()
    }

    fn containerd_toml(&self) -> String {
        let d = |p: &str| self.path(p);
        // The VM's bounding set lacks CAP_SYS_RESOURCE, so runc may not
        // lower oom_score_adj: restrict_oom_score_adj keeps it where it is.
        format!(
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
        )
    }

    fn kubelet_yaml(&self, spec: &NodeSpec, ca: &Path) -> String {
        let d = |p: &str| self.path(p);
        // The sync period and image pulls are left at the kubelet's defaults
        // (syncFrequency 1m, serializeImagePulls true), as clusters run them:
        // both change when a pod's containers start, which the benchmark
        // measures. fileCheckFrequency (static pods: none here) and
        // nodeStatusReportFrequency (the node's status, not its pods') do not.
        // Eviction watches memory only: the node's directories are on the
        // host's disk, shared with builds, and a disk nearly full (under 1%
        // would do) taints the node disk-pressure for the 5 minutes of
        // evictionPressureTransitionPeriod. DaemonSet pods and the pinned
        // flush Jobs tolerate that taint; the sweep's pod does not, and
        // would stay Pending.
        format!(
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
mergeDefaultEvictionSettings: false
fileCheckFrequency: 5s
nodeStatusReportFrequency: 10s
"#,
            cgroup = self.cgroup,
            socket = self.socket.display(),
            pods = d("pods"),
            address = spec.address,
            ca = ca.display(),
        )
    }
}

/// The first address of an IPv6 subnet written as `PREFIX::/LEN`. Pure.
fn ipv6_gateway(cidr: &str) -> String {
    let prefix = cidr.split('/').next().unwrap_or(cidr);
    format!("{prefix}1")
}

pub(super) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(io(path.display()))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_gateway_of_an_ipv6_pod_range() {
        assert_eq!(super::ipv6_gateway("fd00:10:244:1::/64"), "fd00:10:244:1::1");
    }
}
