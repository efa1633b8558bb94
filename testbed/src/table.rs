//! Conntrack tables for tests: filled in bulk through batched `CT_NEW`
//! (written here, not with the tool's code), read back with conntrack-tools.

use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

use flush_conntrack::ctnetlink::socket::CtSocket;
use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use crate::netns::Netns;

const CTA_ZONE: u16 = 18;

/// One conntrack entry as a test describes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Flow {
    pub protocol: &'static str,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    /// Source of the reply: the DNAT target, or `dst` when not translated.
    pub reply_src: IpAddr,
    pub zone: u16,
}

impl Flow {
    pub fn udp(src: &str, sport: u16, dst: &str, dport: u16, reply_src: &str) -> Flow {
        Flow {
            protocol: "udp",
            src: src.parse().expect("test address"),
            sport,
            dst: dst.parse().expect("test address"),
            dport,
            reply_src: reply_src.parse().expect("test address"),
            zone: 0,
        }
    }

    pub fn tcp(src: &str, sport: u16, dst: &str, dport: u16, reply_src: &str) -> Flow {
        Flow { protocol: "tcp", ..Flow::udp(src, sport, dst, dport, reply_src) }
    }

    pub fn in_zone(self, zone: u16) -> Flow {
        Flow { zone, ..self }
    }

    /// What identifies the entry in the table (the original tuple and zone).
    pub fn key(&self) -> (String, IpAddr, u16, IpAddr, u16, u16) {
        (self.protocol.to_owned(), self.src, self.sport, self.dst, self.dport, self.zone)
    }

    /// Inserts it with conntrack-tools, one process per entry: for the
    /// handful of entries a behaviour test needs, and for TCP state.
    pub fn insert_with_conntrack(&self, ns: &Netns) {
        let argv = self.conntrack_insert();
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        ns.exec(&argv);
    }

    /// The `conntrack -I` command line that creates it.
    pub fn conntrack_insert(&self) -> Vec<String> {
        let mut argv: Vec<String> =
            ["conntrack", "-I", "-p", self.protocol, "-t", "600"].iter().map(|s| s.to_string()).collect();
        for (flag, value) in [
            ("-s", self.src.to_string()),
            ("-d", self.dst.to_string()),
            ("--sport", self.sport.to_string()),
            ("--dport", self.dport.to_string()),
            ("-r", self.reply_src.to_string()),
            ("-q", self.src.to_string()),
            ("--reply-port-src", self.dport.to_string()),
            ("--reply-port-dst", self.sport.to_string()),
            ("-w", self.zone.to_string()),
        ] {
            argv.push(flag.to_owned());
            argv.push(value);
        }
        if self.protocol == "tcp" {
            argv.extend(["--state", "ESTABLISHED"].map(String::from));
        }
        argv
    }

    fn create_message(&self, timeout: u32) -> NetlinkMessage<NetfilterMessage> {
        let tuple = |src: IpAddr, dst: IpAddr, sport: u16, dport: u16| {
            vec![
                Tuple::Ip(vec![IPTuple::SourceAddress(src), IPTuple::DestinationAddress(dst)]),
                Tuple::Proto(vec![
                    ProtoTuple::Protocol(Protocol::Udp),
                    ProtoTuple::SourcePort(sport),
                    ProtoTuple::DestinationPort(dport),
                ]),
            ]
        };
        let mut attributes = vec![
            ConntrackAttribute::CtaTupleOrig(tuple(self.src, self.dst, self.sport, self.dport)),
            ConntrackAttribute::CtaTupleReply(tuple(self.reply_src, self.src, self.dport, self.sport)),
            ConntrackAttribute::CtaTimeout(timeout),
        ];
        if self.zone != 0 {
            attributes
                .push(ConntrackAttribute::Other(DefaultNla::new(CTA_ZONE, self.zone.to_be_bytes().to_vec())));
        }
        let family = if self.src.is_ipv4() { NetfilterProtoFamily::IPv4 } else { NetfilterProtoFamily::IPv6 };
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                ConntrackMessage::New(attributes),
            )),
        );
        msg.finalize();
        msg
    }
}

