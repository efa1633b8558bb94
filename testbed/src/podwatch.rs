//! When the API server told a watcher about each agent pod: created, marked
//! for deletion, gone. Polling `kubectl get` every 50 ms would add its own
//! latency (each call takes about 0.1 s); a watch sees each change once,
//! as a controller would.

use std::io::BufReader;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{unexpected, Result};
use serde_json::Value;

/// What the watch reported about one pod, when it first did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodTimes {
    pub added: Option<Instant>,
    pub deleting: Option<Instant>,
    pub gone: Option<Instant>,
}

pub struct PodWatch {
    child: Child,
    pods: Arc<Mutex<Vec<(String, PodTimes)>>>,
    thread: Option<JoinHandle<()>>,
}

/// Folds one watch event into what was seen: the first time of each.
pub fn record(pods: &mut Vec<(String, PodTimes)>, event: &Value, at: Instant) {
    let name = event["object"]["metadata"]["name"].as_str().unwrap_or_default();
    if name.is_empty() {
        return;
    }
    let index = match pods.iter().position(|(n, _)| n == name) {
        Some(i) => i,
        None => {
            pods.push((name.to_owned(), PodTimes::default()));
            pods.len() - 1
        }
    };
    let seen = &mut pods[index].1;
    seen.added.get_or_insert(at);
    if !event["object"]["metadata"]["deletionTimestamp"].is_null() {
        seen.deleting.get_or_insert(at);
    }
    if event["type"] == "DELETED" {
        seen.gone.get_or_insert(at);
    }
}

impl PodWatch {
    /// Watches the pods matching `selector` with `kubectl` (a command with
    /// its kubeconfig set); returns once the watch has listed `present`, so
    /// that nothing after this call can be missed.
    pub fn start(mut kubectl: Command, namespace: &str, selector: &str, present: &str) -> Result<PodWatch> {
        let mut child = kubectl
            .args(["-n", namespace, "get", "pods", "-l", selector, "--watch", "--output-watch-events", "-o"])
            .arg("json")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(crate::error::spawn("kubectl get --watch"))?;
        let stdout = child.stdout.take().ok_or_else(|| unexpected("kubectl get --watch: no stdout"))?;
        let pods: Arc<Mutex<Vec<(String, PodTimes)>>> = Arc::default();
        let log = pods.clone();
        let thread = std::thread::spawn(move || {
            let events = serde_json::Deserializer::from_reader(BufReader::new(stdout)).into_iter::<Value>();
            for event in events.flatten() {
                let at = Instant::now();
                if let Ok(mut pods) = log.lock() {
                    record(&mut pods, &event, at);
                }
            }
        });
        let watch = PodWatch { child, pods, thread: Some(thread) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while watch.seen(present).is_none() {
            if Instant::now() > deadline {
                return Err(unexpected(format!("the pod watch never listed {present}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(watch)
    }

    pub fn seen(&self, pod: &str) -> Option<PodTimes> {
        let pods = self.pods.lock().ok()?;
        pods.iter().find(|(n, _)| n == pod).map(|(_, s)| s.clone())
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_times_of_each_change() {
        let t0 = Instant::now();
        let t = |ms| t0 + Duration::from_millis(ms);
        let mut pods = Vec::new();
        let event = |kind: &str, name: &str, deleting: bool| {
            let stamp = if deleting { json!("2026-12-01T00:00:00Z") } else { Value::Null };
            json!({"type": kind, "object": {"metadata": {"name": name, "deletionTimestamp": stamp}}})
        };
        record(&mut pods, &event("ADDED", "old", false), t(0));
        record(&mut pods, &event("ADDED", "new", false), t(5));
        record(&mut pods, &event("MODIFIED", "old", true), t(7));
        record(&mut pods, &event("MODIFIED", "old", true), t(8));
        record(&mut pods, &event("DELETED", "old", true), t(9));
        record(&mut pods, &event("MODIFIED", "", false), t(10));
        assert_eq!(pods.len(), 2);
        assert_eq!(pods[0].1, PodTimes { added: Some(t(0)), deleting: Some(t(7)), gone: Some(t(9)) });
        assert_eq!(pods[1].1, PodTimes { added: Some(t(5)), deleting: None, gone: None });
    }
}
