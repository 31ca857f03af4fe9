//! `offload collect`: discover and list tests.

use std::path::Path;

use anyhow::Result;

/// Discovers the tests of every group and prints them (JSON alone on stdout with `json`).
pub async fn run(config: &Path, json: bool) -> Result<i32> {
    let _ = (config, json);
    anyhow::bail!("`offload collect` is not implemented yet")
}
