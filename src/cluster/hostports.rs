//! What a sweep flushes on each node: the hostPorts that running pods
//! declare there, at every local address of the node as portmap translates
//! them, and the pod IPs their live flows already reach. Pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Pod, PodStatus};

use crate::ctnetlink::Protocol;
use crate::flush::selection::{canonical, Selection};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFlush {
    pub node: String,
    pub selection: Selection,
    /// `namespace/name` of the pods behind it, for the log.
    pub pods: Vec<String>,
}

/// A container port's protocol as the PodSpec spells it; Kubernetes
/// defaults it to TCP.
fn protocol_of(name: Option<&str>) -> Option<Protocol> {
    match name.unwrap_or("TCP") {
        "UDP" => Some(Protocol::Udp),
        "TCP" => Some(Protocol::Tcp),
        "SCTP" => Some(Protocol::Sctp),
        _ => None,
    }
}

fn push<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

/// The addresses whose flows are live: the pod's IPs, unless it is being
/// deleted. Such a pod still reads Running until the kubelet is done with
/// it, but its agent is stopping: its node and ports are swept, and flows to
/// it are not kept. (Seen on a real node, where a sweep right after a
/// rollout kept the flow of the replaced pod.)
fn live_ips(pod: &Pod, status: &PodStatus) -> Vec<IpAddr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let parse = |s: &str| s.parse::<IpAddr>().ok();
    let ips: Vec<IpAddr> = status.pod_ips.iter().flatten().filter_map(|p| parse(&p.ip)).collect();
    match ips.is_empty() {
        true => status.pod_ip.as_deref().and_then(parse).into_iter().collect(),
        false => ips,
    }
}

/// Groups the running pods with hostPorts of the chosen protocols by node.
/// Each node's selection targets its hostIP(s) and those ports, and keeps
/// what already reaches one of its pods.
pub fn plan(pods: &[Pod], protocols: &[Protocol]) -> Vec<NodeFlush> {
    let mut nodes: BTreeMap<String, NodeFlush> = BTreeMap::new();
    for pod in pods {
        let (Some(spec), Some(status)) = (&pod.spec, &pod.status) else { continue };
        let Some(node) = spec.node_name.clone() else { continue };
        if status.phase.as_deref() != Some("Running") {
            continue;
        }
        let parse = |s: &str| s.parse::<IpAddr>().ok();
        let pod_ips = live_ips(pod, status);
        let mut found = false;
        let name = format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default()
        );
        for port in spec.containers.iter().flat_map(|c| c.ports.iter().flatten()) {
            let (Some(host_port), Some(protocol)) = (port.host_port, protocol_of(port.protocol.as_deref()))
            else {
                continue;
            };
            let Ok(host_port) = u16::try_from(host_port) else { continue };
            if host_port == 0 || !protocols.contains(&protocol) {
                continue;
            }
            let entry = nodes.entry(node.clone()).or_insert_with(|| NodeFlush {
                node: node.clone(),
                selection: Selection {
                    protocols: Vec::new(),
                    ips: Vec::new(),
                    local: false,
                    ports: Vec::new(),
                    keep: Vec::new(),
                },
                pods: Vec::new(),
            });
            let s = &mut entry.selection;
            push(&mut s.protocols, protocol);
            push(&mut s.ports, host_port..=host_port);
            // portmap translates a hostPort at every local address of the
            // node (`--dst-type LOCAL`), or at its own hostIP when it has one.
            match port.host_ip.as_deref().and_then(parse).filter(|ip| !ip.is_unspecified()) {
                Some(ip) => push(&mut s.ips, ip),
                None => s.local = true,
            }
            pod_ips.iter().for_each(|ip| push(&mut s.keep, *ip));
            found = true;
        }
        if found {
            if let Some(entry) = nodes.get_mut(&node) {
                push(&mut entry.pods, name);
            }
        }
    }
    let mut plan: Vec<NodeFlush> = nodes.into_values().collect();
    for n in &mut plan {
        n.selection.ports.sort_by_key(|r| *r.start());
    }
    plan
}

