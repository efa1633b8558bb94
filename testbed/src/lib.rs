//! Test tooling for flush-conntrack, never shipped: throwaway network
//! namespaces, conntrack tables filled and read independently of the tool,
//! and the hostPort scenario that reproduces the bug.

pub mod apiserver;
pub mod command;
pub mod controlplane;
pub mod error;
pub mod floor;
pub mod hostport;
pub mod image;
pub mod link;
pub mod netns;
pub mod node;
pub mod podwatch;
pub mod process;
pub mod recipe;
pub mod require;
pub mod scratch;
pub mod story;
pub mod stream;
pub mod table;
pub mod tool;
pub mod validate;
pub mod vm;
