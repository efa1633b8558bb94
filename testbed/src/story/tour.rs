//! The tour: every case users meet, played in turn on one node.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::error::Result;

use super::rollout::{json_lines, Rollout};
use super::{Agent, Story, Trigger, Visits};

/// What a case of the tour should show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The new pod never answers: the entry still points at the old one.
    /// A sweep by hand, visiting these nodes, follows and must repair it.
    Stale(Visits),
    /// The trigger's Job deleted this many entries (the outside client's and
    /// the loopback client's) and the new pod answers both.
    Repaired(u64),
    /// The new pod answers and nothing was stale (a trigger deletes nothing).
    Clean,
}

#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub name: &'static str,
    /// `v0.8.7`, `debian` (1.1.1) or `v1.10.0`.
    pub portmap: &'static str,
    pub agent: Agent,
    pub expect: Expect,
}

const fn case(
    name: &'static str,
    portmap: &'static str,
    trigger: Trigger,
    host: bool,
    expect: Expect,
) -> Case {
    Case { name, portmap, agent: Agent { trigger, host_network: host }, expect }
}

/// Every case users meet, in an order where each starts from the state the
/// one before left: portmap before 0.9 (the classical bug), Debian's 1.1.1
/// (flushes on ADD, not on DEL: the hostNetwork switch of #1190 stays
/// stale), 1.10 (flushes on both).
pub const TOUR: &[Case] = &[
    case(
        "portmap 0.8.7, pod replaced, no tool",
        "v0.8.7",
        Trigger::None,
        false,
        Expect::Stale(Visits::Changed),
    ),
    case("portmap 0.8.7, pod replaced, trigger", "v0.8.7", Trigger::Container, false, Expect::Repaired(2)),
    case(
        "portmap 0.8.7, pod replaced, waiting trigger",
        "v0.8.7",
        Trigger::Waiting,
        false,
        Expect::Repaired(2),
    ),
    case("portmap 1.1.1, pod replaced, waiting trigger", "debian", Trigger::Waiting, false, Expect::Clean),
    case("portmap 1.1.1, pod replaced, trigger", "debian", Trigger::Container, false, Expect::Clean),
    case("portmap 1.1.1, pod replaced, no tool", "debian", Trigger::None, false, Expect::Clean),
    case(
        "portmap 1.1.1, switch to hostNetwork, no tool",
        "debian",
        Trigger::None,
        true,
        Expect::Stale(Visits::Every),
    ),
    case("portmap 1.1.1, back to the pod network, no tool", "debian", Trigger::None, false, Expect::Clean),
    case(
        "portmap 1.1.1, switch to hostNetwork, trigger",
        "debian",
        Trigger::Container,
        true,
        Expect::Repaired(2),
    ),
    case(
        "portmap 1.10.0, back to the pod network, trigger",
        "v1.10.0",
        Trigger::Container,
        false,
        Expect::Clean,
    ),
    case("portmap 1.10.0, switch to hostNetwork, no tool", "v1.10.0", Trigger::None, true, Expect::Clean),
    case("portmap 1.10.0, back to the pod network, no tool", "v1.10.0", Trigger::None, false, Expect::Clean),
];

/// A sweep by hand after a stale case.
#[derive(Debug, Clone)]
pub struct Sweep {
    /// The sweep said it visits every node (`FULL_SWEEP=true`).
    pub full: bool,
    /// From `kubectl create job` to the agent's first answer.
    pub repaired_after: Option<Duration>,
    /// The host-network client on 127.0.0.1 was answered after it too.
    pub loopback_repaired: bool,
    /// The sweep's `sweep done` log line.
    pub done: Option<Value>,
    /// The Events on the sweep's pod, as (type, reason).
    pub events: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub case: Case,
    pub rollout: Rollout,
    pub sweep: Option<Sweep>,
}

impl Seen {
    /// From the new pod's sandbox to its first answer.
    pub fn repair(&self) -> Option<Duration> {
        Some(self.rollout.first_new_answer?.saturating_sub(self.rollout.sandbox?))
    }
}

/// Plays the tour once. `portmap` gives each case's plugin directory.
pub fn tour(story: &mut Story, portmap: impl Fn(&str) -> PathBuf) -> Result<Vec<Seen>> {
    let mut seen = Vec::new();
    for case in TOUR {
        story.node.use_portmap(&portmap(case.portmap))?;
        let patience = if matches!(case.expect, Expect::Stale(_)) { 4 } else { 20 };
        let rollout =
            story.roll(case.agent, Duration::from_secs(patience)).map_err(|e| e.during(case.name))?;
        let sweep = match case.expect {
            Expect::Stale(visits) => {
                let (at, log, events) = story.sweep_once(visits)?;
                let done = json_lines(&log).into_iter().find(|v| v["message"] == "sweep done");
                let answered = story.stream.wait_for(&rollout.new.responder, at, Duration::from_secs(10));
                let at_loopback = story.loopback.now().saturating_sub(story.stream.now().saturating_sub(at));
                let loopback =
                    story.loopback.wait_for(&rollout.new.responder, at_loopback, Duration::from_secs(5));
                Some(Sweep {
                    full: json_lines(&log).iter().any(|v| v["message"] == "FULL_SWEEP=true"),
                    repaired_after: answered.map(|t| t.saturating_sub(at)),
                    loopback_repaired: loopback.is_some(),
                    done,
                    events,
                })
            }
            _ => None,
        };
        seen.push(Seen { case: *case, rollout, sweep });
    }
    Ok(seen)
}
