//! Everything that ends a run early, each with the exit code the README gives
//! it and, where a person can act, what to do.
//!
//! A leaf: every error type of the crate is here, and none of them imports
//! anything else of ours, so any module can raise one without reaching up.

mod config;
mod grant;
mod template;
mod undecided;
mod wire;

use std::io;
use std::time::Duration;

pub use config::ConfigError;
pub use grant::Grant;
pub use template::TemplateError;
pub use undecided::Undecided;
pub use wire::WireError;

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_PRIVILEGE: u8 = 3;
pub const EXIT_JOB_FAILED: u8 = 4;
pub const EXIT_TIMED_OUT: u8 = 5;
pub const EXIT_REFUSED: u8 = 6;
pub const EXIT_UNREACHABLE: u8 = 7;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration refused: {0}")]
    Config(#[from] ConfigError),

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

    /// A wire failure without an errno: a short send, an answer that does
    /// not decode.
    #[error("failed to {action}: {source}")]
    Wire { action: &'static str, source: WireError },

    #[error("{failed} deletes failed; the first with: {first}")]
    DeletesFailed {
        failed: u64,
        #[source]
        first: io::Error,
    },

    #[error(
        "MODE=auto cannot tell whether this is the node's network namespace: {0}; \
         set MODE=flush (host network) or MODE=spawn explicitly"
    )]
    Undecided(#[from] Undecided),

    #[error(
        "the Job template CronJob {namespace}/{name} does not exist: install it with \
         `kubectl apply -k kustomize/base` (or `kubectl apply -f jobs/flush-conntrack-node.yaml`), \
         or point JOB_TEMPLATE and TARGET_NAMESPACE at yours"
    )]
    TemplateMissing { namespace: String, name: String },

    #[error("{0}")]
    Template(#[from] TemplateError),

    #[error(
        "the service account may not {verb} {resource} in namespace {namespace} (403 Forbidden: {message}); \
         {grant}"
    )]
    Forbidden { verb: &'static str, resource: &'static str, namespace: String, message: String, grant: Grant },

    #[error(
        "the API server refused to {verb} {resource} in namespace {namespace} ({code} {reason}): {message}"
    )]
    Refused {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        code: u16,
        reason: String,
        message: String,
    },

    #[error("the Kubernetes API did not serve the call in {attempts} attempts")]
    Unreachable {
        attempts: u32,
        #[source]
        last: Unanswered,
    },

    #[error(
        "no Kubernetes client configuration ({0}); in a pod, mount the service account token, \
         elsewhere set KUBECONFIG"
    )]
    NoKubeConfig(#[source] Box<dyn std::error::Error + Send + Sync>),

    #[error(
        "flush Job {namespace}/{name} failed: {reason}; `kubectl -n {namespace} logs job/{name}` shows why"
    )]
    JobFailed { namespace: String, name: String, reason: String },

    #[error("flush Job {namespace}/{name} did not finish within WAIT_TIMEOUT={seconds}s{}", cause.as_ref().map(|c| format!("; its pod could not be created: {c}")).unwrap_or_default())]
    TimedOut { namespace: String, name: String, seconds: u64, cause: Option<String> },

    #[error("{failed} of {total} nodes' flush Jobs failed")]
    SweepFailed { failed: usize, total: usize },

    #[error("interrupted by {0}")]
    Interrupted(Signal),

    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// Why the last attempt of an API call got no answer.
#[derive(Debug, thiserror::Error)]
pub enum Unanswered {
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("{0}")]
    Kube(#[source] kube::Error),
    /// An answer that says to come back later (429, 5xx), every time.
    #[error("{code} {reason}: {message}")]
    Busy { code: u16, reason: String, message: String },
}

/// The signals that end a run early; a shell's convention gives each its
/// exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Term,
    Int,
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Signal::Term => "SIGTERM",
            Signal::Int => "SIGINT",
        })
    }
}

