//! The wire: conntrack over netlink (ctnetlink), as far as the flush needs
//! it. The kernel's numbers under its own names ([`uapi`]), requests built
//! by typed builders ([`request`]), dumped entries read in place
//! ([`entry`]), one socket ([`socket`]) and batched deletes ([`delete`]),
//! failing with a [`WireError`]. Which entries to delete is decided
//! elsewhere (`flush`).

pub mod delete;
pub mod entry;
pub mod request;
pub mod socket;
pub(crate) mod uapi;

use std::fmt;
use std::net::IpAddr;

use netlink_packet_netfilter::NetfilterProtoFamily;

pub use crate::error::WireError;
pub use entry::Entry;

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

    /// The family of a message's `nfgen_family`, if it is one of ours.
    pub fn from_netfilter(family: NetfilterProtoFamily) -> Option<Self> {
        match family {
            NetfilterProtoFamily::IPv4 => Some(Family::V4),
            NetfilterProtoFamily::IPv6 => Some(Family::V6),
            _ => None,
        }
    }
}

impl From<Family> for NetfilterProtoFamily {
    fn from(family: Family) -> Self {
        match family {
            Family::V4 => NetfilterProtoFamily::IPv4,
            Family::V6 => NetfilterProtoFamily::IPv6,
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

/// The transport protocols whose flows have ports a hostPort can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Udp,
    Tcp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Udp, Protocol::Tcp, Protocol::Sctp];

    /// The IP protocol number, as conntrack tuples carry it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn from_number(number: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.number() == number)
    }
}

/// As conntrack(8) lists them, for the log.
impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Sctp => "sctp",
        })
    }
}

/// The fields of an original tuple the kernel compares before an entry
/// reaches us (a dump filter, Linux 5.8+) or deletes it (a filtered flush,
/// Linux 6.12+). `None`: any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    pub family: Family,
    pub protocol: Protocol,
    /// IPv4 only: the kernel's IPv6 address comparison is inverted
    /// (docs/ctnetlink.md), so IPv6 addresses are compared in userspace.
    pub dst_ip: Option<IpAddr>,
    pub dst_port: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_by_number() {
        for p in Protocol::ALL {
            assert_eq!(Protocol::from_number(p.number()), Some(p));
        }
        assert_eq!((Protocol::Udp.number(), Protocol::Tcp.number(), Protocol::Sctp.number()), (17, 6, 132));
        assert_eq!(Protocol::from_number(1), None);
        assert_eq!(Protocol::Sctp.to_string(), "sctp");
    }
}
