//! The contract written back: the variables a spawned flush Job receives.
//! Parsing them gives the selection they were written from.

use super::variables::name;
use crate::flush::selection::{Selection, LOCAL};

/// `MODE=flush`, the selection and `DRY_RUN`, in a fixed order. What else
/// the flush does (`KERNEL_FLUSH`, logging) is the Job template's to say.
pub fn flush_job(selection: &Selection, dry_run: bool) -> Vec<(&'static str, String)> {
    let join = |items: Vec<String>| items.join(",");
    let ports = selection
        .ports
        .iter()
        .map(|r| match r.start() == r.end() {
            true => r.start().to_string(),
            false => format!("{}-{}", r.start(), r.end()),
        })
        .collect();
    let protocols = selection.protocols.iter().map(|p| p.name().to_owned()).collect();
    let local = selection.local.then(|| LOCAL.to_owned());
    let ips = local.into_iter().chain(selection.ips.iter().map(ToString::to_string)).collect();
    vec![
        (name::MODE, "flush".to_owned()),
        (name::TARGET_IP, join(ips)),
        (name::TARGET_PORT, join(ports)),
        (name::TARGET_PROTOCOL, join(protocols)),
        (name::KEEP_DNAT_TO, join(selection.keep.iter().map(ToString::to_string).collect())),
        (name::DRY_RUN, dry_run.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::tests::settings;
    use super::super::Work;
    use super::*;
    use crate::Plan;

    fn flush(vars: &[(&str, &str)]) -> crate::flush::Plan {
        match settings(vars).unwrap().work {
            Work::Planned(Plan::Flush(plan)) => plan,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parsing_what_is_written_gives_the_same_plan() {
        let plan = flush(&[
            ("MODE", "flush"),
            ("TARGET_IP", "local, 192.0.2.1, 2001:db8::1"),
            ("TARGET_PORT", "8126,8000-8100,8125"),
            ("TARGET_PROTOCOL", "tcp,udp"),
            ("KEEP_DNAT_TO", "198.51.100.6"),
            ("DRY_RUN", "true"),
        ]);
        let env = flush_job(&plan.selection, plan.dry_run);
        assert_eq!(env[1], ("TARGET_IP", "local,192.0.2.1,2001:db8::1".to_owned()));
        assert_eq!(env[2], ("TARGET_PORT", "8000-8100,8125,8126".to_owned()));
        assert_eq!(env[3], ("TARGET_PROTOCOL", "tcp,udp".to_owned()));
        let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(flush(&vars), plan);
        let names: Vec<&str> = env.iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["MODE", "TARGET_IP", "TARGET_PORT", "TARGET_PROTOCOL", "KEEP_DNAT_TO", "DRY_RUN"]);
    }
}
