//! `offload report merge`: the reports of the parts of a partitioned run
//! (`offload run --partition K/N`) joined into one, written like the run's report.
//!
//! Every input is read before anything is written (the output may be one of them). The
//! merge itself is [`crate::report::merge`]'s; problems it notices that do not stop it
//! (a missing part, parts of different plans) are warnings on stderr.

use std::path::PathBuf;
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::exit;
use crate::output::plural;
use crate::report::junit;
use crate::report::merge::{self, Part};
use crate::report::verdict::{TestResult, Verdict};

/// Options of `offload report merge`.
#[derive(Debug, Clone)]
pub(crate) struct MergeOptions {
    /// The parts' reports, in the order their tests are written.
    pub(crate) inputs: Vec<PathBuf>,
    /// Where the merged report goes.
    pub(crate) output: PathBuf,
}

/// Merges the reports and writes the result. Exit 0 once it is written, whatever the
/// tests did (each part's own run already exited with their verdict); an unreadable or
/// malformed input, a test in two parts, or an output that cannot be written is an
/// error (exit 1) and writes nothing.
pub(crate) fn run(options: MergeOptions) -> Result<i32> {
    let mut parts = Vec::with_capacity(options.inputs.len());
    for path in &options.inputs {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the report `{}`", path.display()))?;
        let suites = junit::parse(&String::from_utf8_lossy(&bytes))
            .with_context(|| format!("cannot read the report `{}`", path.display()))?;
        parts.push(Part {
            source: path.display().to_string(),
            suites,
        });
    }
    let merged = merge::merge(parts)?;
    for warning in &merged.warnings {
        tracing::warn!("{warning}");
    }
    let hostname = junit::hostname();
    let run = junit::RunInfo {
        started: merged.started.unwrap_or_else(SystemTime::now),
        hostname: &hostname,
        framework: None,
        properties: &[],
    };
    junit::write_merged(&options.output, &merged.results, &run)?;
    crate::output::print(&format!(
        "Merged {} into `{}`: {}.\n",
        plural(options.inputs.len(), "report"),
        options.output.display(),
        tally(&merged.results)
    ));
    Ok(exit::SUCCESS)
}

/// `60 tests: 57 passed, 1 flaky, 2 failed`: the verdicts that occur, in a fixed order.
fn tally(results: &[TestResult]) -> String {
    let kinds = [
        (Verdict::Passed, "passed"),
        (Verdict::Flaky, "flaky"),
        (Verdict::Failed, "failed"),
        (Verdict::Errored, "errored"),
        (Verdict::NotRun, "not run"),
        (Verdict::Skipped, "skipped"),
    ];
    let counts: Vec<String> = kinds
        .iter()
        .filter_map(|&(verdict, word)| {
            let n = results.iter().filter(|r| r.verdict == verdict).count();
            (n > 0).then(|| format!("{n} {word}"))
        })
        .collect();
    let total = plural(results.len(), "test");
    if counts.is_empty() {
        total
    } else {
        format!("{total}: {}", counts.join(", "))
    }
}
