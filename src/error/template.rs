//! A Job template CronJob that cannot make a flush Job.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("CronJob {0} has no jobTemplate.spec.template.spec.containers: it is not a flush Job template")]
    NoContainers(String),
}
