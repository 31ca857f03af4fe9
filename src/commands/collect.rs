//! `offload collect`: discover and list tests, without running anything.
//!
//! Text output is for people (`Discovered N tests across M groups:` and one block per
//! non-empty group); `--format json` prints the test records as a JSON array, alone on
//! stdout. Warnings (empty groups, unknown keys) go to stderr.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;

use crate::commands::durations::{Durations, Source};
use crate::commands::selection::Selection;
use crate::config;
use crate::exit;
use crate::framework::{self, TestRecord, discovery};
use crate::output::plural;
use crate::scheduler::{self, Item};

/// One element of the `--format json` array, keys in this order.
#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    id: &'a str,
    name: &'a str,
    /// Never known from discovery; kept for compatibility.
    file: Option<&'a str>,
    retry_count: u32,
    group: &'a str,
    schedule_individual: bool,
    /// The seconds `offload run` would schedule it with, `None` when no duration is
    /// known at all (tests are then dealt out round-robin).
    duration: Option<f64>,
    /// Where `duration` came from: `report`, `history`, `group mean` (unknown in a
    /// group with known ones), `default` (unknown in a group without any).
    duration_source: Option<&'static str>,
}

/// Options of `offload collect`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CollectOptions {
    /// JSON alone on stdout instead of text.
    pub json: bool,
    /// Positional filters: list the tests whose ID contains any of them.
    pub filters: Vec<String>,
    /// `-k EXPR`: pytest's own expression at discovery, else a regex on IDs.
    pub keyword: Option<String>,
}

/// Discovers the tests of every group and prints those the filters select (JSON alone on
/// stdout with `json`).
pub(crate) async fn run(config: &Path, options: CollectOptions) -> Result<i32> {
    let json = options.json;
    let loaded = config::load(config)?;
    let cfg = &loaded.config;
    let mut framework = framework::from_config(&cfg.framework)?;
    let keyword_at_discovery = options
        .keyword
        .as_deref()
        .is_some_and(|expr| framework.select_by_expression(expr));
    let selection = Selection::new(
        options.filters,
        options.keyword.as_deref(),
        keyword_at_discovery,
        None,
    )?;
    let mut records = discovery::discover(
        framework.as_ref(),
        &cfg.groups,
        cfg.offload.max_parallel_collection,
    )
    .await?;
    // The listing is what a run runs: `#[ignore]`d tests are only reported as skipped.
    records.retain(|r| !r.ignored);
    selection.apply(&mut records)?;
    // Buffered: stdout alone would flush (one write) per line.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    if json {
        let report = cfg.report.junit.then(|| cfg.report.junit_path());
        let known = Durations::read(report.as_deref(), &cfg.history.path).for_tests(&records);
        let scheduled = scheduled_durations(&records, &known);
        let items: Vec<JsonRecord<'_>> = records
            .iter()
            .zip(scheduled)
            .map(|(r, (duration, duration_source))| JsonRecord {
                id: &r.id,
                name: r.name(),
                file: None,
                retry_count: r.retry_count,
                group: &r.group,
                schedule_individual: r.schedule_individual,
                duration,
                duration_source,
            })
            .collect();
        let text = serde_json::to_string_pretty(&items).context("cannot encode the test list")?;
        writeln!(stdout, "{text}").context("cannot write to stdout")?;
    } else {
        writeln!(
            stdout,
            "Discovered {} across {}:",
            plural(records.len(), "test"),
            plural(cfg.groups.len(), "group")
        )
        .context("cannot write to stdout")?;
        write_listing(&mut stdout, &records, cfg.groups.keys().map(String::as_str))?;
    }
    stdout.flush().context("cannot write to stdout")?;
    Ok(exit::SUCCESS)
}

/// The duration each of `records` is scheduled with (as the scheduler estimates it from
/// the `known` ones) and where it came from; `None`s when nothing is known.
fn scheduled_durations(
    records: &[TestRecord],
    known: &FxHashMap<String, (f64, Source)>,
) -> Vec<(Option<f64>, Option<&'static str>)> {
    let items: Vec<Item<'_>> = records
        .iter()
        .map(|r| Item {
            id: &r.id,
            group: &r.group,
            individual: r.schedule_individual,
            locality: None,
        })
        .collect();
    let seconds: FxHashMap<String, f64> = known
        .iter()
        .map(|(id, (secs, _))| (id.clone(), *secs))
        .collect();
    let estimates = scheduler::estimate(&items, &seconds);
    if !estimates.any_known {
        return vec![(None, None); records.len()];
    }
    let groups_known: FxHashSet<&str> = records
        .iter()
        .filter(|r| known.contains_key(&r.id))
        .map(|r| r.group.as_str())
        .collect();
    records
        .iter()
        .zip(&estimates.durations)
        .map(|(r, duration)| {
            let source = match known.get(&r.id) {
                Some((_, source)) => source.name(),
                None if groups_known.contains(r.group.as_str()) => "group mean",
                None => "default",
            };
            // Milliseconds, as the history writes them.
            let secs = (duration.as_secs_f64() * 1000.0).round() / 1000.0;
            (Some(secs), Some(source))
        })
        .collect()
}

/// Prints, for each group of `groups` (in that order) that has tests, a blank line,
/// `Group '<name>':` and one `  <id>` line per test. Used by `collect` and by
/// `offload run --collect-only`.
pub(super) fn print_listing<'a>(records: &[TestRecord], groups: impl Iterator<Item = &'a str>) {
    // Buffered: stdout alone would flush (one write) per line.
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    // A closed stdout (e.g. `| head`) is not worth an error here.
    let _ = write_listing(&mut stdout, records, groups)
        .and_then(|()| stdout.flush().context("cannot write to stdout"));
}

fn write_listing<'a>(
    out: &mut impl Write,
    records: &[TestRecord],
    groups: impl Iterator<Item = &'a str>,
) -> Result<()> {
    for group in groups {
        let mut tests = records.iter().filter(|r| r.group == group).peekable();
        if tests.peek().is_none() {
            continue;
        }
        writeln!(out, "\nGroup '{group}':").context("cannot write to stdout")?;
        for test in tests {
            writeln!(out, "  {}", test.id).context("cannot write to stdout")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, group: &str) -> TestRecord {
        TestRecord::of(id, group)
    }

    #[test]
    fn listing_skips_empty_groups_and_keeps_order() {
        let records = [
            record("a::x", "unit"),
            record("b y", "slow"),
            record("a::z", "unit"),
        ];
        let mut out = Vec::new();
        write_listing(&mut out, &records, ["empty", "unit", "slow"].into_iter()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\nGroup 'unit':\n  a::x\n  a::z\n\nGroup 'slow':\n  b y\n"
        );
    }
}
