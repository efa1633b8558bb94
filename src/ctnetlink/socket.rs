//! One ctnetlink socket: requests out, dump entries and errors in.

use std::io;
use std::ops::ControlFlow;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkBuffer, NetlinkHeader, NetlinkPayload, Nla, Parseable, NLMSG_ALIGNTO, NLM_F_DUMP_FILTERED,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::socket::{getsockopt, setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::request::{self, Message};
use super::uapi::{
    CTA_STATS_GLOBAL_ENTRIES, IPCTNL_MSG_CT_NEW, NFGENMSG_LEN, NFNL_SUBSYS_CTNETLINK, NLMSG_HDRLEN,
};
use super::{Entry, Family};
use crate::error::WireError;

/// Dump messages grow to about 32 KiB; a smaller read truncates them and the
/// dump silently ends early (docs/ctnetlink.md).
const RECV_BUFFER: usize = 64 * 1024;
/// The kernel always answers; this only bounds a wedged kernel or a bug.
const RECV_TIMEOUT: Duration = Duration::from_secs(30);

pub struct CtSocket {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
}

/// What a dump hands its caller.
pub enum Dumped {
    Entry(Entry),
    /// Everything read so far has been handed over; the kernel walks on when
    /// the next read asks for more.
    Paused,
}

/// What a dump told us besides its entries.
#[derive(Debug, Default, Clone, Copy)]
pub struct DumpOutcome {
    /// Messages carried `NLM_F_DUMP_FILTERED`: the kernel applied our filter.
    pub kernel_filtered: bool,
    pub messages: u64,
    /// Entries whose attributes could not be decoded.
    pub undecodable: u64,
    /// The caller stopped the dump; the socket still holds the rest of it
    /// and must be dropped.
    pub stopped: bool,
}

impl CtSocket {
    pub fn open() -> Result<Self, WireError> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        let timeout = TimeVal::new(RECV_TIMEOUT.as_secs() as _, RECV_TIMEOUT.subsec_micros() as _);
        setsockopt(&socket, sockopt::ReceiveTimeout, &timeout)?;
        Ok(Self { socket, sequence: 0, buf: vec![0; RECV_BUFFER] })
    }

    /// Raises the kernel's buffers (forcing past the sysctl caps, which needs
    /// CAP_NET_ADMIN, falling back to the capped call) and returns what the
    /// kernel granted, which it reports doubled.
    pub fn grow_buffers(&self, send: usize, recv: usize) -> (usize, usize) {
        // The kernel takes an int.
        let (send, recv) = (send.min(i32::MAX as usize), recv.min(i32::MAX as usize));
        let socket = &self.socket;
        if setsockopt(socket, sockopt::SndBufForce, &send).is_err() {
            let _ = setsockopt(socket, sockopt::SndBuf, &send);
        }
        if setsockopt(socket, sockopt::RcvBufForce, &recv).is_err() {
            let _ = setsockopt(socket, sockopt::RcvBuf, &recv);
        }
        let send = getsockopt(socket, sockopt::SndBuf).unwrap_or(0);
        let recv = getsockopt(socket, sockopt::RcvBuf).unwrap_or(0);
        (send, recv)
    }

    /// Error answers carry only the failed request's header, not all of it.
    pub fn cap_acks(&self) -> Result<(), WireError> {
        Ok(self.socket.set_cap_ack(true)?)
    }

    pub fn next_sequence(&mut self) -> u32 {
        self.sequence = self.sequence.wrapping_add(1);
        self.sequence
    }

    pub fn send(&self, bytes: &[u8]) -> Result<(), WireError> {
        let sent = self.socket.send(bytes, 0)?;
        if sent != bytes.len() {
            return Err(WireError::ShortSend { sent, len: bytes.len() });
        }
        Ok(())
    }

    fn request(&mut self, mut msg: Message) -> Result<u32, WireError> {
        let sequence = self.next_sequence();
        let mut bytes = Vec::with_capacity(msg.buffer_len());
        request::emit_into(&mut msg, sequence, &mut bytes);
        self.send(&bytes)?;
        Ok(sequence)
    }

    /// Reads one datagram; refuses a truncated one rather than lose entries.
    fn receive(&mut self, flags: libc::c_int) -> Result<usize, WireError> {
        let len = self.socket.recv(&mut &mut self.buf[..], flags | libc::MSG_TRUNC)?;
        whole(len, self.buf.len())
    }

    /// Sends a dump request and hands every entry to `each`, streaming: only
    /// one receive buffer is held, whatever the size of the table. Before
    /// each further read, `each` hears `Dumped::Paused`: the kernel resumes
    /// the walk only when we read. `each` may stop the dump, after which this
    /// socket is of no further use.
    pub fn dump(
        &mut self,
        msg: Message,
        mut each: impl FnMut(Dumped) -> ControlFlow<()>,
    ) -> Result<DumpOutcome, WireError> {
        let sequence = self.request(msg)?;
        let mut outcome = DumpOutcome::default();
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) && each(Dumped::Paused).is_break() {
                outcome.stopped = true;
                return Ok(outcome);
            }
            let len = self.receive(0)?;
            for item in messages(&self.buf[..len]) {
                let (header, payload) = item?;
                if header.sequence_number != sequence {
                    continue;
                }
                match payload {
                    Payload::Done => return Ok(outcome),
                    Payload::Error(code) => return Err(io::Error::from_raw_os_error(code).into()),
                    Payload::Ack => {}
                    Payload::Entry(entry) => {
                        outcome.messages += 1;
                        outcome.kernel_filtered |= header.flags & NLM_F_DUMP_FILTERED != 0;
                        match entry {
                            Ok(Some(entry)) => {
                                if each(Dumped::Entry(entry)).is_break() {
                                    outcome.stopped = true;
                                    return Ok(outcome);
                                }
                            }
                            Ok(None) => {}
                            Err(()) => outcome.undecodable += 1,
                        }
                    }
                    Payload::Conntrack(_) => {}
                }
            }
        }
    }

    /// Sends a request and reads until `answer` makes something of a reply
    /// to it; an error reply ends the wait as an error.
    fn ask<T>(
        &mut self,
        msg: Message,
        mut answer: impl FnMut(Payload) -> Option<Result<T, WireError>>,
    ) -> Result<T, WireError> {
        let sequence = self.request(msg)?;
        loop {
            let len = self.receive(0)?;
            for item in messages(&self.buf[..len]) {
                let (header, payload) = item?;
                if header.sequence_number != sequence {
                    continue;
                }
                if let Payload::Error(code) = payload {
                    return Err(io::Error::from_raw_os_error(code).into());
                }
                if let Some(result) = answer(payload) {
                    return result;
                }
            }
        }
    }

    /// Sends a request with `NLM_F_ACK` and waits for its answer.
    pub fn acknowledged(&mut self, msg: Message) -> Result<(), WireError> {
        self.ask(msg, |payload| matches!(payload, Payload::Ack | Payload::Done).then_some(Ok(())))
    }

    /// Number of entries in this network namespace's table.
    pub fn table_size(&mut self) -> Result<u32, WireError> {
        self.ask(request::table_size(), |payload| {
            let Payload::Conntrack(Some(ConntrackMessage::Other { attributes, .. })) = payload else {
                return None;
            };
            let entries = attributes.iter().find(|nla| nla.kind() == CTA_STATS_GLOBAL_ENTRIES);
            Some(entries.and_then(super::entry::value::<4>).map(u32::from_be_bytes).ok_or(
                WireError::MissingAttribute {
                    message: "IPCTNL_MSG_CT_GET_STATS",
                    attribute: "CTA_STATS_GLOBAL_ENTRIES",
                },
            ))
        })
    }

    /// Collects the error answers already queued, without waiting. The kernel
    /// handles a batch inside `send`, so by then every answer is queued.
    pub fn drain_errors(&mut self, mut each: impl FnMut(i32)) -> Result<(), WireError> {
        loop {
            let len = match self.receive(libc::MSG_DONTWAIT) {
                Ok(len) => len,
                Err(WireError::Os(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            };
            for item in messages(&self.buf[..len]) {
                if let (_, Payload::Error(code)) = item? {
                    each(code);
                }
            }
        }
    }
}

enum Payload {
    Done,
    Ack,
    /// A positive errno.
    Error(i32),
    /// A dumped entry, read in place; `Err` when it did not decode.
    Entry(Result<Option<Entry>, ()>),
    /// Any other ctnetlink message; `None` when it did not decode.
    Conntrack(Option<ConntrackMessage>),
}

/// Splits a datagram into netlink messages and decodes each.
/// With `MSG_TRUNC` the kernel gives a datagram's whole length, even past
/// the buffer: one that filled the buffer exactly is whole, a longer one
/// lost its tail (and the entries in it).
fn whole(len: usize, buffer: usize) -> Result<usize, WireError> {
    match len > buffer {
        true => Err(WireError::Truncated { len, buffer }),
        false => Ok(len),
    }
}

fn messages(mut buf: &[u8]) -> impl Iterator<Item = Result<(NetlinkHeader, Payload), WireError>> + '_ {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let len = match NetlinkBuffer::new_checked(buf) {
            Ok(b) => (b.length() as usize).max(NLMSG_HDRLEN),
            Err(e) => {
                buf = &[];
                return Some(Err(WireError::Decode(e)));
            }
        };
        let aligned = len.next_multiple_of(NLMSG_ALIGNTO.into()).min(buf.len());
        let (one, rest) = buf.split_at(aligned);
        buf = rest;
        Some(decode(one))
    })
}

