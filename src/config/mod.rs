//! The environment contract (docs/design.md): read, parse and validate every
//! variable before anything is touched, and turn them into the plan of one
//! mode. A variable is named in [`variables`]; it is parsed here (or in
//! [`cluster`] for spawn and sweep), and written back for a spawned Job in
//! [`job_env`].

mod cluster;
pub mod job_env;
pub(crate) mod values;
pub mod variables;

use std::ffi::OsString;

use crate::cluster::spawn;
use crate::ctnetlink::Protocol;
use crate::flush::{self, selection::Selection};
use crate::Plan;
use variables::{name, Raw};

pub use cluster::{
    DEFAULT_JOB_TEMPLATE, DEFAULT_SWEEP_CRONJOB, DEFAULT_SWEEP_PARALLELISM, DEFAULT_WAIT_TIMEOUT,
};

/// A refused configuration: which variable, the value as given, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(variable: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self { variable, value: value.to_owned(), reason: reason.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Everything the environment says, accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub log_format: LogFormat,
    /// `RUST_LOG` as given; parsed by the logging setup, which owns its syntax.
    pub log_filter: String,
    pub work: Work,
}

/// What to do: a plan, or, under `MODE=auto`, the two plans it chooses from
/// once it has looked at this process and its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    Planned(Plan),
    Auto(Auto),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auto {
    pub flush: flush::Plan,
    /// Spawn has requirements of its own (`NODE_NAME`); they are reported
    /// only if auto chooses spawn, still before anything is contacted.
    pub spawn: Result<spawn::Plan, ConfigError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Flush,
    Spawn,
    Sweep,
    Auto,
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
            let Some(ours) = variables::ALL.iter().find(|n| **n == name) else { continue };
            match value.into_string() {
                Ok(value) => utf8.push((name, value)),
                Err(raw) => return Err(ConfigError::new(ours, &raw.to_string_lossy(), "is not valid UTF-8")),
            }
        }
        let raw: Raw =
            envy::from_iter(utf8).map_err(|e| ConfigError::new("environment", "", e.to_string()))?;
        Self::from_raw(&raw)
    }

    fn from_raw(raw: &Raw) -> Result<Self, ConfigError> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mode = mode(&text(&raw.mode))?;
        let log_format = match text(&raw.log_format).trim().to_ascii_lowercase().as_str() {
            "" | "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::new(
                    name::LOG_FORMAT,
                    &text(&raw.log_format),
                    "must be json or text",
                ))
            }
        };
        // Every variable is checked whatever the mode: a typo in one that
        // this mode ignores is still a typo in the manifest.
        let flush = flush_plan(raw)?;
        let cluster = cluster::options(raw)?;
        let node = cluster::node_name(raw)?;
        let sweep = cluster::sweep_vars(raw)?;
        let selection = &flush.selection;
        let everything = selection.ips.is_empty() && !selection.local && selection.ports.is_empty();
        let work = match mode {
            Mode::Flush => Work::Planned(Plan::Flush(flush)),
            Mode::Spawn => Work::Planned(Plan::Spawn(spawn_plan(node, flush, cluster)?)),
            Mode::Sweep => Work::Planned(Plan::Sweep(cluster::sweep(sweep, &flush, cluster)?)),
            Mode::Auto => Work::Auto(Auto { spawn: spawn_plan(node, flush.clone(), cluster), flush }),
        };
        // Flush and spawn name their targets: an empty selection would be
        // every entry of the table.
        if everything && !matches!(work, Work::Planned(Plan::Sweep(_))) {
            return Err(ConfigError::new(
                name::TARGET_IP,
                &text(&raw.target_ip),
                "neither TARGET_IP nor TARGET_PORT is set; refusing to flush every entry of the table \
                 (set TARGET_PORT, e.g. TARGET_PORT=8125, and/or TARGET_IP=local for every address of the node)",
            ));
        }
        Ok(Settings { log_format, log_filter: text(&raw.rust_log), work })
    }
}

/// The `TARGET_*`, `KEEP_DNAT_TO`, `DRY_RUN` and `KERNEL_FLUSH` variables.
fn flush_plan(raw: &Raw) -> Result<flush::Plan, ConfigError> {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let (ips, local) = values::targets(name::TARGET_IP, &text(&raw.target_ip))?;
    let ports = values::port_list(name::TARGET_PORT, &text(&raw.target_port))?;
    let protocols = match raw.target_protocol.as_deref() {
        None => vec![Protocol::Udp],
        Some(v) if v.trim().is_empty() => vec![Protocol::Udp],
        Some(v) => values::protocols(name::TARGET_PROTOCOL, v)?,
    };
    let keep = values::ip_list(name::KEEP_DNAT_TO, &text(&raw.keep_dnat_to))?;
    let dry_run = values::boolean(name::DRY_RUN, &text(&raw.dry_run))?;
    let kernel_flush = match raw.kernel_flush.as_deref().map(str::trim) {
        None | Some("") => true,
        Some(v) => values::boolean(name::KERNEL_FLUSH, v)?,
    };
    Ok(flush::Plan { selection: Selection { protocols, ips, local, ports, keep }, dry_run, kernel_flush })
}

/// Spawn pins the Job to a node and cannot guess which.
fn spawn_plan(
    node: Option<String>,
    flush: flush::Plan,
    cluster: crate::cluster::Options,
) -> Result<spawn::Plan, ConfigError> {
    let node = node.ok_or_else(|| {
        ConfigError::new(
            name::NODE_NAME,
            "",
            "is required to spawn a flush Job: set it from the downward API \
             (env: - name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}), \
             as kustomize/components/trigger does",
        )
    })?;
    Ok(spawn::Plan { node, selection: flush.selection, dry_run: flush.dry_run, cluster })
}

fn mode(value: &str) -> Result<Mode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(Mode::Auto),
        "flush" => Ok(Mode::Flush),
        "spawn" => Ok(Mode::Spawn),
        "sweep" => Ok(Mode::Sweep),
        _ => Err(ConfigError::new(name::MODE, value, "must be flush, spawn, sweep or auto")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
    }

    fn flush_plan_of(vars: &[(&str, &str)]) -> flush::Plan {
        match settings(vars).unwrap().work {
            Work::Planned(Plan::Flush(plan)) | Work::Auto(Auto { flush: plan, .. }) => plan,
            other => panic!("not a flush: {other:?}"),
        }
    }

    #[test]
    fn defaults_udp_auto_text_not_dry() {
        let s = settings(&[("TARGET_PORT", "8125")]).unwrap();
        assert_eq!(s.log_format, LogFormat::Text);
        let Work::Auto(auto) = s.work else { panic!("auto is the default") };
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
        let planned = |vars: &[(&str, &str)]| match settings(vars).unwrap().work {
            Work::Planned(plan) => plan,
            Work::Auto(_) => panic!("auto"),
        };
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
}
