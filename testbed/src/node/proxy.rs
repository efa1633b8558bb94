//! The node's way to the API server (see [`ApiProxy`]).

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{io, Result};
use crate::netns::Netns;

use super::API_PORT;

/// Forwards TCP from the node's address to the API server on the host's
/// loopback: the listening socket is made inside the node's namespace and
/// the upstream ones outside, so that no interface joins the two.
pub(super) struct ApiProxy {
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiProxy {
    pub(super) fn start(ns: &Netns, address: &str, upstream_port: u16) -> Result<ApiProxy> {
        let listen = format!("{address}:{API_PORT}");
        // A socket stays in the namespace it was made in: the listener is
        // the node's, the thread accepting on it and its upstream the host's.
        let listener = ns
            .within(|| TcpListener::bind(&listen).and_then(|l| l.set_nonblocking(true).map(|_| l)))
            .map_err(io(format!("bind {listen}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (flag, open) = (stop.clone(), streams.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else { continue };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else { continue };
                if let Ok(mut all) = open.lock() {
                    all.extend(client.try_clone().ok());
                    all.extend(server.try_clone().ok());
                }
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(s2, c2));
            }
        });
        Ok(ApiProxy { stop, streams, thread: Some(thread) })
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(all) = self.streams.lock() {
            for s in all.iter() {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
