//! A conntrack entry as the flush sees it: the original tuple, where the
//! reply comes from, and what the kernel needs to delete exactly this entry.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{Emitable, Nla};
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, IPTuple, ProtoTuple, Tuple};

use super::request::{CTA_ID, CTA_ZONE};

/// Address family of a conntrack table. The kernel keeps one per family and
/// every request names one (`nfgen_family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub family: Family,
    /// IP protocol number (17 for UDP).
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// Source of the reply tuple: the DNAT target if the flow was translated,
    /// the original destination if not.
    pub reply_src: Option<IpAddr>,
    /// `CTA_ID`: makes a delete miss a newer entry that reuses the tuple.
    pub id: Option<u32>,
    /// `CTA_ZONE`: the kernel looks the tuple up in this zone only.
    pub zone: u16,
}

impl Entry {
    /// Reads an entry from the attributes of a dumped `CT_NEW` message.
    /// `None` for an entry without an address or port pair (ICMP, GRE, a
    /// protocol the kernel tracks only by address): never ours to delete.
    pub fn from_attributes(family: Family, attributes: &[ConntrackAttribute]) -> Option<Entry> {
        let mut orig = None;
        let mut reply_src = None;
        let mut id = None;
        let mut zone = 0;
        for attribute in attributes {
            match attribute {
                ConntrackAttribute::CtaTupleOrig(t) => orig = Some(Endpoints::of(t)),
                ConntrackAttribute::CtaTupleReply(t) => reply_src = Endpoints::of(t).src,
                ConntrackAttribute::Other(nla) if nla.kind() == CTA_ID => {
                    id = value::<4>(nla).map(u32::from_be_bytes)
                }
                ConntrackAttribute::Other(nla) if nla.kind() == CTA_ZONE => {
                    zone = value::<2>(nla).map_or(0, u16::from_be_bytes)
                }
                _ => {}
            }
        }
        let orig = orig?;
        Some(Entry {
            family,
            protocol: orig.protocol?,
            src: orig.src?,
            dst: orig.dst?,
            src_port: orig.src_port?,
            dst_port: orig.dst_port?,
            reply_src,
            id,
            zone,
        })
    }
}

#[derive(Default)]
struct Endpoints {
    protocol: Option<u8>,
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
}

impl Endpoints {
    fn of(tuple: &[Tuple]) -> Self {
        let mut e = Endpoints::default();
        for part in tuple {
            match part {
                Tuple::Ip(ips) => {
                    for ip in ips {
                        match ip {
                            IPTuple::SourceAddress(a) => e.src = Some(*a),
                            IPTuple::DestinationAddress(a) => e.dst = Some(*a),
                            _ => {}
                        }
                    }
                }
                Tuple::Proto(protos) => {
                    for p in protos {
                        match p {
                            ProtoTuple::Protocol(n) => e.protocol = Some((*n).into()),
                            ProtoTuple::SourcePort(port) => e.src_port = Some(*port),
                            ProtoTuple::DestinationPort(port) => e.dst_port = Some(*port),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        e
    }
}

/// The value of a fixed-size attribute the crate does not model.
pub(super) fn value<const N: usize>(nla: &impl Nla) -> Option<[u8; N]> {
    if nla.value_len() != N {
        return None;
    }
    let mut buf = vec![0u8; nla.buffer_len()];
    nla.emit(&mut buf);
    buf.get(4..4 + N)?.try_into().ok()
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            6 => "tcp".to_owned(),
            17 => "udp".to_owned(),
            132 => "sctp".to_owned(),
            n => format!("proto {n}"),
        };
        write!(f, "{proto} {} -> {}", socket(self.src, self.src_port), socket(self.dst, self.dst_port))?;
        match self.reply_src {
            Some(r) if r != self.dst => write!(f, " (DNAT to {r})"),
            Some(_) => write!(f, " (not translated)"),
            None => Ok(()),
        }
    }
}

fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::DefaultNla;
    use netlink_packet_netfilter::conntrack::Protocol;

    fn tuple(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<Tuple> {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(src.parse().unwrap()),
                IPTuple::DestinationAddress(dst.parse().unwrap()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Udp),
                ProtoTuple::SourcePort(sport),
                ProtoTuple::DestinationPort(dport),
            ]),
        ]
    }

    #[test]
    fn from_attributes_reads_orig_reply_id_and_zone() {
        let attributes = vec![
            ConntrackAttribute::CtaTupleOrig(tuple("192.0.2.2", "192.0.2.1", 40000, 8125)),
            ConntrackAttribute::CtaTupleReply(tuple("198.51.100.5", "192.0.2.2", 8125, 40000)),
            ConntrackAttribute::CtaTimeout(30),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ID, vec![0, 0, 1, 2])),
            ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, vec![0, 3])),
        ];
        let e = Entry::from_attributes(Family::V4, &attributes).unwrap();
        assert_eq!(e.src, "192.0.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(e.dst, "192.0.2.1".parse::<IpAddr>().unwrap());
        assert_eq!((e.protocol, e.src_port, e.dst_port), (17, 40000, 8125));
        assert_eq!(e.reply_src, Some("198.51.100.5".parse().unwrap()));
        assert_eq!((e.id, e.zone), (Some(258), 3));
    }

    #[test]
    fn from_attributes_without_ports_is_not_an_entry_we_handle() {
        let icmp = vec![ConntrackAttribute::CtaTupleOrig(vec![Tuple::Ip(vec![
            IPTuple::SourceAddress("192.0.2.2".parse().unwrap()),
            IPTuple::DestinationAddress("192.0.2.1".parse().unwrap()),
        ])])];
        assert_eq!(Entry::from_attributes(Family::V4, &icmp), None);
        assert_eq!(Entry::from_attributes(Family::V4, &[]), None);
    }

    #[test]
    fn display_shows_translation() {
        let e = Entry {
            family: Family::V4,
            protocol: 17,
            src: "192.0.2.2".parse().unwrap(),
            dst: "192.0.2.1".parse().unwrap(),
            src_port: 40000,
            dst_port: 8125,
            reply_src: Some("198.51.100.5".parse().unwrap()),
            id: Some(7),
            zone: 0,
        };
        assert_eq!(e.to_string(), "udp 192.0.2.2:40000 -> 192.0.2.1:8125 (DNAT to 198.51.100.5)");
        let v6 = Entry {
            family: Family::V6,
            src: "2001:db8::2".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            reply_src: Some("2001:db8::1".parse().unwrap()),
            ..e
        };
        assert_eq!(v6.to_string(), "udp [2001:db8::2]:40000 -> [2001:db8::1]:8125 (not translated)");
    }
}
