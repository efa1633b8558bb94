//! Typed builders of the ctnetlink requests the flush sends. Attributes that
//! netlink-packet-netfilter 0.4 does not model (`CTA_ID`, `CTA_ZONE`,
//! `CTA_FILTER`) travel as `DefaultNla`.

use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NLA_F_NESTED, NLA_HEADER_SIZE,
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Tuple};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::uapi::{
    CTA_FILTER, CTA_FILTER_F_CTA_IP_DST, CTA_FILTER_F_CTA_PROTO_DST_PORT, CTA_FILTER_F_CTA_PROTO_NUM,
    CTA_FILTER_ORIG_FLAGS, CTA_ID, CTA_ZONE, IPCTNL_MSG_CT_DELETE, IPCTNL_MSG_CT_GET,
    IPCTNL_MSG_CT_GET_STATS,
};
use super::{Entry, Filter};

pub type Message = NetlinkMessage<NetfilterMessage>;

fn envelope(family: NetfilterProtoFamily, flags: u16, inner: ConntrackMessage) -> Message {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::from(NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), inner)),
    );
    msg.finalize();
    msg
}

/// A partial original tuple plus the `CTA_FILTER` that tells the kernel which
/// of its fields to compare. The kernel rejects an un-nested `CTA_FILTER`.
fn filter_attributes(filter: &Filter) -> Vec<ConntrackAttribute> {
    let mut flags = CTA_FILTER_F_CTA_PROTO_NUM;
    let mut tuple = Vec::new();
    if let Some(ip) = filter.dst_ip {
        flags |= CTA_FILTER_F_CTA_IP_DST;
        tuple.push(Tuple::Ip(vec![IPTuple::DestinationAddress(ip)]));
    }
    let mut proto = vec![ProtoTuple::Protocol(filter.protocol.number().into())];
    if let Some(port) = filter.dst_port {
        flags |= CTA_FILTER_F_CTA_PROTO_DST_PORT;
        proto.push(ProtoTuple::DestinationPort(port));
    }
    tuple.push(Tuple::Proto(proto));
    // The kernel reads the filter flags in host byte order.
    let orig_flags = DefaultNla::new(CTA_FILTER_ORIG_FLAGS, flags.to_ne_bytes().to_vec());
    let mut nested = vec![0; orig_flags.buffer_len()];
    orig_flags.emit(&mut nested);
    vec![
        ConntrackAttribute::CtaTupleOrig(tuple),
        ConntrackAttribute::Other(DefaultNla::new(CTA_FILTER | NLA_F_NESTED, nested)),
    ]
}

/// netlink-packet-netfilter 0.4 emits `ConntrackAttribute::Other` without
/// its `NLA_F_NESTED` bit (its `is_nested` knows only its own nested kinds),
/// and the kernel refuses such a `CTA_FILTER`. A `DefaultNla` keeps the bit,
/// so requests with a filter carry every attribute in that form.
fn raw(attribute: &ConntrackAttribute) -> DefaultNla {
    let mut bytes = vec![0; attribute.buffer_len()];
    attribute.emit(&mut bytes);
    let nested = if attribute.is_nested() { NLA_F_NESTED } else { 0 };
    let value =
        bytes.get(NLA_HEADER_SIZE..NLA_HEADER_SIZE + attribute.value_len()).unwrap_or_default().to_vec();
    DefaultNla::new(attribute.kind() | nested, value)
}

fn filtered(filter: &Filter, message_type: u8, flags: u16) -> Message {
    let attributes = filter_attributes(filter).iter().map(raw).collect();
    envelope(filter.family.into(), flags, ConntrackMessage::Other { message_type, attributes })
}

/// Dump of one family's table, narrowed in the kernel (Linux 5.8+; older
/// kernels ignore the filter and return everything).
pub fn dump(filter: &Filter) -> Message {
    filtered(filter, IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP)
}

/// Deletes every entry of the slice inside the kernel (Linux 6.12+). It
/// always carries a partial tuple: an `IPCTNL_MSG_CT_DELETE` without one
/// flushes the whole table on older kernels, and with one they answer EINVAL
/// instead.
pub fn filtered_flush(filter: &Filter) -> Message {
    filtered(filter, IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST | NLM_F_ACK)
}

/// Deletes exactly this entry: full original tuple, zone and ID. No ACK is
/// asked for; only a failure answers.
pub fn delete(entry: &Entry) -> Message {
    let tuple = vec![
        Tuple::Ip(vec![IPTuple::SourceAddress(entry.src), IPTuple::DestinationAddress(entry.dst)]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(entry.protocol.into()),
            ProtoTuple::SourcePort(entry.src_port),
            ProtoTuple::DestinationPort(entry.dst_port),
        ]),
    ];
    let mut attributes = vec![ConntrackAttribute::CtaTupleOrig(tuple)];
    if let Some(id) = entry.id {
        attributes.push(ConntrackAttribute::Other(DefaultNla::new(CTA_ID, id.to_be_bytes().to_vec())));
    }
    if entry.zone != 0 {
        attributes
            .push(ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, entry.zone.to_be_bytes().to_vec())));
    }
    envelope(entry.family.into(), NLM_F_REQUEST, ConntrackMessage::Delete(attributes))
}

/// The namespace's table size (`CTA_STATS_GLOBAL_ENTRIES`), used to count
/// what a filtered flush deleted: the kernel does not say.
pub fn table_size() -> Message {
    envelope(
        NetfilterProtoFamily::Unspec,
        NLM_F_REQUEST,
        ConntrackMessage::Other { message_type: IPCTNL_MSG_CT_GET_STATS, attributes: vec![] },
    )
}