/// Keeps the selection within what the admission policy admits: a hostIP
/// the template does not declare is flushed as `local` (it is one of the
/// node's addresses, so nothing stale is missed; more local addresses are
/// covered). Returns the hostIPs so replaced.
pub fn within_declared(selection: &mut Selection, declared: &[IpAddr]) -> Vec<IpAddr> {
    let declared: Vec<IpAddr> = declared.iter().map(|ip| canonical(*ip)).collect();
    let (kept, widened): (Vec<IpAddr>, Vec<IpAddr>) =
        selection.ips.iter().partition(|ip| declared.contains(&canonical(**ip)));
    if !widened.is_empty() {
        selection.local = true;
    }
    selection.ips = kept;
    widened
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(
        name: &str,
        node: &str,
        phase: &str,
        host_ip: &str,
        pod_ip: &str,
        ports: serde_json::Value,
    ) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "monitoring"},
            "spec": {"nodeName": node, "containers": [{"name": "agent", "ports": ports}]},
            "status": {"phase": phase, "hostIP": host_ip, "hostIPs": [{"ip": host_ip}], "podIP": pod_ip, "podIPs": [{"ip": pod_ip}]}
        }))
        .unwrap()
    }

    fn statsd() -> serde_json::Value {
        serde_json::json!([
            {"containerPort": 8125, "hostPort": 8125, "protocol": "UDP"},
            {"containerPort": 8126, "hostPort": 8126},
            {"containerPort": 9000}
        ])
    }

    #[test]
    fn one_flush_per_node_with_its_host_ip_ports_and_live_pods() {
        let pods = vec![
            pod("agent-a", "node-a", "Running", "192.0.2.1", "10.244.1.5", statsd()),
            pod("agent-b", "node-b", "Running", "192.0.2.2", "10.244.2.7", statsd()),
            pod("agent-c", "node-c", "Pending", "192.0.2.3", "10.244.3.1", statsd()),
        ];
        let plan = plan(&pods, &[Protocol::Udp]);
        assert_eq!(plan.len(), 2, "{plan:?}");
        assert_eq!(plan[0].node, "node-a");
        assert!(plan[0].selection.local && plan[0].selection.ips.is_empty(), "{plan:?}");
        assert_eq!(plan[0].selection.ports, vec![8125..=8125], "TCP 8126 is not UDP");
        assert_eq!(plan[0].selection.keep, vec!["10.244.1.5".parse::<IpAddr>().unwrap()]);
        assert_eq!(plan[0].selection.protocols, vec![Protocol::Udp]);
        assert_eq!(plan[0].pods, vec!["monitoring/agent-a"]);
        assert_eq!(plan[1].node, "node-b");
    }

    #[test]
    fn protocol_defaults_to_tcp_and_several_pods_on_a_node_merge() {
        let other = serde_json::json!([{"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": "192.0.2.9"}]);
        let pods = vec![
            pod("agent", "node-a", "Running", "192.0.2.1", "10.244.1.5", statsd()),
            pod("dns", "node-a", "Running", "192.0.2.1", "10.244.1.6", other),
        ];
        let plan = plan(&pods, &[Protocol::Udp, Protocol::Tcp]);
        assert_eq!(plan.len(), 1);
        let s = &plan[0].selection;
        assert_eq!(s.ports, vec![53..=53, 8125..=8125, 8126..=8126]);
        assert_eq!(s.protocols, vec![Protocol::Udp, Protocol::Tcp]);
        assert!(s.local, "every local address for the ports without a hostIP: {s:?}");
        assert_eq!(s.ips, vec!["192.0.2.9".parse::<IpAddr>().unwrap()], "and the one port's own hostIP");
        assert_eq!(s.keep.len(), 2);
        assert_eq!(plan[0].pods.len(), 2);
    }

    /// The PodSpec's spellings, each to its protocol; one it does not know
    /// is no hostPort of ours.
    #[test]
    fn each_podspec_protocol_is_read() {
        let ports = serde_json::json!([
            {"containerPort": 1, "hostPort": 1001, "protocol": "UDP"},
            {"containerPort": 2, "hostPort": 1002, "protocol": "TCP"},
            {"containerPort": 3, "hostPort": 1003, "protocol": "SCTP"},
            {"containerPort": 4, "hostPort": 1004, "protocol": "udp"}
        ]);
        let agent = pod("agent", "node-a", "Running", "192.0.2.1", "10.244.1.5", ports);
        let only = |protocol| plan(std::slice::from_ref(&agent), &[protocol]).remove(0).selection.ports;
        assert_eq!(only(Protocol::Udp), vec![1001..=1001]);
        assert_eq!(only(Protocol::Tcp), vec![1002..=1002]);
        assert_eq!(only(Protocol::Sctp), vec![1003..=1003]);
    }

    #[test]
    fn a_dual_stack_pod_keeps_both_families() {
        let mut agent = pod("agent", "node-a", "Running", "192.0.2.1", "10.244.1.5", statsd());
        agent.status.as_mut().unwrap().pod_ips =
            serde_json::from_value(serde_json::json!([{"ip": "10.244.1.5"}, {"ip": "fd00:10:244:1::5"}]))
                .unwrap();
        let plan = plan(&[agent], &[Protocol::Udp]);
        let keep: Vec<IpAddr> =
            ["10.244.1.5", "fd00:10:244:1::5"].iter().map(|i| i.parse().unwrap()).collect();
        assert_eq!(plan[0].selection.keep, keep);
        assert!(plan[0].selection.local, "every local address, both families");
    }

    #[test]
    fn a_pod_being_deleted_is_swept_but_its_flows_are_not_kept() {
        let mut leaving = pod("old", "node-a", "Running", "192.0.2.1", "10.244.1.5", statsd());
        leaving.metadata.deletion_timestamp =
            serde_json::from_value(serde_json::json!("2026-11-26T17:00:00Z")).unwrap();
        let plan = plan(&[leaving], &[Protocol::Udp]);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].selection.ports, vec![8125..=8125]);
        assert!(plan[0].selection.keep.is_empty(), "{plan:?}");
    }

    #[test]
    fn pods_without_host_ports_or_node_are_skipped() {
        let none = serde_json::json!([{"containerPort": 8125, "protocol": "UDP"}]);
        assert!(plan(&[pod("x", "node-a", "Running", "192.0.2.1", "10.244.1.5", none)], &[Protocol::Udp])
            .is_empty());
        let unscheduled: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "y"}, "spec": {"containers": [{"name": "c", "ports": statsd()}]}, "status": {"phase": "Running"}
        }))
        .unwrap();
        assert!(plan(&[unscheduled], &[Protocol::Udp]).is_empty());
    }

    #[test]
    fn a_host_ip_is_named_only_when_the_template_declares_it() {
        let port = |ip: &str| serde_json::json!([{"containerPort": 53, "hostPort": 53, "protocol": "UDP", "hostIP": ip}]);
        let pods = vec![
            pod("dns", "node-a", "Running", "192.0.2.1", "10.244.1.6", port("192.0.2.9")),
            pod("other", "node-a", "Running", "192.0.2.1", "10.244.1.7", port("192.0.2.8")),
        ];
        let mut flush = plan(&pods, &[Protocol::Udp]).remove(0).selection;
        assert!(!flush.local, "both ports have their own hostIP: {flush:?}");
        let declared: Vec<IpAddr> = vec!["192.0.2.9".parse().unwrap()];
        let widened = within_declared(&mut flush, &declared);
        assert_eq!(widened, vec!["192.0.2.8".parse::<IpAddr>().unwrap()]);
        assert_eq!(flush.ips, declared, "the declared one stays named");
        assert!(flush.local, "the other is served by local");

        let mut all_declared = plan(&pods[..1], &[Protocol::Udp]).remove(0).selection;
        assert!(within_declared(&mut all_declared, &declared).is_empty());
        assert!(!all_declared.local, "nothing widened when every hostIP is declared");
    }
}
