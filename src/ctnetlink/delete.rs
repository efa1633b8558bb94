//! Batched deletes: many `CT_DELETE` messages to one `send`, no ACK asked, so
//! only failures answer, and "already gone" is counted rather than fatal.

use std::io;

use super::request;
use super::socket::CtSocket;
use super::Entry;

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

pub struct Deleter {
    socket: CtSocket,
    batch: Vec<u8>,
    pending: usize,
    max_bytes: usize,
    max_entries: usize,
    counts: DeleteCounts,
    /// errno of the first failure other than ENOENT, to report it.
    first_failure: Option<i32>,
}

impl Deleter {
    pub fn open() -> io::Result<Self> {
        let socket = CtSocket::open()?;
        socket.cap_acks()?;
        let (send, recv) = socket.grow_buffers(WANTED_SEND_BUFFER, WANTED_RECV_BUFFER);
        // The kernel reports doubled sizes and keeps half for bookkeeping.
        let max_bytes = (send / 2).clamp(4096, WANTED_SEND_BUFFER);
        let max_entries = (recv / 2 / ERROR_ANSWER_COST).max(16);
        tracing::debug!(
            send_buffer = send,
            recv_buffer = recv,
            max_bytes,
            max_entries,
            "delete socket ready"
        );
        Ok(Self {
            socket,
            batch: Vec::with_capacity(max_bytes),
            pending: 0,
            max_bytes,
            max_entries,
            counts: DeleteCounts::default(),
            first_failure: None,
        })
    }

    pub fn push(&mut self, entry: &Entry) -> io::Result<()> {
        let before = self.batch.len();
        let sequence = self.socket.next_sequence();
        request::emit_into(&mut request::delete(entry), sequence, &mut self.batch);
        if self.batch.len() > self.max_bytes && self.pending > 0 {
            // This delete does not fit: send the others, then start anew with it.
            let message = self.batch.split_off(before);
            self.send()?;
            self.batch = message;
        }
        self.pending += 1;
        if self.pending >= self.max_entries || self.batch.len() >= self.max_bytes {
            self.send()?;
        }
        Ok(())
    }

    /// Sends the batch now, so that its deletes are counted before anything
    /// else changes the table.
    pub fn send(&mut self) -> io::Result<()> {
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
    pub fn finish(mut self) -> io::Result<(DeleteCounts, Option<io::Error>)> {
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
}
