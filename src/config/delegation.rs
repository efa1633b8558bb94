//! The variables of the modes that hand the flush to Jobs (spawn and sweep):
//! where the Job template lives, which node, how long to wait, which agents
//! a sweep covers.

use super::values::read;
use crate::cluster::events::Regarding;
use crate::cluster::spawn::SpawnPlan;
use crate::cluster::sweep::SweepPlan;
use crate::cluster::Options;
use crate::contract::{self, Raw};
use crate::error::ConfigError;
use crate::flush::FlushPlan;

/// What spawn and sweep share.
pub(super) fn options(raw: &Raw) -> Result<Options, ConfigError> {
    let run = read(raw, &contract::POD_UID)?;
    let pod = match (read(raw, &contract::POD_NAMESPACE)?, read(raw, &contract::POD_NAME)?) {
        (Some(namespace), Some(name)) => Some(Regarding { namespace, name, uid: run.clone() }),
        (None, None) => None,
        (None, Some(_)) => {
            return Err(ConfigError::new(
                contract::POD_NAMESPACE.name,
                "",
                "is required with POD_NAME (metadata.namespace)",
            ))
        }
        (Some(_), None) => {
            return Err(ConfigError::new(
                contract::POD_NAME.name,
                "",
                "is required with POD_NAMESPACE (metadata.name)",
            ))
        }
    };
    Ok(Options {
        namespace: read(raw, &contract::TARGET_NAMESPACE)?,
        job_template: read(raw, &contract::JOB_TEMPLATE)?,
        wait_timeout: read(raw, &contract::WAIT_TIMEOUT)?,
        fail_open: read(raw, &contract::FAIL_OPEN)?,
        stay_running: read(raw, &contract::STAY_RUNNING)?,
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
    Ok(SweepVars {
        selector: read(raw, &contract::SWEEP_SELECTOR)?,
        namespace: read(raw, &contract::SWEEP_NAMESPACE)?,
        full: read(raw, &contract::FULL_SWEEP)?,
        cronjob: read(raw, &contract::SWEEP_CRONJOB)?,
        parallelism: read(raw, &contract::SWEEP_PARALLELISM)?,
    })
}

/// Spawn pins the Job to a node and cannot guess which.
pub(super) fn spawn_plan(
    node: Option<String>,
    flush: FlushPlan,
    cluster: Options,
) -> Result<SpawnPlan, ConfigError> {
    let node = node.ok_or_else(|| {
        ConfigError::new(
            contract::NODE_NAME.name,
            "",
            "is required to spawn a flush Job: set it from the downward API \
             (env: - name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}), \
             as kustomize/components/trigger does",
        )
    })?;
    Ok(SpawnPlan { node, selection: flush.selection, dry_run: flush.dry_run, cluster })
}

pub(super) fn sweep_plan(
    vars: SweepVars,
    flush: &FlushPlan,
    cluster: Options,
) -> Result<SweepPlan, ConfigError> {
    let selector = vars.selector.ok_or_else(|| {
        ConfigError::new(
            contract::SWEEP_SELECTOR.name,
            "",
            "is required in sweep mode: the label selector of the DaemonSet's pods, e.g. app=statsd",
        )
    })?;
    Ok(SweepPlan {
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
    use crate::cluster::sweep::SweepPlan;
    use crate::plan::Plan;

    fn sweep(vars: &[(&str, &str)]) -> SweepPlan {
        let mut all = vec![("MODE", "sweep"), ("SWEEP_SELECTOR", "app=statsd")];
        all.extend_from_slice(vars);
        match settings(&all).unwrap().plan {
            Plan::Sweep(plan) => plan,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let p = sweep(&[]);
        let c = &p.cluster;
        assert_eq!(c.job_template, "flush-conntrack-node");
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
