//! Every variable of the environment contract, in one list. The names, the
//! list of what is ours and the struct envy fills are all made from it, so
//! that no variable can be read, refused by name or written back for a
//! spawned Job under a different spelling. Each row carries the name and
//! the field envy fills (envy lowercases names, and a macro cannot); a test
//! checks that they agree.

macro_rules! contract {
    ($($(#[doc = $doc:literal])* $name:ident / $field:ident,)*) => {
        /// The variables' names, as users set them.
        pub mod name {
            $($(#[doc = $doc])* pub const $name: &str = stringify!($name);)*
        }

        /// Every name above: any other variable is none of our business.
        pub const ALL: &[&str] = &[$(name::$name),*];

        /// The variables as strings. Everything is parsed by hand afterwards
        /// so that an error can quote the value; envy only maps names to
        /// fields.
        #[derive(Debug, Default, serde::Deserialize)]
        pub struct Raw {
            $(pub $field: Option<String>,)*
        }
    };
}

contract! {
    /// `flush`, `spawn`, `sweep` or `auto` (the default).
    MODE / mode,
    /// Destination addresses of the stale flows; `local` for every address
    /// of the namespace the flush runs in.
    TARGET_IP / target_ip,
    /// Destination ports and ranges (`8125,8000-8100`).
    TARGET_PORT / target_port,
    /// `udp` (the default), `tcp`, `sctp`.
    TARGET_PROTOCOL / target_protocol,
    /// Pod IPs whose flows are live: their entries stay.
    KEEP_DNAT_TO / keep_dnat_to,
    DRY_RUN / dry_run,
    /// `false`: never the kernel's filtered flush.
    KERNEL_FLUSH / kernel_flush,
    /// `text` (the default) or `json`.
    LOG_FORMAT / log_format,
    RUST_LOG / rust_log,
    /// The node a spawned Job is pinned to (downward API `spec.nodeName`).
    NODE_NAME / node_name,
    /// The trigger or sweep pod's UID: which run made a Job.
    POD_UID / pod_uid,
    POD_NAME / pod_name,
    POD_NAMESPACE / pod_namespace,
    /// After the outcome, run until terminated (a sidecar trigger).
    STAY_RUNNING / stay_running,
    /// Namespace of the Job template and the Jobs.
    TARGET_NAMESPACE / target_namespace,
    /// Name of the template CronJob.
    JOB_TEMPLATE / job_template,
    /// Seconds to wait for a spawned Job; 0: do not wait.
    WAIT_TIMEOUT / wait_timeout,
    /// A failed spawn or sweep still exits 0.
    FAIL_OPEN / fail_open,
    /// Label selector of the agents' pods.
    SWEEP_SELECTOR / sweep_selector,
    /// Namespace of the agents' pods.
    SWEEP_NAMESPACE / sweep_namespace,
    /// Every node with an agent, not only those that changed.
    FULL_SWEEP / full_sweep,
    /// The CronJob whose last success an incremental sweep starts from.
    SWEEP_CRONJOB / sweep_cronjob,
    /// Flush Jobs a sweep runs at once.
    SWEEP_PARALLELISM / sweep_parallelism,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_field_names_envy_fills() {
        assert_eq!(name::TARGET_IP, "TARGET_IP");
        assert_eq!(ALL.len(), 23);
        let raw: Raw = envy::from_iter(ALL.iter().map(|n| (n.to_string(), format!("{n}!")))).unwrap();
        assert_eq!(raw.target_ip.as_deref(), Some("TARGET_IP!"));
        assert_eq!(raw.sweep_parallelism.as_deref(), Some("SWEEP_PARALLELISM!"));
        let debug = format!("{raw:?}");
        assert!(ALL.iter().all(|n| debug.contains(&format!("{n}!"))), "every variable is read: {debug}");
    }
}
