//! What a flush deletes: the `TARGET_*`, `KEEP_DNAT_TO`, `DRY_RUN` and
//! `KERNEL_FLUSH` variables.

use super::values::read;
use crate::contract::{self, Raw};
use crate::error::ConfigError;
use crate::flush::selection::Selection;
use crate::flush::FlushPlan;

pub(super) fn plan(raw: &Raw) -> Result<FlushPlan, ConfigError> {
    let (ips, local) = read(raw, &contract::TARGET_IP)?;
    let selection = Selection {
        protocols: read(raw, &contract::TARGET_PROTOCOL)?,
        ips,
        local,
        ports: read(raw, &contract::TARGET_PORT)?,
        keep: read(raw, &contract::KEEP_DNAT_TO)?,
    };
    Ok(FlushPlan {
        selection,
        dry_run: read(raw, &contract::DRY_RUN)?,
        kernel_flush: read(raw, &contract::KERNEL_FLUSH)?,
    })
}
