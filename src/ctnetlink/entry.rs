//! A conntrack entry as the flush sees it: the original tuple, where the
//! reply comes from, and what the kernel needs to delete exactly this entry.

use std::fmt;
use std::net::IpAddr;

use netlink_packet_core::{DecodeError, Emitable, Nla, NlasIterator, NLA_HEADER_SIZE};

use super::uapi::{
    CTA_ID, CTA_IP_V4_DST, CTA_IP_V4_SRC, CTA_IP_V6_DST, CTA_IP_V6_SRC, CTA_PROTO_DST_PORT, CTA_PROTO_NUM,
    CTA_PROTO_SRC_PORT, CTA_TUPLE_IP, CTA_TUPLE_ORIG, CTA_TUPLE_PROTO, CTA_TUPLE_REPLY, CTA_ZONE,
};
use super::{Family, Protocol};

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
    /// Reads an entry from the attributes of a dumped `IPCTNL_MSG_CT_NEW`,
    /// in place: a dump can carry a million entries, and only these few
    /// fields of each matter. `Ok(None)` for an entry without an address or
    /// port pair (ICMP, GRE, ...): never ours to delete.
    pub fn from_bytes(family: Family, attributes: &[u8]) -> Result<Option<Entry>, DecodeError> {
        let mut orig = Endpoints::default();
        let mut reply = Endpoints::default();
        let mut id = None;
        let mut zone = 0;
        for nla in NlasIterator::new(attributes) {
            let nla = nla?;
            match nla.kind() {
                CTA_TUPLE_ORIG => orig = Endpoints::read(nla.value())?,
                CTA_TUPLE_REPLY => reply = Endpoints::read(nla.value())?,
                CTA_ID => id = Some(u32::from_be_bytes(fixed(nla.value())?)),
                CTA_ZONE => zone = u16::from_be_bytes(fixed(nla.value())?),
                _ => {}
            }
        }
        let entry = (|| {
            Some(Entry {
                family,
                protocol: orig.protocol?,
                src: orig.src?,
                dst: orig.dst?,
                src_port: orig.src_port?,
                dst_port: orig.dst_port?,
                reply_src: reply.src,
                id,
                zone,
            })
        })();
        Ok(entry)
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
    fn read(tuple: &[u8]) -> Result<Self, DecodeError> {
        let mut e = Endpoints::default();
        for part in NlasIterator::new(tuple) {
            let part = part?;
            match part.kind() {
                CTA_TUPLE_IP => {
                    for ip in NlasIterator::new(part.value()) {
                        let ip = ip?;
                        match ip.kind() {
                            CTA_IP_V4_SRC => e.src = Some(IpAddr::from(fixed::<4>(ip.value())?)),
                            CTA_IP_V4_DST => e.dst = Some(IpAddr::from(fixed::<4>(ip.value())?)),
                            CTA_IP_V6_SRC => e.src = Some(IpAddr::from(fixed::<16>(ip.value())?)),
                            CTA_IP_V6_DST => e.dst = Some(IpAddr::from(fixed::<16>(ip.value())?)),
                            _ => {}
                        }
                    }
                }
                CTA_TUPLE_PROTO => {
                    for p in NlasIterator::new(part.value()) {
                        let p = p?;
                        match p.kind() {
                            CTA_PROTO_NUM => e.protocol = Some(fixed::<1>(p.value())?[0]),
                            CTA_PROTO_SRC_PORT => e.src_port = Some(u16::from_be_bytes(fixed(p.value())?)),
                            CTA_PROTO_DST_PORT => e.dst_port = Some(u16::from_be_bytes(fixed(p.value())?)),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(e)
    }
}

/// A fixed-size attribute value, refusing any other length.
fn fixed<const N: usize>(value: &[u8]) -> Result<[u8; N], DecodeError> {
    value
        .try_into()
        .map_err(|_| DecodeError::from(format!("attribute of {} bytes where {N} were expected", value.len())))
}

/// The value of a fixed-size attribute that the crate does not model.
pub(super) fn value<const N: usize>(nla: &impl Nla) -> Option<[u8; N]> {
    if nla.value_len() != N {
        return None;
    }
    let mut buf = vec![0u8; nla.buffer_len()];
    nla.emit(&mut buf);
    buf.get(NLA_HEADER_SIZE..NLA_HEADER_SIZE + N)?.try_into().ok()
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match Protocol::from_number(self.protocol) {
            Some(p) => p.to_string(),
            None => format!("proto {}", self.protocol),
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
    use netlink_packet_netfilter::conntrack::{
        ConntrackAttribute, IPTuple, ProtoTuple, Protocol as NfProtocol, Tuple,
    };

    /// Wire bytes of attributes, as netlink-packet-netfilter emits them: the
    /// zero-copy reader is checked against the crate's typed writer.
    fn wire(attributes: &[ConntrackAttribute]) -> Vec<u8> {
        let mut bytes = vec![0; attributes.buffer_len()];
        attributes.emit(&mut bytes);
        bytes
    }

    fn tuple(src: &str, dst: &str, sport: u16, dport: u16) -> Vec<Tuple> {
        vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(src.parse().unwrap()),
                IPTuple::DestinationAddress(dst.parse().unwrap()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(NfProtocol::Udp),
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
        let e = Entry::from_bytes(Family::V4, &wire(&attributes)).unwrap().unwrap();
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
        assert_eq!(Entry::from_bytes(Family::V4, &wire(&icmp)).unwrap(), None);
        assert_eq!(Entry::from_bytes(Family::V4, &[]).unwrap(), None);
    }

    #[test]
    fn from_bytes_reads_ipv6_and_refuses_malformed_values() {
        let v6 = vec![ConntrackAttribute::CtaTupleOrig(tuple("2001:db8::2", "2001:db8::1", 1, 53))];
        let e = Entry::from_bytes(Family::V6, &wire(&v6)).unwrap().unwrap();
        assert_eq!(
            (e.src.to_string(), e.dst.to_string(), e.dst_port),
            ("2001:db8::2".into(), "2001:db8::1".into(), 53)
        );
        let short_id = vec![ConntrackAttribute::Other(DefaultNla::new(CTA_ID, vec![1, 2]))];
        assert!(Entry::from_bytes(Family::V4, &wire(&short_id)).is_err());
        assert!(Entry::from_bytes(Family::V4, &[8, 0, 1, 0, 1]).is_err(), "truncated attribute");
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
