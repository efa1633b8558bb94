//! What goes wrong on the wire, typed: callers act on the kernel's errno
//! (no privilege, no ctnetlink, no filtered flush), which must stay
//! readable, and report the rest.

use std::io;

use netlink_packet_core::DecodeError;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A socket call failed, or the kernel answered a request with an errno.
    #[error("{0}")]
    Os(#[source] io::Error),

    /// The kernel took part of a batch; which of its messages it read is
    /// unknown.
    #[error("the kernel took {sent} of the {len} bytes sent")]
    ShortSend { sent: usize, len: usize },

    /// A datagram larger than the receive buffer: its tail, and the entries
    /// in it, are lost.
    #[error("a netlink datagram of {len} bytes exceeds the {buffer} byte receive buffer")]
    Truncated { len: usize, buffer: usize },

    #[error("a netlink message does not decode: {0}")]
    Decode(#[source] DecodeError),

    /// An answer lacks the attribute it exists for, or carries it in a size
    /// the kernel does not write.
    #[error("{message} answer without a {attribute} attribute")]
    MissingAttribute { message: &'static str, attribute: &'static str },
}

impl WireError {
    /// The errno, where the kernel or a socket call gave one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            WireError::Os(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Os(e)
    }
}

impl From<nix::Error> for WireError {
    fn from(errno: nix::Error) -> Self {
        WireError::Os(errno.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_os_errors_carry_an_errno() {
        let os = WireError::from(io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(os.raw_os_error(), Some(libc::EPERM));
        assert_eq!(WireError::from(nix::Error::ENOBUFS).raw_os_error(), Some(libc::ENOBUFS));
        let others = [
            WireError::ShortSend { sent: 4, len: 8 },
            WireError::Truncated { len: 70_000, buffer: 65_536 },
            WireError::Decode(DecodeError::from("bad")),
            WireError::MissingAttribute { message: "M", attribute: "A" },
        ];
        for e in others {
            assert_eq!(e.raw_os_error(), None, "{e}");
        }
    }

    #[test]
    fn sources_stay_whole() {
        use std::error::Error as _;
        let os = WireError::from(io::Error::from_raw_os_error(libc::EPERM));
        let source = os.source().and_then(|s| s.downcast_ref::<io::Error>()).map(io::Error::raw_os_error);
        assert_eq!(source, Some(Some(libc::EPERM)));
        let decode = WireError::Decode(DecodeError::from("bad length"));
        assert!(decode.source().is_some_and(|s| s.is::<DecodeError>()));
        assert_eq!(decode.to_string(), "a netlink message does not decode: bad length");
    }
}
