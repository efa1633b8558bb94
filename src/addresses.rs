//! The addresses of this network namespace: what portmap's
//! `-m addrtype --dst-type LOCAL` matches on the node, and how `MODE=auto`
//! recognises the node's namespace.

use std::io;
use std::net::IpAddr;

/// Every address on an interface of this network namespace, both families,
/// loopback and link-local included, read when called.
pub fn local() -> io::Result<Vec<IpAddr>> {
    let interfaces = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    let addresses = interfaces.filter_map(|interface| {
        let address = interface.address?;
        match (address.as_sockaddr_in(), address.as_sockaddr_in6()) {
            (Some(v4), _) => Some(IpAddr::V4(v4.ip())),
            (_, Some(v6)) => Some(IpAddr::V6(v6.ip())),
            _ => None,
        }
    });
    Ok(addresses.collect())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    /// The test runs where loopback is up in both families (every network
    /// namespace the suite makes has it; so does the host).
    #[test]
    fn this_namespace_has_loopback_in_both_families() {
        let here = super::local().unwrap();
        assert!(here.contains(&IpAddr::from([127, 0, 0, 1])), "{here:?}");
        assert!(here.iter().all(|ip| !ip.is_unspecified()), "{here:?}");
    }
}
