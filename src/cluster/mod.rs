//! Kubernetes work: spawn and sweep flush Jobs. Short-lived and node-scoped:
//! a current-thread runtime, every call bounded, SIGTERM honoured.

pub mod api;
pub mod churn;
pub mod events;
pub mod hostports;
pub mod job;
pub mod job_env;
pub mod job_template;
pub mod spawn;
pub mod sweep;

use std::future::Future;
use std::time::Duration;

use crate::error::{report, Error, Signal};
use events::Regarding;

/// What spawn and sweep share: where the template and the Jobs live, how
/// long to wait, how to fail, and who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Namespace of the template and the Jobs; `None`: the pod's own.
    pub namespace: Option<String>,
    /// The template CronJob's name.
    pub job_template: String,
    /// Zero: create and return at once.
    pub wait_timeout: Duration,
    /// A failure is logged and the run exits 0.
    pub fail_open: bool,
    /// After the outcome, keep running until terminated: the trigger as a
    /// sidecar (`restartPolicy: Always`), which the agent does not wait for.
    pub stay_running: bool,
    /// The trigger or sweep pod's UID: which run made a Job.
    pub run: Option<String>,
    /// The pod this runs in: Events about its flush go on it.
    pub pod: Option<Regarding>,
}

/// Runs one spawn or sweep (`work`, given the client and the namespace) on
/// a current-thread runtime, to its end or a signal: see [`conduct`].
pub fn run<W, Fut>(options: &Options, work: W) -> Result<(), Error>
where
    W: FnOnce(kube::Client, String) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    runtime.block_on(async {
        let work = async {
            let (client, default_namespace) = client().await?;
            let namespace = options.namespace.clone().unwrap_or(default_namespace);
            work(client, namespace).await
        };
        conduct(options, work, terminated()).await
    })
}

/// The process's contract around the work: a `stop` (SIGTERM or SIGINT)
/// ends it early; under `STAY_RUNNING=true` the outcome is reported and the
/// run waits for the stop; under `FAIL_OPEN=true` a failure is logged and
/// the run still succeeds, so that an initContainer never holds its pod
/// back. Configuration errors are not failures of the cluster, and a
/// signal is no failure at all (the run was stopped before it finished):
/// both stay errors, with their exit codes.
pub async fn conduct(
    options: &Options,
    work: impl Future<Output = Result<(), Error>>,
    stop: impl Future<Output = Signal>,
) -> Result<(), Error> {
    tokio::pin!(stop);
    let result = tokio::select! {
        result = work => result,
        signal = &mut stop => Err(Error::Interrupted(signal)),
    };
    // A sidecar that exited would be started again, and flush again: it
    // reports and stays until the pod ends.
    let result = match result {
        Err(e @ (Error::Config(_) | Error::Interrupted(_))) => Err(e),
        outcome if options.stay_running => {
            if let Err(e) = outcome {
                tracing::error!(exit_code = e.exit_code(), "{}", report(&e));
            }
            tracing::info!("STAY_RUNNING=true: done; running until the pod is terminated");
            let signal = stop.await;
            tracing::info!("{signal}: exiting");
            Ok(())
        }
        outcome => outcome,
    };
    match result {
        Err(e) if options.fail_open && !matches!(e, Error::Config(_) | Error::Interrupted(_)) => {
            tracing::error!(exit_code = e.exit_code(), "{}", report(&e));
            tracing::warn!("FAIL_OPEN=true: exiting 0 despite the failure above");
            Ok(())
        }
        other => other,
    }
}

async fn client() -> Result<(kube::Client, String), Error> {
    let mut config = kube::Config::infer().await.map_err(|e| Error::NoKubeConfig(Box::new(e)))?;
    config.connect_timeout = Some(Duration::from_secs(5));
    // Reads are bounded per call and per watch window instead.
    config.read_timeout = None;
    let namespace = config.default_namespace.clone();
    let client = kube::Client::try_from(config).map_err(|e| Error::NoKubeConfig(Box::new(e)))?;
    Ok((client, namespace))
}

/// The first SIGTERM or SIGINT.
async fn terminated() -> Signal {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => Signal::Term,
                _ = int.recv() => Signal::Int,
            }
        }
        _ => std::future::pending().await,
    }
}

/// YAML of an object, for dry runs.
pub fn yaml<T: serde::Serialize>(object: &T) -> String {
    serde_saphyr::to_string(object).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
}
