//! Which grant of the shipped manifests gives the right a refused call
//! lacked: a 403 is only useful if it says what to bind.

/// The shipped RBAC object that grants a call's right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// The Role `flush-conntrack-spawner` in the template's namespace: the
    /// template, its Jobs and their pods.
    Spawner,
    /// The ClusterRole `flush-conntrack-sweep-pods`: the agents' pods.
    SweepPods,
    /// The Role `flush-conntrack-sweep`: the sweep's CronJob, its Jobs.
    Sweep,
    /// `create` on `events.events.k8s.io` where the pod told about lives.
    Events,
}

impl Grant {
    pub const ALL: [Grant; 4] = [Grant::Spawner, Grant::SweepPods, Grant::Sweep, Grant::Events];

    /// The kind and name of the shipped object that grants the right.
    pub fn object(self) -> (&'static str, &'static str) {
        match self {
            Grant::Spawner => ("Role", "flush-conntrack-spawner"),
            Grant::SweepPods => ("ClusterRole", "flush-conntrack-sweep-pods"),
            Grant::Sweep => ("Role", "flush-conntrack-sweep"),
            Grant::Events => ("ClusterRole", "flush-conntrack-trigger-events"),
        }
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, name) = self.object();
        match self {
            Grant::Spawner => write!(
                f,
                "the {kind} {name} grants it in the template's namespace: kustomize/components/trigger \
                 binds it to the trigger's account (patch its subject to yours), kustomize/base to \
                 flush-conntrack-sweeper"
            ),
            Grant::SweepPods => write!(
                f,
                "bind the {kind} {name} to flush-conntrack-sweeper with a RoleBinding in the agents' \
                 namespace and set SWEEP_NAMESPACE to it (the statsd overlay does), or, with \
                 SWEEP_NAMESPACE empty, add kustomize/components/sweep-all-namespaces"
            ),
            Grant::Sweep => {
                write!(f, "the {kind} {name} of kustomize/base grants it to flush-conntrack-sweeper")
            }
            Grant::Events => write!(
                f,
                "grant `create` on events.events.k8s.io in that namespace: kustomize/base does for the \
                 sweep; for a trigger, bind the {kind} {name} with a RoleBinding in the agent's \
                 namespace (the statsd overlay does)"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_grant_names_its_object_and_where_it_is_bound() {
        for (grant, object, place) in [
            (Grant::Spawner, "Role flush-conntrack-spawner", "kustomize/components/trigger"),
            (
                Grant::SweepPods,
                "ClusterRole flush-conntrack-sweep-pods",
                "kustomize/components/sweep-all-namespaces",
            ),
            (Grant::Sweep, "Role flush-conntrack-sweep", "kustomize/base"),
            (Grant::Events, "ClusterRole flush-conntrack-trigger-events", "statsd overlay"),
        ] {
            let text = grant.to_string();
            let (kind, name) = grant.object();
            assert_eq!(format!("{kind} {name}"), object);
            assert!(text.contains(&format!("{object} ")), "{grant:?}: {text}");
            assert!(text.contains(place), "{grant:?}: {text}");
        }
    }
}