/// The `nlmsg_type` every dumped entry comes as.
const CT_NEW_TYPE: u16 = u16::from_be_bytes([NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW]);
/// `nfgen_family` is the first byte after the netlink header.
const FAMILY_AT: usize = NLMSG_HDRLEN;
/// nlmsghdr and nfgenmsg precede a ctnetlink message's attributes.
const ATTRIBUTES_AT: usize = NLMSG_HDRLEN + NFGENMSG_LEN;

fn decode(bytes: &[u8]) -> Result<(NetlinkHeader, Payload), WireError> {
    let header = header_of(bytes)?;
    if header.message_type == CT_NEW_TYPE {
        // The hot path: entries are read in place, nothing allocated. One
        // that does not decode must not end the dump: it is counted.
        let family =
            bytes.get(FAMILY_AT).copied().map(NetfilterProtoFamily::from).and_then(Family::from_netfilter);
        let attributes = bytes.get(ATTRIBUTES_AT..header.length as usize);
        let entry = match (family, attributes) {
            (Some(family), Some(attributes)) => Entry::from_bytes(family, attributes).map_err(|_| ()),
            _ => Err(()),
        };
        return Ok((header, Payload::Entry(entry)));
    }
    let payload = match Message::deserialize(bytes) {
        Ok(msg) => match msg.payload {
            NetlinkPayload::Done(_) => Payload::Done,
            NetlinkPayload::Error(e) => match e.code {
                None => Payload::Ack,
                Some(code) => Payload::Error(-code.get()),
            },
            NetlinkPayload::InnerMessage(nf) => match nf.inner {
                NetfilterMessageInner::Conntrack(ct) => Payload::Conntrack(Some(ct)),
                _ => Payload::Ack,
            },
            _ => Payload::Ack,
        },
        Err(_) => Payload::Conntrack(None),
    };
    Ok((header, payload))
}