/// Entries of every kind a selection must tell apart: `delete` are stale
/// for [`MIXED_ENV`], `stay` are not.
pub struct Mixed {
    pub delete: Vec<Flow>,
    pub stay: Vec<Flow>,
}

pub fn mixed() -> Mixed {
    Mixed {
        delete: vec![
            // stale: translated to the old pod
            Flow::udp("192.0.2.2", 40000, "192.0.2.1", 8125, "198.51.100.5"),
            // created while no pod existed: never translated
            Flow::udp("192.0.2.4", 40002, "192.0.2.1", 8125, "192.0.2.1"),
            // in a port range
            Flow::udp("192.0.2.2", 40006, "192.0.2.1", 8050, "198.51.100.5"),
            // in another conntrack zone
            Flow::udp("192.0.2.5", 40007, "192.0.2.1", 8125, "198.51.100.5").in_zone(7),
            // IPv6, stale
            Flow::udp("2001:db8::2", 40000, "2001:db8::1", 8125, "2001:db8:1::5"),
        ],
        stay: vec![
            // kept: already reaches the live pod
            Flow::udp("192.0.2.3", 40001, "192.0.2.1", 8125, "198.51.100.6"),
            Flow::udp("2001:db8::3", 40002, "2001:db8::1", 8125, "2001:db8:1::6"),
            // other port, just outside the range, other address, other protocol
            Flow::udp("192.0.2.2", 40003, "192.0.2.1", 9999, "198.51.100.5"),
            Flow::udp("192.0.2.2", 40008, "192.0.2.1", 8101, "198.51.100.5"),
            Flow::udp("192.0.2.2", 40004, "192.0.2.9", 8125, "198.51.100.5"),
            Flow::tcp("192.0.2.2", 40005, "192.0.2.1", 8125, "198.51.100.5"),
            // IPv6 to another address: the kernel's inverted IPv6 address
            // filter would return exactly this one
            Flow::udp("2001:db8::2", 40001, "2001:db8::9", 8125, "2001:db8:1::5"),
        ],
    }
}

/// The selection [`mixed`] is made for.
pub const MIXED_ENV: &[(&str, &str)] = &[
    ("MODE", "flush"),
    ("TARGET_IP", "192.0.2.1,2001:db8::1"),
    ("TARGET_PORT", "8125,8000-8100"),
    ("KEEP_DNAT_TO", "198.51.100.6,2001:db8:1::6"),
];

/// `count` distinct UDP flows from the RFC 2544 benchmarking range to
/// `dst:dport`, each answered by `reply_src` (a pod IP, or `dst` itself).
pub fn udp_flows(count: usize, dst: &str, dport: u16, reply_src: &str, first: usize) -> Vec<Flow> {
    (first..first + count)
        .map(|i| {
            let host = (i / 60_000) as u32;
            let sport = 1024 + (i % 60_000) as u16;
            let src = u32::from(Ipv4Addr::new(198, 18, 0, 1)) + host;
            let dst: IpAddr = dst.parse().expect("test address");
            let src = if dst.is_ipv4() {
                IpAddr::V4(Ipv4Addr::from(src))
            } else {
                IpAddr::V6(format!("2001:db8:18::{:x}", host + 1).parse().expect("test address"))
            };
            Flow {
                protocol: "udp",
                src,
                sport,
                dst,
                dport,
                reply_src: reply_src.parse().expect("test address"),
                zone: 0,
            }
        })
        .collect()
}

/// Creates UDP flows in `ns` through batched `CT_NEW` messages, many to a
/// send. Returns how many the kernel refused.
pub fn insert(ns: &Netns, flows: &[Flow]) -> usize {
    ns.within(|| insert_here(flows))
}

