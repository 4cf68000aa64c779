//! Helpers shared by several test files of this directory (`mod common;`).
pub mod boot_script;
pub mod outbound;
pub mod pipeline;
