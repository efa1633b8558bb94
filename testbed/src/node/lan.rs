//! A LAN for several nodes: a bridge in a namespace of its own, holding the
//! nodes' uplinks and the clients' addresses. It carries what a cluster
//! needs here and nothing more: the clients' datagrams to each node's
//! addresses (the API server is reached through each node's own proxy).

use std::sync::Arc;

use crate::link::{self, End};
use crate::netns::Netns;

const BRIDGE: &str = "lan0";

pub struct Lan {
    /// Where the clients run: their addresses are on the bridge.
    pub ns: Arc<Netns>,
    pub client_address: String,
    pub client_address6: String,
}

impl Lan {
    /// The bridge, with the clients' IPv4 (`/24`) and IPv6 (`/64`) addresses.
    pub fn new(client_address: &str, client_address6: &str) -> Lan {
        let ns = Netns::new("klan");
        ns.exec(&["ip", "link", "add", BRIDGE, "type", "bridge"]);
        ns.exec(&["ip", "addr", "add", &format!("{client_address}/24"), "dev", BRIDGE]);
        link::add_ipv6(&ns, BRIDGE, client_address6);
        ns.exec(&["ip", "link", "set", BRIDGE, "up"]);
        Lan {
            ns: Arc::new(ns),
            client_address: client_address.to_owned(),
            client_address6: client_address6.to_owned(),
        }
    }

    /// Plugs a node's uplink into the bridge.
    pub(super) fn attach(&self, node: End, name: &str) {
        let port: String = format!("lan-{name}").chars().take(15).collect();
        link::veth(node, End { ns: &self.ns, name: &port, address: None });
        self.ns.exec(&["ip", "link", "set", &port, "master", BRIDGE]);
    }
}
