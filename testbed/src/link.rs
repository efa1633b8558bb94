//! Links between network namespaces: a veth pair with an address at each
//! end, as a node's uplink or a pod's interface has.

use crate::netns::Netns;

/// One end of a veth pair.
pub struct End<'a> {
    pub ns: &'a Netns,
    pub name: &'a str,
    /// `address/prefix`, or none for an end that a bridge takes.
    pub address: Option<&'a str>,
}

/// Creates the pair and brings both ends up with their addresses.
pub fn veth(near: End, far: End) {
    near.ns.exec(&[
        "ip",
        "link",
        "add",
        near.name,
        "type",
        "veth",
        "peer",
        "name",
        far.name,
        "netns",
        &far.ns.name,
    ]);
    for end in [&near, &far] {
        if let Some(address) = end.address {
            end.ns.exec(&["ip", "addr", "add", address, "dev", end.name]);
        }
        end.ns.exec(&["ip", "link", "set", end.name, "up"]);
    }
}

/// Sends everything not on a link of `ns` to `gateway`.
pub fn default_route(ns: &Netns, gateway: &str) {
    ns.exec(&["ip", "route", "add", "default", "via", gateway]);
}

/// Adds an IPv6 `/64` address without duplicate address detection: a
/// fresh link is the only one using it, and detection holds the address
/// back (tentative) for a second or more.
pub fn add_ipv6(ns: &Netns, dev: &str, address: &str) {
    ns.exec(&["ip", "-6", "addr", "add", &format!("{address}/64"), "dev", dev, "nodad"]);
}
