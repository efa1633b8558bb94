//! The variables of spawn and sweep: where the Job template lives, which
//! node, how long to wait.

use std::time::Duration;

use super::{values, ConfigError};

pub const DEFAULT_JOB_TEMPLATE: &str = "flush-conntrack-node";
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_SWEEP_CRONJOB: &str = "flush-conntrack-sweep";
/// Flush Jobs a sweep runs at once: each is a pod to schedule and start
/// (about 3 s on a real node), so this bounds how long a sweep over many
/// changed nodes takes and how hard it presses the API server.
pub const DEFAULT_SWEEP_PARALLELISM: usize = 16;
const MAX_SWEEP_PARALLELISM: usize = 256;
const MAX_WAIT_TIMEOUT: u64 = 24 * 60 * 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// The node to pin the flush Job to (`spec.nodeName` via the downward API).
    pub node_name: Option<String>,
    /// The trigger pod's UID: part of the Job's name.
    pub pod_uid: Option<String>,
    /// The trigger pod (`POD_NAMESPACE`/`POD_NAME`): Events about its flush
    /// go on it. `None`: no Events.
    pub pod: Option<(String, String)>,
    /// After the outcome, keep running until terminated: the trigger as a
    /// sidecar (`restartPolicy: Always`), which the agent does not wait for.
    pub stay_running: bool,
    /// Namespace of the template and the Jobs; `None`: the pod's own.
    pub target_namespace: Option<String>,
    pub job_template: String,
    /// Zero: create and return at once.
    pub wait_timeout: Duration,
    pub fail_open: bool,
    pub sweep_selector: Option<String>,
    /// `None`: all namespaces.
    pub sweep_namespace: Option<String>,
    /// Every node with an agent, not only those that changed.
    pub full_sweep: bool,
    /// The CronJob whose last success marks what an incremental sweep has
    /// already covered.
    pub sweep_cronjob: String,
    pub sweep_parallelism: usize,
}

pub struct RawCluster<'a> {
    pub node_name: &'a str,
    pub pod_uid: &'a str,
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    pub stay_running: &'a str,
    pub target_namespace: &'a str,
    pub job_template: &'a str,
    pub wait_timeout: &'a str,
    pub fail_open: &'a str,
    pub sweep_selector: &'a str,
    pub sweep_namespace: &'a str,
    pub full_sweep: &'a str,
    pub sweep_cronjob: &'a str,
    pub sweep_parallelism: &'a str,
}

fn optional(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty()).then(|| v.to_owned())
}

