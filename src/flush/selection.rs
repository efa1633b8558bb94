//! Which entries a flush deletes, and how the kernel can narrow its dumps.
//! Pure: no socket here.

use std::net::IpAddr;
use std::ops::RangeInclusive;

use crate::ctnetlink::{Entry, Family, Filter, Protocol};

/// The kernel keeps an IPv4 flow in its IPv4 table even when an address is
/// written (or listed by an interface) as `::ffff:a.b.c.d`, so compare and
/// filter in that form.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The parsed `TARGET_*` and `KEEP_DNAT_TO` variables. Empty `ips` (without
/// `local`) or `ports` mean "any"; configuration guarantees that not both
/// are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub protocols: Vec<Protocol>,
    pub ips: Vec<IpAddr>,
    /// `TARGET_IP=local`: every address of the namespace the flush runs in,
    /// read when it runs ([`Selection::with_local`]), as portmap's DNAT
    /// matches any local destination.
    pub local: bool,
    pub ports: Vec<RangeInclusive<u16>>,
    pub keep: Vec<IpAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not ours: another protocol, address or port.
    Other,
    /// Ours, but the reply already comes from a live pod (`KEEP_DNAT_TO`).
    Keep,
    /// Ours and stale.
    Delete,
}

/// One kernel-filtered dump (or filtered flush) of the selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub filter: Filter,
    /// The kernel filter is exactly this slice of the selection (nothing is
    /// left for userspace to decide except `KEEP_DNAT_TO`).
    pub exact: bool,
}

/// Each dump walks the whole table in the kernel; past this many, one
/// broader dump per family and protocol is cheaper than many narrow ones.
const MAX_DUMPS_PER_PROTOCOL: usize = 8;

impl Selection {
    /// The selection with `local` replaced by these addresses (this
    /// namespace's, when the flush starts).
    pub fn with_local(&self, addresses: &[IpAddr]) -> Selection {
        let mut resolved = Selection { local: false, ..self.clone() };
        if self.local {
            for ip in addresses.iter().map(|ip| canonical(*ip)) {
                if !resolved.ips.contains(&ip) {
                    resolved.ips.push(ip);
                }
            }
        }
        resolved
    }

    pub fn verdict(&self, entry: &Entry) -> Verdict {
        let ours = self.protocols.iter().any(|p| p.number() == entry.protocol)
            && (self.ips.is_empty() || self.ips.contains(&entry.dst))
            && (self.ports.is_empty() || self.ports.iter().any(|r| r.contains(&entry.dst_port)));
        if !ours {
            Verdict::Other
        } else if entry.reply_src.is_some_and(|r| self.keep.contains(&r)) {
            Verdict::Keep
        } else {
            Verdict::Delete
        }
    }

    pub fn families(&self) -> Vec<Family> {
        if self.ips.is_empty() || self.local {
            return vec![Family::V4, Family::V6];
        }
        let mut families: Vec<Family> = Vec::new();
        for f in self.ips.iter().map(Family::of) {
            if !families.contains(&f) {
                families.push(f);
            }
        }
        families
    }

