//! The kernel's own limit for a benchmark case: one filtered `CT_DELETE`
//! (Linux 6.12+), sent from a thread inside the namespace. Encoded here
//! byte by byte, independently of the tool.

use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::netns::Netns;

const NESTED: u16 = 0x8000;

fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len() + 3);
    out.extend_from_slice(&((4 + payload.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    nla(kind | NESTED, &parts.concat())
}

/// Deletes, inside the kernel, UDP entries to `dport` (and to `dst`, for
/// IPv4), whose reply comes from `reply_src` when given. Returns how long the
/// kernel took to answer.
pub fn filtered_flush(
    ns: &Netns,
    dst: IpAddr,
    dport: u16,
    reply_src: Option<IpAddr>,
) -> io::Result<Duration> {
    ns.within(|| -> io::Result<Duration> {
        let (family, v4) = match dst {
            IpAddr::V4(_) => (2u8, true),
            IpAddr::V6(_) => (10u8, false),
        };
        // Filter bits: IP_SRC 1, IP_DST 2, PROTO_NUM 8, PROTO_DST_PORT 32.
        let mut orig = Vec::new();
        let mut orig_flags: u32 = 8 | 32;
        if let IpAddr::V4(a) = dst {
            orig.push(nest(1, &[nla(2, &a.octets())]));
            orig_flags |= 2;
        }
        orig.push(nest(2, &[nla(1, &[17]), nla(3, &dport.to_be_bytes())]));
        let mut attributes = vec![nest(1, &orig)];
        let mut filter = vec![nla(1, &orig_flags.to_ne_bytes())];
        if let (Some(IpAddr::V4(r)), true) = (reply_src, v4) {
            attributes.push(nest(2, &[nest(1, &[nla(1, &r.octets())]), nest(2, &[nla(1, &[17])])]));
            filter.push(nla(2, &(1u32 | 8).to_ne_bytes()));
        }
        attributes.push(nest(25, &filter));
        let body = attributes.concat();
        let mut msg = Vec::new();
        msg.extend_from_slice(&((16 + 4 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&0x0102u16.to_ne_bytes());
        msg.extend_from_slice(&(1u16 | 4).to_ne_bytes());
        msg.extend_from_slice(&1u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[family, 0, 0, 0]);
        msg.extend_from_slice(&body);

        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let started = Instant::now();
        socket.send(&msg, 0)?;
        let mut answer = vec![0u8; 8192];
        let n = socket.recv(&mut &mut answer[..], 0)?;
        let took = started.elapsed();
        if n >= 20 {
            let code = i32::from_ne_bytes([answer[16], answer[17], answer[18], answer[19]]);
            if code != 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
        }
        Ok(took)
    })
}
