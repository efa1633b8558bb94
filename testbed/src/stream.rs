//! A statsd-style client outside the node: one datagram every tick from a
//! fixed source port to the node's hostPort, and every answer recorded with
//! when it came and which pod sent it (the agent answers with its hostname).

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::netns::Netns;

pub struct Stream {
    start: Instant,
    sent: Arc<AtomicU64>,
    /// (since start, responder's hostname), in arrival order.
    answers: Arc<Mutex<Vec<(Duration, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Stream {
    pub fn start(client: &Netns, source: (&str, u16), target: (&str, u16), tick: Duration) -> Stream {
        let start = Instant::now();
        let (sent, answers, stop) =
            (Arc::new(AtomicU64::new(0)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (counter, log, flag) = (sent.clone(), answers.clone(), stop.clone());
        let source = (source.0.to_owned(), source.1);
        let target = (target.0.to_owned(), target.1);
        let thread = client.spawn(move || {
            let socket =
                UdpSocket::bind((source.0.as_str(), source.1)).expect("client binds its source port");
            let mut buf = [0u8; 1024];
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let _ = socket.send_to(format!("requests:{n}|c").as_bytes(), (target.0.as_str(), target.1));
                next += tick;
                // Answers until the next tick.
                loop {
                    let left = next.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    let _ = socket.set_read_timeout(Some(left));
                    match socket.recv_from(&mut buf) {
                        Ok((len, _)) => {
                            let text = String::from_utf8_lossy(&buf[..len]).to_string();
                            let who = text.split_whitespace().next().unwrap_or_default().to_owned();
                            if let Ok(mut all) = log.lock() {
                                all.push((start.elapsed(), who));
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
        });
        Stream { start, sent, answers, stop, thread: Some(thread) }
    }

    /// Time since the stream started.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// An instant as time since the stream started.
    pub fn at(&self, instant: Instant) -> Duration {
        instant.saturating_duration_since(self.start)
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn answers(&self) -> Vec<(Duration, String)> {
        self.answers.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// The first answer from `who` at or after `since`.
    pub fn first_from(&self, who: &str, since: Duration) -> Option<Duration> {
        self.answers().into_iter().find(|(t, w)| *t >= since && w == who).map(|(t, _)| t)
    }

    /// The last answer from `who`.
    pub fn last_from(&self, who: &str) -> Option<Duration> {
        self.answers().into_iter().rev().find(|(_, w)| w == who).map(|(t, _)| t)
    }

    /// How many answers came in `[from, to)`, from anyone.
    pub fn answered_between(&self, from: Duration, to: Duration) -> usize {
        self.answers().iter().filter(|(t, _)| *t >= from && *t < to).count()
    }

    /// Waits until `who` answers (after `since`), at most `timeout`.
    pub fn wait_for(&self, who: &str, since: Duration, timeout: Duration) -> Option<Duration> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(t) = self.first_from(who, since) {
                return Some(t);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
