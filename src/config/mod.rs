//! The environment, read once: every variable parsed and checked before
//! anything is touched, and turned into the [`Plan`] of one mode. The rows
//! (name, type, default) are `contract`'s; the parsers are [`values`]'; the
//! flush's variables are read in [`target`], spawn's and sweep's in
//! [`delegation`].

mod delegation;
mod target;
pub(crate) mod values;

use std::ffi::OsString;

use crate::contract::{self, LogFormat, Mode, Raw};
use crate::error::ConfigError;
use crate::plan::{AutoPlan, Plan};
use values::read;

/// Everything the environment says, accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub log_format: LogFormat,
    /// `RUST_LOG`; parsed by the logging setup, which owns its syntax.
    pub log_filter: String,
    pub plan: Plan,
}

impl Settings {
    /// Reads the process environment. A variable of ours that is not valid
    /// UTF-8 is refused by name; other variables are none of our business.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars_os())
    }

    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Result<Self, ConfigError> {
        let mut utf8 = Vec::new();
        for (name, value) in vars {
            let Some(name) = name.to_str().map(str::to_owned) else { continue };
            let Some(ours) = contract::ALL.iter().find(|row| row.name == name) else { continue };
            match value.into_string() {
                Ok(value) => utf8.push((name, value)),
                Err(raw) => {
                    return Err(ConfigError::new(ours.name, &raw.to_string_lossy(), "is not valid UTF-8"))
                }
            }
        }
        let raw: Raw = envy::from_iter(utf8)
            .map_err(|e| ConfigError::new("environment", "", "cannot be read").caused_by(e))?;
        Self::from_raw(&raw)
    }

    fn from_raw(raw: &Raw) -> Result<Self, ConfigError> {
        let mode = read(raw, &contract::MODE)?;
        let log_format = read(raw, &contract::LOG_FORMAT)?;
        // Every variable is checked whatever the mode: a typo in one that
        // this mode ignores is still a typo in the manifest.
        let flush = target::plan(raw)?;
        let options = delegation::options(raw)?;
        let node = read(raw, &contract::NODE_NAME)?;
        let sweep = delegation::sweep_vars(raw)?;
        let selection = &flush.selection;
        let everything = selection.ips.is_empty() && !selection.local && selection.ports.is_empty();
        let plan = match mode {
            Mode::Flush => Plan::Flush(flush),
            Mode::Spawn => Plan::Spawn(delegation::spawn_plan(node, flush, options)?),
            Mode::Sweep => Plan::Sweep(delegation::sweep_plan(sweep, &flush, options)?),
            Mode::Auto => {
                Plan::Auto(AutoPlan { spawn: delegation::spawn_plan(node, flush.clone(), options), flush })
            }
        };
        // Flush and spawn name their targets: an empty selection would be
        // every entry of the table. A sweep's come from the agents' hostPorts.
        if everything && mode != Mode::Sweep {
            return Err(ConfigError::new(
                contract::TARGET_IP.name,
                raw.get(contract::TARGET_IP.name).unwrap_or_default(),
                "neither TARGET_IP nor TARGET_PORT is set; refusing to flush every entry of the table \
                 (set TARGET_PORT, e.g. TARGET_PORT=8125, and/or TARGET_IP=local for every address of the node)",
            ));
        }
        let log_filter = read(raw, &contract::RUST_LOG)?.unwrap_or_default();
        Ok(Settings { log_format, log_filter, plan })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ctnetlink::Protocol;
    use crate::flush::FlushPlan;

    pub(super) fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
    }

    fn flush_plan_of(vars: &[(&str, &str)]) -> FlushPlan {
        match settings(vars).unwrap().plan {
            Plan::Flush(plan) | Plan::Auto(AutoPlan { flush: plan, .. }) => plan,
            other => panic!("not a flush: {other:?}"),
        }
    }

    #[test]
    fn defaults_udp_auto_text_not_dry() {
        let s = settings(&[("TARGET_PORT", "8125")]).unwrap();
        assert_eq!(s.log_format, LogFormat::Text);
        let Plan::Auto(auto) = s.plan else { panic!("auto is the default") };
        let plan = auto.flush;
        assert_eq!(plan.selection.protocols, vec![Protocol::Udp]);
        assert_eq!(plan.selection.ports, vec![8125..=8125]);
        assert!(plan.selection.ips.is_empty() && plan.selection.keep.is_empty());
        assert!(!plan.dry_run);
        assert!(plan.kernel_flush);
        assert_eq!(auto.spawn.unwrap_err().variable, "NODE_NAME", "auto may not spawn without a node");
    }

    #[test]
    fn full_contract() {
        let vars = [
            ("MODE", "flush"),
            ("TARGET_IP", "192.0.2.1,2001:db8::1"),
            ("TARGET_PORT", "8125,8126"),
            ("TARGET_PROTOCOL", "udp,tcp"),
            ("KEEP_DNAT_TO", "198.51.100.6"),
            ("DRY_RUN", "true"),
            ("KERNEL_FLUSH", "false"),
            ("LOG_FORMAT", "json"),
            ("RUST_LOG", "debug"),
            ("UNRELATED", "whatever"),
        ];
        let s = settings(&vars).unwrap();
        assert_eq!((s.log_format, s.log_filter.as_str()), (LogFormat::Json, "debug"));
        let plan = flush_plan_of(&vars);
        assert_eq!(plan.selection.ips.len(), 2);
        assert_eq!(plan.selection.protocols, vec![Protocol::Udp, Protocol::Tcp]);
        assert_eq!(plan.selection.keep, vec!["198.51.100.6".parse::<std::net::IpAddr>().unwrap()]);
        assert!(plan.dry_run);
        assert!(!plan.kernel_flush);
    }

    #[test]
    fn each_mode_gets_its_plan() {
        let planned = |vars: &[(&str, &str)]| settings(vars).unwrap().plan;
        assert!(matches!(planned(&[("MODE", "flush"), ("TARGET_PORT", "8125")]), Plan::Flush(_)));
        let Plan::Spawn(spawn) = planned(&[
            ("MODE", "Spawn"),
            ("TARGET_PORT", "8125"),
            ("NODE_NAME", "node-a"),
            ("DRY_RUN", "true"),
        ]) else {
            panic!("spawn")
        };
        assert_eq!((spawn.node.as_str(), spawn.dry_run), ("node-a", true));
        let Plan::Sweep(sweep) = planned(&[("MODE", "sweep"), ("SWEEP_SELECTOR", "app=statsd")]) else {
            panic!("sweep")
        };
        assert_eq!(sweep.selector, "app=statsd");
        assert!(matches!(planned(&[("TARGET_PORT", "8125")]), Plan::Auto(_)));
        assert_eq!(planned(&[("MODE", " sweep "), ("SWEEP_SELECTOR", "a=b")]).mode(), Mode::Sweep);
    }

    #[test]
    fn refuses_a_whole_table_flush() {
        let e = settings(&[("MODE", "flush")]).unwrap_err();
        assert!(e.to_string().contains("neither TARGET_IP nor TARGET_PORT"), "{e}");
        let e = settings(&[("MODE", "flush"), ("TARGET_IP", " "), ("TARGET_PORT", ",")]).unwrap_err();
        assert_eq!(e.variable, "TARGET_IP");
        assert!(settings(&[("TARGET_IP", "192.0.2.1")]).is_ok());
        assert_eq!(settings(&[]).unwrap_err().variable, "TARGET_IP", "auto may flush: it needs a target");
        assert!(
            settings(&[("MODE", "sweep"), ("SWEEP_SELECTOR", "app=x")]).is_ok(),
            "a sweep targets hostPorts"
        );
    }

    #[test]
    fn bad_values_name_variable_and_value() {
        for (var, value) in [
            ("MODE", "nuke"),
            ("LOG_FORMAT", "xml"),
            ("TARGET_PROTOCOL", "icmp"),
            ("DRY_RUN", "perhaps"),
            ("KERNEL_FLUSH", "often"),
            ("TARGET_IP", "300.1.1.1"),
            ("KEEP_DNAT_TO", "pod-ip"),
            ("TARGET_PORT", "0"),
        ] {
            let mut vars = vec![("TARGET_PORT", "8125")];
            vars.retain(|(k, _)| *k != var);
            vars.push((var, value));
            let e = settings(&vars).unwrap_err();
            assert_eq!(e.variable, var, "{e}");
            assert_eq!(e.value, value);
            assert!(e.to_string().starts_with(&format!("{var}=\"{value}\"")), "{e}");
        }
    }

    #[test]
    fn spawn_needs_a_node_and_sweep_a_selector() {
        let e = settings(&[("MODE", "spawn"), ("TARGET_PORT", "8125")]).unwrap_err();
        assert_eq!(e.variable, "NODE_NAME");
        assert!(e.to_string().contains("spec.nodeName"), "{e}");
        assert!(settings(&[("MODE", "spawn"), ("TARGET_PORT", "8125"), ("NODE_NAME", "node-a")]).is_ok());
        let e = settings(&[("MODE", "sweep")]).unwrap_err();
        assert_eq!(e.variable, "SWEEP_SELECTOR");
    }

    #[test]
    fn non_utf8_value_of_ours_is_refused_others_ignored() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![0x38, 0xff]);
        let e = Settings::from_vars([(OsString::from("TARGET_PORT"), bad.clone())]).unwrap_err();
        assert_eq!(e.variable, "TARGET_PORT");
        let ok = Settings::from_vars([
            (OsString::from("TARGET_PORT"), OsString::from("8125")),
            (OsString::from("OTHER"), bad),
        ]);
        assert!(ok.is_ok());
    }

    /// What spawn and sweep write for a Job, parsed, is the plan they wrote it from.
    #[test]
    fn parsing_what_a_job_carries_gives_the_same_plan() {
        let plan = flush_plan_of(&[
            ("MODE", "flush"),
            ("TARGET_IP", "local, 192.0.2.1, 2001:db8::1"),
            ("TARGET_PORT", "8126,8000-8100,8125"),
            ("TARGET_PROTOCOL", "tcp,udp,sctp"),
            ("KEEP_DNAT_TO", "198.51.100.6"),
            ("DRY_RUN", "true"),
        ]);
        let env = crate::cluster::job_env::flush_job(&plan.selection, plan.dry_run);
        assert_eq!(env[2], ("TARGET_PORT", "8000-8100,8125,8126".to_owned()));
        let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(flush_plan_of(&vars), plan);
        assert!(matches!(settings(&vars).unwrap().plan, Plan::Flush(_)), "MODE=flush is written");
    }
}
