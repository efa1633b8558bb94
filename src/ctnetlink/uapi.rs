//! The kernel's numbers, under the kernel's names, so that each can be
//! grepped in include/uapi/linux/netfilter/nfnetlink_conntrack.h and
//! nfnetlink.h. netlink-packet-core exports the `NLM_F_*` and `NLA_*` ones;
//! netlink-packet-netfilter 0.4 keeps its own private.

/// `enum cntl_msg_types`: the low byte of `nlmsg_type`.
pub const IPCTNL_MSG_CT_NEW: u8 = 0;
pub const IPCTNL_MSG_CT_GET: u8 = 1;
pub const IPCTNL_MSG_CT_DELETE: u8 = 2;
pub const IPCTNL_MSG_CT_GET_STATS: u8 = 5;

/// The high byte of `nlmsg_type` (nfnetlink.h).
pub const NFNL_SUBSYS_CTNETLINK: u8 = 1;

/// `enum ctattr_type`: a message's top-level attributes.
pub const CTA_TUPLE_ORIG: u16 = 1;
pub const CTA_TUPLE_REPLY: u16 = 2;
pub const CTA_ID: u16 = 12;
pub const CTA_ZONE: u16 = 18;
pub const CTA_FILTER: u16 = 25;

/// `enum ctattr_tuple`: inside `CTA_TUPLE_*`.
pub const CTA_TUPLE_IP: u16 = 1;
pub const CTA_TUPLE_PROTO: u16 = 2;

/// `enum ctattr_ip`: inside `CTA_TUPLE_IP`.
pub const CTA_IP_V4_SRC: u16 = 1;
pub const CTA_IP_V4_DST: u16 = 2;
pub const CTA_IP_V6_SRC: u16 = 3;
pub const CTA_IP_V6_DST: u16 = 4;

/// `enum ctattr_l4proto`: inside `CTA_TUPLE_PROTO`.
pub const CTA_PROTO_NUM: u16 = 1;
pub const CTA_PROTO_SRC_PORT: u16 = 2;
pub const CTA_PROTO_DST_PORT: u16 = 3;

/// `enum ctattr_filter`: inside `CTA_FILTER`.
pub const CTA_FILTER_ORIG_FLAGS: u16 = 1;

/// `enum ctattr_stats_global`: the answer to `IPCTNL_MSG_CT_GET_STATS`.
pub const CTA_STATS_GLOBAL_ENTRIES: u16 = 1;

/// `CTA_FILTER_ORIG_FLAGS` bits: which fields of the partial tuple the
/// kernel compares. Not in uapi but in net/netfilter/nf_internals.h, which
/// nf_conntrack_netlink.c reads them from; they are ABI all the same
/// (libnetfilter_conntrack carries the same bits).
pub const CTA_FILTER_F_CTA_IP_DST: u32 = 1 << 1;
pub const CTA_FILTER_F_CTA_PROTO_NUM: u32 = 1 << 3;
pub const CTA_FILTER_F_CTA_PROTO_DST_PORT: u32 = 1 << 5;

