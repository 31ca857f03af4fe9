//! `offload validate`: check the configuration and print a summary of its settings.

use std::path::Path;

use anyhow::Result;

/// Validates the config at `config`.
pub fn run(config: &Path) -> Result<i32> {
    let _ = config;
    anyhow::bail!("`offload validate` is not implemented yet")
}
