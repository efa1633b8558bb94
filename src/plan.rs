//! What one run does: the plan of one mode, carrying only what that mode
//! needs. `config` makes it from the environment; `run` carries it out.

use crate::cluster::spawn::SpawnPlan;
use crate::cluster::sweep::SweepPlan;
use crate::contract::Mode;
use crate::error::ConfigError;
use crate::flush::FlushPlan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    Flush(FlushPlan),
    Spawn(SpawnPlan),
    Sweep(SweepPlan),
    /// Either of two plans, chosen when this process and its namespace have
    /// been looked at (`auto`).
    Auto(AutoPlan),
}

/// `MODE=auto`'s two candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoPlan {
    pub flush: FlushPlan,
    /// Spawn has requirements of its own (`NODE_NAME`); they are reported
    /// only if auto chooses spawn, still before anything is contacted.
    pub spawn: Result<SpawnPlan, ConfigError>,
}

impl Plan {
    pub fn mode(&self) -> Mode {
        match self {
            Plan::Flush(_) => Mode::Flush,
            Plan::Spawn(_) => Mode::Spawn,
            Plan::Sweep(_) => Mode::Sweep,
            Plan::Auto(_) => Mode::Auto,
        }
    }
}
