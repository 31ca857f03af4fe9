//! `offload checkpoint-status`: the image cache state of the current commit.

use std::path::Path;

use anyhow::Result;

/// Prints the checkpoint state for the config at `config`.
pub fn run(config: &Path, remote: &str) -> Result<i32> {
    let _ = (config, remote);
    anyhow::bail!("`offload checkpoint-status` is not implemented yet")
}