/// The error and each cause below it that its own message does not already
/// quote, for the one line a run ends with.
pub fn report(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let line = e.to_string();
        if !text.contains(&line) {
            text = format!("{text}: {line}");
        }
        cause = e.source();
    }
    text
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

    /// A failure on the wire: an errno is classified as [`Error::kernel`]
    /// does.
    pub fn wire(action: &'static str, source: WireError) -> Self {
        match source {
            WireError::Os(source) => Error::kernel(action, source),
            source => Error::Wire { action, source },
        }
    }

    /// A refused dump request. Our dump requests are well formed and kernels
    /// before 5.8 ignore the filter, so EINVAL or EOPNOTSUPP here means that
    /// nfnetlink found no conntrack subsystem to hand the request to.
    pub fn dump(source: WireError) -> Self {
        match source {
            WireError::Os(source)
                if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) =>
            {
                Error::NoCtnetlink { source }
            }
            source => Error::wire("dump conntrack entries", source),
        }
    }

    /// Deletes the kernel refused. EPERM is a privilege problem with its
    /// advice and exit code, wherever it shows up; anything else is reported
    /// with how many deletes failed and the first reason.
    pub fn deletes_failed(failed: u64, first: io::Error) -> Self {
        match Error::kernel("delete", first) {
            Error::Kernel { source, .. } => Error::DeletesFailed { failed, first: source },
            other => other,
        }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Undecided(_) | Error::TemplateMissing { .. } | Error::Template(_) => {
                EXIT_CONFIG
            }
            Error::Privilege { .. } => EXIT_PRIVILEGE,
            Error::JobFailed { .. } | Error::SweepFailed { .. } => EXIT_JOB_FAILED,
            Error::TimedOut { .. } => EXIT_TIMED_OUT,
            Error::Forbidden { .. } | Error::Refused { .. } => EXIT_REFUSED,
            Error::Unreachable { .. } | Error::NoKubeConfig(_) => EXIT_UNREACHABLE,
            Error::Interrupted(Signal::Int) => 130,
            Error::Interrupted(Signal::Term) => 143,
            Error::NoCtnetlink { .. }
            | Error::Kernel { .. }
            | Error::Wire { .. }
            | Error::DeletesFailed { .. }
            | Error::Runtime(_) => EXIT_FAILURE,
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
        let e = Error::dump(io::Error::from_raw_os_error(libc::EINVAL).into());
        assert!(e.to_string().contains("modprobe nf_conntrack_netlink"), "{e}");
        assert_eq!(Error::dump(io::Error::from_raw_os_error(libc::EPERM).into()).exit_code(), EXIT_PRIVILEGE);
    }

    #[test]
    fn wire_errors_keep_the_errno_classification() {
        let e = Error::wire("open", io::Error::from_raw_os_error(libc::EPERM).into());
        assert_eq!(e.exit_code(), EXIT_PRIVILEGE);
        let e = Error::wire("open", io::Error::from_raw_os_error(libc::EPROTONOSUPPORT).into());
        assert!(matches!(e, Error::NoCtnetlink { .. }), "{e}");
        let e = Error::wire("flush", io::Error::from_raw_os_error(libc::EBUSY).into());
        assert!(matches!(e, Error::Kernel { .. }), "{e}");
        let e = Error::dump(WireError::ShortSend { sent: 20, len: 68 });
        assert!(matches!(e, Error::Wire { source: WireError::ShortSend { .. }, .. }), "{e}");
        assert_eq!(e.exit_code(), EXIT_FAILURE);
        assert_eq!(report(&e), "failed to dump conntrack entries: the kernel took 20 of the 68 bytes sent");
    }

    #[test]
    fn refused_deletes_keep_the_privilege_advice() {
        let e = Error::deletes_failed(3, io::Error::from_raw_os_error(libc::EPERM));
        assert_eq!(e.exit_code(), EXIT_PRIVILEGE, "{e}");
        assert!(e.to_string().contains("delete") && e.to_string().contains("NET_ADMIN"), "{e}");
        let e = Error::deletes_failed(3, io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(e.exit_code(), EXIT_FAILURE);
        assert!(e.to_string().starts_with("3 deletes failed"), "{e}");
    }

    #[test]
    fn a_report_carries_every_cause_once() {
        let e = Error::from(Undecided::Status(io::Error::from_raw_os_error(libc::EACCES)));
        let text = report(&e);
        assert!(text.starts_with("MODE=auto cannot tell"), "{text}");
        assert!(text.ends_with(&io::Error::from_raw_os_error(libc::EACCES).to_string()), "{text}");
        assert_eq!(text.matches("cannot read /proc/self/status").count(), 1, "{text}");
        let e = Error::Kernel { action: "dump", source: io::Error::from_raw_os_error(libc::EBUSY) };
        assert_eq!(report(&e), e.to_string(), "a cause already quoted is not repeated");
    }

    #[test]
    fn exit_codes() {
        let config = Error::from(ConfigError::new("MODE", "x", "bad"));
        assert_eq!(config.exit_code(), EXIT_CONFIG);
        assert_eq!(Error::from(Undecided::NoCapEff).exit_code(), EXIT_CONFIG);
        assert_eq!(Error::Interrupted(Signal::Term).exit_code(), 143);
        assert_eq!(Error::Interrupted(Signal::Int).exit_code(), 130);
        // The log says which signal ended the run, as the shell names it.
        assert_eq!(Error::Interrupted(Signal::Term).to_string(), "interrupted by SIGTERM");
        assert_eq!(Error::Interrupted(Signal::Int).to_string(), "interrupted by SIGINT");
        let timed_out = Error::TimedOut {
            namespace: "n".into(),
            name: "j".into(),
            seconds: 5,
            cause: Some("violates PodSecurity".into()),
        };
        assert_eq!(timed_out.exit_code(), EXIT_TIMED_OUT);
        assert!(timed_out.to_string().contains("could not be created: violates PodSecurity"), "{timed_out}");
    }
}
