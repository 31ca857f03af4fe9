//! `offload apply-diff`: apply a git-format patch under a directory, all or nothing.
//!
//! Reads the patch file, parses and applies it with [`crate::patch`]; loads no config and
//! needs no git. Success prints nothing (a summary at `-v`); a patch that does not apply
//! leaves the tree untouched and fails with the file and hunk named.

use std::path::Path;

use anyhow::{Context, Result};

use crate::exit;
use crate::patch::{apply_patch, parse_patch};

/// Applies the patch file `patch` under `root`; returns the exit code.
pub(crate) fn run(patch: &Path, root: &Path) -> Result<i32> {
    let bytes = std::fs::read(patch)
        .with_context(|| format!("failed to read the patch file `{}`", patch.display()))?;
    let files = parse_patch(&bytes)
        .with_context(|| format!("failed to parse the patch file `{}`", patch.display()))?;
    let summary = apply_patch(&files, root).with_context(|| {
        format!(
            "failed to apply the patch file `{}` under `{}`",
            patch.display(),
            root.display()
        )
    })?;
    tracing::info!(
        "applied `{}`: {} created, {} modified, {} deleted, {} renamed, {} copied",
        patch.display(),
        summary.created,
        summary.modified,
        summary.deleted,
        summary.renamed,
        summary.copied
    );
    Ok(exit::SUCCESS)
}
