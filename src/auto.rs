//! `MODE=auto`: flush here when this process may and this is the node's
//! network namespace; spawn a node-pinned Job otherwise. A pod's private
//! namespace must never be flushed in the belief that it is the node's.

use std::net::IpAddr;

use crate::contract::Mode;
use crate::error::{Error, Undecided};
use crate::plan::{AutoPlan, Plan};

const CAP_NET_ADMIN: u32 = 12;

/// The decision, from what was observed: [`Mode::Flush`] or
/// [`Mode::Spawn`]. Pure.
///
/// The node's namespace is recognised by its address: `TARGET_IP` is the
/// node's hostIP, which only the node's own namespace (and so a host-network
/// pod) has on an interface. Loopback and link-local addresses prove
/// nothing: every namespace has 127.0.0.1 and ::1, and a pod's veth has the
/// same fe80:: kind of address as the node's.
pub fn decide(net_admin: bool, local: &[IpAddr], targets: &[IpAddr]) -> Result<Mode, Undecided> {
    if !net_admin {
        return Ok(Mode::Spawn);
    }
    let telling: Vec<&IpAddr> = targets.iter().filter(|t| tells_a_namespace(t)).collect();
    if telling.is_empty() {
        return Err(Undecided::NoNodeAddress);
    }
    match telling.iter().any(|t| local.contains(t)) {
        true => Ok(Mode::Flush),
        false => Ok(Mode::Spawn),
    }
}

/// Whether an address on an interface can set one namespace apart.
fn tells_a_namespace(ip: &IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_unspecified() || link_local)
}

/// Parses `CapEff` from /proc/self/status: the kernel's own account of this
/// process, with no FFI.
pub fn effective_has(status: &str, capability: u32) -> Option<bool> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?.trim();
    let bits = u64::from_str_radix(hex, 16).ok()?;
    Some(bits & (1 << capability) != 0)
}

/// Observes this process and its namespace, and chooses between the plans.
pub fn resolve(auto: &AutoPlan) -> Result<Plan, Error> {
    let status = std::fs::read_to_string("/proc/self/status").map_err(Undecided::Status)?;
    let net_admin = effective_has(&status, CAP_NET_ADMIN).ok_or(Undecided::NoCapEff)?;
    let local = crate::addresses::local().map_err(Undecided::Addresses)?;
    let choice = decide(net_admin, &local, &auto.flush.selection.ips)?;
    tracing::info!(mode = %choice, net_admin, "MODE=auto chose");
    chosen(choice, auto)
}

/// The candidate a decision names; spawn's own refusal (no `NODE_NAME`)
/// surfaces only now.
fn chosen(choice: Mode, auto: &AutoPlan) -> Result<Plan, Error> {
    match choice {
        Mode::Flush => Ok(Plan::Flush(auto.flush.clone())),
        _ => Ok(Plan::Spawn(auto.spawn.clone()?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(s: &[&str]) -> Vec<IpAddr> {
        s.iter().map(|i| i.parse().unwrap()).collect()
    }

    #[test]
    fn without_net_admin_it_spawns() {
        assert_eq!(decide(false, &ips(&["192.0.2.1"]), &ips(&["192.0.2.1"])).unwrap(), Mode::Spawn);
        assert_eq!(decide(false, &[], &[]).unwrap(), Mode::Spawn);
    }

    #[test]
    fn with_net_admin_on_the_node_it_flushes() {
        let node = ips(&["127.0.0.1", "192.0.2.1", "2001:db8::1"]);
        assert_eq!(decide(true, &node, &ips(&["192.0.2.1"])).unwrap(), Mode::Flush);
        assert_eq!(decide(true, &node, &ips(&["2001:db8::1"])).unwrap(), Mode::Flush);
    }

    #[test]
    fn with_net_admin_in_a_pod_namespace_it_spawns() {
        let pod = ips(&["127.0.0.1", "10.244.1.5"]);
        assert_eq!(decide(true, &pod, &ips(&["192.0.2.1"])).unwrap(), Mode::Spawn);
    }

    #[test]
    fn with_net_admin_and_no_target_ip_it_refuses() {
        let why = decide(true, &ips(&["10.244.1.5"]), &[]).unwrap_err();
        assert!(why.to_string().contains("TARGET_IP names no address of the node"), "{why}");
    }

    /// A pod's own namespace has loopback and a link-local address too:
    /// neither tells it from the node's.
    #[test]
    fn loopback_and_link_local_prove_nothing() {
        let pod = ips(&["127.0.0.1", "::1", "10.244.1.5", "169.254.1.1", "fe80::1"]);
        for target in ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0"] {
            let why = decide(true, &pod, &ips(&[target])).unwrap_err();
            assert!(matches!(why, Undecided::NoNodeAddress), "{target}: {why}");
        }
        // Beside an address that does tell, they change nothing.
        assert_eq!(decide(true, &pod, &ips(&["127.0.0.1", "192.0.2.1"])).unwrap(), Mode::Spawn);
        let node = ips(&["127.0.0.1", "192.0.2.1"]);
        assert_eq!(decide(true, &node, &ips(&["127.0.0.1", "192.0.2.1"])).unwrap(), Mode::Flush);
        assert_eq!(decide(true, &pod, &ips(&["fe80::2", "10.244.1.5"])).unwrap(), Mode::Flush);
    }

    #[test]
    fn capabilities_from_proc_status() {
        let root = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(effective_has(root, CAP_NET_ADMIN), Some(true));
        let net_admin_only = "CapEff:\t0000000000001000\n";
        assert_eq!(effective_has(net_admin_only, CAP_NET_ADMIN), Some(true));
        assert_eq!(effective_has("CapEff:\t0000000000000000\n", CAP_NET_ADMIN), Some(false));
        assert_eq!(effective_has("Name:\tx\n", CAP_NET_ADMIN), None);
    }

    #[test]
    fn the_choice_picks_its_candidate() {
        use crate::config::Settings;
        let settings = |vars: &[(&str, &str)]| {
            Settings::from_vars(vars.iter().map(|(k, v)| (k.into(), v.into()))).unwrap().plan
        };
        let Plan::Auto(auto) = settings(&[("TARGET_PORT", "8125"), ("NODE_NAME", "node-a")]) else {
            panic!()
        };
        assert!(matches!(chosen(Mode::Flush, &auto), Ok(Plan::Flush(p)) if p == auto.flush));
        assert!(matches!(chosen(Mode::Spawn, &auto), Ok(Plan::Spawn(p)) if p.node == "node-a"));
        let Plan::Auto(nodeless) = settings(&[("TARGET_PORT", "8125")]) else { panic!() };
        assert!(matches!(chosen(Mode::Flush, &nodeless), Ok(Plan::Flush(_))), "flushing needs no node");
        let refused = chosen(Mode::Spawn, &nodeless).unwrap_err();
        assert!(matches!(&refused, Error::Config(e) if e.variable == "NODE_NAME"), "{refused}");
    }
}
