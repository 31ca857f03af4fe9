//! Where a run's scheduling durations come from, and recording them into the history.
//!
//! Each test's duration is the previous report's (`{output_dir}/{junit_file}`: the last
//! run on this machine), else the durations history's (the file kept in the repository,
//! [`crate::history`]: what a CI run has); tests known to neither count as their group's
//! mean, and with nothing known at all the scheduler deals tests out round-robin.
//! [`Durations::read`] reads both files (a bad history is a warning, never a stopped run);
//! [`record`] folds a finished run into the history.

use std::path::Path;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::config::Config;
use crate::framework::TestRecord;
use crate::history::{self, History};
use crate::report::junit;
use crate::report::verdict::{TestResult, Verdict};

/// Where a test's known duration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The previous run's report.
    Report,
    /// The durations history.
    History,
}

impl Source {
    /// As `offload collect --format json` names it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Report => "report",
            Self::History => "history",
        }
    }
}

/// The durations a run can know, read before anything of the run changes them.
#[derive(Debug, Default)]
pub(crate) struct Durations {
    report: FxHashMap<String, f64>,
    history: History,
}

impl Durations {
    /// Reads the previous report at `report` (when the run writes one) and the history
    /// at `history` (blocking: a large report takes a while). A history that cannot be
    /// read is said once, as a warning.
    pub(crate) fn read(report: Option<&Path>, history: &Path) -> Self {
        let report = report.map(junit::read_durations).unwrap_or_default();
        let history = History::read(history).unwrap_or_else(|err| {
            tracing::warn!("{err:#}; scheduling does without it");
            History::default()
        });
        Self { report, history }
    }

    /// The known durations of `records` by ID, in seconds, as the scheduler takes them
    /// (looked up by ID: the previous report's tests that are not in `records` stay in,
    /// unused, rather than be copied out of a large report); says how many of `records`
    /// came from where at debug level.
    pub(crate) fn into_seconds(self, records: &[TestRecord]) -> FxHashMap<String, f64> {
        let mut known = self.report;
        let (mut from_report, mut from_history) = (0, 0);
        for r in records {
            if known.contains_key(&r.id) {
                from_report += 1;
            } else if let Some(entry) = self.history.get(&r.group, &r.id) {
                from_history += 1;
                known.insert(r.id.clone(), entry.secs);
            }
        }
        tracing::debug!(
            "known durations: {from_report} from the previous report, {from_history} from the history"
        );
        known
    }

    /// The known duration of each of `records` (by ID) and where it came from.
    pub(crate) fn for_tests(&self, records: &[TestRecord]) -> FxHashMap<String, (f64, Source)> {
        records
            .iter()
            .filter_map(|r| {
                let known = match self.report.get(&r.id) {
                    Some(&secs) => (secs, Source::Report),
                    None => (self.history.get(&r.group, &r.id)?.secs, Source::History),
                };
                Some((r.id.clone(), known))
            })
            .collect()
    }
}

/// The tests that exist, for pruning the history: every test discovery found, when
/// discovery was not narrowed (by pytest's `-k`, which selects at discovery).
pub(crate) type Live = FxHashSet<(String, String)>;

/// The tests of `records` as [`Live`].
pub(crate) fn live(records: &[TestRecord]) -> Live {
    records
        .iter()
        .map(|r| (r.group.clone(), r.id.clone()))
        .collect()
}

/// Folds the times of a finished run into the history of `config`: each test's deciding
/// attempt, for tests that passed, failed, were flaky or skipped (an error, a timeout or
/// a test not run says nothing of how long the test takes). With `live`, entries of
/// the configuration's groups whose tests no longer exist are dropped. Failures are warnings: a run's outcome does
/// not depend on its bookkeeping.
pub(crate) fn record(config: &Config, results: &[TestResult], live: Option<&Live>) {
    let samples: Vec<history::Sample<'_>> = results
        .iter()
        .filter(|r| {
            matches!(
                r.verdict,
                Verdict::Passed | Verdict::Failed | Verdict::Flaky | Verdict::Skipped
            )
        })
        .filter_map(|r| Some((r.group.as_str(), r.id.as_str(), r.deciding_time()?)))
        .collect();
    let path: &Path = &config.history.path;
    let groups: FxHashSet<&str> = config.groups.keys().map(String::as_str).collect();
    // Entries of other groups are left alone: another configuration may share the file.
    let keep = live.map(|live| {
        move |group: &str, id: &str| {
            !groups.contains(group) || live.contains(&(group.to_owned(), id.to_owned()))
        }
    });
    let keep = keep.as_ref().map(|k| k as history::Exists<'_>);
    match history::record(path, &samples, keep) {
        Ok(n) => crate::statusln!(
            "Recorded {} into the durations history `{}` ({n} in all)",
            crate::output::plural(samples.len(), "test time"),
            path.display()
        ),
        Err(err) => tracing::warn!("the durations history was not recorded: {err:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_wins_then_the_history_by_group() {
        let mut history = History::default();
        history.record(&[("g", "a", 9.0), ("g", "b", 2.0), ("other", "c", 3.0)]);
        let report: FxHashMap<String, f64> = [("a".to_owned(), 1.0), ("gone".to_owned(), 4.0)]
            .into_iter()
            .collect();
        let durations = Durations { report, history };
        let records = [
            TestRecord::of("a", "g"),
            TestRecord::of("b", "g"),
            TestRecord::of("c", "g"),
        ];
        let known = durations.into_seconds(&records);
        assert_eq!(known.get("a"), Some(&1.0), "the report before the history");
        assert_eq!(
            known.get("b"),
            Some(&2.0),
            "the history when the report has none"
        );
        // `c` is known to the history only in another group.
        assert_eq!(known.get("c"), None);
    }
}
