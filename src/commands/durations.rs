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

/// The seconds of each known duration, as the scheduler takes them; says how many came
/// from where at debug level.
pub(crate) fn seconds(known: FxHashMap<String, (f64, Source)>) -> FxHashMap<String, f64> {
    let from_history = known
        .values()
        .filter(|(_, s)| *s == Source::History)
        .count();
    tracing::debug!(
        "known durations: {} from the previous report, {from_history} from the history",
        known.len() - from_history
    );
    known
        .into_iter()
        .map(|(id, (secs, _))| (id, secs))
        .collect()
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
