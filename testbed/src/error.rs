//! What can go wrong while the testbed sets a scene up: each variant keeps
//! what a reader of a failed test needs (the file, the command and what it
//! said, how long was waited).

use std::fmt::Display;
use std::io;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file, directory or pipe could not be used.
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    /// A program could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn { command: String, source: io::Error },
    /// A program ran and failed; `said` is its output.
    #[error("{what}: {said}")]
    Failed { what: String, said: String },
    /// Something awaited did not happen in time.
    #[error("{what} not ready within {timeout:?}")]
    NotReady { what: String, timeout: Duration },
    /// A document that should have been JSON was not.
    #[error("{what}: {source}")]
    Json { what: String, source: serde_json::Error },
    /// What the testbed read or saw (a Dockerfile, the README, the cluster,
    /// a guest's console) is not what the scene needs.
    #[error("{0}")]
    Unexpected(String),
    /// An error of a step, said with the step it failed.
    #[error("{step}: {source}")]
    In { step: String, source: Box<Error> },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// For `map_err`: an I/O error on `what` (a path, a pipe).
pub fn io(what: impl Display) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Io { what: what.to_string(), source }
}

/// For `map_err`: `command` (shown as given) could not start.
pub fn spawn(command: impl Display) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Spawn { command: command.to_string(), source }
}

/// For `map_err`: `what` is not the JSON it should be.
pub fn json(what: impl Display) -> impl FnOnce(serde_json::Error) -> Error {
    move |source| Error::Json { what: what.to_string(), source }
}

pub fn unexpected(message: impl Into<String>) -> Error {
    Error::Unexpected(message.into())
}

impl Error {
    /// This error as the failure of `step`.
    pub fn during(self, step: impl Display) -> Error {
        Error::In { step: step.to_string(), source: Box::new(self) }
    }
}
