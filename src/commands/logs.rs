//! `offload logs`: per-test results of the most recent run.

use std::path::Path;

use anyhow::Result;

/// Filters of `offload logs`, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// Only failed tests.
    pub failures: bool,
    /// Only errored tests.
    pub errors: bool,
    /// Only these exact IDs.
    pub tests: Vec<String>,
    /// Only IDs matching this regex.
    pub test_regex: Option<String>,
}

/// Prints the results recorded by the last run of the config at `config`.
pub fn run(config: &Path, options: LogsOptions) -> Result<i32> {
    let _ = (config, options);
    anyhow::bail!("`offload logs` is not implemented yet")
}
