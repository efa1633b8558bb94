//! The environment contract (docs/design.md): read, parse and validate every
//! variable before anything is touched.

mod cluster;
mod values;

pub use cluster::ClusterSettings;

use std::ffi::OsString;
use std::fmt;

use serde::Deserialize;

use crate::flush::selection::{Protocol, Selection};

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
pub enum Mode {
    Flush,
    Spawn,
    Sweep,
    Auto,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Flush => "flush",
            Mode::Spawn => "spawn",
            Mode::Sweep => "sweep",
            Mode::Auto => "auto",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub selection: Selection,
    pub dry_run: bool,
    /// `KERNEL_FLUSH=false` never uses the kernel's filtered flush.
    pub kernel_flush: bool,
    pub log_format: LogFormat,
    /// `RUST_LOG` as given; parsed by the logging setup, which owns its syntax.
    pub log_filter: String,
    pub cluster: ClusterSettings,
}

/// The variables as strings. Everything is parsed by hand afterwards so that
/// an error can quote the value; envy only maps names to fields.
#[derive(Debug, Default, Deserialize)]
struct RawEnv {
    mode: Option<String>,
    target_ip: Option<String>,
    target_port: Option<String>,
    target_protocol: Option<String>,
    keep_dnat_to: Option<String>,
    dry_run: Option<String>,
    kernel_flush: Option<String>,
    log_format: Option<String>,
    rust_log: Option<String>,
    node_name: Option<String>,
    pod_uid: Option<String>,
    pod_name: Option<String>,
    pod_namespace: Option<String>,
    stay_running: Option<String>,
    target_namespace: Option<String>,
    job_template: Option<String>,
    wait_timeout: Option<String>,
    fail_open: Option<String>,
    sweep_selector: Option<String>,
    sweep_namespace: Option<String>,
    full_sweep: Option<String>,
    sweep_cronjob: Option<String>,
    sweep_parallelism: Option<String>,
}

const OURS: [&str; 23] = [
    "MODE",
    "TARGET_IP",
    "TARGET_PORT",
    "TARGET_PROTOCOL",
    "KEEP_DNAT_TO",
    "DRY_RUN",
    "KERNEL_FLUSH",
    "LOG_FORMAT",
    "RUST_LOG",
    "NODE_NAME",
    "POD_UID",
    "POD_NAME",
    "POD_NAMESPACE",
    "STAY_RUNNING",
    "TARGET_NAMESPACE",
    "JOB_TEMPLATE",
    "WAIT_TIMEOUT",
    "FAIL_OPEN",
    "SWEEP_SELECTOR",
    "SWEEP_NAMESPACE",
    "FULL_SWEEP",
    "SWEEP_CRONJOB",
    "SWEEP_PARALLELISM",
];

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
            let Some(ours) = OURS.iter().find(|n| **n == name) else { continue };
            match value.into_string() {
                Ok(value) => utf8.push((name, value)),
                Err(raw) => return Err(ConfigError::new(ours, &raw.to_string_lossy(), "is not valid UTF-8")),
            }
        }
        let raw: RawEnv =
            envy::from_iter(utf8).map_err(|e| ConfigError::new("environment", "", e.to_string()))?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawEnv) -> Result<Self, ConfigError> {
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mode = mode(&text(&raw.mode))?;
        let log_format = match text(&raw.log_format).trim().to_ascii_lowercase().as_str() {
            "" | "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(ConfigError::new("LOG_FORMAT", &text(&raw.log_format), "must be json or text")),
        };
        let (ips, local) = values::targets("TARGET_IP", &text(&raw.target_ip))?;
        let ports = values::port_list("TARGET_PORT", &text(&raw.target_port))?;
        let protocols = match raw.target_protocol.as_deref() {
            None => vec![Protocol::Udp],
            Some(v) if v.trim().is_empty() => vec![Protocol::Udp],
            Some(v) => values::protocols("TARGET_PROTOCOL", v)?,
        };
        let keep = values::ip_list("KEEP_DNAT_TO", &text(&raw.keep_dnat_to))?;
        let dry_run = values::boolean("DRY_RUN", &text(&raw.dry_run))?;
        let kernel_flush = match raw.kernel_flush.as_deref().map(str::trim) {
            None | Some("") => true,
            Some(v) => values::boolean("KERNEL_FLUSH", v)?,
        };

        let cluster = ClusterSettings::parse(cluster::RawCluster {
            node_name: raw.node_name.as_deref().unwrap_or_default(),
            pod_uid: raw.pod_uid.as_deref().unwrap_or_default(),
            pod_name: raw.pod_name.as_deref().unwrap_or_default(),
            pod_namespace: raw.pod_namespace.as_deref().unwrap_or_default(),
            stay_running: raw.stay_running.as_deref().unwrap_or_default(),
            target_namespace: raw.target_namespace.as_deref().unwrap_or_default(),
            job_template: raw.job_template.as_deref().unwrap_or_default(),
            wait_timeout: raw.wait_timeout.as_deref().unwrap_or_default(),
            fail_open: raw.fail_open.as_deref().unwrap_or_default(),
            sweep_selector: raw.sweep_selector.as_deref().unwrap_or_default(),
            sweep_namespace: raw.sweep_namespace.as_deref().unwrap_or_default(),
            full_sweep: raw.full_sweep.as_deref().unwrap_or_default(),
            sweep_cronjob: raw.sweep_cronjob.as_deref().unwrap_or_default(),
            sweep_parallelism: raw.sweep_parallelism.as_deref().unwrap_or_default(),
        })?;
        if mode == Mode::Spawn && cluster.node_name.is_none() {
            return Err(missing_node_name());
        }
        if mode == Mode::Sweep && cluster.sweep_selector.is_none() {
            return Err(ConfigError::new(
                "SWEEP_SELECTOR",
                "",
                "is required in sweep mode: the label selector of the DaemonSet's pods, e.g. app=statsd",
            ));
        }

        let targets_modes = matches!(mode, Mode::Flush | Mode::Spawn | Mode::Auto);
        if targets_modes && ips.is_empty() && !local && ports.is_empty() {
            return Err(ConfigError::new(
                "TARGET_IP",
                &text(&raw.target_ip),
                "neither TARGET_IP nor TARGET_PORT is set; refusing to flush every entry of the table \
                 (set TARGET_PORT, e.g. TARGET_PORT=8125, and/or TARGET_IP=local for every address of the node)",
            ));
        }

        Ok(Settings {
            mode,
            selection: Selection { protocols, ips, local, ports, keep },
            dry_run,
            kernel_flush,
            log_format,
            log_filter: raw.rust_log.unwrap_or_default(),
            cluster,
        })
    }
}

