//! Everything that ends a run early, each with the exit code DESIGN.md gives
//! it and, where a person can act, what to do.

use std::io;

use crate::config::{ConfigError, Mode};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_PRIVILEGE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration refused: {0}")]
    Config(#[from] ConfigError),

    #[error(
        "MODE={0} is not built yet in this release; use MODE=flush on the node (host network, NET_ADMIN)"
    )]
    NotBuilt(Mode),

    #[error(
        "no permission to {action} conntrack entries (the kernel said EPERM): this process lacks CAP_NET_ADMIN \
         in the node's network namespace. Run it with `hostNetwork: true` and \
         `securityContext: {{capabilities: {{add: [NET_ADMIN]}}}}` (as root, runAsUser: 0)"
    )]
    Privilege { action: &'static str },

    #[error(
        "the kernel has no conntrack netlink interface ({source}); load the nf_conntrack_netlink module \
         on the node (`modprobe nf_conntrack_netlink`)"
    )]
    NoCtnetlink { source: io::Error },

    #[error("failed to {action}: {source}")]
    Kernel { action: &'static str, source: io::Error },

    #[error("{failed} deletes failed; the first with: {first}")]
    DeletesFailed { failed: u64, first: io::Error },
}

impl Error {
    /// Maps a kernel answer, recognising the ones a person can act on.
    pub fn kernel(action: &'static str, source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => Error::Privilege { action },
            Some(libc::EPROTONOSUPPORT) | Some(libc::EAFNOSUPPORT) => Error::NoCtnetlink { source },
            _ => Error::Kernel { action, source },
        }
    }

    /// A refused dump request. Our dump requests are well formed and kernels
    /// before 5.8 ignore the filter, so EINVAL or EOPNOTSUPP here means that
    /// nfnetlink found no conntrack subsystem to hand the request to.
    pub fn dump(source: io::Error) -> Self {
        match source.raw_os_error() {
            Some(libc::EINVAL | libc::EOPNOTSUPP) => Error::NoCtnetlink { source },
            _ => Error::kernel("dump conntrack entries", source),
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::NotBuilt(_) => EXIT_CONFIG,
            Error::Privilege { .. } => EXIT_PRIVILEGE,
            Error::NoCtnetlink { .. } | Error::Kernel { .. } | Error::DeletesFailed { .. } => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_are_classified_with_advice() {
        let e = Error::kernel("dump", io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(e.exit_code(), EXIT_PRIVILEGE);
        assert!(e.to_string().contains("NET_ADMIN") && e.to_string().contains("hostNetwork"));
        let e = Error::kernel("open", io::Error::from_raw_os_error(libc::EPROTONOSUPPORT));
        assert_eq!(e.exit_code(), EXIT_FAILURE);
        assert!(e.to_string().contains("nf_conntrack_netlink"));
        let e = Error::kernel("dump", io::Error::from_raw_os_error(libc::EINVAL));
        assert!(matches!(e, Error::Kernel { .. }));
        let e = Error::dump(io::Error::from_raw_os_error(libc::EINVAL));
        assert!(e.to_string().contains("modprobe nf_conntrack_netlink"), "{e}");
        assert_eq!(Error::dump(io::Error::from_raw_os_error(libc::EPERM)).exit_code(), EXIT_PRIVILEGE);
    }

    #[test]
    fn exit_codes() {
        let config = Error::from(ConfigError::new("MODE", "x", "bad"));
        assert_eq!(config.exit_code(), EXIT_CONFIG);
        assert_eq!(Error::NotBuilt(Mode::Spawn).exit_code(), EXIT_CONFIG);
    }
}