/// Appends the message to `buf` with the given sequence number.
pub fn emit_into(msg: &mut Message, sequence: u32, buf: &mut Vec<u8>) {
    msg.header.sequence_number = sequence;
    let start = buf.len();
    buf.resize(start + msg.buffer_len(), 0);
    msg.serialize(&mut buf[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctnetlink::{Family, Protocol};

    fn bytes(mut msg: Message, seq: u32) -> Vec<u8> {
        let mut buf = Vec::new();
        emit_into(&mut msg, seq, &mut buf);
        buf
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    /// Parses the wire bytes back and compares them with the typed message
    /// the crate would build, had it emitted nested `Other` attributes.
    fn round_trip(msg: Message, seq: u32, typed: Option<ConntrackMessage>) {
        let mut expected = msg.clone();
        expected.header.sequence_number = seq;
        if let Some(typed) = typed {
            if let NetlinkPayload::InnerMessage(nf) = &mut expected.payload {
                nf.inner = typed.into();
            }
        }
        let wire = bytes(msg, seq);
        let parsed = Message::deserialize(&wire).unwrap();
        assert_eq!(parsed, expected);
        assert_eq!(parsed.header.length as usize, wire.len());
    }

    fn v4_slice(port: Option<u16>) -> Filter {
        Filter {
            family: Family::V4,
            protocol: Protocol::Udp,
            dst_ip: Some("192.0.2.1".parse().unwrap()),
            dst_port: port,
        }
    }

    #[test]
    fn dump_v4_address_protocol_port() {
        let expected = hex("44000000 0101 0103 01000000 00000000  02000000
             24000180  0c000180 08000200 c0000201
                       14000280 05000100 11000000 06000300 1fbd0000
             0c001980  08000100 2a000000");
        assert_eq!(bytes(dump(&v4_slice(Some(8125))), 1), expected);
        let typed = ConntrackMessage::Get(filter_attributes(&v4_slice(Some(8125))));
        round_trip(dump(&v4_slice(Some(8125))), 1, Some(typed));
    }

    #[test]
    fn dump_v6_protocol_only() {
        let slice = Filter { family: Family::V6, protocol: Protocol::Tcp, dst_ip: None, dst_port: None };
        let expected = hex("30000000 0101 0103 07000000 00000000  0a000000
             10000180  0c000280 05000100 06000000
             0c001980  08000100 08000000");
        assert_eq!(bytes(dump(&slice), 7), expected);
        round_trip(dump(&slice), 7, Some(ConntrackMessage::Get(filter_attributes(&slice))));
    }

    #[test]
    fn filtered_flush_is_an_acked_delete_with_a_partial_tuple() {
        let expected = hex("44000000 0201 0500 02000000 00000000  02000000
             24000180  0c000180 08000200 c0000201
                       14000280 05000100 11000000 06000300 1fbd0000
             0c001980  08000100 2a000000");
        assert_eq!(bytes(filtered_flush(&v4_slice(Some(8125))), 2), expected);
        let typed = ConntrackMessage::Delete(filter_attributes(&v4_slice(Some(8125))));
        round_trip(filtered_flush(&v4_slice(Some(8125))), 2, Some(typed));
    }

    fn entry(family: Family, src: &str, dst: &str, zone: u16) -> Entry {
        Entry {
            family,
            protocol: 17,
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            src_port: 40000,
            dst_port: 8125,
            reply_src: None,
            id: Some(0x01020304),
            zone,
        }
    }

    #[test]
    fn delete_v4_full_tuple_and_id_without_ack() {
        let e = entry(Family::V4, "192.0.2.2", "192.0.2.1", 0);
        let expected = hex("50000000 0201 0100 03000000 00000000  02000000
             34000180  14000180 08000100 c0000202 08000200 c0000201
                       1c000280 05000100 11000000 06000200 9c400000 06000300 1fbd0000
             08000c00 01020304");
        assert_eq!(bytes(delete(&e), 3), expected);
        round_trip(delete(&e), 3, None);
    }

    #[test]
    fn delete_v6_in_a_zone() {
        let e = entry(Family::V6, "2001:db8::2", "2001:db8::1", 5);
        let expected = hex("70000000 0201 0100 04000000 00000000  0a000000
             4c000180  2c000180 14000300 20010db8000000000000000000000002
                                14000400 20010db8000000000000000000000001
                       1c000280 05000100 11000000 06000200 9c400000 06000300 1fbd0000
             08000c00 01020304
             06001200 00050000");
        assert_eq!(bytes(delete(&e), 4), expected);
        round_trip(delete(&e), 4, None);
    }

    #[test]
    fn table_size_request() {
        assert_eq!(bytes(table_size(), 9), hex("14000000 0501 0100 09000000 00000000 00000000"));
        round_trip(table_size(), 9, None);
    }

    #[test]
    fn emit_into_appends() {
        let mut buf = vec![0xaa];
        emit_into(&mut table_size(), 1, &mut buf);
        emit_into(&mut table_size(), 2, &mut buf);
        assert_eq!(buf.len(), 1 + 2 * 20);
        assert_eq!(buf[0], 0xaa);
        assert_eq!(&buf[9..13], &[1, 0, 0, 0]);
        assert_eq!(&buf[29..33], &[2, 0, 0, 0]);
    }
}
