//! A refused configuration: which variable, the value as given, and why.

use std::sync::Arc;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{variable}={value:?}: {reason}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub value: String,
    pub reason: String,
    /// What a parser below us said, when it said more than `reason`.
    #[source]
    pub source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl ConfigError {
    pub fn new(variable: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Self { variable, value: value.to_owned(), reason: reason.into(), source: None }
    }

    pub fn caused_by(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }
}

/// Two refusals are the same when they name the same variable, value and
/// reason; where the reason came from does not change what the user reads.
impl PartialEq for ConfigError {
    fn eq(&self, other: &Self) -> bool {
        (self.variable, &self.value, &self.reason) == (other.variable, &other.value, &other.reason)
    }
}

impl Eq for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_by_what_the_user_reads_not_by_the_cause() {
        let refused = ConfigError::new("MODE", "nuke", "must be one of flush, spawn, sweep, auto");
        let caused = refused.clone().caused_by(std::io::Error::other("below"));
        assert_eq!(refused, caused, "the cause does not change what the user reads");
        assert_ne!(refused, ConfigError::new("MODE", "nuke2", "must be one of flush, spawn, sweep, auto"));
        assert_ne!(refused, ConfigError::new("DRY_RUN", "nuke", "must be one of flush, spawn, sweep, auto"));
        assert_ne!(refused, ConfigError::new("MODE", "nuke", "another reason"));
        assert!(
            std::error::Error::source(&caused).is_some() && std::error::Error::source(&refused).is_none()
        );
    }
}