fn header_of(bytes: &[u8]) -> Result<NetlinkHeader, WireError> {
    let buf = NetlinkBuffer::new_checked(bytes).map_err(WireError::Decode)?;
    NetlinkHeader::parse(&buf).map_err(WireError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroI32;

    use netlink_packet_core::{ErrorMessage, NetlinkMessage};
    use netlink_packet_netfilter::conntrack::{ConntrackAttribute, IPTuple, ProtoTuple, Protocol, Tuple};
    use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage};

    fn wire(mut msg: Message, sequence: u32) -> Vec<u8> {
        msg.header.sequence_number = sequence;
        msg.finalize();
        let mut bytes = vec![0; msg.buffer_len()];
        msg.serialize(&mut bytes);
        bytes
    }

    /// A dumped entry as the kernel sends it, built by the crate's typed
    /// writer: the in-place reader must find it by type, family and offset.
    fn dumped(family: NetfilterProtoFamily, src: &str, dst: &str) -> Message {
        let tuple = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(src.parse().unwrap()),
                IPTuple::DestinationAddress(dst.parse().unwrap()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Udp),
                ProtoTuple::SourcePort(40000),
                ProtoTuple::DestinationPort(8125),
            ]),
        ];
        let inner = ConntrackMessage::New(vec![ConntrackAttribute::CtaTupleOrig(tuple)]);
        NetlinkMessage::from(NetfilterMessage::new(NetfilterHeader::new(family, 0, 0), inner))
    }

    fn answer(code: i32) -> Message {
        let mut error = ErrorMessage::default();
        error.code = NonZeroI32::new(code);
        NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::Error(error))
    }

    #[test]
    fn a_datagram_splits_into_entries_and_answers() {
        let mut datagram = wire(dumped(NetfilterProtoFamily::IPv4, "192.0.2.2", "192.0.2.1"), 3);
        datagram.extend(wire(dumped(NetfilterProtoFamily::IPv6, "2001:db8::2", "2001:db8::1"), 3));
        datagram.extend(wire(answer(-libc::ENOENT), 4));
        datagram.extend(wire(answer(0), 5));
        let decoded: Vec<_> = messages(&datagram).map(Result::unwrap).collect();
        let sequences: Vec<_> = decoded.iter().map(|(h, _)| h.sequence_number).collect();
        assert_eq!(sequences, [3, 3, 4, 5]);
        let (families, dsts): (Vec<_>, Vec<_>) = decoded
            .iter()
            .filter_map(|(_, p)| match p {
                Payload::Entry(Ok(Some(e))) => Some((e.family, e.dst.to_string())),
                _ => None,
            })
            .unzip();
        assert_eq!(families, [Family::V4, Family::V6]);
        assert_eq!(dsts, ["192.0.2.1", "2001:db8::1"]);
        assert!(matches!(decoded[2].1, Payload::Error(libc::ENOENT)));
        assert!(matches!(decoded[3].1, Payload::Ack));
    }

    #[test]
    fn an_undecodable_datagram_is_a_decode_error() {
        let mut datagram = wire(answer(0), 1);
        // A length field past the datagram's end.
        datagram[0] = 0xff;
        let first = messages(&datagram).next();
        assert!(matches!(first, Some(Err(WireError::Decode(_)))), "{:?}", first.map(|r| r.map(|(h, _)| h)));
        assert_eq!(messages(&datagram).count(), 1, "nothing after a bad header is read");
    }

    #[test]
    fn a_datagram_longer_than_the_buffer_is_refused() {
        assert_eq!(whole(65_536, 65_536).unwrap(), 65_536, "exactly full is whole");
        assert_eq!(whole(20, 65_536).unwrap(), 20);
        assert!(matches!(whole(65_537, 65_536), Err(WireError::Truncated { len: 65_537, buffer: 65_536 })));
    }
}
