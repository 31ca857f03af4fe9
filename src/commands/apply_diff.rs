//! `offload apply-diff`: apply a git-format patch, all or nothing.

use std::path::Path;

use anyhow::Result;

/// Applies the patch at `patch` under `root`.
pub fn run(patch: &Path, root: &Path) -> Result<i32> {
    let _ = (patch, root);
    anyhow::bail!("`offload apply-diff` is not implemented yet")
}
