//! Tracing, set up once: text or JSON lines on stderr, level from `RUST_LOG`.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::contract::{LogFormat, RUST_LOG};
use crate::error::ConfigError;

pub fn filter(rust_log: &str) -> Result<Targets, ConfigError> {
    let spec = if rust_log.trim().is_empty() { RUST_LOG.default } else { rust_log.trim() };
    spec.parse::<Targets>().map_err(|e| {
        ConfigError::new(RUST_LOG.name, rust_log, format!("{e}; use a level such as info or debug"))
    })
}

pub fn init(format: LogFormat, filter: Targets) {
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Json => registry.with(fmt.json().flatten_event(true)).try_init(),
        LogFormat::Text => registry.with(fmt).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_levels_and_refusal() {
        assert!(filter("").is_ok());
        assert!(filter("debug").is_ok());
        assert!(filter("flush_conntrack=trace,warn").is_ok());
        let e = filter("flush_conntrack=loud").unwrap_err();
        assert_eq!(e.variable, "RUST_LOG");
    }
}