/// Like [`insert`], in this thread's own network namespace.
pub fn insert_here(flows: &[Flow]) -> usize {
    // The tool's socket carries the batches; what they say is encoded here.
    let mut socket = CtSocket::open().expect("netlink socket");
    socket.grow_buffers(4 << 20, 4 << 20);
    socket.cap_acks().expect("cap ack");
    let mut refused = 0;
    let mut buf = Vec::with_capacity(1 << 20);
    for chunk in flows.chunks(2000) {
        buf.clear();
        for (i, flow) in chunk.iter().enumerate() {
            let mut msg = flow.create_message(600);
            msg.header.sequence_number = i as u32 + 1;
            let start = buf.len();
            buf.resize(start + msg.buffer_len(), 0);
            msg.serialize(&mut buf[start..]);
        }
        socket.send(&buf).expect("send CT_NEW batch");
        socket.drain_errors(|_| refused += 1).expect("read the answers to CT_NEW");
    }
    refused
}

/// An entry as `conntrack -L -o extended,id` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub flow: Flow,
    pub id: u32,
}

/// Every entry of both families, read with conntrack-tools.
pub fn list(ns: &Netns) -> Vec<Listed> {
    let mut all = Vec::new();
    for family in ["ipv4", "ipv6"] {
        let out = ns.exec(&["conntrack", "-L", "-f", family, "-o", "extended,id"]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(listed) = parse_line(line) {
                all.push(listed);
            }
        }
    }
    all
}

/// Number of entries in the namespace's table, all families.
pub fn count(ns: &Netns) -> usize {
    let out = ns.exec(&["conntrack", "-C"]);
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("conntrack -C prints a number")
}

/// One line of `conntrack -L -o extended,id`.
pub fn parse_line(line: &str) -> Option<Listed> {
    let protocol = line.split_whitespace().take_while(|w| !w.contains('=')).find_map(|w| match w {
        "udp" => Some("udp"),
        "tcp" => Some("tcp"),
        "sctp" => Some("sctp"),
        _ => None,
    })?;
    let (mut src, mut dst, mut sport, mut dport, mut reply_src) = (None, None, None, None, None);
    let (mut id, mut zone) = (None, 0);
    for word in line.split_whitespace() {
        let Some((key, value)) = word.split_once('=') else { continue };
        match key {
            "src" if src.is_none() => src = value.parse().ok(),
            "src" if reply_src.is_none() => reply_src = value.parse().ok(),
            "dst" if dst.is_none() => dst = value.parse().ok(),
            "sport" if sport.is_none() => sport = value.parse().ok(),
            "dport" if dport.is_none() => dport = value.parse().ok(),
            "zone" => zone = value.parse().ok()?,
            "id" => id = value.parse().ok(),
            _ => {}
        }
    }
    Some(Listed {
        flow: Flow {
            protocol,
            src: src?,
            sport: sport?,
            dst: dst?,
            dport: dport?,
            reply_src: reply_src?,
            zone,
        },
        id: id?,
    })
}

/// Empties the namespace's table.
pub fn clear(ns: &Netns) {
    let _ = Command::new("ip").args(["netns", "exec", &ns.name, "conntrack", "-F"]).output();
}

/// How many entries `conntrack -L` shows with these filter arguments.
pub fn count_listed(ns: &Netns, filter: &[&str]) -> usize {
    let argv: Vec<&str> = ["conntrack", "-L"].iter().chain(filter).copied().collect();
    let out = ns.exec(&argv);
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("src=")).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_conntrack_list_lines() {
        let l = parse_line("ipv4     2 udp      17 260 src=192.0.2.3 dst=192.0.2.1 sport=40002 dport=9999 [UNREPLIED] src=198.51.100.5 dst=192.0.2.3 sport=9999 dport=40002 mark=0 zone=7 use=1 id=3510720363").unwrap();
        assert_eq!(l.flow, Flow::udp("192.0.2.3", 40002, "192.0.2.1", 9999, "198.51.100.5").in_zone(7));
        assert_eq!(l.id, 3510720363);
        assert!(parse_line("conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.").is_none());
    }
}