/// `NLMSG_HDRLEN` (netlink.h): the aligned `struct nlmsghdr`, which
/// netlink-packet-core does not export.
pub const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct nfgenmsg)`: family, version, resource id. The kernel has
/// no name for it.
pub const NFGENMSG_LEN: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{Emitable, NetlinkHeader, Nla};
    use netlink_packet_netfilter::conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
    };
    use netlink_packet_netfilter::{NetfilterHeader, NetfilterProtoFamily, NetfilterSubsystem};

    /// The header's values, as counted out of its enums: a rename that
    /// slips a value fails here.
    #[test]
    fn values_are_the_headers() {
        let table: &[(&str, u32, u32)] = &[
            ("IPCTNL_MSG_CT_NEW", IPCTNL_MSG_CT_NEW.into(), 0),
            ("IPCTNL_MSG_CT_GET", IPCTNL_MSG_CT_GET.into(), 1),
            ("IPCTNL_MSG_CT_DELETE", IPCTNL_MSG_CT_DELETE.into(), 2),
            ("IPCTNL_MSG_CT_GET_STATS", IPCTNL_MSG_CT_GET_STATS.into(), 5),
            ("NFNL_SUBSYS_CTNETLINK", NFNL_SUBSYS_CTNETLINK.into(), 1),
            ("CTA_TUPLE_ORIG", CTA_TUPLE_ORIG.into(), 1),
            ("CTA_TUPLE_REPLY", CTA_TUPLE_REPLY.into(), 2),
            ("CTA_ID", CTA_ID.into(), 12),
            ("CTA_ZONE", CTA_ZONE.into(), 18),
            ("CTA_FILTER", CTA_FILTER.into(), 25),
            ("CTA_TUPLE_IP", CTA_TUPLE_IP.into(), 1),
            ("CTA_TUPLE_PROTO", CTA_TUPLE_PROTO.into(), 2),
            ("CTA_IP_V4_SRC", CTA_IP_V4_SRC.into(), 1),
            ("CTA_IP_V4_DST", CTA_IP_V4_DST.into(), 2),
            ("CTA_IP_V6_SRC", CTA_IP_V6_SRC.into(), 3),
            ("CTA_IP_V6_DST", CTA_IP_V6_DST.into(), 4),
            ("CTA_PROTO_NUM", CTA_PROTO_NUM.into(), 1),
            ("CTA_PROTO_SRC_PORT", CTA_PROTO_SRC_PORT.into(), 2),
            ("CTA_PROTO_DST_PORT", CTA_PROTO_DST_PORT.into(), 3),
            ("CTA_FILTER_ORIG_FLAGS", CTA_FILTER_ORIG_FLAGS.into(), 1),
            ("CTA_STATS_GLOBAL_ENTRIES", CTA_STATS_GLOBAL_ENTRIES.into(), 1),
            ("CTA_FILTER_F_CTA_IP_DST", CTA_FILTER_F_CTA_IP_DST, 0x02),
            ("CTA_FILTER_F_CTA_PROTO_NUM", CTA_FILTER_F_CTA_PROTO_NUM, 0x08),
            ("CTA_FILTER_F_CTA_PROTO_DST_PORT", CTA_FILTER_F_CTA_PROTO_DST_PORT, 0x20),
            ("NLMSG_HDRLEN", NLMSG_HDRLEN as u32, 16),
            ("sizeof(struct nfgenmsg)", NFGENMSG_LEN as u32, 4),
        ];
        for &(name, ours, kernel) in table {
            assert_eq!(ours, kernel, "{name}");
        }
    }

    /// Where another source carries the same number, it agrees: libc, and
    /// the kinds netlink-packet-netfilter's typed attributes emit.
    #[test]
    fn values_agree_with_libc_and_the_crate() {
        assert_eq!(i32::from(NFNL_SUBSYS_CTNETLINK), libc::NFNL_SUBSYS_CTNETLINK);
        assert_eq!(NetfilterSubsystem::from(NFNL_SUBSYS_CTNETLINK), NetfilterSubsystem::Conntrack);
        assert_eq!(NetlinkHeader::default().buffer_len(), NLMSG_HDRLEN);
        let nfgenmsg = NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 0);
        assert_eq!(nfgenmsg.buffer_len(), NFGENMSG_LEN);
        let types = [
            (ConntrackMessage::New(vec![]), IPCTNL_MSG_CT_NEW),
            (ConntrackMessage::Get(vec![]), IPCTNL_MSG_CT_GET),
            (ConntrackMessage::Delete(vec![]), IPCTNL_MSG_CT_DELETE),
        ];
        for (message, ours) in types {
            assert_eq!(u8::from(message.message_type()), ours, "{message:?}");
        }
        let v4 = "192.0.2.1".parse().unwrap();
        let v6 = "2001:db8::1".parse().unwrap();
        let kinds = [
            (ConntrackAttribute::CtaTupleOrig(vec![]).kind(), CTA_TUPLE_ORIG),
            (ConntrackAttribute::CtaTupleReply(vec![]).kind(), CTA_TUPLE_REPLY),
            (Tuple::Ip(vec![]).kind(), CTA_TUPLE_IP),
            (Tuple::Proto(vec![]).kind(), CTA_TUPLE_PROTO),
            (IPTuple::SourceAddress(v4).kind(), CTA_IP_V4_SRC),
            (IPTuple::DestinationAddress(v4).kind(), CTA_IP_V4_DST),
            (IPTuple::SourceAddress(v6).kind(), CTA_IP_V6_SRC),
            (IPTuple::DestinationAddress(v6).kind(), CTA_IP_V6_DST),
            (ProtoTuple::Protocol(Protocol::Udp).kind(), CTA_PROTO_NUM),
            (ProtoTuple::SourcePort(1).kind(), CTA_PROTO_SRC_PORT),
            (ProtoTuple::DestinationPort(1).kind(), CTA_PROTO_DST_PORT),
        ];
        for (i, (crate_kind, ours)) in kinds.into_iter().enumerate() {
            assert_eq!(crate_kind, ours, "row {i}");
        }
    }
}
