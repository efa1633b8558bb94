//! Kubernetes work: spawn and sweep flush Jobs. Short-lived and node-scoped:
//! a current-thread runtime, every call bounded, SIGTERM honoured.

pub mod api;
pub mod churn;
pub mod events;
pub mod hostports;
pub mod job;
pub mod job_template;
pub mod spawn;
pub mod sweep;

use crate::config::{Mode, Settings};
use crate::error::Error;

/// Runs spawn or sweep to its end, a signal, or an error; under
/// `FAIL_OPEN=true` a failure is logged and the run still succeeds, so that
/// an initContainer never holds its pod back. Configuration errors are not
/// failures of the cluster: they stay errors.
pub fn run(mode: Mode, settings: &Settings) -> Result<(), Error> {
    // MODE=auto may choose spawn only now: its requirements are checked
    // before anything is contacted, like every other configuration.
    if mode == Mode::Spawn && settings.cluster.node_name.is_none() {
        return Err(Error::Config(crate::config::missing_node_name()));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(e.to_string()))?;
    let result = runtime.block_on(async {
        let work = async {
            let (client, default_namespace) = client().await?;
            let namespace = settings.cluster.target_namespace.clone().unwrap_or(default_namespace);
            match mode {
                Mode::Sweep => sweep::run(&client, &namespace, settings).await,
                _ => spawn::run(&client, &namespace, settings).await,
            }
        };
        let result = tokio::select! {
            result = work => result,
            signal = terminated() => Err(signal),
        };
        // A sidecar that exited would be started again, and flush again:
        // it reports and stays until the pod ends.
        match result {
            Err(e @ (Error::Config(_) | Error::Interrupted(_))) => Err(e),
            outcome if settings.cluster.stay_running => {
                if let Err(e) = outcome {
                    tracing::error!(exit_code = e.exit_code(), "{e}");
                }
                tracing::info!("STAY_RUNNING=true: done; running until the pod is terminated");
                let signal = terminated().await;
                tracing::info!("{signal}: exiting");
                Ok(())
            }
            outcome => outcome,
        }
    });
    match result {
        Err(e) if settings.cluster.fail_open && !matches!(e, Error::Config(_)) => {
            tracing::error!(exit_code = e.exit_code(), "{e}");
            tracing::warn!("FAIL_OPEN=true: exiting 0 despite the failure above");
            Ok(())
        }
        other => other,
    }
}

async fn client() -> Result<(kube::Client, String), Error> {
    let mut config = kube::Config::infer().await.map_err(|e| Error::NoKubeConfig(e.to_string()))?;
    config.connect_timeout = Some(std::time::Duration::from_secs(5));
    // Reads are bounded per call and per watch window instead.
    config.read_timeout = None;
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(|e| Error::NoKubeConfig(e.to_string()))?;
    Ok((client, namespace))
}

async fn terminated() -> Error {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => Error::Interrupted("SIGTERM"),
                _ = int.recv() => Error::Interrupted("SIGINT"),
            }
        }
        _ => std::future::pending().await,
    }
}

/// YAML of an object, for dry runs.
pub fn yaml<T: serde::Serialize>(object: &T) -> String {
    serde_saphyr::to_string(object).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
}
