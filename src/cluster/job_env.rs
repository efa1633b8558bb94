//! The contract written back: the variables a spawned flush Job receives,
//! spelled as the environment spells them, so that parsing them gives the
//! selection they were written from.

use crate::contract::{self, Mode, LOCAL, PROTOCOLS};
use crate::flush::selection::Selection;

/// The variables the contract marks as carried by a Job (`MODE=flush`, the
/// selection and `DRY_RUN`), in its order. What else the flush does
/// (`KERNEL_FLUSH`, logging) is the Job template's to say.
pub fn flush_job(selection: &Selection, dry_run: bool) -> Vec<(&'static str, String)> {
    let join = |items: Vec<String>| items.join(",");
    let ports = selection
        .ports
        .iter()
        .map(|r| match r.start() == r.end() {
            true => r.start().to_string(),
            false => format!("{}-{}", r.start(), r.end()),
        })
        .collect();
    let protocols = selection
        .protocols
        .iter()
        .filter_map(|p| PROTOCOLS.iter().find(|(_, n)| *n == p.number()))
        .map(|(name, _)| (*name).to_owned())
        .collect();
    let local = selection.local.then(|| LOCAL.to_owned());
    let ips = local.into_iter().chain(selection.ips.iter().map(ToString::to_string)).collect();
    vec![
        (contract::MODE.name, Mode::Flush.name().to_owned()),
        (contract::TARGET_IP.name, join(ips)),
        (contract::TARGET_PORT.name, join(ports)),
        (contract::TARGET_PROTOCOL.name, join(protocols)),
        (contract::KEEP_DNAT_TO.name, join(selection.keep.iter().map(ToString::to_string).collect())),
        (contract::DRY_RUN.name, dry_run.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctnetlink::Protocol;

    /// Parsing it back is `config`'s test (it sits above both).
    #[test]
    fn writes_the_carried_rows_in_order_as_the_environment_spells_them() {
        let selection = Selection {
            protocols: vec![Protocol::Tcp, Protocol::Udp, Protocol::Sctp],
            ips: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            local: true,
            ports: vec![8000..=8100, 8125..=8125],
            keep: vec!["198.51.100.6".parse().unwrap()],
        };
        let env = flush_job(&selection, true);
        let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, contract::carried().collect::<Vec<_>>(), "what a Job carries, as the rows say");
        let values: Vec<&str> = env.iter().map(|(_, v)| v.as_str()).collect();
        assert_eq!(
            values,
            [
                "flush",
                "local,192.0.2.1,2001:db8::1",
                "8000-8100,8125",
                "tcp,udp,sctp",
                "198.51.100.6",
                "true"
            ]
        );
        let empty = Selection { local: false, ips: vec![], keep: vec![], ..selection };
        let env = flush_job(&empty, false);
        assert_eq!((env[1].1.as_str(), env[4].1.as_str(), env[5].1.as_str()), ("", "", "false"));
    }
}
