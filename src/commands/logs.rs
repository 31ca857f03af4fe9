//! `offload logs`: per-test results of the most recent run.
//!
//! Reads the merged report at `{output_dir}/{junit_file}` of the given config, keeps the
//! tests the filters ask for and prints them to stdout (see [`crate::report::logs`] for the
//! format). Messages about missing or unmatched results go to stderr.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use regex::Regex;

use crate::exit;
use crate::report::junit;
use crate::report::logs::{LogFilter, entries, render_entry};

/// Filters of `offload logs`, combined with AND.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogsOptions {
    /// Only failed tests.
    pub(crate) failures: bool,
    /// Only errored tests.
    pub(crate) errors: bool,
    /// Only these exact IDs.
    pub(crate) tests: Vec<String>,
    /// Only IDs matching this regex.
    pub(crate) test_regex: Option<String>,
}

/// Prints the results recorded by the last run of the config at `config`.
///
/// Exit codes: 0 when something was printed or nothing matched the filters, 1 when there
/// is no report yet; errors (bad config, bad regex, unreadable report) exit 1 through the
/// caller.
pub(crate) fn run(config: &Path, options: LogsOptions) -> Result<i32> {
    let loaded = crate::config::load(config)?;
    let regex = match options.test_regex.as_deref() {
        Some(pattern) => Some(
            Regex::new(pattern)
                .with_context(|| format!("invalid --test-regex pattern `{pattern}`"))?,
        ),
        None => None,
    };
    let filter = LogFilter {
        failures: options.failures,
        errors: options.errors,
        tests: options.tests,
        regex,
    };

    let path = loaded.config.report.junit_path();
    if !path.is_file() {
        crate::statusln!(
            "No test results found at {}. Run `offload run` first.",
            path.display()
        );
        return Ok(exit::FAILURE);
    }
    let bytes = std::fs::read(&path)
        .with_context(|| format!("cannot read the test results `{}`", path.display()))?;
    let suites = junit::parse(&String::from_utf8_lossy(&bytes)).with_context(|| {
        format!(
            "cannot read the test results `{}` (hint: run `offload run` again to rewrite it)",
            path.display()
        )
    })?;

    let mut text = String::new();
    for entry in entries(suites).iter().filter(|e| filter.matches(e)) {
        render_entry(entry, &mut text);
    }
    if text.is_empty() {
        crate::statusln!("No matching test results found in {}", path.display());
        return Ok(exit::SUCCESS);
    }
    // Buffered: stdout alone would flush (one write) per line.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(exit::SUCCESS),
        // `offload logs | head` closes the pipe early: that is not an error.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(err) => Err(err).context("cannot write to stdout"),
    }
}
