//! Why `MODE=auto` cannot choose between flushing here and spawning a Job.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum Undecided {
    #[error(
        "this process holds CAP_NET_ADMIN, but TARGET_IP names no address of the node (it is empty, \
         `local`, or only loopback or link-local addresses, which every namespace has), so this \
         namespace may be a pod's own"
    )]
    NoNodeAddress,
    #[error("cannot read /proc/self/status")]
    Status(#[source] io::Error),
    #[error("/proc/self/status has no readable CapEff")]
    NoCapEff,
    #[error("cannot list interface addresses")]
    Addresses(#[source] io::Error),
}