    /// The dumps that together return every entry the selection can match,
    /// each as narrow as the kernel can make it, none overlapping.
    pub fn slices(&self) -> Vec<Slice> {
        let single_ports: Option<Vec<u16>> =
            self.ports.iter().map(|r| (r.start() == r.end()).then_some(*r.start())).collect();
        let mut slices = Vec::new();
        for family in self.families() {
            let ips: Vec<Option<IpAddr>> = match family {
                Family::V4 if !self.ips.is_empty() => {
                    self.ips.iter().filter(|ip| ip.is_ipv4()).copied().map(Some).collect()
                }
                _ => vec![None],
            };
            let mut ports: Vec<Option<u16>> = match &single_ports {
                Some(p) if !p.is_empty() => p.iter().copied().map(Some).collect(),
                _ => vec![None],
            };
            // Widen the dimension that costs more dumps first.
            let mut ips = ips;
            while ips.len() * ports.len() > MAX_DUMPS_PER_PROTOCOL {
                if ips.len() >= ports.len() {
                    ips = vec![None];
                } else {
                    ports = vec![None];
                }
            }
            for &protocol in &self.protocols {
                for &dst_ip in &ips {
                    for &dst_port in &ports {
                        let exact = (dst_ip.is_some() || self.ips.is_empty())
                            && (dst_port.is_some() || self.ports.is_empty());
                        slices.push(Slice { filter: Filter { family, protocol, dst_ip, dst_port }, exact });
                    }
                }
            }
        }
        slices
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(ips: &str, ports: &[RangeInclusive<u16>], keep: &str) -> Selection {
        let list = |s: &str| s.split(',').filter(|x| !x.is_empty()).map(|x| x.parse().unwrap()).collect();
        Selection {
            protocols: vec![Protocol::Udp],
            ips: list(ips),
            local: false,
            ports: ports.to_vec(),
            keep: list(keep),
        }
    }

    fn entry(proto: u8, dst: &str, dport: u16, reply: &str) -> Entry {
        let dst: IpAddr = dst.parse().unwrap();
        let src: IpAddr =
            if dst.is_ipv4() { "192.0.2.2".parse().unwrap() } else { "2001:db8::2".parse().unwrap() };
        Entry {
            family: Family::of(&dst),
            protocol: proto,
            src,
            dst,
            src_port: 40000,
            dst_port: dport,
            reply_src: Some(reply.parse().unwrap()),
            id: Some(1),
            zone: 0,
        }
    }

    #[test]
    fn verdict_protocol_address_port() {
        let s = sel("192.0.2.1", &[8125..=8125], "");
        assert_eq!(s.verdict(&entry(17, "192.0.2.1", 8125, "198.51.100.5")), Verdict::Delete);
        assert_eq!(s.verdict(&entry(6, "192.0.2.1", 8125, "198.51.100.5")), Verdict::Other);
        assert_eq!(s.verdict(&entry(17, "192.0.2.9", 8125, "198.51.100.5")), Verdict::Other);
        assert_eq!(s.verdict(&entry(17, "192.0.2.1", 8126, "198.51.100.5")), Verdict::Other);
        assert_eq!(s.verdict(&entry(17, "2001:db8::1", 8125, "2001:db8::1")), Verdict::Other);
    }

    #[test]
    fn local_means_every_address_of_the_namespace() {
        let mut s = sel("192.0.2.9", &[8125..=8125], "10.244.0.6");
        s.local = true;
        let here: Vec<IpAddr> = ["127.0.0.1", "192.0.2.1", "::1", "::ffff:198.18.0.1", "192.0.2.9"]
            .iter()
            .map(|i| i.parse().unwrap())
            .collect();
        let resolved = s.with_local(&here);
        assert!(!resolved.local);
        let expected: Vec<IpAddr> = ["192.0.2.9", "127.0.0.1", "192.0.2.1", "::1", "198.18.0.1"]
            .iter()
            .map(|i| i.parse().unwrap())
            .collect();
        assert_eq!(resolved.ips, expected);
        assert_eq!(resolved.verdict(&entry(17, "127.0.0.1", 8125, "10.244.0.5")), Verdict::Delete);
        assert_eq!(resolved.verdict(&entry(17, "198.18.0.1", 8125, "10.244.0.5")), Verdict::Delete);
        assert_eq!(resolved.verdict(&entry(17, "127.0.0.1", 8125, "10.244.0.6")), Verdict::Keep);
        // A Service's virtual IP and a remote destination are not local.
        assert_eq!(resolved.verdict(&entry(17, "10.96.5.5", 8125, "10.244.0.5")), Verdict::Other);
        assert_eq!(resolved.verdict(&entry(17, "203.0.113.9", 8125, "203.0.113.9")), Verdict::Other);
        // Without `local`, the addresses change nothing.
        assert_eq!(
            sel("192.0.2.9", &[], "").with_local(&here).ips,
            vec!["192.0.2.9".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn verdict_never_translated_is_stale_too() {
        let s = sel("192.0.2.1", &[8125..=8125], "198.51.100.6");
        assert_eq!(s.verdict(&entry(17, "192.0.2.1", 8125, "192.0.2.1")), Verdict::Delete);
    }

    #[test]
    fn verdict_keep_set_v4_and_v6() {
        let s = sel("", &[8125..=8125], "198.51.100.6,2001:db8:1::6");
        assert_eq!(s.verdict(&entry(17, "192.0.2.1", 8125, "198.51.100.6")), Verdict::Keep);
        assert_eq!(s.verdict(&entry(17, "192.0.2.1", 8125, "198.51.100.5")), Verdict::Delete);
        assert_eq!(s.verdict(&entry(17, "2001:db8::1", 8125, "2001:db8:1::6")), Verdict::Keep);
        assert_eq!(s.verdict(&entry(17, "2001:db8::1", 8125, "2001:db8:1::5")), Verdict::Delete);
        // A kept address that is not ours is still not ours.
        assert_eq!(s.verdict(&entry(17, "192.0.2.1", 9999, "198.51.100.6")), Verdict::Other);
    }

    #[test]
    fn verdict_ranges_and_any_port() {
        let s = sel("192.0.2.1", &[8000..=8100, 8125..=8125], "");
        for (port, v) in [
            (7999, Verdict::Other),
            (8000, Verdict::Delete),
            (8100, Verdict::Delete),
            (8101, Verdict::Other),
            (8125, Verdict::Delete),
        ] {
            assert_eq!(s.verdict(&entry(17, "192.0.2.1", port, "198.51.100.5")), v, "port {port}");
        }
        let any_port = sel("192.0.2.1", &[], "");
        assert_eq!(any_port.verdict(&entry(17, "192.0.2.1", 1, "198.51.100.5")), Verdict::Delete);
    }

    #[test]
    fn verdict_v6_address() {
        let s = sel("2001:db8::1", &[], "");
        assert_eq!(s.verdict(&entry(17, "2001:db8::1", 53, "2001:db8::1")), Verdict::Delete);
        assert_eq!(s.verdict(&entry(17, "2001:db8::9", 53, "2001:db8::9")), Verdict::Other);
        assert_eq!(s.verdict(&entry(17, "192.0.2.1", 53, "192.0.2.1")), Verdict::Other);
    }

    #[test]
    fn slices_no_ip_means_both_families_port_filtered_exact() {
        let s = sel("", &[8125..=8125], "");
        let slices = s.slices();
        assert_eq!(slices.len(), 2);
        for (slice, family) in slices.iter().zip([Family::V4, Family::V6]) {
            assert_eq!(
                slice,
                &Slice {
                    filter: Filter { family, protocol: Protocol::Udp, dst_ip: None, dst_port: Some(8125) },
                    exact: true
                }
            );
        }
    }

    #[test]
    fn slices_v6_address_is_never_filtered_by_the_kernel() {
        let s = sel("192.0.2.1,2001:db8::1", &[8125..=8125], "");
        let slices = s.slices();
        assert_eq!(slices.len(), 2);
        assert_eq!(slices[0].filter.dst_ip, Some("192.0.2.1".parse().unwrap()));
        assert!(slices[0].exact);
        let v6 = slices[1];
        assert_eq!((v6.filter.family, v6.filter.dst_ip, v6.exact), (Family::V6, None, false));
    }

    #[test]
    fn slices_ranges_fall_back_to_protocol_dump() {
        let s = sel("192.0.2.1", &[8000..=8100], "");
        assert_eq!(
            s.slices(),
            vec![Slice {
                filter: Filter {
                    family: Family::V4,
                    protocol: Protocol::Udp,
                    dst_ip: Some("192.0.2.1".parse().unwrap()),
                    dst_port: None,
                },
                exact: false
            }]
        );
    }

    #[test]
    fn slices_many_ports_and_ips_are_bounded() {
        let ports: Vec<_> = (1..=20).map(|p| p..=p).collect();
        let s = sel("192.0.2.1,192.0.2.2", &ports, "");
        let slices = s.slices();
        assert_eq!(slices.len(), 2, "{slices:?}");
        assert!(slices.iter().all(|s| s.filter.dst_port.is_none() && !s.exact));
        let ips: Vec<String> = (1..=12).map(|i| format!("192.0.2.{i}")).collect();
        let s = sel(&ips.join(","), &[53..=53], "");
        let slices = s.slices();
        assert_eq!(slices.len(), 1, "{slices:?}");
        assert_eq!((slices[0].filter.dst_ip, slices[0].filter.dst_port), (None, Some(53)));
    }

    /// The bound is on the product of addresses and ports, and it is
    /// reached, not passed, by exactly MAX_DUMPS_PER_PROTOCOL narrow dumps.
    #[test]
    fn slices_stay_narrow_up_to_the_bound_and_widen_past_it() {
        let ports = |n: u16| (1..=n).map(|p| p..=p).collect::<Vec<_>>();
        let at_the_bound = sel("192.0.2.1,192.0.2.2", &ports(4), "").slices();
        assert_eq!(at_the_bound.len(), MAX_DUMPS_PER_PROTOCOL, "{at_the_bound:?}");
        assert!(at_the_bound.iter().all(|s| s.exact));
        // 2 addresses and 5 ports: 10 dumps, though 2 + 5 is within 8; the
        // ports, the larger dimension, are widened.
        let past = sel("192.0.2.1,192.0.2.2", &ports(5), "").slices();
        assert_eq!(past.len(), 2, "{past:?}");
        assert!(past.iter().all(|s| s.filter.dst_ip.is_some() && s.filter.dst_port.is_none() && !s.exact));
    }

    /// TARGET_IP alone: one dump per address, every port.
    #[test]
    fn slices_without_ports_filter_on_the_address_only() {
        let slices = sel("192.0.2.1", &[], "").slices();
        assert_eq!(slices.len(), 1, "{slices:?}");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            (slices[0].filter.dst_ip, slices[0].filter.dst_port, slices[0].exact),
            (Some(ip), None, true)
        );
    }

    #[test]
    fn slices_one_per_protocol_ip_and_port() {
        let mut s = sel("192.0.2.1,192.0.2.3", &[8125..=8125, 8126..=8126], "");
        s.protocols = vec![Protocol::Udp, Protocol::Tcp];
        let slices = s.slices();
        assert_eq!(slices.len(), 8);
        assert!(slices.iter().all(|s| s.exact && s.filter.family == Family::V4));
    }
}
