//! The variables of spawn and sweep: where the Job template lives, which
//! node, how long to wait, which agents a sweep covers.

use std::time::Duration;

use super::variables::{name, Raw};
use super::{flush, values, ConfigError};
use crate::cluster::events::Regarding;
use crate::cluster::{sweep, Options};

pub const DEFAULT_JOB_TEMPLATE: &str = "flush-conntrack-node";
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_SWEEP_CRONJOB: &str = "flush-conntrack-sweep";
/// Flush Jobs a sweep runs at once: each is a pod to schedule and start
/// (about 3 s on a real node), so this bounds how long a sweep over many
/// changed nodes takes and how hard it presses the API server.
pub const DEFAULT_SWEEP_PARALLELISM: usize = 16;
const MAX_SWEEP_PARALLELISM: usize = 256;
const MAX_WAIT_TIMEOUT: u64 = 24 * 60 * 60;

fn optional(value: &Option<String>) -> Option<String> {
    let v = value.as_deref().unwrap_or_default().trim();
    (!v.is_empty()).then(|| v.to_owned())
}

fn text(value: &Option<String>) -> &str {
    value.as_deref().unwrap_or_default()
}

/// `NODE_NAME`, checked whatever the mode, required by spawn.
pub(super) fn node_name(raw: &Raw) -> Result<Option<String>, ConfigError> {
    let node = optional(&raw.node_name);
    if let Some(node) = &node {
        values::dns_subdomain(name::NODE_NAME, node)?;
    }
    Ok(node)
}

/// What spawn and sweep share.
pub(super) fn options(raw: &Raw) -> Result<Options, ConfigError> {
    let namespace = optional(&raw.target_namespace);
    if let Some(ns) = &namespace {
        values::dns_label(name::TARGET_NAMESPACE, ns)?;
    }
    let run = optional(&raw.pod_uid);
    let pod = match (optional(&raw.pod_namespace), optional(&raw.pod_name)) {
        (Some(namespace), Some(pod)) => {
            values::dns_label(name::POD_NAMESPACE, &namespace)?;
            values::dns_subdomain(name::POD_NAME, &pod)?;
            Some(Regarding { namespace, name: pod, uid: run.clone() })
        }
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                name::POD_NAMESPACE,
                "",
                "is required with POD_NAME (metadata.namespace)",
            ))
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                name::POD_NAME,
                "",
                "is required with POD_NAMESPACE (metadata.name)",
            ))
        }
    };
    let job_template = optional(&raw.job_template).unwrap_or_else(|| DEFAULT_JOB_TEMPLATE.to_owned());
    values::dns_subdomain(name::JOB_TEMPLATE, &job_template)?;
    let wait_timeout = match text(&raw.wait_timeout).trim() {
        "" => DEFAULT_WAIT_TIMEOUT,
        v => match v.parse::<u64>() {
            Ok(secs) if secs <= MAX_WAIT_TIMEOUT => Duration::from_secs(secs),
            _ => {
                return Err(ConfigError::new(
                    name::WAIT_TIMEOUT,
                    text(&raw.wait_timeout),
                    format!("must be whole seconds from 0 (do not wait) to {MAX_WAIT_TIMEOUT}"),
                ))
            }
        },
    };
    Ok(Options {
        namespace,
        job_template,
        wait_timeout,
        fail_open: values::boolean(name::FAIL_OPEN, text(&raw.fail_open))?,
        stay_running: values::boolean(name::STAY_RUNNING, text(&raw.stay_running))?,
        run,
        pod,
    })
}

/// The sweep's own variables, checked whatever the mode.
pub(super) struct SweepVars {
    selector: Option<String>,
    namespace: Option<String>,
    full: bool,
    cronjob: String,
    parallelism: usize,
}

pub(super) fn sweep_vars(raw: &Raw) -> Result<SweepVars, ConfigError> {
    let namespace = optional(&raw.sweep_namespace);
    if let Some(ns) = &namespace {
        values::dns_label(name::SWEEP_NAMESPACE, ns)?;
    }
    let cronjob = optional(&raw.sweep_cronjob).unwrap_or_else(|| DEFAULT_SWEEP_CRONJOB.to_owned());
    values::dns_subdomain(name::SWEEP_CRONJOB, &cronjob)?;
    let parallelism = match text(&raw.sweep_parallelism).trim() {
        "" => DEFAULT_SWEEP_PARALLELISM,
        v => match v.parse::<usize>() {
            Ok(n) if (1..=MAX_SWEEP_PARALLELISM).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    name::SWEEP_PARALLELISM,
                    text(&raw.sweep_parallelism),
                    format!("must be a whole number from 1 to {MAX_SWEEP_PARALLELISM}"),
                ))
            }
        },
    };
    Ok(SweepVars {
        selector: optional(&raw.sweep_selector),
        namespace,
        full: values::boolean(name::FULL_SWEEP, text(&raw.full_sweep))?,
        cronjob,
        parallelism,
    })
}