/// Spawn pins the Job to a node and cannot guess which.
pub fn missing_node_name() -> ConfigError {
    ConfigError::new(
        "NODE_NAME",
        "",
        "is required to spawn a flush Job: set it from the downward API \
         (env: - name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}), \
         as kustomize/components/trigger does",
    )
}

fn mode(value: &str) -> Result<Mode, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(Mode::Auto),
        "flush" => Ok(Mode::Flush),
        "spawn" => Ok(Mode::Spawn),
        "sweep" => Ok(Mode::Sweep),
        _ => Err(ConfigError::new("MODE", value, "must be flush, spawn, sweep or auto")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_vars(vars.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))))
    }

    #[test]
    fn defaults_udp_auto_text_not_dry() {
        let s = settings(&[("TARGET_PORT", "8125")]).unwrap();
        assert_eq!(s.mode, Mode::Auto);
        assert_eq!(s.selection.protocols, vec![Protocol::Udp]);
        assert_eq!(s.selection.ports, vec![8125..=8125]);
        assert!(s.selection.ips.is_empty() && s.selection.keep.is_empty());
        assert!(!s.dry_run);
        assert!(s.kernel_flush);
        assert_eq!(s.log_format, LogFormat::Text);
    }

    #[test]
    fn full_contract() {
        let s = settings(&[
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
        ])
        .unwrap();
        assert_eq!(s.mode, Mode::Flush);
        assert_eq!(s.selection.ips.len(), 2);
        assert_eq!(s.selection.protocols, vec![Protocol::Udp, Protocol::Tcp]);
        assert_eq!(s.selection.keep, vec!["198.51.100.6".parse::<std::net::IpAddr>().unwrap()]);
        assert!(s.dry_run);
        assert!(!s.kernel_flush);
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_filter, "debug");
    }

    #[test]
    fn selection_env_round_trips() {
        let s = settings(&[
            ("MODE", "flush"),
            ("TARGET_IP", "192.0.2.1, 2001:db8::1"),
            ("TARGET_PORT", "8126,8000-8100,8125"),
            ("TARGET_PROTOCOL", "tcp,udp"),
            ("KEEP_DNAT_TO", "198.51.100.6"),
        ])
        .unwrap();
        let env = s.selection.env();
        assert_eq!(env[1], ("TARGET_PORT", "8000-8100,8125,8126".to_owned()));
        let mut vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        vars.push(("MODE", "flush"));
        assert_eq!(settings(&vars).unwrap().selection, s.selection);
    }

    #[test]
    fn refuses_a_whole_table_flush() {
        let e = settings(&[("MODE", "flush")]).unwrap_err();
        assert!(e.to_string().contains("neither TARGET_IP nor TARGET_PORT"), "{e}");
        let e = settings(&[("MODE", "flush"), ("TARGET_IP", " "), ("TARGET_PORT", ",")]).unwrap_err();
        assert_eq!(e.variable, "TARGET_IP");
        assert!(settings(&[("TARGET_IP", "192.0.2.1")]).is_ok());
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
        let s = settings(&[("MODE", "sweep"), ("SWEEP_SELECTOR", "app=statsd")]).unwrap();
        assert_eq!(s.cluster.sweep_selector.as_deref(), Some("app=statsd"));
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
