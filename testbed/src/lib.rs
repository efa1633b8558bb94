//! Test tooling for flush-conntrack, never shipped: throwaway network
//! namespaces, conntrack tables filled and read independently of the tool,
//! and the hostPort scenario that reproduces the bug.

pub mod apiserver;
pub mod controlplane;
pub mod floor;
pub mod hostport;
pub mod netns;
pub mod require;
pub mod table;
pub mod tool;
pub mod validate;
