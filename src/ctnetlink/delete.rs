//! Batched deletes: many `IPCTNL_MSG_CT_DELETE` messages to one `send`, no
//! ACK asked, so only failures answer, and "already gone" is counted rather
//! than fatal.

use std::io;

use super::request;
use super::socket::CtSocket;
use super::Entry;
use crate::error::WireError;

/// What the kernel granted decides the batch: a batch must fit the send
/// buffer (EMSGSIZE otherwise), and every delete in it may answer with an
/// error that must fit the receive buffer (ENOBUFS loses answers otherwise).
const WANTED_SEND_BUFFER: usize = 1 << 20;
const WANTED_RECV_BUFFER: usize = 4 << 20;
/// Receive-buffer cost of one queued error answer, with room to spare: the
/// kernel accounts a small skb's true size, not its 36 bytes.
const ERROR_ANSWER_COST: usize = 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DeleteCounts {
    pub deleted: u64,
    pub already_gone: u64,
    pub failed: u64,
}

impl DeleteCounts {
    /// Counts one error answer to a delete. Only ENOENT means the entry is
    /// gone (it expired, or another flusher won the race); anything else is
    /// a failure and is returned so that the first one can be reported.
    pub fn answer(&mut self, errno: i32) -> Option<i32> {
        if errno == libc::ENOENT {
            self.already_gone += 1;
            None
        } else {
            self.failed += 1;
            Some(errno)
        }
    }
}

/// How large a batch may grow, from the buffers the kernel granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Limits {
    max_bytes: usize,
    max_entries: usize,
}

impl Limits {
    /// The kernel reports doubled sizes and keeps half for bookkeeping.
    fn granted(send: usize, recv: usize) -> Self {
        Limits {
            max_bytes: (send / 2).clamp(4096, WANTED_SEND_BUFFER),
            max_entries: (recv / 2 / ERROR_ANSWER_COST).max(16),
        }
    }

    /// The last delete took the batch past its bytes: it goes in the next
    /// batch, unless it is the only one.
    fn overflowed(&self, bytes: usize, pending: usize) -> bool {
        bytes > self.max_bytes && pending > 0
    }

    /// The batch is as large as it may be and goes now.
    fn full(&self, bytes: usize, pending: usize) -> bool {
        pending >= self.max_entries || bytes >= self.max_bytes
    }
}

pub struct Deleter {
    socket: CtSocket,
    batch: Vec<u8>,
    pending: usize,
    limits: Limits,
    counts: DeleteCounts,
    /// errno of the first failure other than ENOENT, to report it.
    first_failure: Option<i32>,
}

impl Deleter {
    pub fn open() -> Result<Self, WireError> {
        let socket = CtSocket::open()?;
        socket.cap_acks()?;
        let (send, recv) = socket.grow_buffers(WANTED_SEND_BUFFER, WANTED_RECV_BUFFER);
        let limits = Limits::granted(send, recv);
        tracing::debug!(
            send_buffer = send,
            recv_buffer = recv,
            max_bytes = limits.max_bytes,
            max_entries = limits.max_entries,
            "delete socket ready"
        );
        Ok(Self {
            socket,
            batch: Vec::with_capacity(limits.max_bytes),
            pending: 0,
            limits,
            counts: DeleteCounts::default(),
            first_failure: None,
        })
    }

    pub fn push(&mut self, entry: &Entry) -> Result<(), WireError> {
        let before = self.batch.len();
        let sequence = self.socket.next_sequence();
        request::emit_into(&mut request::delete(entry), sequence, &mut self.batch);
        if self.limits.overflowed(self.batch.len(), self.pending) {
            // This delete does not fit: send the others, then start anew with it.
            let message = self.batch.split_off(before);
            self.send()?;
            self.batch = message;
        }
        self.pending += 1;
        if self.limits.full(self.batch.len(), self.pending) {
            self.send()?;
        }
        Ok(())
    }

    /// Sends the batch now, so that its deletes are counted before anything
    /// else changes the table.
    pub fn send(&mut self) -> Result<(), WireError> {
        if self.pending == 0 {
            return Ok(());
        }
        self.socket.send(&self.batch)?;
        let mut answered = 0u64;
        let counts = &mut self.counts;
        let first_failure = &mut self.first_failure;
        self.socket.drain_errors(|errno| {
            answered += 1;
            if let Some(failure) = counts.answer(errno) {
                first_failure.get_or_insert(failure);
            }
        })?;
        self.counts.deleted += (self.pending as u64).saturating_sub(answered);
        self.batch.clear();
        self.pending = 0;
        Ok(())
    }

    /// Sends what is left and returns the counts and the first failure.
    pub fn finish(mut self) -> Result<(DeleteCounts, Option<io::Error>), WireError> {
        self.send()?;
        Ok((self.counts, self.first_failure.map(io::Error::from_raw_os_error)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_enoent_counts_as_already_gone() {
        let mut counts = DeleteCounts::default();
        assert_eq!(counts.answer(libc::ENOENT), None);
        assert_eq!(counts, DeleteCounts { deleted: 0, already_gone: 1, failed: 0 });
        for errno in [libc::EPERM, libc::EINVAL, libc::EBUSY, libc::ENOMEM] {
            assert_eq!(counts.answer(errno), Some(errno), "errno {errno}");
        }
        assert_eq!(counts, DeleteCounts { deleted: 0, already_gone: 1, failed: 4 });
    }

    #[test]
    fn batch_limits_follow_the_granted_buffers() {
        // As granted under CAP_NET_ADMIN (doubled), and as capped by the
        // default sysctls without it.
        assert_eq!(Limits::granted(2 << 20, 8 << 20), Limits { max_bytes: 1 << 20, max_entries: 4096 });
        assert_eq!(Limits::granted(425_984, 425_984), Limits { max_bytes: 212_992, max_entries: 208 });
        assert_eq!(Limits::granted(0, 0), Limits { max_bytes: 4096, max_entries: 16 });
        assert_eq!(Limits::granted(64 << 20, 64 << 20).max_bytes, 1 << 20);
    }

    #[test]
    fn a_batch_goes_at_either_limit_and_never_past_its_bytes() {
        let limits = Limits { max_bytes: 4096, max_entries: 16 };
        assert!(!limits.full(4095, 15));
        assert!(limits.full(4096, 1), "the bytes alone");
        assert!(limits.full(100, 16), "the answers alone");
        assert!(!limits.overflowed(4096, 3), "exactly full still fits");
        assert!(limits.overflowed(4097, 3), "past it: the last delete waits for the next batch");
        assert!(!limits.overflowed(5000, 0), "a delete alone goes, whatever its size");
    }
}