impl ClusterSettings {
    pub fn parse(raw: RawCluster) -> Result<Self, ConfigError> {
        let node_name = optional(raw.node_name);
        if let Some(node) = &node_name {
            values::dns_subdomain("NODE_NAME", node)?;
        }
        let target_namespace = optional(raw.target_namespace);
        if let Some(ns) = &target_namespace {
            values::dns_label("TARGET_NAMESPACE", ns)?;
        }
        let sweep_namespace = optional(raw.sweep_namespace);
        if let Some(ns) = &sweep_namespace {
            values::dns_label("SWEEP_NAMESPACE", ns)?;
        }
        let pod = match (optional(raw.pod_namespace), optional(raw.pod_name)) {
            (Some(ns), Some(name)) => {
                values::dns_label("POD_NAMESPACE", &ns)?;
                values::dns_subdomain("POD_NAME", &name)?;
                Some((ns, name))
            }
            (None, None) => None,
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "POD_NAMESPACE",
                    "",
                    "is required with POD_NAME (metadata.namespace)",
                ))
            }
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "POD_NAME",
                    "",
                    "is required with POD_NAMESPACE (metadata.name)",
                ))
            }
        };
        let job_template = optional(raw.job_template).unwrap_or_else(|| DEFAULT_JOB_TEMPLATE.to_owned());
        values::dns_subdomain("JOB_TEMPLATE", &job_template)?;
        let wait_timeout = match raw.wait_timeout.trim() {
            "" => DEFAULT_WAIT_TIMEOUT,
            v => match v.parse::<u64>() {
                Ok(secs) if secs <= MAX_WAIT_TIMEOUT => Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::new(
                        "WAIT_TIMEOUT",
                        raw.wait_timeout,
                        format!("must be whole seconds from 0 (do not wait) to {MAX_WAIT_TIMEOUT}"),
                    ))
                }
            },
        };
        let sweep_cronjob = optional(raw.sweep_cronjob).unwrap_or_else(|| DEFAULT_SWEEP_CRONJOB.to_owned());
        values::dns_subdomain("SWEEP_CRONJOB", &sweep_cronjob)?;
        let sweep_parallelism = match raw.sweep_parallelism.trim() {
            "" => DEFAULT_SWEEP_PARALLELISM,
            v => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_SWEEP_PARALLELISM).contains(&n) => n,
                _ => {
                    return Err(ConfigError::new(
                        "SWEEP_PARALLELISM",
                        raw.sweep_parallelism,
                        format!("must be a whole number from 1 to {MAX_SWEEP_PARALLELISM}"),
                    ))
                }
            },
        };
        Ok(ClusterSettings {
            node_name,
            pod_uid: optional(raw.pod_uid),
            pod,
            stay_running: values::boolean("STAY_RUNNING", raw.stay_running)?,
            target_namespace,
            job_template,
            wait_timeout,
            fail_open: values::boolean("FAIL_OPEN", raw.fail_open)?,
            sweep_selector: optional(raw.sweep_selector),
            sweep_namespace,
            full_sweep: values::boolean("FULL_SWEEP", raw.full_sweep)?,
            sweep_cronjob,
            sweep_parallelism,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawCluster<'static> {
        RawCluster {
            node_name: "",
            pod_uid: "",
            pod_name: "",
            pod_namespace: "",
            stay_running: "",
            target_namespace: "",
            job_template: "",
            wait_timeout: "",
            fail_open: "",
            sweep_selector: "",
            sweep_namespace: "",
            full_sweep: "",
            sweep_cronjob: "",
            sweep_parallelism: "",
        }
    }

    #[test]
    fn defaults() {
        let c = ClusterSettings::parse(raw()).unwrap();
        assert_eq!(c.job_template, "flush-conntrack-node");
        assert_eq!(c.wait_timeout, Duration::from_secs(120));
        assert!(!c.fail_open);
        assert_eq!((c.node_name, c.target_namespace, c.sweep_selector), (None, None, None));
        assert_eq!(
            (c.full_sweep, c.sweep_cronjob.as_str(), c.sweep_parallelism),
            (false, "flush-conntrack-sweep", 16)
        );
    }

    #[test]
    fn values_are_read() {
        let c = ClusterSettings::parse(RawCluster {
            node_name: "ip-10-0-1-7.eu-west-1.compute.internal",
            pod_uid: "6f1d-uid",
            pod_name: "statsd-x",
            pod_namespace: "monitoring",
            stay_running: "true",
            target_namespace: "flush-conntrack",
            job_template: "my-template",
            wait_timeout: "0",
            fail_open: "true",
            sweep_selector: "app=statsd",
            sweep_namespace: "monitoring",
            full_sweep: "true",
            sweep_cronjob: "my-sweep",
            sweep_parallelism: "64",
        })
        .unwrap();
        assert_eq!(c.wait_timeout, Duration::ZERO);
        assert!(c.fail_open && c.stay_running);
        assert_eq!(c.pod, Some(("monitoring".to_owned(), "statsd-x".to_owned())));
        assert_eq!(c.sweep_namespace.as_deref(), Some("monitoring"));
        assert!(c.full_sweep);
        assert_eq!((c.sweep_cronjob.as_str(), c.sweep_parallelism), ("my-sweep", 64));
    }

    #[test]
    fn refusals_name_the_variable() {
        for (field, value) in [
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
        ] {
            let mut r = raw();
            match field {
                "WAIT_TIMEOUT" => r.wait_timeout = value,
                "FAIL_OPEN" => r.fail_open = value,
                "TARGET_NAMESPACE" => r.target_namespace = value,
                "SWEEP_NAMESPACE" => r.sweep_namespace = value,
                "JOB_TEMPLATE" => r.job_template = value,
                "STAY_RUNNING" => r.stay_running = value,
                "SWEEP_PARALLELISM" => r.sweep_parallelism = value,
                "FULL_SWEEP" => r.full_sweep = value,
                _ => r.node_name = value,
            }
            let e = ClusterSettings::parse(r).unwrap_err();
            assert_eq!((e.variable, e.value.as_str()), (field, value), "{e}");
        }
        let mut r = raw();
        r.pod_name = "statsd-x";
        assert_eq!(ClusterSettings::parse(r).unwrap_err().variable, "POD_NAMESPACE");
    }
}