pub(super) fn sweep(
    vars: SweepVars,
    flush: &flush::Plan,
    cluster: Options,
) -> Result<sweep::Plan, ConfigError> {
    let selector = vars.selector.ok_or_else(|| {
        ConfigError::new(
            name::SWEEP_SELECTOR,
            "",
            "is required in sweep mode: the label selector of the DaemonSet's pods, e.g. app=statsd",
        )
    })?;
    Ok(sweep::Plan {
        selector,
        namespace: vars.namespace,
        full: vars.full,
        cronjob: vars.cronjob,
        parallelism: vars.parallelism,
        protocols: flush.selection.protocols.clone(),
        dry_run: flush.dry_run,
        cluster,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::settings;
    use super::super::Work;
    use crate::Plan;

    fn sweep(vars: &[(&str, &str)]) -> crate::cluster::sweep::Plan {
        let mut all = vec![("MODE", "sweep"), ("SWEEP_SELECTOR", "app=statsd")];
        all.extend_from_slice(vars);
        match settings(&all).unwrap().work {
            Work::Planned(Plan::Sweep(plan)) => plan,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let p = sweep(&[]);
        let c = &p.cluster;
        assert_eq!(c.job_template, "flush-conntrack-node");
        assert_eq!(c.wait_timeout, super::DEFAULT_WAIT_TIMEOUT);
        assert_eq!(c.wait_timeout.as_secs(), 120);
        assert!(!c.fail_open && !c.stay_running);
        assert_eq!((&c.namespace, &c.pod, &c.run, &p.namespace), (&None, &None, &None, &None));
        assert_eq!((p.full, p.cronjob.as_str(), p.parallelism), (false, "flush-conntrack-sweep", 16));
    }

    #[test]
    fn values_are_read() {
        let p = sweep(&[
            ("POD_UID", "6f1d-uid"),
            ("POD_NAME", "statsd-x"),
            ("POD_NAMESPACE", "monitoring"),
            ("STAY_RUNNING", "true"),
            ("TARGET_NAMESPACE", "flush-conntrack"),
            ("JOB_TEMPLATE", "my-template"),
            ("WAIT_TIMEOUT", "0"),
            ("FAIL_OPEN", "true"),
            ("SWEEP_NAMESPACE", "monitoring"),
            ("FULL_SWEEP", "true"),
            ("SWEEP_CRONJOB", "my-sweep"),
            ("SWEEP_PARALLELISM", "64"),
        ]);
        let c = &p.cluster;
        assert!(c.wait_timeout.is_zero());
        assert!(c.fail_open && c.stay_running);
        let pod = c.pod.as_ref().unwrap();
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str(), pod.uid.as_deref()),
            ("monitoring", "statsd-x", Some("6f1d-uid"))
        );
        assert_eq!(
            (c.namespace.as_deref(), c.job_template.as_str()),
            (Some("flush-conntrack"), "my-template")
        );
        assert_eq!(p.namespace.as_deref(), Some("monitoring"));
        assert!(p.full);
        assert_eq!((p.cronjob.as_str(), p.parallelism), ("my-sweep", 64));
    }

    /// A day is the longest wait; the bound itself is allowed.
    #[test]
    fn wait_timeout_goes_up_to_a_day() {
        assert_eq!(sweep(&[("WAIT_TIMEOUT", "86400")]).cluster.wait_timeout.as_secs(), 86_400);
        let e =
            settings(&[("MODE", "sweep"), ("SWEEP_SELECTOR", "a=b"), ("WAIT_TIMEOUT", "86401")]).unwrap_err();
        assert_eq!((e.variable, e.value.as_str()), ("WAIT_TIMEOUT", "86401"));
    }

    /// Every mode refuses a bad value of any variable, naming it.
    #[test]
    fn refusals_name_the_variable_in_every_mode() {
        for (variable, value) in [
            ("WAIT_TIMEOUT", "-1"),
            ("WAIT_TIMEOUT", "2m"),
            ("WAIT_TIMEOUT", "999999"),
            ("FAIL_OPEN", "sometimes"),
            ("TARGET_NAMESPACE", "Flush_Conntrack"),
            ("SWEEP_NAMESPACE", "a.b"),
            ("JOB_TEMPLATE", "-bad"),
            ("NODE_NAME", "node name"),
            ("STAY_RUNNING", "forever"),
            ("SWEEP_PARALLELISM", "0"),
            ("SWEEP_PARALLELISM", "1000"),
            ("FULL_SWEEP", "all"),
            ("SWEEP_CRONJOB", "Sweep"),
        ] {
            for mode in ["flush", "spawn", "sweep", "auto"] {
                let mut vars = vec![
                    ("MODE", mode),
                    ("TARGET_PORT", "8125"),
                    ("NODE_NAME", "node-a"),
                    ("SWEEP_SELECTOR", "app=statsd"),
                ];
                vars.retain(|(k, _)| *k != variable);
                vars.push((variable, value));
                let e = settings(&vars).unwrap_err();
                assert_eq!((e.variable, e.value.as_str()), (variable, value), "{mode}: {e}");
            }
        }
        let e =
            settings(&[("MODE", "sweep"), ("SWEEP_SELECTOR", "a=b"), ("POD_NAME", "statsd-x")]).unwrap_err();
        assert_eq!(e.variable, "POD_NAMESPACE");
    }
}
