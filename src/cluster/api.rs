//! Every Kubernetes API call goes through here: bounded by a timeout,
//! retried when the failure may pass (unreachable, 429, 5xx), and otherwise
//! turned into an error that says what to do.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Grant, Unanswered};

/// One call's bound. The initContainer waiting on us must never hang.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// What a call was, for the message that explains its failure.
#[derive(Debug, Clone)]
pub struct Call {
    pub verb: &'static str,
    pub resource: &'static str,
    pub namespace: String,
    /// What grants this call's right, for the advice a 403 gives.
    pub grant: Grant,
}

impl Call {
    pub fn new(verb: &'static str, resource: &'static str, namespace: &str, grant: Grant) -> Self {
        Call { verb, resource, namespace: namespace.to_owned(), grant }
    }
}

/// A call that failed for good.
#[derive(Debug)]
pub enum ApiError {
    /// The API server answered with this Status.
    Status { code: u16, reason: String, message: String },
    /// No answer, after every attempt: why the last one got none.
    Unreachable(Unanswered),
}

impl ApiError {
    pub fn code(&self) -> Option<u16> {
        match self {
            ApiError::Status { code, .. } => Some(*code),
            ApiError::Unreachable(_) => None,
        }
    }

    /// The error for a person: 403 names the missing permission, other
    /// refusals quote the server (Pod Security, admission policies and
    /// validation explain themselves there).
    pub fn explain(self, call: &Call) -> Error {
        match self {
            ApiError::Status { code: 403, message, .. } => Error::Forbidden {
                verb: call.verb,
                resource: call.resource,
                namespace: call.namespace.clone(),
                message,
                grant: call.grant,
            },
            ApiError::Status { code, reason, message } => Error::Refused {
                verb: call.verb,
                resource: call.resource,
                namespace: call.namespace.clone(),
                code,
                reason,
                message,
            },
            ApiError::Unreachable(last) => Error::Unreachable { attempts: ATTEMPTS, last },
        }
    }
}

fn classify(e: kube::Error) -> (ApiError, bool) {
    match e {
        kube::Error::Api(status) => {
            let retry = status.code == 429 || status.code >= 500;
            (ApiError::Status { code: status.code, reason: status.reason, message: status.message }, retry)
        }
        other => (ApiError::Unreachable(Unanswered::Kube(other)), true),
    }
}

/// Runs `f` until it succeeds, fails for good, or has used its attempts.
pub async fn call<T, F, Fut>(f: F) -> Result<T, ApiError>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        let failure = match tokio::time::timeout(CALL_TIMEOUT, f()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => classify(e),
            Err(_) => (ApiError::Unreachable(Unanswered::Timeout(CALL_TIMEOUT)), true),
        };
        match failure {
            (e, true) if attempt < ATTEMPTS => {
                tracing::warn!(attempt, error = ?e, "API call failed, retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
                attempt += 1;
            }
            (ApiError::Status { code, reason, message }, true) => {
                return Err(ApiError::Unreachable(Unanswered::Busy { code, reason, message }))
            }
            (e, _) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_names_the_verb_and_resource() {
        let e = ApiError::Status {
            code: 403,
            reason: "Forbidden".into(),
            message: "jobs.batch is forbidden".into(),
        };
        let text = e.explain(&Call::new("create", "jobs", "flush-conntrack", Grant::Spawner)).to_string();
        assert!(
            text.contains("create") && text.contains("jobs") && text.contains("flush-conntrack"),
            "{text}"
        );
        assert!(text.ends_with(&format!("; {}", Grant::Spawner)), "the call's own grant: {text}");
    }

    #[test]
    fn refusals_quote_the_server() {
        let e = ApiError::Status {
            code: 422,
            reason: "Invalid".into(),
            message: "Job.batch \"x\" is invalid: spec.template.spec.containers: Required value".into(),
        };
        let text = e.explain(&Call::new("create", "jobs", "ns", Grant::Spawner)).to_string();
        assert!(text.contains("422") && text.contains("Required value"), "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_what_may_pass_and_not_what_will_not() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = AtomicU32::new(0);
        let r: Result<(), ApiError> = call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(kube::Error::Api(Box::new(
                kube::core::Status::failure("busy", "TooManyRequests").with_code(429),
            )))
        })
        .await;
        // Busy every time is a server that cannot serve now: exit 7, like
        // no answer, with its last answer quoted.
        let e = r.unwrap_err().explain(&Call::new("create", "jobs", "ns", Grant::Spawner));
        assert_eq!(e.exit_code(), crate::error::EXIT_UNREACHABLE);
        assert_eq!(
            crate::error::report(&e),
            format!(
                "the Kubernetes API did not serve the call in {ATTEMPTS} attempts: 429 TooManyRequests: busy"
            )
        );
        assert_eq!(calls.load(Ordering::SeqCst), ATTEMPTS);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), ApiError> = call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(kube::Error::Api(Box::new(kube::core::Status::failure("no", "Forbidden").with_code(403))))
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.code(), Some(403));
        assert_eq!(
            e.explain(&Call::new("create", "jobs", "ns", Grant::Spawner)).exit_code(),
            crate::error::EXIT_REFUSED
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a 403 does not pass by retrying");

        // 429 three times: waits of 0.5 s then 1 s between the attempts.
        calls.store(0, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        let r: Result<(), ApiError> = call(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(kube::Error::Api(Box::new(
                kube::core::Status::failure("busy", "TooManyRequests").with_code(429),
            )))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(started.elapsed(), FIRST_BACKOFF * 3, "the backoff doubles");

        let r: Result<(), ApiError> = call(std::future::pending).await;
        let Err(ApiError::Unreachable(last)) = r else { panic!("bounded by the call timeout") };
        let e = ApiError::Unreachable(last).explain(&Call::new("get", "cronjobs", "ns", Grant::Spawner));
        assert_eq!(e.exit_code(), crate::error::EXIT_UNREACHABLE);
        assert_eq!(
            crate::error::report(&e),
            format!(
                "the Kubernetes API did not serve the call in {ATTEMPTS} attempts: no answer within 15 s"
            )
        );
    }
}
