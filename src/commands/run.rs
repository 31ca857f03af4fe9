//! `offload run`: discover, schedule, execute, report.

use std::path::Path;

use anyhow::Result;

/// Options of `offload run`.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Overrides `max_parallel`.
    pub parallel: Option<usize>,
    /// Discover and print only.
    pub collect_only: bool,
    /// `--copy-dir LOCAL:REMOTE` values, unparsed.
    pub copy_dirs: Vec<String>,
    /// `--env KEY=VALUE` values, unparsed.
    pub env: Vec<String>,
    /// Skip the image cache.
    pub no_cache: bool,
    /// Stop at the first failure.
    pub fail_fast: bool,
    /// Print the cost estimate.
    pub show_estimated_cost: bool,
    /// Plain progress lines.
    pub ci: bool,
}

/// Runs the test suite configured at `config`.
pub async fn run(config: &Path, options: RunOptions) -> Result<i32> {
    let _ = (config, options);
    anyhow::bail!("`offload run` is not implemented yet")
}
